// Manifests: by tag (revalidated upstream with one HEAD, decided by core/policy.ts) and by
// digest (immutable: from cache, fetched once on a miss). The only place where tag state,
// history and manifest content change. Tag state is kept per normalised Accept set (clients of
// different kinds may be served different digests for one tag), but what counts as a change, a
// rollback or an outage is decided per tag, whoever asks (docs/behaviour.md).

import { createHash } from 'node:crypto'
import type { Logger } from 'pino'
import { MANIFEST_MEDIA_TYPES, acceptHeader, acceptKey, isSchema1, keyAccepts } from '../oci/media-types.js'
import { MAX_MANIFEST_BYTES, inspectManifest, ManifestError } from '../oci/manifest.js'
import { digestAlgorithm, isValidDigest } from '../oci/reference.js'
import type { ContentStore } from '../storage/content-store.js'
import type { Metadata, TagKey, TagRef } from '../storage/metadata.js'
import { UpstreamUnreachableError, classifyTransportError } from '../upstream/errors.js'
import { headerValue } from '../upstream/headers.js'
import type { UpstreamResponse } from '../upstream/client.js'
import { ByteBudget } from './byte-budget.js'
import { ByteLru } from './byte-lru.js'
import { RegistryError, errorForUpstreamStatus } from './errors.js'
import type { Metrics } from './metrics.js'
import { decideTag, outcomeOfStatus, shouldRevalidate, type CachedTag, type TagAction, type UpstreamOutcome, type StaleReason } from './policy.js'
import { SingleFlight } from './single-flight.js'
import type { CacheOutcome, Target } from './target.js'
import type { Upstream, Upstreams } from './upstreams.js'

export interface ManifestResult {
  digest: string
  mediaType: string
  size: number
  body: Buffer
  outcome: CacheOutcome
  stale?: { ageMs: number; reason: StaleReason }
  /** Upstream moved the tag to `next`, but `digest` (the previous one) is served until it is prefetched. */
  pending?: PendingSwitchState
}

export interface PendingSwitchState {
  next: string
}

interface Resolution {
  digest: string
  outcome: CacheOutcome
  stale?: { ageMs: number; reason: StaleReason }
  pending?: PendingSwitchState
}

/**
 * Consulted before a tag moves for a client (upstream answered, so the client is authorised):
 * true keeps serving `previous` for now (prefetch with switch: when-cached). `previousServable`
 * is asked only when it matters.
 */
export type PendingSwitch = (key: TagKey, previous: string, next: string, previousServable: () => Promise<boolean>) => Promise<boolean>

/** A manifest fetched by tag before its digest was known (upstream HEAD lacked the digest). */
interface Prefetched {
  bytes: Buffer
  contentType: string | undefined
}

/** Every manifest type, after the client's own: by digest the content is fixed, so a wide Accept is harmless. */
const ALL_MANIFEST_TYPES = [...MANIFEST_MEDIA_TYPES].join(', ')
/** Manifests kept in memory for serving. */
const MEMORY_CACHE_BYTES = 64 * 1024 * 1024
/** Manifest bytes being downloaded at once, over all requests. */
const IN_FLIGHT_BYTES = 64 * 1024 * 1024
/** A manifest GET made while something cached could be served instead waits at most this long. */
const STALE_BACKED_GET_MS = 10_000

export interface ManifestsOptions {
  upstreams: Upstreams
  meta: Metadata
  store: ContentStore
  metrics: Metrics
  log: Logger
  pendingSwitch?: PendingSwitch
}

export class Manifests {
  private readonly tagChecks = new SingleFlight<Resolution>()
  private readonly fetches = new SingleFlight<void>()
  private readonly memory = new ByteLru(MEMORY_CACHE_BYTES)
  private readonly inFlight = new ByteBudget(IN_FLIGHT_BYTES)
  private readonly upstreams: Upstreams
  private readonly meta: Metadata
  private readonly store: ContentStore
  private readonly metrics: Metrics
  private readonly log: Logger
  private readonly pendingSwitch: PendingSwitch

  constructor(deps: ManifestsOptions) {
    ;({ upstreams: this.upstreams, meta: this.meta, store: this.store, metrics: this.metrics, log: this.log } = deps)
    this.pendingSwitch = deps.pendingSwitch ?? (async () => false)
  }

