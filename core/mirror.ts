// Mirror: the facade the HTTP routes and the process edge use. It owns the stores, the upstreams
// and the caches; nothing outside core/ reaches past it. Data flows one way: routes -> Mirror ->
// Manifests / Blobs -> policy, upstream clients, storage.

import type { Logger } from 'pino'
import { access, constants } from 'node:fs/promises'
import type { Config, UpstreamConfig } from '../config/config.js'
import { BlobStore } from '../storage/blob-store.js'
import { Metadata } from '../storage/metadata.js'
import { dbPath } from '../storage/layout.js'
import { DataDirLock } from '../storage/data-lock.js'
import type { UpstreamClient, UpstreamResponse } from '../upstream/client.js'
import { headerValue } from '../upstream/headers.js'
import { acceptHeader } from '../oci/media-types.js'
import { Blobs, type BlobResult } from './blobs.js'
import { Evictor } from './evictor.js'
import { Scrubber } from './scrub.js'
import { errorForUpstreamStatus } from './errors.js'
import { readHistory, type History } from './history.js'
import { Manifests, type ManifestResult } from './manifests.js'
import { Metrics } from './metrics.js'
import { selectUpstream, type Selection } from './select-upstream.js'
import { statusOf, type Status } from './status.js'
import type { Target } from './target.js'
import { Upstreams, type Upstream } from './upstreams.js'

export interface MirrorOptions {
  config: Config
  log: Logger
  /** For tests that wrap the upstream client; defaults to the real one. */
  clientFactory?: (c: UpstreamConfig) => UpstreamClient
}

/** How often last-access times are written to the database (reads stay off the write path). */
const ACCESS_FLUSH_MS = 5000
/** Last-access times written per transaction (some 50 µs each at a million rows). */
const ACCESS_FLUSH_SLICE = 250

export class Mirror {
  readonly metrics = new Metrics()
  readonly startedAt = Date.now()
  private readonly meta: Metadata
  private readonly store: BlobStore
  private readonly upstreams: Upstreams
  private readonly upstreamNames: ReadonlySet<string>
  private readonly manifests: Manifests
  private readonly blobs: Blobs
  private readonly evictor: Evictor
  private readonly scrubber: Scrubber
  private flushTimer?: NodeJS.Timeout
  private lock?: DataDirLock
  private flushing = false

  private constructor(
    private readonly config: Config,
    private readonly log: Logger,
    clientFactory?: MirrorOptions['clientFactory'],
  ) {
    this.store = new BlobStore(config.dataDir)
    this.meta = new Metadata(dbPath(config.dataDir), { backgroundCheckpoints: true })
    this.upstreams = new Upstreams({ config, metrics: this.metrics, log, clientFactory })
    this.upstreamNames = new Set(this.upstreams.all().map((u) => u.name))
    this.manifests = new Manifests({ upstreams: this.upstreams, meta: this.meta, store: this.store, metrics: this.metrics, log })
    // Evictor and Blobs need each other: eviction skips what blobs are busy with, and a finished
    // fill may push the cache over its limit.
    let blobs: Blobs | undefined
    this.evictor = new Evictor({
      meta: this.meta,
      store: this.store,
      metrics: this.metrics,
      log,
      maxSizeBytes: config.cache.maxSizeBytes,
      maxAgeMs: config.cache.maxAgeMs,
      busy: () => blobs?.busy() ?? new Set(),
      onEvicted: (digest) => this.manifests.forget(digest),
    })
    blobs = new Blobs({
      upstreams: this.upstreams,
      meta: this.meta,
      store: this.store,
      metrics: this.metrics,
      log,
      onFillEnded: () => this.evictor.trigger(),
      onDropped: (digest) => this.manifests.forget(digest),
      scrubMs: config.cache.scrubMs,
    })
    this.blobs = blobs
    this.scrubber = new Scrubber({
      meta: this.meta,
      store: this.store,
      metrics: this.metrics,
      log,
      cycleMs: config.cache.scrubMs,
      busy: () => blobs.busy(),
      onDropped: (digest) => this.manifests.forget(digest),
    })
    this.metrics.cacheLimit.set(config.cache.maxSizeBytes ?? 0)
  }

  static async open(opts: MirrorOptions): Promise<Mirror> {
    // Before anything is read or removed: a second process must not touch a directory in use.
    const lock = DataDirLock.acquire(opts.config.dataDir)
    let mirror: Mirror
    try {
      mirror = new Mirror(opts.config, opts.log, opts.clientFactory)
    } catch (err) {
      lock.release()
      throw err
    }
    mirror.lock = lock
    const { removedTemporary } = await mirror.store.init()
    if (removedTemporary > 0) opts.log.warn({ removedTemporary }, 'removed unfinished downloads left by an earlier run')
    mirror.flushTimer = setInterval(() => void mirror.flushAccess(), ACCESS_FLUSH_MS)
    mirror.flushTimer.unref()
    mirror.refreshCacheGauges()
    mirror.evictor.start()
    mirror.scrubber.start()
    return mirror
  }

