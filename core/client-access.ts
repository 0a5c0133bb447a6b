// For an upstream with `credentials: client`: before anything of a repository goes to a request,
// upstream must have accepted that request's own credentials for that repository recently
// (auth/client-credentials.ts keeps those answers). The request then works on a Target whose
// upstream client sends the same credentials, so a miss is fetched with the client's identity, and
// a 401/403 from upstream takes the remembered "yes" back at once.
//
// Asking upstream (a recheck) means: a new token from upstream's token service with the client's
// credentials (a token held from before would outlive a revocation), then `GET tags/list?n=1`
// with it, the cheapest request that needs pull access to the repository. 401/403 is a no;
// any other answer below 500 (200, or 404 for an empty repository) a yes.

import { LRUCache } from 'lru-cache'
import type { Logger } from 'pino'
import { basicAuthorization, type BasicCredentials } from '../auth/basic.js'
import { ANONYMOUS_KEY, ClientCredentials, type ClientKey, type RecheckOutcome } from '../auth/client-credentials.js'
import type { RequestCredentials, UpstreamClient, UpstreamRequest } from '../upstream/client.js'
import { UpstreamUnreachableError } from '../upstream/errors.js'
import { TokenError, abortable, tokenKey } from '../upstream/token-cache.js'
import { RegistryError } from './errors.js'
import type { Metrics } from './metrics.js'
import type { Target } from './target.js'
import type { Upstream, Upstreams } from './upstreams.js'

/** The problem with a request's credentials, for the caller's failure counter and log line. */
export class CredentialsRejectedError extends RegistryError {
  constructor() {
    super('UNAUTHORIZED', 'upstream refused these credentials', { headers: { 'www-authenticate': 'Basic realm="regcache"' } })
  }
}

export interface ClientAccessOptions {
  upstream: Upstream
  upstreams: Upstreams
  metrics: Metrics
  log: Logger
}

/**
 * How long the token service's refusal of a set of credentials is remembered: a wrong password is
 * answered 401 without asking upstream again (a corrected password is other credentials, with a
 * key of its own).
 */
const REJECTED_MS = 60_000
/** Longest a "no" for (credentials, repository) is remembered, so that a refused client does not cost upstream two requests per request. */
const DENIED_MAX_MS = 30_000

export class ClientAccess {
  readonly state: ClientCredentials
  private readonly up: Upstream
  private readonly upstreams: Upstreams
  private readonly metrics: Metrics
  private readonly log: Logger
  /** Credentials the token service refused lately (keys only). */
  private readonly rejected: LRUCache<ClientKey, true>
  /** Recent "no"s per (credentials, repository). */
  private readonly denied: LRUCache<string, true>
  /** Token requests in flight per (client, scope): one for all of a client's concurrent requests. */
  private readonly tokenFetches = new Map<string, Promise<string>>()

  constructor(opts: ClientAccessOptions) {
    this.up = opts.upstream
    this.upstreams = opts.upstreams
    this.metrics = opts.metrics
    this.log = opts.log.child({ upstream: opts.upstream.name })
    this.state = new ClientCredentials({ authorization: opts.upstream.config.authorization })
    this.rejected = new LRUCache({ max: 10_000, ttl: REJECTED_MS })
    this.denied = new LRUCache({ max: 10_000, ttl: Math.max(1, Math.min(DENIED_MAX_MS, opts.upstream.config.authorization.recheckMs)) })
  }

  /**
   * The target to serve this request with, once upstream's "yes" for these credentials and this
   * repository is recent enough; throws 401/403/503 otherwise, before any cached content is looked at.
   */
  async authorize(t: Target, credentials: BasicCredentials | undefined): Promise<Target> {
    const key = this.state.keyOf(credentials)
    const repository = t.repository
    const down = this.up.health.isDown
    const now = down ? this.state.accessOffline(key, repository) : this.state.access(key, repository)
    if (now.serve) return this.bind(t, now.public ? ANONYMOUS_KEY : key, now.public ? undefined : credentials)
    if (key !== ANONYMOUS_KEY && this.rejected.has(key)) throw new CredentialsRejectedError()
    if (!down && this.denied.has(`${key}\n${repository}`)) throw this.refusal(key)
    if (!down) {
      const outcome = await this.state.recheck(key, repository, () => this.ask(t, key, credentials))
      if (outcome === 'granted' || outcome === 'public') return this.bind(t, outcome === 'public' ? ANONYMOUS_KEY : key, outcome === 'public' ? undefined : credentials)
      if (outcome === 'denied') {
        if (key !== ANONYMOUS_KEY && this.rejected.has(key)) throw new CredentialsRejectedError()
        // These credentials may not, but anyone may: a public repository.
        if (key !== ANONYMOUS_KEY && (await this.isPublic(t))) return this.bind(t, ANONYMOUS_KEY, undefined)
        this.denied.set(`${key}\n${repository}`, true)
        throw this.refusal(key)
      }
    }
    // Upstream cannot be asked: only those it said yes to within `authorization.offline`.
    const offline = this.state.accessOffline(key, repository)
    if (offline.serve) return this.bind(t, offline.public ? ANONYMOUS_KEY : key, offline.public ? undefined : credentials)
    if (key === ANONYMOUS_KEY) throw new RegistryError('UNAUTHORIZED', 'authentication required', { headers: { 'www-authenticate': 'Basic realm="regcache"' } })
    throw new RegistryError('UNAVAILABLE', `upstream ${this.up.name} unavailable, and it has not accepted these credentials for this repository recently`)
  }