  async byTag(t: Target, tag: string, accept: string | string[] | undefined): Promise<ManifestResult> {
    const key: TagKey = { upstream: t.upstream.name, repository: t.repository, tag, acceptKey: acceptKey(accept) }
    const flight = this.tagChecks.run(`${key.upstream}\n${key.repository}\n${key.tag}\n${key.acceptKey}`, () => this.resolveTag(t, key, accept))
    if (flight.joined) this.metrics.coalesced.inc({ kind: 'tag' })
    const r = await flight.promise
    const result = await this.serve(r.digest, flight.joined ? 'coalesced' : r.outcome, r.stale)
    return r.pending ? { ...result, pending: r.pending } : result
  }

  async byDigest(t: Target, digest: string, accept: string | string[] | undefined): Promise<ManifestResult> {
    if (await this.servable(t, digest)) {
      const hit = await this.serve(digest, 'hit').catch((err) => {
        if (err instanceof RegistryError && err.code === 'MANIFEST_UNKNOWN') return undefined
        throw err
      })
      if (hit) return hit
    }
    const joined = await this.fetchByDigest(t, digest, accept, t.upstream.config.timeouts.bodyMs)
    return this.serve(digest, joined ? 'coalesced' : 'miss')
  }

  private async resolveTag(t: Target, key: TagKey, accept: string | string[] | undefined): Promise<Resolution> {
    const up = t.upstream
    const cfg = up.config
    const cached = this.meta.getTag(key)
    // Another client kind's entry this client accepts: served during an outage when this one has
    // none, and the base a refused rollback keeps serving.
    const fallback = this.compatibleEntry(key)
    const servable = cached ?? (up.health.isDown ? fallback : undefined)
    const plan = shouldRevalidate(servable, Date.now(), cfg.revalidate.minIntervalMs, up.health.isDown)
    if (plan === 'fresh' && cached && (await this.servable(t, cached.digest))) return { digest: cached.digest, outcome: 'hit' }
    const getDeadlineMs = cached ?? fallback ? Math.min(cfg.timeouts.bodyMs, Math.max(cfg.revalidate.timeoutMs, STALE_BACKED_GET_MS)) : cfg.timeouts.bodyMs

    let outcome: UpstreamOutcome
    let prefetched: Prefetched | undefined
    if (plan === 'down') outcome = { kind: 'down' }
    else ({ outcome, prefetched } = await this.headTag(t, key.tag, accept, getDeadlineMs))
    let action = this.decide(key, cached, fallback, outcome)
    this.metrics.revalidations.inc({ upstream: up.name, result: revalidationResult(outcome, action) })
    if (action.action === 'unavailable' && !cached && fallback) {
      // Nothing cached for this client's Accept set: during an outage, another client's entry
      // for the same tag will do if this client accepts its media type.
      action = this.decide(key, fallback, undefined, outcome)
    }
    if (action.action === 'fetch' && action.change === 'changed' && cached) {
      const previous = cached.digest
      if (await this.pendingSwitch(key, previous, action.digest, () => this.servable(t, previous))) {
        return { digest: previous, outcome: 'revalidated', pending: { next: action.digest } }
      }
    }
    if (action.action === 'fetch' && !(await this.servable(t, action.digest))) {
      try {
        await this.fetchByDigest(t, action.digest, accept, getDeadlineMs, prefetched)
      } catch (err) {
        // The HEAD said the tag moved but the GET failed: upstream is failing, answer as for any outage.
        const failed = outcomeOfError(err)
        if (!failed) throw err
        action = this.decide(key, cached, fallback, failed)
        if (action.action === 'unavailable' && !cached && fallback) action = this.decide(key, fallback, undefined, failed)
      }
    }
    return this.apply(t, key, cached, action)
  }

  private compatibleEntry(key: TagKey): CachedTag | undefined {
    return this.meta
      .tagEntries(key.upstream, key.repository, key.tag)
      .find((e) => e.acceptKey !== key.acceptKey && e.mediaType !== null && keyAccepts(key.acceptKey, e.mediaType))
  }

  private decide(key: TagKey, cached: CachedTag | undefined, fallback: CachedTag | undefined, outcome: UpstreamOutcome): TagAction {
    const up = this.upstreams.get(key.upstream) as Upstream
    return decideTag({
      cached,
      fallback,
      outcome,
      standing: outcome.kind === 'found' ? this.meta.digestStanding(key, outcome.digest) : 'new',
      now: Date.now(),
      config: { staleMaxAgeMs: up.config.stale.maxAgeMs, onNotFound: up.config.stale.onNotFound, onRollback: up.config.onRollback },
    })
  }

