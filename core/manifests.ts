// Manifests: by tag (revalidated upstream with one HEAD, decided by core/policy.ts) and by
// digest (immutable: from cache, fetched once on a miss). The only place where tag state,
// history and manifest content change.

import { createHash } from 'node:crypto'
import type { Logger } from 'pino'
import { MANIFEST_MEDIA_TYPES, acceptHeader, acceptKey, isSchema1 } from '../oci/media-types.js'
import { RegistryError, errorForUpstreamStatus } from './errors.js'
import { MAX_MANIFEST_BYTES, inspectManifest, ManifestError } from '../oci/manifest.js'
import { decideTag, outcomeOfStatus, shouldRevalidate, type TagAction, type UpstreamOutcome, type StaleReason } from './policy.js'
import { SingleFlight } from './single-flight.js'
import { ByteLru } from './byte-lru.js'
import type { Metrics } from './metrics.js'
import type { Upstream, Upstreams } from './upstreams.js'
import type { BlobStore } from '../storage/blob-store.js'
import type { Metadata, TagKey } from '../storage/metadata.js'
import { UpstreamUnreachableError } from '../upstream/errors.js'
import { headerValue } from '../upstream/headers.js'
import type { CacheOutcome, Target } from './target.js'
import { digestAlgorithm, isValidDigest } from '../oci/reference.js'

export interface ManifestResult {
  digest: string
  mediaType: string
  size: number
  body: Buffer
  outcome: CacheOutcome
  stale?: { ageMs: number; reason: StaleReason }
}

interface Resolution {
  digest: string
  outcome: CacheOutcome
  stale?: { ageMs: number; reason: StaleReason }
}

/** A manifest fetched by tag before its digest was known (upstream HEAD lacked the digest). */
interface Prefetched {
  bytes: Buffer
  contentType: string | undefined
}

/** Every manifest type, after the client's own: by digest the content is fixed, so a wide Accept is harmless. */
const ALL_MANIFEST_TYPES = [...MANIFEST_MEDIA_TYPES].join(', ')

export class Manifests {
  private readonly tagChecks = new SingleFlight<Resolution>()
  private readonly fetches = new SingleFlight<void>()
  private readonly memory = new ByteLru(64 * 1024 * 1024)

  private readonly upstreams: Upstreams
  private readonly meta: Metadata
  private readonly store: BlobStore
  private readonly metrics: Metrics
  private readonly log: Logger

  constructor(deps: { upstreams: Upstreams; meta: Metadata; store: BlobStore; metrics: Metrics; log: Logger }) {
    ;({ upstreams: this.upstreams, meta: this.meta, store: this.store, metrics: this.metrics, log: this.log } = deps)
  }

  async byTag(t: Target, tag: string, accept: string | string[] | undefined): Promise<ManifestResult> {
    const key: TagKey = { upstream: t.upstream.name, repository: t.repository, tag, acceptKey: acceptKey(accept) }
    const flight = this.tagChecks.run(`${key.upstream}\n${key.repository}\n${key.tag}\n${key.acceptKey}`, () => this.resolveTag(t, key, accept))
    if (flight.joined) this.metrics.coalesced.inc({ kind: 'tag' })
    const r = await flight.promise
    return this.serve(r.digest, flight.joined ? 'coalesced' : r.outcome, r.stale)
  }

  async byDigest(t: Target, digest: string, accept: string | string[] | undefined): Promise<ManifestResult> {
    const row = this.meta.getContent(digest)
    if (row?.mediaType && this.meta.isLinked(t.upstream.name, t.repository, digest)) {
      const hit = await this.serve(digest, 'hit').catch((err) => {
        if (err instanceof RegistryError && err.code === 'MANIFEST_UNKNOWN') return undefined
        throw err
      })
      if (hit) return hit
    }
    const joined = await this.fetchByDigest(t, digest, accept)
    return this.serve(digest, joined ? 'coalesced' : 'miss')
  }

  private async resolveTag(t: Target, key: TagKey, accept: string | string[] | undefined): Promise<Resolution> {
    const up = t.upstream
    const cfg = up.config
    const cached = this.meta.getTag(key)
    // While upstream is down, another client's entry for this tag may be all there is to serve.
    const servable = cached ?? (up.health.isDown ? this.compatibleEntry(key) : undefined)
    const plan = shouldRevalidate(servable, Date.now(), cfg.revalidate.minIntervalMs, up.health.isDown)
    if (plan === 'fresh' && cached && (await this.has(cached.digest))) return { digest: cached.digest, outcome: 'hit' }

    let outcome: UpstreamOutcome
    let prefetched: Prefetched | undefined
    if (plan === 'down') outcome = { kind: 'down' }
    else ({ outcome, prefetched } = await this.headTag(t, key.tag, accept))
    let action = this.decide(key, cached, outcome)
    this.metrics.revalidations.inc({ upstream: up.name, result: revalidationResult(outcome, action) })
    if (action.action === 'unavailable' && !cached) {
      // Nothing cached for this client's Accept set: during an outage, another client's entry
      // for the same tag will do if this client accepts its media type.
      const other = this.compatibleEntry(key)
      if (other) action = this.decide(key, other, outcome)
    }
    if (action.action === 'fetch') {
      try {
        await this.fetchByDigest(t, action.digest, accept, prefetched)
      } catch (err) {
        // The HEAD said the tag moved but the GET failed: upstream is failing, answer as for any outage.
        const failed = outcomeOfError(err)
        if (!failed) throw err
        action = this.decide(key, cached, failed)
      }
    }
    return this.apply(t, key, cached, action)
  }

