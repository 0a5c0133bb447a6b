// Prefetch: the tags listed in `prefetch` are revalidated on a timer the way a client would
// (Manifests.byTag with containerd's Accept) and, when upstream names an image that is not fully
// stored, the image is fetched for the listed platforms in the background (manifests by digest,
// then config and layers through the ordinary verified fill), so the first node that pulls after
// a move finds everything cached.
//
// With `switch: when-cached`, Manifests asks holdSwitch() before it moves such a tag for a client:
// clients keep the previous digest until the new image is stored or maxLag has passed
// (core/switch-policy.ts decides). History records `prefetched` and `switched`.
//
// A prefetch never starves clients: it downloads at most two blobs at a time, and one while any
// client download is running.

import type { Logger } from 'pino'
import type { PrefetchConfig } from '../config/config.js'
import { CONTAINERD_ACCEPT, acceptKey, isIndexType } from '../oci/media-types.js'
import { isValidDigest, isValidTag } from '../oci/reference.js'
import type { Metadata, TagKey, TagRef } from '../storage/metadata.js'
import { headerValue } from '../upstream/headers.js'
import type { Blobs } from './blobs.js'
import { RegistryError, errorForUpstreamStatus } from './errors.js'
import type { Manifests, ManifestResult } from './manifests.js'
import type { Metrics } from './metrics.js'
import { decideSwitch, type PendingMove } from './switch-policy.js'
import type { Target } from './target.js'
import type { Upstream, Upstreams } from './upstreams.js'

/** Blobs downloaded at once by prefetch while no client download runs (one while one does). */
const BLOB_CONCURRENCY = 2
/** How often a waiting prefetch worker looks again whether clients are still downloading. */
const YIELD_POLL_MS = 250
/** Tags of one repository a `tags` pattern may select; the rest are left out (and logged). */
const MAX_TAGS_PER_ENTRY = 100
/** A tags/list body larger than this is not read. */
const MAX_TAG_LIST_BYTES = 4 * 1024 * 1024
const ACCEPT_KEY = acceptKey(CONTAINERD_ACCEPT)

export type PrefetchTagState = 'waiting' | 'checking' | 'fetching' | 'pending' | 'ready' | 'failed'

export interface PrefetchTagStatus {
  tag: string
  state: PrefetchTagState
  /** The digest upstream named at the last check. */
  digest?: string
  /** switch: when-cached: the digest clients are served while `digest` is fetched, and since when. */
  serving?: string
  pendingSince?: number
  lastCheckAt?: number
  lastError?: string
  /** Blob bytes downloaded by the last prefetch of this tag. */
  lastBytes?: number
}

export interface PrefetchEntryStatus {
  image: string
  platforms: readonly string[]
  every: string
  switch: PrefetchConfig['switch']
  maxLag: string
  tags: PrefetchTagStatus[]
}

interface Move extends PendingMove {
  previous: string
  next: string
}

interface Descriptor {
  digest: string
  size: number
}

export interface PrefetcherOptions {
  entries: readonly PrefetchConfig[]
  upstreams: Upstreams
  manifests: Manifests
  blobs: Blobs
  meta: Metadata
  metrics: Metrics
  log: Logger
}

export class Prefetcher {
  private readonly entries: readonly PrefetchConfig[]
  private readonly upstreams: Upstreams
  private readonly manifests: Manifests
  private readonly blobs: Blobs
  private readonly meta: Metadata
  private readonly metrics: Metrics
  private readonly log: Logger
  private readonly timers = new Set<NodeJS.Timeout>()
  /** Per listed tag (upstream\nrepository\ntag): the latest move seen for switch: when-cached. */
  private readonly moves = new Map<string, Move>()
  /** Per listed tag: the check in progress, so a client's request and the timer share one. */
  private readonly checks = new Map<string, Promise<void>>()
  private readonly tagStatus = new Map<PrefetchConfig, Map<string, PrefetchTagStatus>>()
  /** Blob downloads prefetch has running now (to tell them from clients'). */
  private ownFills = 0
  private stopped = false

