// The one error registry: every error regcache answers has a stable OCI code and its HTTP status
// beside it (distribution-spec "Error Codes"; UNAVAILABLE is distribution's, UNKNOWN its code for
// internal errors). Failures from other layers become RegistryErrors here and nowhere else.

import { UpstreamUnreachableError, destinationRefusal } from '../upstream/errors.js'

export const ERROR_CODES = {
  BLOB_UNKNOWN: { status: 404, message: 'blob unknown to registry' },
  MANIFEST_UNKNOWN: { status: 404, message: 'manifest unknown' },
  NAME_UNKNOWN: { status: 404, message: 'repository name not known to registry' },
  DIGEST_INVALID: { status: 400, message: 'provided digest did not match uploaded content' },
  NAME_INVALID: { status: 400, message: 'invalid repository name' },
  TAG_INVALID: { status: 400, message: 'manifest tag did not match URI' },
  MANIFEST_INVALID: { status: 400, message: 'manifest invalid' },
  /** On the wire a range error is distribution's SIZE_INVALID with status 416. */
  RANGE_INVALID: { status: 416, message: 'requested range not satisfiable' },
  UNAUTHORIZED: { status: 401, message: 'authentication required' },
  DENIED: { status: 403, message: 'requested access to the resource is denied' },
  TOOMANYREQUESTS: { status: 429, message: 'too many requests' },
  UNSUPPORTED: { status: 405, message: 'the operation is unsupported' },
  UNAVAILABLE: { status: 503, message: 'service unavailable' },
  UPSTREAM_ERROR: { status: 502, message: 'upstream registry answered unexpectedly' },
  NOT_FOUND: { status: 404, message: 'not found' },
  /** A request HTTP itself could not parse (bad URL encoding, malformed request line or headers). */
  REQUEST_INVALID: { status: 400, message: 'malformed request' },
  HEADERS_TOO_LARGE: { status: 431, message: 'request headers too large' },
  REQUEST_TIMEOUT: { status: 408, message: 'request not received in time' },
  UNKNOWN: { status: 500, message: 'internal error' },
} as const

export type ErrorCode = keyof typeof ERROR_CODES

export interface RegistryErrorOptions {
  /** The OCI error body's `detail`. */
  detail?: unknown
  /** Response headers that go with the error (Retry-After, Content-Range). */
  headers?: Record<string, string>
  /** A status other than the code's own (an upstream 4xx passed on as UPSTREAM_ERROR). */
  status?: number
  cause?: unknown
}

export class RegistryError extends Error {
  readonly status: number
  readonly detail: unknown
  readonly headers: Record<string, string>

  constructor(
    readonly code: ErrorCode,
    message?: string,
    opts: RegistryErrorOptions = {},
  ) {
    super(message ?? ERROR_CODES[code].message, opts.cause !== undefined ? { cause: opts.cause } : undefined)
    this.status = opts.status ?? ERROR_CODES[code].status
    this.detail = opts.detail
    this.headers = opts.headers ?? {}
  }

  /** The code clients see. */
  get wireCode(): string {
    return this.code === 'RANGE_INVALID' ? 'SIZE_INVALID' : this.code
  }
}

/** The OCI error for an upstream status passed on to the client. */
export function errorForUpstreamStatus(status: number, notFound: ErrorCode, retryAfter?: string): RegistryError {
  switch (status) {
    case 401:
      return new RegistryError('UNAUTHORIZED', 'upstream requires authorization for this repository')
    case 403:
      return new RegistryError('DENIED', 'upstream denied access to this repository')
    case 404:
      return new RegistryError(notFound, `upstream: ${ERROR_CODES[notFound].message}`)
    case 429:
      return new RegistryError('TOOMANYREQUESTS', 'upstream rate limit reached', { headers: retryAfter ? { 'retry-after': retryAfter } : {} })
    default:
      if (status >= 500) return new RegistryError('UNAVAILABLE', `upstream answered ${status}`)
      return new RegistryError('UPSTREAM_ERROR', `upstream answered ${status}`, { status: status >= 400 && status < 500 ? status : 502 })
  }
}

/**
 * Any failure as the error a client receives: registry errors as they are, an upstream pointing
 * somewhere regcache does not go (a refused redirect or token realm) as 502 UPSTREAM_ERROR, an
 * unreachable upstream as 503 UNAVAILABLE, anything else as 500 UNKNOWN (its message stays in the log).
 */
export function toRegistryError(err: unknown): RegistryError {
  if (err instanceof RegistryError) return err
  const refused = destinationRefusal(err)
  if (refused) return new RegistryError('UPSTREAM_ERROR', refused.message, { cause: err })
  if (err instanceof UpstreamUnreachableError) return new RegistryError('UNAVAILABLE', `upstream ${err.upstream} unavailable (${err.failure})`, { cause: err })
  return new RegistryError('UNKNOWN', undefined, { cause: err })
}
