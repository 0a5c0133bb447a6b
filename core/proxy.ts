// The proxy core: the one place that sees both upstreams and storage. Routes call it; it calls
// the policy, the upstream clients and the stores.

import type { Logger } from 'pino'
import type { Config } from '../config/config.js'
import { BlobStore } from '../storage/blob-store.js'
import { Metadata } from '../storage/metadata.js'
import { dbPath } from '../storage/layout.js'
import type { UpstreamClient } from '../upstream/client.js'
import type { UpstreamConfig } from '../config/config.js'
import { Blobs } from './blobs.js'
import { Evictor } from './evictor.js'
import { RegistryError, errorForUpstreamStatus } from './errors.js'
import { Manifests, type Target } from './manifests.js'
import { Metrics } from './metrics.js'
import { Upstreams } from './upstreams.js'
import { acceptHeader } from './accept.js'
import type { UpstreamResponse } from '../upstream/client.js'
import { UpstreamUnreachableError } from '../upstream/errors.js'

export interface ProxyDeps {
  config: Config
  log: Logger
  /** For tests that need to wrap the upstream client; defaults to the real one. */
  clientFactory?: (c: UpstreamConfig) => UpstreamClient
}

export class Proxy {
  readonly metrics = new Metrics()
  readonly meta: Metadata
  readonly store: BlobStore
  readonly upstreams: Upstreams
  readonly manifests: Manifests
  readonly blobs: Blobs
  readonly evictor: Evictor
  readonly defaultUpstream: string
  private flushTimer?: NodeJS.Timeout

  private constructor(readonly config: Config, readonly log: Logger, clientFactory?: ProxyDeps['clientFactory']) {
    this.defaultUpstream = config.defaultUpstream
    this.store = new BlobStore(config.dataDir)
    this.meta = new Metadata(dbPath(config.dataDir))
    this.upstreams = new Upstreams(config, this.metrics, log, clientFactory)
    this.manifests = new Manifests(this.upstreams, this.meta, this.store, this.metrics, log)
    this.blobs = new Blobs(this.upstreams, this.meta, this.store, this.metrics, log, config.blobs)
    this.evictor = new Evictor(this.meta, this.store, this.metrics, log, {
      maxSizeBytes: config.cache.maxSizeBytes,
      maxAgeMs: config.cache.maxAgeMs,
      busy: () => this.blobs.busy(),
      onEvicted: (digest) => this.manifests.forget(digest),
    })
    this.blobs.onFillEnded = () => this.evictor.trigger()
    this.metrics.cacheLimit.set(config.cache.maxSizeBytes ?? 0)
  }

  static async open(deps: ProxyDeps): Promise<Proxy> {
    const proxy = new Proxy(deps.config, deps.log, deps.clientFactory)
    const { removedTemporary } = await proxy.store.init()
    if (removedTemporary > 0) deps.log.warn({ removedTemporary }, 'removed unfinished downloads left by an earlier run')
    proxy.flushTimer = setInterval(() => proxy.meta.flushAccess(), 5000)
    proxy.flushTimer.unref()
    proxy.refreshCacheGauges()
    proxy.evictor.start()
    return proxy
  }

  refreshCacheGauges(): void {
    const totals = this.meta.totals()
    this.metrics.cacheBytes.set(totals.bytes)
    this.metrics.cacheBlobs.set(totals.count)
  }

  /** tags/list and referrers: not cached, passed through with the client's Accept. */
  async passthrough(t: Target, path: string, accept: string | string[] | undefined, method: 'GET' | 'HEAD'): Promise<UpstreamResponse> {
    let res: UpstreamResponse
    try {
      res = await this.upstreams.call(t.upstream, {
        method,
        repository: t.repository,
        path,
        headers: { accept: acceptHeader(accept) },
        signal: AbortSignal.timeout(t.upstream.config.timeouts.headersMs),
      })
    } catch (err) {
      if (err instanceof UpstreamUnreachableError) throw new RegistryError('UNAVAILABLE', `upstream ${t.upstream.name} unavailable (${err.failure})`)
      throw err
    }
    if (res.status >= 400) {
      await res.body.dump().catch(() => {})
      throw errorForUpstreamStatus(res.status, path.startsWith('tags/') ? 'NAME_UNKNOWN' : 'MANIFEST_UNKNOWN', String(res.headers['retry-after'] ?? '') || undefined)
    }
    return res
  }

  /** Graceful stop: waits for fills in flight (bounded by the caller), then closes the database. */
  async close(): Promise<void> {
    if (this.flushTimer) clearInterval(this.flushTimer)
    this.evictor.stop()
    await this.upstreams.close()
    this.meta.close()
  }
}