  constructor(deps: PrefetcherOptions) {
    ;({ entries: this.entries, upstreams: this.upstreams, manifests: this.manifests, blobs: this.blobs, meta: this.meta, metrics: this.metrics, log: this.log } = deps)
    for (const e of this.entries) {
      const tags = new Map<string, PrefetchTagStatus>()
      if (e.tag !== undefined) tags.set(e.tag, { tag: e.tag, state: 'waiting' })
      this.tagStatus.set(e, tags)
    }
  }

  start(): void {
    for (const entry of this.entries) this.schedule(entry, 0)
  }

  stop(): void {
    this.stopped = true
    for (const t of this.timers) clearTimeout(t)
    this.timers.clear()
  }

  status(): PrefetchEntryStatus[] {
    return this.entries.map((e) => ({
      image: e.image,
      platforms: e.platforms,
      every: formatDuration(e.everyMs),
      switch: e.switch,
      maxLag: formatDuration(e.maxLagMs),
      tags: [...(this.tagStatus.get(e)?.values() ?? [])].map((s) => ({ ...s })),
    }))
  }

  /**
   * Manifests asks this before moving a tag from `previous` to `next` for a client. True: keep
   * serving `previous` (the new image is being prefetched); the first sight of a move starts
   * its prefetch at once.
   */
  async holdSwitch(key: TagKey, previous: string, next: string, previousServable: () => Promise<boolean>): Promise<boolean> {
    const entry = this.entryFor(key)
    if (entry?.switch !== 'when-cached') return false
    const k = refKey(key)
    const known = this.moves.get(k)
    const move = known?.next === next ? known : undefined
    const now = Date.now()
    const decision = decideSwitch({ policy: entry.switch, move, previousServable: await previousServable(), maxLagMs: entry.maxLagMs, now })
    if (decision.action === 'hold') {
      if (!move) {
        this.moves.set(k, { previous, next, since: now, stored: false, switched: false })
        this.updatePendingGauge()
        this.log.info({ upstream: key.upstream, repository: key.repository, tag: key.tag, serving: previous, next }, 'tag moved upstream; serving the previous digest until the new image is prefetched')
        this.setStatus(entry, key.tag, { state: 'pending', digest: next, serving: previous, pendingSince: now })
        void this.check(entry, key.tag)
      }
      return true
    }
    if (move && !move.switched) {
      move.switched = true
      this.updatePendingGauge()
      const servedMs = now - move.since
      const why = decision.reason === 'stored' ? 'the new image is stored' : decision.reason === 'max-lag' ? `maxLag (${formatDuration(entry.maxLagMs)}) reached` : 'the previous digest is gone'
      this.meta.addEvent(key, { type: 'switched', digest: next, previousDigest: move.previous, detail: `previous digest served ${formatSeconds(servedMs)} after upstream moved; ${why}` })
      this.log.info({ upstream: key.upstream, repository: key.repository, tag: key.tag, digest: next, previous: move.previous, servedMs, reason: decision.reason }, 'tag switched to the new digest')
      this.setStatus(entry, key.tag, { serving: undefined, pendingSince: undefined })
    }
    return false
  }

  private schedule(entry: PrefetchConfig, delayMs: number): void {
    if (this.stopped) return
    const timer = setTimeout(() => {
      this.timers.delete(timer)
      void this.tick(entry).finally(() => this.schedule(entry, entry.everyMs))
    }, delayMs)
    timer.unref()
    this.timers.add(timer)
  }

  private async tick(entry: PrefetchConfig): Promise<void> {
    let tags: string[]
    try {
      tags = entry.tag !== undefined ? [entry.tag] : await this.listTags(entry)
    } catch (err) {
      if (this.stopped) return
      this.metrics.prefetches.inc({ result: 'error' })
      this.log.warn({ err, image: entry.image }, 'prefetch: listing tags failed; trying again next time')
      return
    }
    // One tag after another: a pattern selecting many tags must not become many parallel downloads.
    for (const tag of tags) {
      if (this.stopped) return
      await this.check(entry, tag)
    }
  }