  private compatibleEntry(key: TagKey): { digest: string; checkedAt: number } | undefined {
    const accepted = new Set(key.acceptKey.split(','))
    const any = key.acceptKey === 'none' || accepted.has('*/*')
    return this.meta
      .tagEntries(key.upstream, key.repository, key.tag)
      .find((e) => e.mediaType !== null && (any || accepted.has(e.mediaType.toLowerCase())))
  }

  private decide(key: TagKey, cached: { digest: string; checkedAt: number } | undefined, outcome: UpstreamOutcome): TagAction {
    const up = this.upstreams.get(key.upstream) as Upstream
    return decideTag({
      cached,
      outcome,
      heldBefore: outcome.kind === 'found' && this.meta.tagHeld(key, outcome.digest),
      now: Date.now(),
      config: { staleMaxAgeMs: up.config.stale.maxAgeMs, onNotFound: up.config.stale.onNotFound, onRollback: up.config.onRollback },
    })
  }

  /** Carries out a policy decision: tag state, history, metrics, and the digest to serve. */
  private async apply(t: Target, key: TagKey, cached: { digest: string; checkedAt: number } | undefined, action: TagAction): Promise<Resolution> {
    const log = this.log.child({ upstream: key.upstream, repository: key.repository, tag: key.tag })
    switch (action.action) {
      case 'serve-cached':
        if (action.reason === 'rollback-refused') {
          this.meta.observeDigest(key, action.refusedDigest as string)
          this.meta.addEvent(key, { type: 'rollback_refused', digest: action.refusedDigest, previousDigest: action.digest, coalesceSince: cached?.checkedAt })
          log.warn({ digest: action.digest, refused: action.refusedDigest }, 'tag moved back to an earlier digest; refused (onRollback: refuse)')
        } else {
          this.meta.confirmTag(key, action.digest)
        }
        if (!(await this.has(action.digest))) await this.fetchByDigest(t, action.digest, undefined)
        return { digest: action.digest, outcome: 'revalidated' }
      case 'fetch': {
        this.meta.setTag(key, action.digest)
        const type = action.change === 'first-seen' ? 'first_seen' : action.change
        this.meta.addEvent(key, { type, digest: action.digest, previousDigest: action.previousDigest })
        if (action.change !== 'first-seen') log.info({ digest: action.digest, previous: action.previousDigest, change: action.change }, 'tag moved')
        return { digest: action.digest, outcome: action.change === 'first-seen' ? 'miss' : 'changed' }
      }
      case 'serve-stale': {
        if (!(await this.has(action.digest))) {
          throw new RegistryError('UNAVAILABLE', `upstream ${key.upstream} unavailable (${action.reason}) and the cached manifest is gone`)
        }
        if (action.reason === 'not-found') {
          this.meta.addEvent(key, { type: 'upstream_not_found', digest: action.digest, detail: 'served from cache (onNotFound: serve)', coalesceSince: cached?.checkedAt })
        } else {
          this.meta.addEvent(key, {
            type: 'stale_served',
            digest: action.digest,
            detail: `${action.reason}; age ${Math.round(action.ageMs / 1000)}s`,
            coalesceSince: cached?.checkedAt,
          })
        }
        this.metrics.staleServes.inc({ upstream: key.upstream, reason: action.reason })
        log.warn({ digest: action.digest, reason: action.reason, ageSeconds: Math.round(action.ageMs / 1000) }, 'upstream unavailable; serving cached manifest')
        return { digest: action.digest, outcome: 'stale', stale: { ageMs: action.ageMs, reason: action.reason } }
      }
      case 'pass':
        if (action.status === 404) {
          if (cached) this.meta.addEvent(key, { type: 'upstream_not_found', digest: cached.digest, coalesceSince: cached.checkedAt })
          if (action.forget) this.meta.deleteTag(key.upstream, key.repository, key.tag)
        }
        throw errorForUpstreamStatus(action.status, 'MANIFEST_UNKNOWN', action.retryAfter)
      case 'unavailable': {
        const age = action.staleAgeMs !== undefined ? `; the cached manifest is ${Math.round(action.staleAgeMs / 1000)}s old, over stale.maxAge` : ''
        throw new RegistryError('UNAVAILABLE', `upstream ${key.upstream} unavailable (${action.reason})${age}`)
      }
    }
  }

