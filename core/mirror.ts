// Mirror: the facade the HTTP routes and the process edge use. It owns the stores, the upstreams
// and the caches; nothing outside core/ reaches past it. Data flows one way: routes -> Mirror ->
// Manifests / Blobs -> policy, upstream clients, storage.

import type { Logger } from 'pino'
import { access, constants } from 'node:fs/promises'
import type { Config, UpstreamConfig } from '../config/config.js'
import type { ContentStore } from '../storage/content-store.js'
import { isStoreUnavailable } from '../storage/store-unavailable.js'
import { Metadata } from '../storage/metadata.js'
import { dbPath } from '../storage/layout.js'
import { DataDirLock } from '../storage/data-lock.js'
import type { UpstreamClient, UpstreamResponse } from '../upstream/client.js'
import { headerValue } from '../upstream/headers.js'
import { acceptHeader } from '../oci/media-types.js'
import type { BasicCredentials } from '../auth/basic.js'
import { Blobs, type BlobResult } from './blobs.js'
import { ClusterFill } from './cluster-fill.js'
import { openContentBackend, type ContentBackend } from './content-backend.js'
import { SharedEviction } from './shared-eviction.js'
import { StoreReadiness } from './store-readiness.js'
import { ClientAccess } from './client-access.js'
import { Evictor } from './evictor.js'
import type { RangeSpec } from './byte-range.js'
import type { ForwardedRange } from './range-forward.js'
import { Scrubber } from './scrub.js'
import { errorForUpstreamStatus } from './errors.js'
import { readHistory, type History } from './history.js'
import { Manifests, type ManifestResult } from './manifests.js'
import { Metrics } from './metrics.js'
import { Prefetcher } from './prefetch.js'
import { SeriesSampler, type Series } from './series.js'
import { selectUpstream, type Selection } from './select-upstream.js'
import { statusOf, type Status } from './status.js'
import type { Target } from './target.js'
import { Upstreams, type Upstream } from './upstreams.js'

export interface MirrorOptions {
  config: Config
  log: Logger
  /** For tests that wrap the upstream client; defaults to the real one. */
  clientFactory?: (c: UpstreamConfig) => UpstreamClient
  /** Stores opened by the caller (tests wrap them to count calls); by default opened on config.dataDir. */
  stores?: { meta: Metadata; store: ContentStore }
}

/** How often last-access times are written to the database (reads stay off the write path). */
const ACCESS_FLUSH_MS = 5000

export class Mirror {
  readonly metrics = new Metrics()
  readonly startedAt = Date.now()
  private readonly meta: Metadata
  private readonly store: ContentStore
  private readonly backend: ContentBackend
  private readonly storeReadiness: StoreReadiness
  private readonly upstreams: Upstreams
  private readonly upstreamNames: ReadonlySet<string>
  private readonly manifests: Manifests
  private readonly blobs: Blobs
  private readonly evictor: Evictor
  private readonly scrubber: Scrubber
  private readonly prefetcher: Prefetcher
  private readonly sampler: SeriesSampler
  /** Per upstream with `credentials: client`: whose credentials upstream accepted, for what. */
  private readonly clientAccess = new Map<string, ClientAccess>()
  private flushTimer?: NodeJS.Timeout
  private lock?: DataDirLock
  private flushing = false

