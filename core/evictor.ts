// Keeps the cache within cache.maxSize (and cache.maxAge). Runs in the background, never on the
// request path: when stored bytes exceed the limit (the high watermark) it removes whole blobs,
// least recently used first, until they are under the low watermark (90% of the limit). A blob
// being filled or served is never evicted. An evicted blob is a miss next time, fetched again.
// With a store shared by replicas (core/shared-eviction.ts) one replica evicts at a time and
// never what any replica is filling.

import type { Logger } from 'pino'
import type { ContentStore } from '../storage/content-store.js'
import { LOG_SETTLE_ROWS, type Metadata } from '../storage/metadata.js'
import type { Metrics } from './metrics.js'

export const LOW_WATERMARK = 0.9
/** Rows read per page of victims. */
const PAGE = 500
/**
 * Rows deleted per transaction, the event loop yielded between them: at a million rows a
 * deletion costs some 60 µs of CPU (five B-trees), so a whole page in one go blocked 30–90 ms.
 */
const DELETE_SLICE = 100

const yieldToRequests = () => new Promise<void>((resolve) => setImmediate(resolve))

export interface EvictorOptions {
  meta: Metadata
  store: ContentStore
  metrics: Metrics
  log: Logger
  maxSizeBytes?: number
  maxAgeMs?: number
  intervalMs?: number
  /** Digests that must stay: fills in flight and blobs being read. */
  busy: () => ReadonlySet<string>
  /** Called for each evicted digest, so in-memory copies are dropped too. */
  onEvicted?: (digest: string) => void
  /** Shared store: runs a pass only while no other replica runs one (undefined: skipped). */
  exclusive?: <T>(pass: () => Promise<T>) => Promise<T | undefined>
  /** Shared store: false for content another replica is filling. */
  mayRemove?: (digest: string) => Promise<boolean>
}

export class Evictor {
  private timer?: NodeJS.Timeout
  private running?: Promise<number>
  private again = false

  private readonly meta: Metadata
  private readonly store: ContentStore
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
    if (!this.opts.exclusive) return this.pass()
    return (await this.opts.exclusive(() => this.pass())) ?? 0
  }

  private async pass(): Promise<number> {
    // Pending last-access times decide the LRU order: written in slices, never one long block.
    await this.meta.flushAccessInSlices()
    // Every LOG_SETTLE_ROWS deletions the log is copied back whole before going on (without
    // these pauses a long eviction grew it to gigabytes).
    let written = 0
    const wrote = async (rows: number) => {
      written += rows
      if (written < LOG_SETTLE_ROWS) return yieldToRequests()
      written = 0
      await this.meta.settleLog()
    }
    let evicted = 0
    // Removes one page of victims: rows in one transaction (no request sees them as cached from
    // then on), then the files. Busy digests are re-read for every page, skipped, not waited for.
    const evictPage = async (rows: { digest: string; size: number }[], why: string): Promise<{ removed: number; skipped: number; bytes: number }> => {
      const busy = this.opts.busy()
      let victims = rows.filter((r) => !busy.has(r.digest))
      const mayRemove = this.opts.mayRemove
      if (mayRemove) {
        const allowed = await Promise.all(victims.map((r) => mayRemove(r.digest)))
        victims = victims.filter((_, i) => allowed[i])
      }
      for (let i = 0; i < victims.length; i += DELETE_SLICE) {
        const slice = victims.slice(i, i + DELETE_SLICE)
        this.meta.deleteContents(slice.map((r) => r.digest))
        await wrote(slice.length)
      }
      // The files of a page go together: one at a time, a page of small blobs took seconds.
      await Promise.all(
        victims.map(async (r) => {
          await this.store.remove(r.digest)
          this.opts.onEvicted?.(r.digest)
          this.log.debug({ digest: r.digest, size: r.size, why }, 'evicted')
        }),
      )
      this.metrics.evictions.inc(victims.length)
      evicted += victims.length
      await yieldToRequests()
      return { removed: victims.length, skipped: rows.length - victims.length, bytes: victims.reduce((a, r) => a + r.size, 0) }
    }
    if (this.opts.maxAgeMs !== undefined) {
      const cutoff = Date.now() - this.opts.maxAgeMs
      let skipped = 0
      for (;;) {
        const page = this.meta.unusedSince(cutoff, PAGE, skipped)
        if (page.length === 0) break
        skipped += (await evictPage(page, 'maxAge')).skipped
      }
    }
    const max = this.opts.maxSizeBytes
    if (max !== undefined) {
      let { bytes } = this.meta.totals()
      if (bytes > max) {
        const target = Math.floor(max * LOW_WATERMARK)
        const before = bytes
        let skipped = 0
        while (bytes > target) {
          const page = this.meta.leastRecentlyUsed(PAGE, skipped)
          if (page.length === 0) break
          // Only as many as needed to reach the low watermark.
          let need = bytes - target
          const take = []
          for (const row of page) {
            if (need <= 0) break
            take.push(row)
            need -= row.size
          }
          const r = await evictPage(take, 'maxSize')
          skipped += r.skipped
          bytes -= r.bytes
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