  /** An outage starts after the tag's last successful check by anyone: its events are coalesced from then. */
  private outageStart(ref: TagRef, cached: CachedTag | undefined): number | undefined {
    return this.meta.tagLastChecked(ref) ?? cached?.checkedAt
  }

  /** Carries out a policy decision: tag state, history, metrics, and the digest to serve. */
  private async apply(t: Target, key: TagKey, cached: CachedTag | undefined, action: TagAction): Promise<Resolution> {
    const log = this.log.child({ upstream: key.upstream, repository: key.repository, tag: key.tag })
    switch (action.action) {
      case 'serve-cached':
        if (action.reason === 'rollback-refused') {
          this.meta.observeDigest(key, action.refusedDigest as string)
          this.meta.addEvent(key, { type: 'rollback_refused', digest: action.refusedDigest, previousDigest: action.digest, coalesceSince: this.outageStart(key, cached) })
          log.warn({ digest: action.digest, refused: action.refusedDigest }, 'tag moved back to an earlier digest; refused (onRollback: refuse)')
          if (!cached) this.meta.setTag(key, action.digest, this.meta.getContent(action.digest)?.mediaType ?? null)
        } else {
          this.meta.confirmTag(key, action.digest)
        }
        if (!(await this.servable(t, action.digest))) await this.fetchByDigest(t, action.digest, undefined, t.upstream.config.timeouts.bodyMs)
        return { digest: action.digest, outcome: 'revalidated' }
      case 'fetch': {
        this.meta.setTag(key, action.digest, this.meta.getContent(action.digest)?.mediaType ?? null)
        if (action.change !== 'same') {
          const type = action.change === 'first-seen' ? 'first_seen' : action.change
          this.meta.addEvent(key, { type, digest: action.digest, previousDigest: action.previousDigest })
        }
        if (action.change === 'changed' || action.change === 'rollback') {
          log.info({ digest: action.digest, previous: action.previousDigest, change: action.change }, 'tag moved')
        }
        const outcome: CacheOutcome = action.change === 'first-seen' ? 'miss' : action.change === 'same' ? 'revalidated' : 'changed'
        return { digest: action.digest, outcome }
      }
      case 'serve-stale': {
        if (!(await this.servable(t, action.digest))) {
          throw new RegistryError('UNAVAILABLE', `upstream ${key.upstream} unavailable (${action.reason}) and the cached manifest is gone`)
        }
        const coalesceSince = this.outageStart(key, cached)
        if (action.reason === 'not-found') {
          this.meta.addEvent(key, { type: 'upstream_not_found', digest: action.digest, detail: 'served from cache (onNotFound: serve)', coalesceSince })
        } else {
          this.meta.addEvent(key, { type: 'stale_served', digest: action.digest, detail: `${action.reason}; age ${Math.round(action.ageMs / 1000)}s`, coalesceSince })
        }
        this.metrics.staleServes.inc({ upstream: key.upstream, reason: action.reason })
        log.warn({ digest: action.digest, reason: action.reason, ageSeconds: Math.round(action.ageMs / 1000) }, 'upstream unavailable; serving cached manifest')
        return { digest: action.digest, outcome: 'stale', stale: { ageMs: action.ageMs, reason: action.reason } }
      }
      case 'pass':
        if (action.status === 404) {
          if (cached) this.meta.addEvent(key, { type: 'upstream_not_found', digest: cached.digest, coalesceSince: this.outageStart(key, cached) })
          // Only this client kind's entry: a 404 for one Accept set says nothing about the others.
          if (action.forget) this.meta.deleteTagEntry(key)
        }
        throw errorForUpstreamStatus(action.status, 'MANIFEST_UNKNOWN', action.retryAfter)
      case 'refuse':
        this.meta.observeDigest(key, action.refusedDigest)
        this.meta.addEvent(key, { type: 'rollback_refused', digest: action.refusedDigest, coalesceSince: this.outageStart(key, cached) })
        log.warn({ refused: action.refusedDigest }, 'tag moved back to an earlier digest; refused (onRollback: refuse), and nothing else cached fits this client')
        throw new RegistryError('UNAVAILABLE', `tag ${key.tag} moved back to an earlier digest upstream; refused (onRollback: refuse)`)
      case 'unavailable': {
        const age = action.staleAgeMs !== undefined ? `; the cached manifest is ${Math.round(action.staleAgeMs / 1000)}s old, over stale.maxAge` : ''
        throw new RegistryError('UNAVAILABLE', `upstream ${key.upstream} unavailable (${action.reason})${age}`)
      }
    }
  }

