// Bearer tokens per (realm, service, scope) for one upstream and its one credential identity.
// Concurrent requests needing the same token share one token request.

import type { Dispatcher } from 'undici'
import { request } from 'undici'

export interface TokenRequest {
  realm: string
  service?: string
  scope?: string
}

interface Entry {
  token: string
  expiresAt: number
}

/** Tokens are renewed this long before they expire, so a request never carries a dying token. */
const SKEW_MS = 10_000

export class TokenCache {
  private readonly tokens = new Map<string, Entry>()
  private readonly inflight = new Map<string, Promise<string>>()

  constructor(
    private readonly dispatcher: Dispatcher,
    private readonly basic: string | undefined,
    private readonly timeoutMs: number,
  ) {}

  cached(key: string, now = Date.now()): string | undefined {
    const e = this.tokens.get(key)
    if (e && e.expiresAt > now) return e.token
    if (e) this.tokens.delete(key)
    return undefined
  }

  drop(key: string): void {
    this.tokens.delete(key)
  }

  async get(req: TokenRequest, signal?: AbortSignal): Promise<string> {
    const key = tokenKey(req)
    const hit = this.cached(key)
    if (hit !== undefined) return hit
    let p = this.inflight.get(key)
    if (!p) {
      p = this.fetch(req, signal).finally(() => this.inflight.delete(key))
      this.inflight.set(key, p)
    }
    return p
  }

  private async fetch(req: TokenRequest, signal?: AbortSignal): Promise<string> {
    const url = new URL(req.realm)
    if (req.service) url.searchParams.set('service', req.service)
    if (req.scope) for (const s of req.scope.split(' ')) url.searchParams.append('scope', s)
    const headers: Record<string, string> = { accept: 'application/json' }
    if (this.basic) headers.authorization = `Basic ${this.basic}`
    const res = await request(url, {
      method: 'GET',
      headers,
      dispatcher: this.dispatcher,
      signal: signal ?? AbortSignal.timeout(this.timeoutMs),
    })
    if (res.statusCode !== 200) {
      await res.body.dump()
      throw new TokenError(res.statusCode, url.origin + url.pathname)
    }
    const body = (await res.body.json()) as { token?: string; access_token?: string; expires_in?: number; issued_at?: string }
    const token = body.token ?? body.access_token
    if (typeof token !== 'string' || token === '') throw new TokenError(res.statusCode, url.origin + url.pathname, 'no token in the response')
    const lifetime = (typeof body.expires_in === 'number' && body.expires_in > 0 ? body.expires_in : 60) * 1000
    const issued = body.issued_at ? Date.parse(body.issued_at) : NaN
    const start = Number.isFinite(issued) && Math.abs(issued - Date.now()) < 3_600_000 ? issued : Date.now()
    this.tokens.set(tokenKey(req), { token, expiresAt: start + lifetime - Math.min(SKEW_MS, lifetime / 4) })
    return token
  }
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
