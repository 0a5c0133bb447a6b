// Transport failures, classified by error code (never by message) into the named cases the
// revalidation policy answers (docs/behaviour.md#r9-what-counts-as-cannot-pull).

export type TransportFailure = 'refused' | 'reset' | 'dns' | 'timeout' | 'tls' | 'other'

export function classifyTransportError(err: unknown): TransportFailure {
  const e = err as { code?: string; name?: string; cause?: { code?: string } }
  const code = e?.code ?? e?.cause?.code ?? ''
  if (e?.name === 'TimeoutError' || e?.name === 'AbortError') return 'timeout'
  switch (code) {
    case 'ECONNREFUSED':
      return 'refused'
    case 'ECONNRESET':
    case 'EPIPE':
    case 'UND_ERR_SOCKET':
    case 'UND_ERR_CLOSED':
      return 'reset'
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
      return 'dns'
    case 'ETIMEDOUT':
    case 'UND_ERR_CONNECT_TIMEOUT':
    case 'UND_ERR_HEADERS_TIMEOUT':
    case 'UND_ERR_BODY_TIMEOUT':
    case 'ABORT_ERR':
    case 'UND_ERR_ABORTED':
      return 'timeout'
    default:
      if (code.startsWith('ERR_TLS') || code.includes('CERT') || code === 'DEPTH_ZERO_SELF_SIGNED_CERT') return 'tls'
      return 'other'
  }
}

/** Thrown by the upstream client when no HTTP response could be had. */
export class UpstreamUnreachableError extends Error {
  readonly code = 'UPSTREAM_UNREACHABLE'
  constructor(
    readonly upstream: string,
    readonly failure: TransportFailure,
    override readonly cause: unknown,
  ) {
    super(`upstream ${upstream} unreachable (${failure}): ${(cause as Error)?.message ?? String(cause)}`)
  }
}

/**
 * A request regcache will not make: a redirect or token realm pointing at a scheme or an address
 * the upstream may not send it to (docs/protocol.md#where-requests-and-credentials-go). Only the
 * destination's origin is kept: a CDN URL's query often carries a signature.
 */
export class DestinationRefusedError extends Error {
  readonly code = 'REGCACHE_DESTINATION_REFUSED'
  readonly destination: string
  constructor(
    readonly upstream: string,
    readonly purpose: 'redirect' | 'token realm' | 'connection',
    url: URL,
    readonly reason: string,
  ) {
    const destination = `${url.protocol}//${url.host}`
    super(`upstream ${upstream}: ${purpose} to ${destination} refused (${reason})`)
    this.destination = destination
  }
}

/** The DestinationRefusedError behind `err` (undici may wrap a connect error), if any. */
export function destinationRefusal(err: unknown): DestinationRefusedError | undefined {
  for (let e = err, depth = 0; e !== undefined && e !== null && depth < 5; e = (e as { cause?: unknown }).cause, depth++) {
    if (e instanceof DestinationRefusedError) return e
  }
  return undefined
}