  /** HEAD the tag upstream with the client's Accept, within revalidate.timeout. */
  private async headTag(t: Target, tag: string, accept: string | string[] | undefined): Promise<{ outcome: UpstreamOutcome; prefetched?: Prefetched }> {
    const signal = AbortSignal.timeout(t.upstream.config.revalidate.timeoutMs)
    const headers = { accept: acceptHeader(accept) }
    try {
      const res = await this.upstreams.call(t.upstream, { method: 'HEAD', repository: t.repository, path: `manifests/${tag}`, headers, signal })
      await res.body.dump().catch(() => {})
      const digest = headerValue(res.headers['docker-content-digest'])
      const outcome = outcomeOfStatus(res.status, digest && isValidDigest(digest) ? digest : undefined, headerValue(res.headers['retry-after']))
      if (outcome) return { outcome }
      // 200 without a digest: some registries omit it on HEAD. Fall back to GET and hash the bytes.
      const get = await this.upstreams.call(t.upstream, { method: 'GET', repository: t.repository, path: `manifests/${tag}`, headers, signal })
      if (get.status !== 200) {
        await get.body.dump().catch(() => {})
        return { outcome: outcomeOfStatus(get.status, undefined) ?? { kind: 'unexpected', status: get.status } }
      }
      const bytes = await readLimited(get.body, MAX_MANIFEST_BYTES)
      const contentType = headerValue(get.headers['content-type'])
      return { outcome: { kind: 'found', digest: `sha256:${createHash('sha256').update(bytes).digest('hex')}` }, prefetched: { bytes, contentType } }
    } catch (err) {
      const outcome = outcomeOfError(err)
      if (!outcome) throw err
      return { outcome }
    }
  }

  /** Fetches a manifest by digest once however many ask, verifies, stores and links it. Returns whether this call joined another. */
  private async fetchByDigest(t: Target, digest: string, accept: string | string[] | undefined, prefetched?: Prefetched): Promise<boolean> {
    const flight = this.fetches.run(`${t.upstream.name}\n${t.repository}\n${digest}`, () => this.fetchManifest(t, digest, accept, prefetched))
    if (flight.joined) this.metrics.coalesced.inc({ kind: 'manifest' })
    await flight.promise
    return flight.joined
  }

  private async fetchManifest(t: Target, digest: string, accept: string | string[] | undefined, prefetched?: Prefetched): Promise<void> {
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
        signal: AbortSignal.timeout(t.upstream.config.timeouts.bodyMs),
      })
      if (res.status !== 200) {
        await res.body.dump().catch(() => {})
        throw errorForUpstreamStatus(res.status, 'MANIFEST_UNKNOWN', headerValue(res.headers['retry-after']))
      }
      bytes = await readLimited(res.body, MAX_MANIFEST_BYTES)
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
    this.meta.putContent({ digest, size: bytes.length, mediaType: info.mediaType, references: info.references }, { upstream: t.upstream.name, repository: t.repository })
    this.remember(digest, bytes)
  }

  private async has(digest: string): Promise<boolean> {
    return this.memory.has(digest) || (this.meta.getContent(digest)?.mediaType != null && (await this.store.size(digest)) !== undefined)
  }

  private async serve(digest: string, outcome: CacheOutcome, stale?: Resolution['stale']): Promise<ManifestResult> {
    const row = this.meta.getContent(digest)
    let body = this.memory.get(digest)
    if (!body) {
      body = await this.store.read(digest)
      if (body) this.remember(digest, body)
    }
    if (!row?.mediaType || !body) throw new RegistryError('MANIFEST_UNKNOWN', `manifest ${digest} is not in the cache`)
    this.meta.touch(digest)
    return { digest, mediaType: row.mediaType, size: body.length, body, outcome, stale }
  }

  private remember(digest: string, bytes: Buffer): void {
    this.memory.set(digest, bytes)
  }

  /** Drops a manifest from memory (eviction, fsck). */
  forget(digest: string): void {
    this.memory.delete(digest)
  }
}

function revalidationResult(outcome: UpstreamOutcome, action: TagAction): string {
  if (outcome.kind === 'down') return 'skipped_down'
  if (action.action === 'serve-cached') return action.reason === 'unchanged' ? 'unchanged' : 'rollback'
  if (action.action === 'fetch') return action.change === 'first-seen' ? 'new' : action.change
  return outcome.kind === 'denied' || outcome.kind === 'not-found' ? outcome.kind.replace('-', '_') : 'error'
}

function outcomeOfError(err: unknown): UpstreamOutcome | undefined {
  if (err instanceof UpstreamUnreachableError) return { kind: 'unreachable', failure: err.failure }
  if (err instanceof RegistryError && (err.status >= 500 || err.code === 'UPSTREAM_ERROR')) return { kind: 'server-error', status: err.status }
  if (err instanceof RegistryError && err.status === 429) return { kind: 'rate-limited', retryAfter: err.headers['retry-after'] }
  return undefined
}


async function readLimited(body: AsyncIterable<unknown> & { destroy(): void }, limit: number): Promise<Buffer> {
  const chunks: Buffer[] = []
  let total = 0
  for await (const chunk of body) {
    total += (chunk as Buffer).length
    if (total > limit) {
      body.destroy()
      throw new RegistryError('MANIFEST_INVALID', `manifest larger than ${limit} bytes`)
    }
    chunks.push(chunk as Buffer)
  }
  return Buffer.concat(chunks)
}