  /** HEAD the tag upstream with the client's Accept, within revalidate.timeout. */
  private async headTag(t: Target, tag: string, accept: string | string[] | undefined, getDeadlineMs: number): Promise<{ outcome: UpstreamOutcome; prefetched?: Prefetched }> {
    const headers = { accept: acceptHeader(accept) }
    try {
      const res = await this.upstreams.call(t.upstream, {
        method: 'HEAD',
        repository: t.repository,
        path: `manifests/${tag}`,
        headers,
        signal: AbortSignal.timeout(t.upstream.config.revalidate.timeoutMs),
      })
      await res.body.dump().catch(() => {})
      const digest = headerValue(res.headers['docker-content-digest'])
      const outcome = outcomeOfStatus(res.status, digest && isValidDigest(digest) ? digest : undefined, headerValue(res.headers['retry-after']))
      if (outcome) return { outcome }
      // 200 without a digest: some registries omit it on HEAD. Fall back to GET and hash the bytes.
      const get = await this.upstreams.call(t.upstream, {
        method: 'GET',
        repository: t.repository,
        path: `manifests/${tag}`,
        headers,
        signal: AbortSignal.timeout(getDeadlineMs),
      })
      if (get.status !== 200) {
        await get.body.dump().catch(() => {})
        return { outcome: outcomeOfStatus(get.status, undefined) ?? { kind: 'unexpected', status: get.status } }
      }
      const bytes = await this.readBody(t.upstream, get)
      const contentType = headerValue(get.headers['content-type'])
      return { outcome: { kind: 'found', digest: `sha256:${createHash('sha256').update(bytes).digest('hex')}` }, prefetched: { bytes, contentType } }
    } catch (err) {
      const outcome = outcomeOfError(err)
      if (!outcome) throw err
      return { outcome }
    }
  }

  /** Fetches a manifest by digest once however many ask, verifies, stores and links it. Returns whether this call joined another. */
  private async fetchByDigest(t: Target, digest: string, accept: string | string[] | undefined, deadlineMs: number, prefetched?: Prefetched): Promise<boolean> {
    const flight = this.fetches.run(`${t.upstream.name}\n${t.repository}\n${digest}`, () => this.fetchManifest(t, digest, accept, deadlineMs, prefetched))
    if (flight.joined) this.metrics.coalesced.inc({ kind: 'manifest' })
    await flight.promise
    return flight.joined
  }

  private async fetchManifest(t: Target, digest: string, accept: string | string[] | undefined, deadlineMs: number, prefetched?: Prefetched): Promise<void> {
    let bytes: Buffer
    let contentType: string | undefined
    if (prefetched) {
      ;({ bytes, contentType } = prefetched)
    } else {
      const clientAccept = acceptHeader(accept)
      const res = await this.upstreams.call(t.upstream, {
        method: 'GET',
        repository: t.repository,
        path: `manifests/${digest}`,
        headers: { accept: clientAccept ? `${clientAccept}, ${ALL_MANIFEST_TYPES}` : ALL_MANIFEST_TYPES },
        signal: AbortSignal.timeout(deadlineMs),
      })
      if (res.status !== 200) {
        await res.body.dump().catch(() => {})
        throw errorForUpstreamStatus(res.status, 'MANIFEST_UNKNOWN', headerValue(res.headers['retry-after']))
      }
      bytes = await this.readBody(t.upstream, res)
      contentType = headerValue(res.headers['content-type'])
    }
    let info
    try {
      info = inspectManifest(bytes, contentType)
    } catch (err) {
      if (err instanceof ManifestError) throw new RegistryError('UPSTREAM_ERROR', `upstream sent an invalid manifest for ${digest}: ${err.message}`)
      throw err
    }
    if (isSchema1(info.mediaType)) {
      throw new RegistryError('MANIFEST_INVALID', 'Docker schema1 manifests are not supported (their digest does not cover their bytes)', { status: 415 })
    }
    const actual = `${digestAlgorithm(digest)}:${createHash(digestAlgorithm(digest)).update(bytes).digest('hex')}`
    if (actual !== digest) {
      this.log.error({ upstream: t.upstream.name, repository: t.repository, expected: digest, actual }, 'upstream manifest does not match its digest; not cached')
      throw new RegistryError('UPSTREAM_ERROR', `upstream sent a manifest hashing to ${actual}, expected ${digest}`)
    }
    await this.store.put(digest, bytes)
    // Linked to this repository only: the digests it references are proof of nothing.
    this.meta.putContent({ digest, size: bytes.length, mediaType: info.mediaType }, { upstream: t.upstream.name, repository: t.repository })
    this.memory.set(digest, bytes)
  }

