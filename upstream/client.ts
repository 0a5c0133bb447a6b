// HTTP to one upstream registry: token auth, redirects, timeouts. Knows nothing of storage.
// Uses undici.request (not fetch, which decompresses) with Accept-Encoding: identity so the
// bytes hashed are the bytes upstream stored (docs/protocol.md#upstream-requests). Redirects are
// followed here, hop by hop, so each destination passes the upstream's DestinationGuard
// (docs/protocol.md#where-requests-and-credentials-go).

import { readFileSync } from 'node:fs'
import { Agent, request, type Dispatcher } from 'undici'
import type { Readable } from 'node:stream'
import type { UpstreamConfig } from '../config/config.js'
import { parseChallenges } from './challenge.js'
import { TokenCache, TokenError, requestToken, tokenKey, type TokenRequest } from './token-cache.js'
import { DestinationRefusedError, UpstreamUnreachableError, classifyTransportError, destinationRefusal } from './errors.js'
import { DestinationGuard } from './destination-guard.js'

/** Redirect hops followed for one request (a registry sends one, to its CDN). */
const MAX_REDIRECTS = 5
const REDIRECT_STATUSES: ReadonlySet<number> = new Set([301, 302, 303, 307, 308])
/** Request headers that stay with the origin they were meant for. */
const ORIGIN_BOUND_HEADERS = ['authorization', 'cookie', 'proxy-authorization']
/** Realms already reported as getting no credentials; a bound so a hostile upstream cannot grow it. */
const MAX_REPORTED_REALMS = 64

export interface WarnLog {
  warn(obj: Record<string, unknown>, msg: string): void
}

export interface UpstreamClientOptions {
  dispatcher?: Dispatcher
  log?: WarnLog
}

export interface UpstreamRequest {
  method: 'GET' | 'HEAD'
  /** Repository name as upstream knows it (after `library/` defaulting), or undefined for /v2/. */
  repository?: string
  /** Path after `/v2/<repository>/`, e.g. `manifests/latest`, with any query string. */
  path: string
  headers?: Record<string, string | undefined>
  signal?: AbortSignal
  /** A client's own identity instead of the configured one (upstreams with `credentials: client`). */
  credentials?: RequestCredentials
}

/** Another identity for one request: where its tokens come from and what it answers a Basic challenge with. */
export interface RequestCredentials {
  /** base64 `user:password` for a Basic challenge; undefined for an anonymous client. */
  readonly basic?: string
  /** A token this identity already holds for the scope, if any. */
  cachedToken(tr: TokenRequest): string | undefined
  /** A token from the token service, obtained with this identity; `rejected` is the one upstream just refused. */
  token(tr: TokenRequest, rejected: string | undefined, signal?: AbortSignal): Promise<string>
}

export interface UpstreamResponse {
  status: number
  headers: Record<string, string | string[] | undefined>
  body: Readable & { dump(): Promise<void> }
}

export interface RateLimit {
  limit?: string
  remaining?: string
  at: number
}

export class UpstreamClient {
  readonly name: string
  private readonly base: URL
  private readonly prefix: string
  private readonly dispatcher: Dispatcher
  private readonly tokens: TokenCache
  private readonly basic?: string
  /** Learnt from the first challenge, so later scopes can fetch a token before their first request. */
  private bearer?: { realm: string; service?: string }
  rateLimit?: RateLimit

  private readonly guard: DestinationGuard
  private readonly log?: WarnLog
  private readonly reportedRealms = new Set<string>()

  constructor(readonly config: UpstreamConfig, { dispatcher, log }: UpstreamClientOptions = {}) {
    this.name = config.name
    this.base = new URL(config.url)
    // A path in the upstream URL is a name prefix: http://mirror:5000/ghcr.io serves ghcr.io's
    // content at /v2/ghcr.io/<name>/, which is how one regcache chains to another.
    this.prefix = this.base.pathname.replace(/^\/+|\/+$/g, '')
    this.log = log
    this.guard = new DestinationGuard(config)
    this.dispatcher =
      dispatcher ??
      new Agent({
        connect: {
          timeout: config.timeouts.connectMs,
          ca: config.caFile ? readFileSync(config.caFile) : undefined,
          rejectUnauthorized: !config.insecureSkipVerify,
          // Every connection (redirect targets and token realms included) resolves through the
          // guard, so the address checked is the address connected to.
          lookup: this.guard.lookup,
        },
        headersTimeout: config.timeouts.headersMs,
        bodyTimeout: config.timeouts.bodyMs,
        keepAliveTimeout: 30_000,
        connections: 64,
      })
    this.basic =
      config.username !== undefined ? Buffer.from(`${config.username}:${config.password ?? ''}`).toString('base64') : undefined
    this.tokens = new TokenCache(this.dispatcher, (realm) => this.realmCredentials(realm), config.timeouts.headersMs)
  }

  /** Basic credentials for a token request to `realm`, when they may go there; throws when the realm may not be asked at all. */
  private realmCredentials(realm: URL, basic: string | undefined = this.basic): string | undefined {
    this.guard.checkUrl(realm, 'token realm')
    if (basic === undefined) return undefined
    const decision = this.guard.credentialsFor(realm)
    if (decision.send) return basic
    const origin = `${realm.protocol}//${realm.host}`
    if (!this.reportedRealms.has(origin) && this.reportedRealms.size < MAX_REPORTED_REALMS) {
      this.reportedRealms.add(origin)
      this.log?.warn({ upstream: this.name, realm: origin, reason: decision.reason }, 'token realm gets no credentials: asking it anonymously')
    }
    return undefined
  }

  /** Upstream URL of a request; tags/list and referrers need it to rewrite Link headers. */
  url(repository: string | undefined, path: string): URL {
    const name = repository === undefined ? '' : [this.prefix, repository].filter((s) => s !== '').join('/') + '/'
    return new URL(`/v2/${name}${path}`, this.base)
  }

