// For upstreams with `credentials: client`: what regcache remembers about each client's
// credentials, in memory only, under an HMAC of the credentials (random key per process, so the
// map holds no password and nothing that outlives the process):
//   - upstream bearer tokens obtained with those credentials, per scope;
//   - upstream's answers "these credentials may pull repository R" with the time they were given.
// Cached content goes to a request only while such a "yes" is recent enough: within `recheck`
// normally, within `offline` while upstream cannot be reached. A repository upstream serves to
// anonymous requests is public: its "yes" is shared by everyone.
//
// The decisions are pure functions (mayServe, mayServeOffline) over what is stored; this class
// only stores, bounds, coalesces and revokes.

import { createHmac, createSecretKey, randomBytes } from 'node:crypto'
import { LRUCache } from 'lru-cache'
import type { BasicCredentials } from './basic.js'
import type { AuthorizationWindows } from './config.js'

/** When upstream last said yes; absent when it never did or took it back. */
export type AcceptedAt = number | undefined

/** Upstream's yes is recent enough to serve cached content without asking again. */
export function mayServe(acceptedAt: AcceptedAt, now: number, w: AuthorizationWindows): boolean {
  // A "yes" from the future (clock set back) is not trusted: asking again is always safe.
  return acceptedAt !== undefined && acceptedAt <= now && now - acceptedAt < w.recheckMs
}

/** Upstream cannot be reached: may cached content still go to these credentials? */
export function mayServeOffline(acceptedAt: AcceptedAt, now: number, w: AuthorizationWindows): boolean {
  return acceptedAt !== undefined && acceptedAt <= now && now - acceptedAt < w.offlineMs
}

/** What asking upstream (a fresh token for these credentials, then a request with it) found. */
export type RecheckOutcome =
  /** Upstream let these credentials read the repository. */
  | 'granted'
  /** Upstream let an anonymous request read it: public, for everyone. */
  | 'public'
  /** Upstream refused (401/403, or a token without pull access). */
  | 'denied'
  /** No answer (refused connection, timeout, 5xx): nothing learnt, nothing forgotten. */
  | 'unreachable'

export type Access =
  /** Serve from cache now. `public`: on the strength of the shared public "yes". */
  | { readonly serve: true; readonly public: boolean }
  | { readonly serve: false }

export interface ClientCredentialsOptions {
  readonly authorization: AuthorizationWindows
  /** Distinct credentials remembered; the least recently used are forgotten first. */
  readonly maxClients?: number
  readonly maxRepositoriesPerClient?: number
  readonly maxTokensPerClient?: number
  readonly maxPublicRepositories?: number
  readonly now?: () => number
}

export const DEFAULT_CLIENT_LIMITS = Object.freeze({ maxClients: 10_000, maxRepositoriesPerClient: 1_000, maxTokensPerClient: 100, maxPublicRepositories: 10_000 })

/** An opaque handle for one set of client credentials (or for anonymous requests). */
export type ClientKey = string & { readonly __clientKey: unique symbol }

export const ANONYMOUS_KEY = 'anonymous' as ClientKey

interface Token {
  readonly token: string
  readonly expiresAt: number
}

interface ClientEntry {
  readonly repositories: LRUCache<string, number>
  readonly tokens: LRUCache<string, Token>
}

interface Pending {
  readonly promise: Promise<RecheckOutcome>
}

export class ClientCredentials {
  // A KeyObject made once: handing createHmac raw bytes imports the key again on every request.
  private readonly key = createSecretKey(randomBytes(32))
  private readonly clients: LRUCache<ClientKey, ClientEntry>
  private readonly publicRepositories: LRUCache<string, number>
  private readonly pending = new Map<string, Pending>()
  /** Bumped by each revocation, so a recheck that started before one cannot undo it. */
  private readonly generations = new Map<string, number>()
  private readonly windows: AuthorizationWindows
  private readonly limits: { maxClients: number; maxRepositoriesPerClient: number; maxTokensPerClient: number; maxPublicRepositories: number }
  private readonly now: () => number

  constructor(opts: ClientCredentialsOptions) {
    this.windows = opts.authorization
    this.now = opts.now ?? Date.now
    this.limits = {
      maxClients: opts.maxClients ?? DEFAULT_CLIENT_LIMITS.maxClients,
      maxRepositoriesPerClient: opts.maxRepositoriesPerClient ?? DEFAULT_CLIENT_LIMITS.maxRepositoriesPerClient,
      maxTokensPerClient: opts.maxTokensPerClient ?? DEFAULT_CLIENT_LIMITS.maxTokensPerClient,
      maxPublicRepositories: opts.maxPublicRepositories ?? DEFAULT_CLIENT_LIMITS.maxPublicRepositories,
    }
    this.clients = new LRUCache({ max: this.limits.maxClients })
    this.publicRepositories = new LRUCache({ max: this.limits.maxPublicRepositories })
  }

