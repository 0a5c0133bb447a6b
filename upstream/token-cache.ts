// Bearer tokens per (realm, service, scope) for one upstream and its one credential identity.
// Bounded (least recently used tokens go first) and expiring; concurrent requests needing the
// same token share one token request, which runs on its own deadline so one client giving up
// does not fail the others.

import { LRUCache } from 'lru-cache'
import type { Dispatcher } from 'undici'
import { request } from 'undici'

export interface TokenRequest {
  realm: string
  service?: string
  scope?: string
}

/** Tokens are renewed this long before they expire, so a request never carries a dying token. */
const SKEW_MS = 10_000
/** Distinct scopes (repositories) whose tokens are kept. */
const MAX_TOKENS = 4096

export class TokenCache {
  private readonly tokens: LRUCache<string, string, TokenRequest>

  constructor(
    private readonly dispatcher: Dispatcher,
    /** The Basic credentials that may go to a realm (undefined: ask anonymously); throws when the realm may not be asked. */
    private readonly credentialsFor: (realm: URL) => string | undefined,
    private readonly timeoutMs: number,
    max = MAX_TOKENS,
  ) {
    this.tokens = new LRUCache<string, string, TokenRequest>({
      max,
      // Each token's own lifetime is set when it arrives; this is only the upper bound.
      ttl: 24 * 3_600_000,
      ttlAutopurge: false,
      ignoreFetchAbort: true,
      fetchMethod: async (_key, _stale, { context, options }) => {
        const { token, lifetimeMs } = await this.fetch(context)
        options.ttl = lifetimeMs
        return token
      },
    })
  }

  cached(key: string): string | undefined {
    return this.tokens.get(key)
  }

  drop(key: string): void {
    this.tokens.delete(key)
  }

  get size(): number {
    return this.tokens.size
  }

  /** The token for `req`; `signal` ends this caller's wait, not the shared token request. */
  async get(req: TokenRequest, signal?: AbortSignal): Promise<string> {
    const shared = this.tokens.fetch(tokenKey(req), { context: req })
    const token = signal ? await abortable(shared, signal) : await shared
    if (token === undefined) throw new TokenError(0, req.realm, 'no token')
    return token
  }

  private fetch(req: TokenRequest): Promise<{ token: string; lifetimeMs: number }> {
    return requestToken(this.dispatcher, this.credentialsFor, req, this.timeoutMs)
  }
}

/**
 * One request to a token service. `credentialsFor` gives the Basic credentials (base64
 * user:password) that may go to the realm, undefined for an anonymous token, and throws when the
 * realm may not be asked at all.
 */
export async function requestToken(
  dispatcher: Dispatcher,
  credentialsFor: (realm: URL) => string | undefined,
  req: TokenRequest,
  timeoutMs: number,
): Promise<{ token: string; lifetimeMs: number }> {
  const url = new URL(req.realm)
  if (req.service) url.searchParams.set('service', req.service)
  if (req.scope) for (const s of req.scope.split(' ')) url.searchParams.append('scope', s)
  const headers: Record<string, string> = { accept: 'application/json' }
  const basic = credentialsFor(url)
  if (basic !== undefined) headers.authorization = `Basic ${basic}`
  const res = await request(url, { method: 'GET', headers, dispatcher, signal: AbortSignal.timeout(timeoutMs) })
  if (res.statusCode !== 200) {
    await res.body.dump()
    throw new TokenError(res.statusCode, url.origin + url.pathname)
  }
  const body = (await res.body.json()) as { token?: unknown; access_token?: unknown; expires_in?: unknown; issued_at?: unknown }
  const token = typeof body.token === 'string' && body.token !== '' ? body.token : body.access_token
  if (typeof token !== 'string' || token === '') throw new TokenError(res.statusCode, url.origin + url.pathname, 'no token in the response')
  const lifetime = (typeof body.expires_in === 'number' && body.expires_in > 0 ? body.expires_in : 60) * 1000
  const issued = typeof body.issued_at === 'string' ? Date.parse(body.issued_at) : NaN
  const start = Number.isFinite(issued) && Math.abs(issued - Date.now()) < 3_600_000 ? issued : Date.now()
  const lifetimeMs = Math.max(1, start + lifetime - Math.min(SKEW_MS, lifetime / 4) - Date.now())
  return { token, lifetimeMs }
}

export function abortable<T>(p: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) return Promise.reject(signal.reason)
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(signal.reason)
    signal.addEventListener('abort', onAbort, { once: true })
    p.then(
      (v) => {
        signal.removeEventListener('abort', onAbort)
        resolve(v)
      },
      (err) => {
        signal.removeEventListener('abort', onAbort)
        reject(err)
      },
    )
  })
}

export function tokenKey(req: TokenRequest): string {
  return `${req.realm}\n${req.service ?? ''}\n${req.scope ?? ''}`
}

export class TokenError extends Error {
  readonly code = 'UPSTREAM_TOKEN_FAILED'
  constructor(
    readonly status: number,
    readonly realm: string,
    detail?: string,
  ) {
    super(`token request to ${realm} failed with status ${status}${detail ? `: ${detail}` : ''}`)
  }
}