  /** Revalidates one tag and prefetches what upstream names, once at a time per tag. */
  private check(entry: PrefetchConfig, tag: string): Promise<void> {
    const k = `${entry.upstream}\n${entry.repository}\n${tag}`
    const running = this.checks.get(k)
    if (running) return running
    const p = this.runCheck(entry, tag).finally(() => this.checks.delete(k))
    this.checks.set(k, p)
    return p
  }

  private async runCheck(entry: PrefetchConfig, tag: string): Promise<void> {
    const t = this.target(entry)
    const key: TagKey = { upstream: entry.upstream, repository: entry.repository, tag, acceptKey: ACCEPT_KEY }
    const log = this.log.child({ upstream: entry.upstream, repository: entry.repository, tag })
    this.setStatus(entry, tag, { state: this.moves.get(refKey(key))?.switched === false ? 'pending' : 'checking', lastCheckAt: Date.now() })
    try {
      const first = await this.manifests.byTag(t, tag, CONTAINERD_ACCEPT)
      const next = first.pending?.next ?? first.digest
      this.setStatus(entry, tag, { state: first.pending ? 'pending' : 'fetching', digest: next, lastError: undefined })
      const started = Date.now()
      const got = await this.fetchImage(entry, t, next)
      if (got.bytes > 0 || got.fetched > 0) {
        this.metrics.prefetches.inc({ result: 'fetched' })
        const detail = `${got.fetched} of ${got.blobs} blobs, ${got.bytes} bytes, for ${entry.platforms.join(', ')} in ${formatSeconds(Date.now() - started)}`
        this.meta.addEvent(key, { type: 'prefetched', digest: next, detail })
        log.info({ digest: next, blobs: got.blobs, fetched: got.fetched, bytes: got.bytes, ms: Date.now() - started }, 'prefetched')
      } else {
        this.metrics.prefetches.inc({ result: 'cached' })
      }
      this.setStatus(entry, tag, { lastBytes: got.bytes })
      const move = this.moves.get(refKey(key))
      if (move?.next === next && !move.switched) {
        move.stored = true
        // Switch now rather than on the next client's request, so history tells when it happened.
        await this.manifests.byTag(t, tag, CONTAINERD_ACCEPT)
      }
      this.setStatus(entry, tag, { state: 'ready' })
    } catch (err) {
      if (this.stopped) return
      this.metrics.prefetches.inc({ result: 'error' })
      const message = err instanceof Error ? err.message : String(err)
      this.setStatus(entry, tag, { state: 'failed', lastError: message })
      log.warn({ err }, 'prefetch failed; trying again next time')
    }
  }