  /**
   * Sends a request, answering a 401 challenge once (Bearer token or Basic). The caller must
   * consume or dump the returned body. Throws UpstreamUnreachableError when no response came.
   */
  async request(req: UpstreamRequest): Promise<UpstreamResponse> {
    const scope = req.repository !== undefined ? `repository:${[this.prefix, req.repository].filter((s) => s).join('/')}:pull` : undefined
    const creds = req.credentials
    let auth = creds !== undefined ? this.cachedClientAuthorization(creds, scope) : this.cachedAuthorization(scope)
    let res = await this.send(req, auth)
    if (res.status !== 401) return res
    const challenges = parseChallenges(res.headers['www-authenticate'])
    const bearer = challenges.find((c) => c.scheme === 'bearer')
    const basicChallenge = challenges.find((c) => c.scheme === 'basic')
    let retry: string | undefined
    try {
      if (bearer?.params.realm) {
        this.bearer = { realm: bearer.params.realm, service: bearer.params.service }
        const tr: TokenRequest = { realm: bearer.params.realm, service: bearer.params.service, scope: bearer.params.scope ?? scope }
        if (creds !== undefined) {
          retry = `Bearer ${await creds.token(tr, auth?.slice('Bearer '.length), req.signal)}`
        } else {
          if (auth !== undefined) this.tokens.drop(tokenKey(tr))
          retry = `Bearer ${await this.tokens.get(tr, req.signal)}`
        }
      } else if (basicChallenge && auth === undefined && (creds !== undefined ? creds.basic : this.basic)) {
        retry = `Basic ${creds !== undefined ? creds.basic : this.basic}`
      }
    } catch (err) {
      if (destinationRefusal(err)) {
        await res.body.dump().catch(() => {})
        throw destinationRefusal(err)
      }
      // The token service refusing us is an authorization answer (passed on); the token
      // service failing (5xx, 429) is an outage like any other.
      if (err instanceof TokenError && err.status > 0 && err.status < 500 && err.status !== 429) return res
      await res.body.dump().catch(() => {})
      throw new UpstreamUnreachableError(this.name, classifyTransportError(err), err)
    }
    if (retry === undefined) return res
    await res.body.dump().catch(() => {})
    auth = retry
    res = await this.send(req, auth)
    return res
  }

  /**
   * A token from this upstream's token service for `basic` (a client's own credentials), with its
   * lifetime. The realm passes the same guard as for the configured credentials.
   */
  fetchToken(tr: TokenRequest, basic: string | undefined): Promise<{ token: string; lifetimeMs: number }> {
    return requestToken(this.dispatcher, (realm) => this.realmCredentials(realm, basic), tr, this.config.timeouts.headersMs)
  }

  private cachedClientAuthorization(creds: RequestCredentials, scope: string | undefined): string | undefined {
    if (!this.bearer) return undefined
    const t = creds.cachedToken({ ...this.bearer, scope })
    return t !== undefined ? `Bearer ${t}` : undefined
  }

  private cachedAuthorization(scope: string | undefined): string | undefined {
    if (this.bearer) {
      const t = this.tokens.cached(tokenKey({ ...this.bearer, scope }))
      if (t !== undefined) return `Bearer ${t}`
    }
    return undefined
  }

  private async send(req: UpstreamRequest, authorization: string | undefined): Promise<UpstreamResponse> {
    const headers: Record<string, string> = { 'accept-encoding': 'identity', 'user-agent': 'regcache' }
    for (const [k, v] of Object.entries(req.headers ?? {})) if (v !== undefined) headers[k.toLowerCase()] = v
    if (authorization) headers.authorization = authorization
    let url = this.url(req.repository, req.path)
    let method: 'GET' | 'HEAD' = req.method
    for (let hop = 0; ; hop++) {
      let res: Dispatcher.ResponseData
      try {
        res = await request(url, { method, headers, dispatcher: this.dispatcher, signal: req.signal })
      } catch (err) {
        const refused = destinationRefusal(err)
        if (refused) throw refused
        throw new UpstreamUnreachableError(this.name, classifyTransportError(err), err)
      }
      if (hop === 0) this.noteRateLimit(res.headers)
      const location = res.headers.location
      if (!REDIRECT_STATUSES.has(res.statusCode) || typeof location !== 'string') {
        return { status: res.statusCode, headers: res.headers, body: res.body as UpstreamResponse['body'] }
      }
      await res.body.dump().catch(() => {})
      let next: URL
      try {
        next = new URL(location, url)
      } catch {
        throw new DestinationRefusedError(this.name, 'redirect', url, 'the Location header is not a URL')
      }
      if (hop >= MAX_REDIRECTS) throw new DestinationRefusedError(this.name, 'redirect', next, `more than ${MAX_REDIRECTS} redirects`)
      this.guard.checkUrl(next, 'redirect')
      if (next.origin !== url.origin) for (const h of ORIGIN_BOUND_HEADERS) delete headers[h]
      if (res.statusCode === 303 && method !== 'HEAD') method = 'GET'
      url = next
    }
  }

  private noteRateLimit(headers: Record<string, string | string[] | undefined>): void {
    const limit = headers['ratelimit-limit']
    const remaining = headers['ratelimit-remaining']
    if (limit !== undefined || remaining !== undefined) {
      this.rateLimit = { limit: String(limit ?? ''), remaining: String(remaining ?? ''), at: Date.now() }
    }
  }

  private destroyed = false

  async close(): Promise<void> {
    if (!this.destroyed) await this.dispatcher.close()
  }

  async destroy(): Promise<void> {
    this.destroyed = true
    await this.dispatcher.destroy()
  }
}