  /** Which upstream and repository a client's name (and `ns`) mean; throws for unknown registries. */
  select(name: string, ns: string | undefined): { target: Target; selection: Selection } {
    const selection = selectUpstream(name, ns, this.upstreamNames, this.config.defaultUpstream)
    return { target: { upstream: this.upstreams.get(selection.upstream) as Upstream, repository: selection.repository }, selection }
  }

  /** Upstream's URL for a path under the target's repository (Link headers are rewritten from it). */
  upstreamUrl(t: Target, path: string): URL {
    return t.upstream.client.url(t.repository, path)
  }

  manifestByTag(t: Target, tag: string, accept: string | string[] | undefined): Promise<ManifestResult> {
    return this.manifests.byTag(t, tag, accept)
  }

  manifestByDigest(t: Target, digest: string, accept: string | string[] | undefined): Promise<ManifestResult> {
    return this.manifests.byDigest(t, digest, accept)
  }

  blob(t: Target, digest: string, method: 'GET' | 'HEAD'): Promise<BlobResult> {
    return this.blobs.get(t, digest, method)
  }

  /** tags/list and referrers: not cached, passed through with the client's Accept. */
  async passthrough(t: Target, path: string, accept: string | string[] | undefined, method: 'GET' | 'HEAD'): Promise<UpstreamResponse> {
    const res = await this.upstreams.call(t.upstream, {
      method,
      repository: t.repository,
      path,
      headers: { accept: acceptHeader(accept) },
      signal: AbortSignal.timeout(t.upstream.config.timeouts.headersMs),
    })
    if (res.status >= 400) {
      await res.body.dump().catch(() => {})
      throw errorForUpstreamStatus(res.status, path.startsWith('tags/') ? 'NAME_UNKNOWN' : 'MANIFEST_UNKNOWN', headerValue(res.headers['retry-after']))
    }
    return res
  }

  history(image: string): History {
    return readHistory(this.meta, image, this.config)
  }

  async status(): Promise<Status> {
    return statusOf({
      startedAt: this.startedAt,
      meta: this.meta,
      upstreams: this.upstreams.all(),
      metrics: this.metrics,
      fillsInFlight: this.blobs.fillCount,
      limitBytes: this.config.cache.maxSizeBytes,
    })
  }

  /** Prometheus exposition text, with the cache gauges brought up to date. */
  async metricsText(): Promise<{ contentType: string; text: string }> {
    this.refreshCacheGauges()
    return { contentType: this.metrics.registry.contentType, text: await this.metrics.registry.metrics() }
  }

  /** What keeps the mirror from serving (for /readyz); empty when ready. */
  async readinessProblems(): Promise<string[]> {
    const problems: string[] = []
    try {
      this.meta.ping()
    } catch (err) {
      problems.push(`database: ${(err as Error).message}`)
    }
    try {
      await access(this.config.dataDir, constants.W_OK)
    } catch (err) {
      problems.push(`data directory: ${(err as Error).message}`)
    }
    return problems
  }

  /** 'up' or 'down' (the circuit breaker), undefined for an unknown upstream. */
  upstreamState(name: string): 'up' | 'down' | undefined {
    return this.upstreams.get(name)?.health.state
  }

  /** Runs eviction now (it also runs on its own); returns how many blobs it removed. */
  evictNow(): Promise<number> {
    return this.evictor.runNow()
  }

  /** Digests being downloaded or sent to a client now: eviction leaves them alone. */
  busyDigests(): ReadonlySet<string> {
    return this.blobs.busy()
  }

  get fillsInFlight(): number {
    return this.blobs.fillCount
  }

  /** Waits for every blob download in flight (graceful shutdown). */
  drain(): Promise<void> {
    return this.blobs.drain()
  }

  /** Aborts every upstream request in flight (the shutdown grace period is over). */
  abortDownloads(): Promise<void> {
    return this.upstreams.destroy()
  }

  /** Stops background work and closes the database; call after drain(). */
  async close(): Promise<void> {
    if (this.flushTimer) clearInterval(this.flushTimer)
    this.evictor.stop()
    this.scrubber.stop()
    await this.upstreams.close()
    this.meta.close()
    this.lock?.release()
  }

  /** Writes last-access times in slices, yielding to requests between them. */
  private async flushAccess(): Promise<void> {
    if (this.flushing) return
    this.flushing = true
    try {
      while (this.meta.pendingAccessCount > 0) {
        this.meta.flushAccess(ACCESS_FLUSH_SLICE)
        await new Promise<void>((resolve) => setImmediate(resolve))
      }
    } catch (err) {
      this.log.error({ err }, 'writing last-access times failed')
    } finally {
      this.flushing = false
    }
  }

  private refreshCacheGauges(): void {
    const totals = this.meta.totals()
    this.metrics.cacheBytes.set(totals.bytes)
    this.metrics.cacheBlobs.set(totals.count)
  }
}