  /** Upstream said no: anonymous clients are asked for credentials, others refused. */
  private refusal(key: ClientKey): RegistryError {
    if (key === ANONYMOUS_KEY) return new RegistryError('UNAUTHORIZED', 'authentication required', { headers: { 'www-authenticate': 'Basic realm="regcache"' } })
    return new RegistryError('DENIED', 'upstream denied these credentials access to this repository')
  }

  private async isPublic(t: Target): Promise<boolean> {
    if (this.state.access(ANONYMOUS_KEY, t.repository).serve) return true
    const outcome = await this.state.recheck(ANONYMOUS_KEY, t.repository, () => this.ask(t, ANONYMOUS_KEY, undefined))
    return outcome === 'granted' || outcome === 'public'
  }

  /** One recheck: a fresh token with these credentials, then a request that needs pull access. */
  private async ask(t: Target, key: ClientKey, credentials: BasicCredentials | undefined): Promise<RecheckOutcome> {
    const outcome = await this.askUpstream(t, key, credentials)
    this.metrics.clientRechecks.inc({ upstream: this.up.name, outcome })
    return outcome
  }

  private async askUpstream(t: Target, key: ClientKey, credentials: BasicCredentials | undefined): Promise<RecheckOutcome> {
    const basic = credentials !== undefined ? basicAuthorization(credentials).slice('Basic '.length) : undefined
    const fresh: RequestCredentials = {
      basic,
      // Never a token held from before: it would outlive a revocation.
      cachedToken: () => undefined,
      token: async (tr, _rejected, signal) => {
        try {
          // The recheck's own deadline bounds the wait for a hanging token service.
          const fetched = this.up.client.fetchToken(tr, basic)
          const { token, lifetimeMs } = await (signal !== undefined ? abortable(fetched, signal) : fetched)
          this.state.saveToken(key, tokenKey(tr), token, lifetimeMs)
          return token
        } catch (err) {
          if (err instanceof TokenError && err.status === 401 && key !== ANONYMOUS_KEY) this.rejected.set(key, true)
          throw err
        }
      },
    }
    try {
      const res = await this.upstreams.call(this.up, {
        method: 'GET',
        repository: t.repository,
        path: 'tags/list?n=1',
        credentials: fresh,
        signal: AbortSignal.timeout(this.up.config.revalidate.timeoutMs),
      })
      await res.body.dump().catch(() => {})
      if (res.status === 401 || res.status === 403) return 'denied'
      this.denied.delete(`${key}\n${t.repository}`)
      if (res.status === 429 || res.status >= 500) return 'unreachable'
      if (key !== ANONYMOUS_KEY) this.rejected.delete(key)
      return 'granted'
    } catch (err) {
      if (err instanceof UpstreamUnreachableError || (err instanceof Error && err.name === 'TimeoutError')) return 'unreachable'
      this.log.warn({ err: { name: (err as Error).name, code: (err as { code?: unknown }).code } }, 'asking upstream about client credentials failed')
      return 'unreachable'
    }
  }

  /** The target with an upstream client speaking for these credentials (undefined: anonymously). */
  private bind(t: Target, key: ClientKey, credentials: BasicCredentials | undefined): Target {
    const identity = this.identity(key, credentials)
    const base = this.up.client
    const state = this.state
    const request = async (req: UpstreamRequest) => {
      const res = await base.request({ ...req, credentials: identity })
      // Upstream took its yes back: nothing more from the cache on the strength of it.
      if ((res.status === 401 || res.status === 403) && req.repository !== undefined) state.revoke(key, req.repository)
      return res
    }
    // Everything but request() is the shared client's (connection pool, URLs, rate limit).
    const client = Object.create(base, { request: { value: request } }) as UpstreamClient
    return { upstream: { ...this.up, client }, repository: t.repository }
  }

  /** Tokens for these credentials: kept in memory under the credentials' keyed hash, one request at a time per scope. */
  private identity(key: ClientKey, credentials: BasicCredentials | undefined): RequestCredentials {
    const basic = credentials !== undefined ? basicAuthorization(credentials).slice('Basic '.length) : undefined
    return {
      basic,
      cachedToken: (tr) => this.state.token(key, tokenKey(tr)),
      token: (tr, rejected, signal) => {
        const scope = tokenKey(tr)
        const held = this.state.token(key, scope)
        if (held !== undefined && held !== rejected) return Promise.resolve(held)
        if (held !== undefined) this.state.dropToken(key, scope)
        const id = `${key}\n${scope}`
        let p = this.tokenFetches.get(id)
        if (p === undefined) {
          p = this.up.client
            .fetchToken(tr, basic)
            .then(({ token, lifetimeMs }) => {
              this.state.saveToken(key, scope, token, lifetimeMs)
              return token
            })
            .finally(() => this.tokenFetches.delete(id))
          this.tokenFetches.set(id, p)
        }
        return signal !== undefined ? abortable(p, signal) : p
      },
    }
  }
}

