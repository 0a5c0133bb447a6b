// The one error registry: every error regcache answers has a stable OCI code and its HTTP
// status beside it (distribution-spec "Error Codes"; UNAVAILABLE is distribution's).

export const ERROR_CODES = {
  BLOB_UNKNOWN: { status: 404, message: 'blob unknown to registry' },
  MANIFEST_UNKNOWN: { status: 404, message: 'manifest unknown' },
  NAME_UNKNOWN: { status: 404, message: 'repository name not known to registry' },
  BLOB_UPLOAD_UNKNOWN: { status: 404, message: 'blob upload unknown to registry' },
  DIGEST_INVALID: { status: 400, message: 'provided digest did not match uploaded content' },
  NAME_INVALID: { status: 400, message: 'invalid repository name' },
  TAG_INVALID: { status: 400, message: 'manifest tag did not match URI' },
  MANIFEST_INVALID: { status: 400, message: 'manifest invalid' },
  SIZE_INVALID: { status: 400, message: 'provided length did not match content length' },
  RANGE_INVALID: { status: 416, message: 'requested range not satisfiable' },
  UNAUTHORIZED: { status: 401, message: 'authentication required' },
  DENIED: { status: 403, message: 'requested access to the resource is denied' },
  TOOMANYREQUESTS: { status: 429, message: 'too many requests' },
  UNSUPPORTED: { status: 405, message: 'the operation is unsupported' },
  UNAVAILABLE: { status: 503, message: 'service unavailable' },
  UPSTREAM_ERROR: { status: 502, message: 'upstream registry answered unexpectedly' },
  NOT_FOUND: { status: 404, message: 'not found' },
} as const

export type ErrorCode = keyof typeof ERROR_CODES

export class RegistryError extends Error {
  readonly status: number
  constructor(
    readonly code: ErrorCode,
    message?: string,
    readonly detail?: unknown,
    readonly headers: Record<string, string> = {},
    status?: number,
  ) {
    super(message ?? ERROR_CODES[code].message)
    this.status = status ?? ERROR_CODES[code].status
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
      return new RegistryError('TOOMANYREQUESTS', 'upstream rate limit reached', undefined, retryAfter ? { 'retry-after': retryAfter } : {})
    default:
      if (status >= 500) return new RegistryError('UNAVAILABLE', `upstream answered ${status}`)
      return new RegistryError('UPSTREAM_ERROR', `upstream answered ${status}`, undefined, {}, status >= 400 && status < 500 ? status : 502)
  }
}