  /** The key for these credentials; undefined credentials are the anonymous client. */
  keyOf(credentials: BasicCredentials | undefined): ClientKey {
    if (credentials === undefined) return ANONYMOUS_KEY
    // The username cannot contain ':' (RFC 7617), the separator keeps ("a","b:c") and ("a:b","c") apart anyway.
    const mac = createHmac('sha256', this.key).update(credentials.username).update('\0').update(credentials.password).digest('base64url')
    return `c:${mac}` as ClientKey
  }

  /** May cached content of `repository` go to this client now, without asking upstream? */
  access(client: ClientKey, repository: string): Access {
    const now = this.now()
    if (client !== ANONYMOUS_KEY && mayServe(this.clients.get(client)?.repositories.get(repository), now, this.windows)) return { serve: true, public: false }
    if (mayServe(this.publicRepositories.get(repository), now, this.windows)) return { serve: true, public: true }
    return { serve: false }
  }

  /** Upstream is unreachable: may cached content of `repository` go to this client? */
  accessOffline(client: ClientKey, repository: string): Access {
    const now = this.now()
    if (client !== ANONYMOUS_KEY && mayServeOffline(this.clients.get(client)?.repositories.get(repository), now, this.windows)) return { serve: true, public: false }
    if (mayServeOffline(this.publicRepositories.get(repository), now, this.windows)) return { serve: true, public: true }
    return { serve: false }
  }

  /**
   * Asks upstream again whether `client` may read `repository`, once for all concurrent callers
   * with the same (client, repository). `ask` must get a fresh token from upstream's token service
   * with the client's credentials (a token obtained before outlives a revocation) and must run on
   * its own deadline: it is shared, so no one caller's cancellation may abort it.
   */
  recheck(client: ClientKey, repository: string, ask: () => Promise<RecheckOutcome>): Promise<RecheckOutcome> {
    const id = pairKey(client, repository)
    const running = this.pending.get(id)
    if (running !== undefined) return running.promise
    const startedAt = this.now()
    const generation = this.generations.get(id) ?? 0
    const promise = Promise.resolve()
      .then(ask)
      .then((outcome) => {
        this.record(client, repository, outcome, startedAt, generation)
        return outcome
      })
      .finally(() => this.pending.delete(id))
    this.pending.set(id, { promise })
    return promise
  }

  /** Upstream answered 401/403 for this client and repository: forget its "yes" at once. */
  revoke(client: ClientKey, repository: string): void {
    const id = pairKey(client, repository)
    this.generations.set(id, (this.generations.get(id) ?? 0) + 1)
    this.boundGenerations()
    if (client === ANONYMOUS_KEY) this.publicRepositories.delete(repository)
    else this.clients.get(client)?.repositories.delete(repository)
  }

  /** A bearer token obtained with this client's credentials, while it has more than `skewMs` left. */
  token(client: ClientKey, scope: string, skewMs = 10_000): string | undefined {
    const t = this.clients.get(client)?.tokens.get(scope)
    if (t === undefined) return undefined
    if (t.expiresAt - skewMs <= this.now()) {
      this.clients.get(client)?.tokens.delete(scope)
      return undefined
    }
    return t.token
  }

  saveToken(client: ClientKey, scope: string, token: string, expiresInMs: number): void {
    this.entry(client).tokens.set(scope, { token, expiresAt: this.now() + expiresInMs })
  }

  dropToken(client: ClientKey, scope: string): void {
    this.clients.get(client)?.tokens.delete(scope)
  }

  /** Counts for the status page and tests; nothing that identifies a client. */
  stats(): { clients: number; publicRepositories: number; pendingRechecks: number } {
    return { clients: this.clients.size, publicRepositories: this.publicRepositories.size, pendingRechecks: this.pending.size }
  }

  private record(client: ClientKey, repository: string, outcome: RecheckOutcome, startedAt: number, generation: number): void {
    const id = pairKey(client, repository)
    switch (outcome) {
      case 'granted':
      case 'public':
        // Revoked while upstream was being asked: the older answer must not undo the newer one.
        if ((this.generations.get(id) ?? 0) !== generation) return
        // The time upstream was asked, not answered: the "yes" is no younger than the question.
        // A yes to an anonymous request is a yes to everyone.
        if (outcome === 'public' || client === ANONYMOUS_KEY) this.publicRepositories.set(repository, startedAt)
        else this.entry(client).repositories.set(repository, startedAt)
        return
      case 'denied':
        // For the anonymous client this also ends the repository's public status.
        this.revoke(client, repository)
        return
      case 'unreachable':
        return
    }
  }

  private entry(client: ClientKey): ClientEntry {
    let e = this.clients.get(client)
    if (e === undefined) {
      e = {
        repositories: new LRUCache({ max: this.limits.maxRepositoriesPerClient }),
        tokens: new LRUCache({ max: this.limits.maxTokensPerClient }),
      }
      this.clients.set(client, e)
    }
    return e
  }

  /** Generation counters only matter while a recheck is running; keep them from growing without end. */
  private boundGenerations(): void {
    if (this.generations.size <= 4 * this.limits.maxClients) return
    for (const id of this.generations.keys()) if (!this.pending.has(id)) this.generations.delete(id)
  }
}

function pairKey(client: ClientKey, repository: string): string {
  return `${client}\n${repository}`
}
