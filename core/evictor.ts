// Keeps the cache within cache.maxSize (and cache.maxAge). Runs in the background, never on the
// request path: when stored bytes exceed the limit (the high watermark) it removes whole blobs,
// least recently used first, until they are under the low watermark (90% of the limit). A blob
// being filled or served is never evicted. An evicted blob is a miss next time, fetched again.

import type { Logger } from 'pino'
import type { BlobStore } from '../storage/blob-store.js'
import type { Metadata } from '../storage/metadata.js'
import type { Metrics } from './metrics.js'

export const LOW_WATERMARK = 0.9

export interface EvictorOptions {
  meta: Metadata
  store: BlobStore
  metrics: Metrics
  log: Logger
  maxSizeBytes?: number
  maxAgeMs?: number
  intervalMs?: number
  /** Digests that must stay: fills in flight and blobs being read. */
  busy: () => ReadonlySet<string>
  /** Called for each evicted digest, so in-memory copies are dropped too. */
  onEvicted?: (digest: string) => void
}

export class Evictor {
  private timer?: NodeJS.Timeout
  private running?: Promise<number>
  private again = false

  private readonly meta: Metadata
  private readonly store: BlobStore
  private readonly metrics: Metrics
  private readonly log: Logger

  constructor(private readonly opts: EvictorOptions) {
    ;({ meta: this.meta, store: this.store, metrics: this.metrics, log: this.log } = opts)
  }

  get enabled(): boolean {
    return this.opts.maxSizeBytes !== undefined || this.opts.maxAgeMs !== undefined
  }

  start(): void {
    if (!this.enabled) return
    this.timer = setInterval(() => this.trigger(), this.opts.intervalMs ?? 30_000)
    this.timer.unref()
    this.trigger()
  }

  /** Asks for a run soon (after a fill completes); runs never overlap. */
  trigger(): void {
    if (!this.enabled) return
    if (this.running) {
      this.again = true
      return
    }
    this.running = this.run()
      .catch((err) => {
        this.log.error({ err }, 'eviction failed')
        return 0
      })
      .finally(() => {
        this.running = undefined
        if (this.again) {
          this.again = false
          this.trigger()
        }
      })
  }

  /** Runs once now (tests, shutdown); returns the number of blobs evicted. */
  async runNow(): Promise<number> {
    if (this.running) await this.running
    this.running = this.run()
    try {
      return await this.running
    } finally {
      this.running = undefined
    }
  }

  private async run(): Promise<number> {
    this.meta.flushAccess()
    const busy = this.opts.busy()
    let evicted = 0
    const evict = async (digest: string, size: number, why: string) => {
      this.meta.deleteContent(digest)
      await this.store.remove(digest)
      this.opts.onEvicted?.(digest)
      this.metrics.evictions.inc()
      evicted++
      this.log.debug({ digest, size, why }, 'evicted')
    }
    if (this.opts.maxAgeMs !== undefined) {
      for (const row of this.meta.unusedSince(Date.now() - this.opts.maxAgeMs)) {
        if (!busy.has(row.digest)) await evict(row.digest, row.size, 'maxAge')
      }
    }
    const max = this.opts.maxSizeBytes
    if (max !== undefined) {
      let { bytes } = this.meta.totals()
      if (bytes > max) {
        const target = Math.floor(max * LOW_WATERMARK)
        const before = bytes
        // Walk the LRU order in pages; busy blobs are skipped, not waited for.
        let offset = 0
        while (bytes > target) {
          const page = this.meta.leastRecentlyUsed(offset + 256).slice(offset)
          if (page.length === 0) break
          for (const row of page) {
            if (bytes <= target) break
            if (busy.has(row.digest)) {
              offset++
              continue
            }
            await evict(row.digest, row.size, 'maxSize')
            bytes -= row.size
          }
        }
        this.log.info({ before, after: bytes, limit: max, evicted }, 'cache over its size limit; evicted least recently used blobs')
      }
    }
    return evicted
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer)
  }
}