  /**
   * Fetches the image `digest` names for the entry's platforms: the manifests by digest, then
   * every config and layer not stored yet, read to the end through the verified fill.
   */
  private async fetchImage(entry: PrefetchConfig, t: Target, digest: string): Promise<{ blobs: number; fetched: number; bytes: number }> {
    const top = await this.manifests.byDigest(t, digest, CONTAINERD_ACCEPT)
    const images: ManifestResult[] = []
    if (isIndexType(top.mediaType)) {
      const children = manifestsOf(top)
      const chosen = children.filter((c) => entry.platforms.some((p) => c.platform === p || c.platform.startsWith(`${p}/`)))
      if (chosen.length === 0) {
        const offered = [...new Set(children.map((c) => c.platform))].join(', ') || 'none'
        throw new RegistryError('MANIFEST_UNKNOWN', `${digest} has no image for ${entry.platforms.join(', ')} (it has ${offered})`)
      }
      for (const c of chosen) images.push(await this.manifests.byDigest(t, c.digest, c.mediaType ? `${c.mediaType}, ${CONTAINERD_ACCEPT}` : CONTAINERD_ACCEPT))
    } else {
      images.push(top)
    }
    const wanted = new Map<string, Descriptor>()
    for (const m of images) for (const d of blobsOf(m)) wanted.set(d.digest, d)
    const queue = [...wanted.values()]
    let fetched = 0
    let bytes = 0
    const worker = async (n: number) => {
      for (;;) {
        if (this.stopped) return
        // The second worker waits while clients download: prefetch takes what they leave.
        while (n > 0 && this.blobs.fillCount - this.ownFills > 0 && !this.stopped) await sleep(YIELD_POLL_MS)
        const d = queue.shift()
        if (!d) return
        const got = await this.fetchBlob(t, d)
        if (got > 0) fetched++
        bytes += got
      }
    }
    await Promise.all(Array.from({ length: BLOB_CONCURRENCY }, (_, n) => worker(n)))
    if (this.stopped) throw new Error('regcache is shutting down')
    return { blobs: wanted.size, fetched, bytes }
  }

  /** One blob through Blobs.get; returns the bytes that came from upstream (0: it was stored). */
  private async fetchBlob(t: Target, d: Descriptor): Promise<number> {
    // No range asked, so never a forwarded range: the whole blob, from the cache or its fill.
    const res = await this.blobs.get(t, d.digest, 'GET')
    if (res.kind !== 'blob' || res.source === 'cache') return 0
    if (res.size === 0) return 0
    this.ownFills++
    try {
      const stream = res.open(0, res.size - 1)
      let n = 0
      for await (const chunk of stream) n += (chunk as Buffer).length
      this.metrics.prefetchBytes.inc(n)
      return n
    } finally {
      this.ownFills--
    }
  }

  private async listTags(entry: PrefetchConfig): Promise<string[]> {
    const up = this.upstreams.get(entry.upstream) as Upstream
    const res = await this.upstreams.call(up, {
      method: 'GET',
      repository: entry.repository,
      path: 'tags/list',
      headers: { accept: 'application/json' },
      signal: AbortSignal.timeout(up.config.timeouts.bodyMs),
    })
    if (res.status !== 200) {
      await res.body.dump().catch(() => {})
      throw errorForUpstreamStatus(res.status, 'NAME_UNKNOWN', headerValue(res.headers['retry-after']))
    }
    const chunks: Buffer[] = []
    let total = 0
    for await (const chunk of res.body) {
      total += (chunk as Buffer).length
      if (total > MAX_TAG_LIST_BYTES) {
        res.body.destroy()
        throw new RegistryError('UPSTREAM_ERROR', `tags/list of ${entry.repository} is larger than ${MAX_TAG_LIST_BYTES} bytes`)
      }
      chunks.push(chunk as Buffer)
    }
    let doc: unknown
    try {
      doc = JSON.parse(Buffer.concat(chunks).toString('utf8'))
    } catch {
      throw new RegistryError('UPSTREAM_ERROR', `tags/list of ${entry.repository} is not JSON`)
    }
    const all = isObject(doc) && Array.isArray(doc.tags) ? doc.tags.filter((x): x is string => typeof x === 'string' && isValidTag(x)) : []
    const pattern = entry.tags as RegExp
    const matching = all.filter((tag) => pattern.test(tag))
    if (matching.length > MAX_TAGS_PER_ENTRY) {
      this.log.warn({ image: entry.image, matching: matching.length, kept: MAX_TAGS_PER_ENTRY }, 'prefetch: the tags pattern selects too many tags; only the last ones listed are prefetched')
    }
    const kept = matching.slice(-MAX_TAGS_PER_ENTRY)
    const status = this.tagStatus.get(entry) as Map<string, PrefetchTagStatus>
    for (const tag of [...status.keys()]) if (!kept.includes(tag)) status.delete(tag)
    for (const tag of kept) if (!status.has(tag)) status.set(tag, { tag, state: 'waiting' })
    return kept
  }