  private constructor(
    private readonly config: Config,
    private readonly log: Logger,
    backend: ContentBackend,
    clientFactory?: MirrorOptions['clientFactory'],
    stores?: MirrorOptions['stores'],
  ) {
    this.backend = backend
    this.store = backend.store
    this.storeReadiness = new StoreReadiness(backend.s3, this.metrics)
    const shared = backend.s3 ? new SharedEviction(backend.s3, log) : undefined
    this.meta = stores?.meta ?? new Metadata(dbPath(config.dataDir), { backgroundCheckpoints: true })
    this.upstreams = new Upstreams({ config, metrics: this.metrics, log, clientFactory })
    this.upstreamNames = new Set(this.upstreams.all().map((u) => u.name))
    for (const up of this.upstreams.all()) {
      if (up.config.credentials === 'client') this.clientAccess.set(up.name, new ClientAccess({ upstream: up, upstreams: this.upstreams, metrics: this.metrics, log }))
    }
    this.manifests = new Manifests({
      upstreams: this.upstreams,
      meta: this.meta,
      store: this.store,
      metrics: this.metrics,
      log,
      // prefetch with switch: when-cached may keep a moved tag on its previous digest for a while.
      pendingSwitch: (key, previous, next, servable) => this.prefetcher.holdSwitch(key, previous, next, servable),
    })
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
      exclusive: shared && ((pass) => shared.exclusive(pass)),
      mayRemove: shared && ((digest) => shared.mayRemove(digest)),
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
      ranges: config.blobs,
      cluster: backend.s3 && new ClusterFill(backend.s3, log),
      presign: backend.presign,
    })
    this.blobs = blobs
    this.scrubber = new Scrubber({
      meta: this.meta,
      store: this.store,
      metrics: this.metrics,
      log,
      // A shared bucket is re-hashed by `regcache fsck`, not by every replica on its own.
      cycleMs: backend.s3 ? 0 : config.cache.scrubMs,
      busy: () => blobs.busy(),
      onDropped: (digest) => this.manifests.forget(digest),
    })
    this.prefetcher = new Prefetcher({
      entries: config.prefetch,
      upstreams: this.upstreams,
      manifests: this.manifests,
      blobs,
      meta: this.meta,
      metrics: this.metrics,
      log,
    })
    this.sampler = new SeriesSampler({ meta: this.meta, metrics: this.metrics, upstreams: () => this.upstreams.all(), log })
    this.metrics.cacheLimit.set(config.cache.maxSizeBytes ?? 0)
  }

  static async open(opts: MirrorOptions): Promise<Mirror> {
    // Before anything is read or removed: a second process must not touch a directory in use.
    const lock = DataDirLock.acquire(opts.config.dataDir)
    let mirror: Mirror
    try {
      mirror = new Mirror(opts.config, opts.log, opts.stores ? { store: opts.stores.store } : await openContentBackend(opts.config), opts.clientFactory, opts.stores)
    } catch (err) {
      lock.release()
      throw err
    }
    mirror.lock = lock
    try {
      const { removedTemporary } = await mirror.store.init()
      if (removedTemporary > 0) opts.log.warn({ removedTemporary }, 'removed unfinished downloads left by an earlier run')
    } catch (err) {
      // A shared store that is down at start-up: serve what needs no store, report not ready
      // (/readyz) until it answers, rather than fail to start and restart in a loop.
      if (!isStoreUnavailable(err)) {
        await mirror.close()
        throw err
      }
      opts.log.error({ err }, 'the content store does not answer; not ready until it does')
      mirror.storeFailed()
    }
    mirror.flushTimer = setInterval(() => void mirror.flushAccess(), ACCESS_FLUSH_MS)
    mirror.flushTimer.unref()
    mirror.refreshCacheGauges()
    mirror.evictor.start()
    mirror.scrubber.start()
    mirror.prefetcher.start()
    mirror.sampler.start()
    return mirror
  }

  /** Which upstream and repository a client's name (and `ns`) mean; throws for unknown registries. */
  select(name: string, ns: string | undefined): { target: Target; selection: Selection } {
    const selection = selectUpstream(name, ns, this.upstreamNames, this.config.defaultUpstream)
    return { target: { upstream: this.upstreams.get(selection.upstream) as Upstream, repository: selection.repository }, selection }
  }

  /**
   * The target a request with these client credentials may be served with. For an upstream with
   * `credentials: client` this asks upstream (or trusts its recent answer) and throws 401/403/503
   * when the credentials may not read the repository; otherwise the target is returned as it is
   * (access rules are checked before, in the server).
   */
  authorize(t: Target, credentials: BasicCredentials | undefined): Promise<Target> {
    const access = this.clientAccess.get(t.upstream.name)
    return access === undefined ? Promise.resolve(t) : access.authorize(t, credentials)
  }

  /** Whose credentials go to this upstream. */
  credentialMode(upstream: string): 'mirror' | 'client' {
    return this.clientAccess.has(upstream) ? 'client' : 'mirror'
  }

  /** Upstream's URL for a path under the target's repository (Link headers are rewritten from it). */
  upstreamUrl(t: Target, path: string): URL {
    return t.upstream.client.url(t.repository, path)
  }

  manifestByTag(t: Target, tag: string, accept: string | string[] | undefined): Promise<ManifestResult> {
    this.sampler.countPull(t.upstream.name, t.repository, tag)
    return this.countStoreFailure(this.manifests.byTag(t, tag, accept))
  }

  manifestByDigest(t: Target, digest: string, accept: string | string[] | undefined): Promise<ManifestResult> {
    return this.countStoreFailure(this.manifests.byDigest(t, digest, accept))
  }

  private async countStoreFailure<T>(p: Promise<T>): Promise<T> {
    try {
      return await p
    } catch (err) {
      if (isStoreUnavailable(err)) this.storeFailed()
      throw err
    }
  }

  /** A blob, or for a GET with a single Range of a blob not cached yet, that range from upstream. */
  async blob(t: Target, digest: string, method: 'GET' | 'HEAD', range?: RangeSpec): Promise<BlobResult | ForwardedRange> {
    try {
      const result = await this.blobs.get(t, digest, method, range)
      if (result.kind === 'blob' && result.redirect !== undefined) this.metrics.redirects.inc()
      return result
    } catch (err) {
      if (isStoreUnavailable(err)) this.storeFailed()
      throw err
    }
  }

  /** A request failed on the store: counted, and /readyz looks again instead of using its cached answer. */
  private storeFailed(): void {
    this.metrics.storeErrors.inc()
    this.storeReadiness.forget()
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
      prefetch: this.prefetcher.status(),
      topPulls: this.sampler.topPulls(),
      authEnabled: this.config.auth !== undefined,
    })
  }

  /** The status page's charts: the last hour and the last day. */
  series(): Series {
    return this.sampler.read()
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
    const store = await this.storeReadiness.problem()
    if (store !== undefined) problems.push(`content store: ${store}`)
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
    this.prefetcher.stop()
    this.sampler.stop()
    // What happened since the last sample is kept too (it would be lost with the process).
    await this.sampler.sample().catch((err) => this.log.warn({ err }, 'sampling the status page series at shutdown failed'))
    this.evictor.stop()
    this.scrubber.stop()
    await this.upstreams.close()
    this.meta.close()
    this.backend.s3?.close()
    this.lock?.release()
  }

  /** Writes last-access times in slices, yielding to requests between them. */
  private async flushAccess(): Promise<void> {
    if (this.flushing) return
    this.flushing = true
    try {
      await this.meta.flushAccessInSlices()
    } catch (err) {
      this.log.error({ err }, 'writing last-access times failed')
    } finally {
      this.flushing = false
    }
  }

  /** Where content lives, for /api/status and logs. */
  get storageType(): 'filesystem' | 's3' {
    return this.backend.s3 ? 's3' : 'filesystem'
  }

  private refreshCacheGauges(): void {
    const totals = this.meta.totals()
    this.metrics.cacheBytes.set(totals.bytes)
    this.metrics.cacheBlobs.set(totals.count)
  }
}
