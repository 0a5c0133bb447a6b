// The one error a content store throws when it cannot be reached or refuses to work (network
// failure, timeout, 5xx, bad credentials, missing bucket). The server answers it with 503 and
// /readyz reports not ready; it is matched by class or by its code, never by message.

export class StoreUnavailableError extends Error {
  readonly code = 'STORE_UNAVAILABLE'
  constructor(
    message: string,
    /** HTTP status the store answered, when it answered at all. */
    readonly status?: number,
    /** The store's own error code (S3 `Code`), or the system error code (ECONNREFUSED). */
    readonly reason?: string,
    options?: { cause?: unknown },
  ) {
    super(message, options)
  }
}

export function isStoreUnavailable(err: unknown): err is StoreUnavailableError {
  return err instanceof StoreUnavailableError
}