  private entryFor(ref: TagRef): PrefetchConfig | undefined {
    return this.entries.find(
      (e) => e.upstream === ref.upstream && e.repository === ref.repository && (e.tag !== undefined ? e.tag === ref.tag : (e.tags as RegExp).test(ref.tag)),
    )
  }

  private target(entry: PrefetchConfig): Target {
    return { upstream: this.upstreams.get(entry.upstream) as Upstream, repository: entry.repository }
  }

  private setStatus(entry: PrefetchConfig, tag: string, patch: Partial<PrefetchTagStatus>): void {
    const tags = this.tagStatus.get(entry)
    if (!tags) return
    // A pattern entry lists only tags its last tags/list returned (bounded); others are not tracked.
    const s = tags.get(tag) ?? (entry.tag === undefined && tags.size >= MAX_TAGS_PER_ENTRY ? undefined : { tag, state: 'waiting' as const })
    if (!s) return
    Object.assign(s, patch)
    tags.set(tag, s)
  }

  private updatePendingGauge(): void {
    this.metrics.prefetchPending.set([...this.moves.values()].filter((m) => !m.switched).length)
  }
}

function refKey(r: TagRef): string {
  return `${r.upstream}\n${r.repository}\n${r.tag}`
}

/** "1h", "10m", "4s", "1500ms": a configured duration as it is usually written. */
function formatDuration(ms: number): string {
  for (const [unit, size] of [['d', 86_400_000], ['h', 3_600_000], ['m', 60_000], ['s', 1000]] as const) {
    if (ms > 0 && ms % size === 0) return `${ms / size}${unit}`
  }
  return `${ms}ms`
}

function formatSeconds(ms: number): string {
  return `${(ms / 1000).toFixed(1)}s`
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms).unref())
}

type JsonObject = Record<string, unknown>

function isObject(v: unknown): v is JsonObject {
  return typeof v === 'object' && v !== null && !Array.isArray(v)
}

function parse(m: ManifestResult): JsonObject {
  const doc: unknown = JSON.parse(m.body.toString('utf8'))
  if (!isObject(doc)) throw new RegistryError('UPSTREAM_ERROR', `manifest ${m.digest} is not a JSON object`)
  return doc
}

/** An index's entries with a valid digest and a platform ("os/arch[/variant]"). */
function manifestsOf(index: ManifestResult): { digest: string; mediaType?: string; platform: string }[] {
  const doc = parse(index)
  const out: { digest: string; mediaType?: string; platform: string }[] = []
  for (const c of Array.isArray(doc.manifests) ? doc.manifests.filter(isObject) : []) {
    if (typeof c.digest !== 'string' || !isValidDigest(c.digest) || !isObject(c.platform)) continue
    const p = c.platform
    if (typeof p.os !== 'string' || typeof p.architecture !== 'string') continue
    const platform = [p.os, p.architecture, typeof p.variant === 'string' && p.variant !== '' ? p.variant : undefined].filter(Boolean).join('/')
    out.push({ digest: c.digest, mediaType: typeof c.mediaType === 'string' ? c.mediaType : undefined, platform })
  }
  return out
}

/** An image manifest's config and layers; layers to be fetched from elsewhere (`urls`) are left out. */
function blobsOf(m: ManifestResult): Descriptor[] {
  const doc = parse(m)
  const out: Descriptor[] = []
  const add = (v: unknown) => {
    if (!isObject(v) || typeof v.digest !== 'string' || !isValidDigest(v.digest)) return
    if (Array.isArray(v.urls) && v.urls.length > 0) return
    out.push({ digest: v.digest, size: typeof v.size === 'number' ? v.size : 0 })
  }
  add(doc.config)
  for (const l of Array.isArray(doc.layers) ? doc.layers : []) add(l)
  return out
}