  /**
   * Reads a manifest body within the size limit and the in-flight memory budget. A body that
   * stalls or breaks is an upstream failure like a refused connection (stale or 503, counted
   * toward marking the upstream down), never an internal error.
   */
  private async readBody(up: Upstream, res: UpstreamResponse): Promise<Buffer> {
    const chunks: Buffer[] = []
    let total = 0
    try {
      for await (const chunk of res.body) {
        const buf = chunk as Buffer
        total += buf.length
        if (total > MAX_MANIFEST_BYTES) throw new RegistryError('MANIFEST_INVALID', `manifest larger than ${MAX_MANIFEST_BYTES} bytes`)
        if (!this.inFlight.take(buf.length)) {
          total -= buf.length
          throw new RegistryError('UNAVAILABLE', 'too many manifests are being downloaded at once; try again shortly', { headers: { 'retry-after': '5' } })
        }
        chunks.push(buf)
      }
      return Buffer.concat(chunks)
    } catch (err) {
      res.body.destroy()
      if (err instanceof RegistryError) throw err
      const failure = classifyTransportError(err)
      this.upstreams.bodyFailed(up, failure)
      throw new UpstreamUnreachableError(up.name, failure, err)
    } finally {
      this.inFlight.give(total)
    }
  }

  /** Stored (in memory or in the store) and confirmed by upstream for this repository. */
  private async servable(t: Target, digest: string): Promise<boolean> {
    if (!this.meta.isLinked(t.upstream.name, t.repository, digest)) return false
    return this.memory.has(digest) || (this.meta.getContent(digest)?.mediaType != null && (await this.store.size(digest)) !== undefined)
  }

  private async serve(digest: string, outcome: CacheOutcome, stale?: Resolution['stale']): Promise<ManifestResult> {
    const row = this.meta.getContent(digest)
    let body = this.memory.get(digest)
    if (!body) {
      body = await this.store.read(digest)
      // A stored manifest whose size is not the recorded one is damaged: never served.
      if (body && row && body.length !== row.size) {
        this.log.error({ digest, size: body.length, recorded: row.size }, 'stored manifest is damaged (size differs); dropped, fetched again next time')
        await this.drop(digest)
        body = undefined
      }
      if (body) this.memory.set(digest, body)
    }
    if (!row?.mediaType || !body) throw new RegistryError('MANIFEST_UNKNOWN', `manifest ${digest} is not in the cache`)
    this.meta.touch(digest)
    return { digest, mediaType: row.mediaType, size: body.length, body, outcome, stale }
  }

  private async drop(digest: string): Promise<void> {
    this.memory.delete(digest)
    this.meta.deleteContent(digest)
    await this.store.remove(digest)
  }

  /** Drops a manifest from memory (eviction, scrub). */
  forget(digest: string): void {
    this.memory.delete(digest)
  }
}

function revalidationResult(outcome: UpstreamOutcome, action: TagAction): string {
  if (outcome.kind === 'down') return 'skipped_down'
  if (action.action === 'serve-cached') return action.reason === 'unchanged' ? 'unchanged' : 'rollback'
  if (action.action === 'refuse') return 'rollback'
  if (action.action === 'fetch') return action.change === 'first-seen' || action.change === 'same' ? 'new' : action.change
  return outcome.kind === 'denied' || outcome.kind === 'not-found' ? outcome.kind.replace('-', '_') : 'error'
}

function outcomeOfError(err: unknown): UpstreamOutcome | undefined {
  if (err instanceof UpstreamUnreachableError) return { kind: 'unreachable', failure: err.failure }
  if (err instanceof RegistryError && (err.status >= 500 || err.code === 'UPSTREAM_ERROR')) return { kind: 'server-error', status: err.status }
  if (err instanceof RegistryError && err.status === 429) return { kind: 'rate-limited', retryAfter: err.headers['retry-after'] }
  return undefined
}
