// The scrub: stored content re-hashed in the background, at low priority, so that every byte is
// verified once per `cache.scrub` cycle. What does not hash to its name is dropped (file, record
// and memory copy), so the next request fetches it again from upstream.

import type { Logger } from 'pino'
import type { ContentStore } from '../storage/content-store.js'
import type { Metadata } from '../storage/metadata.js'
import type { Metrics } from './metrics.js'

export interface ScrubOptions {
  meta: Metadata
  store: ContentStore
  metrics: Metrics
  log: Logger
  /** Every stored byte is re-hashed once per this long; 0 turns the scrub off. */
  cycleMs: number
  /** Digests being filled or served: checked later. */
  busy: () => ReadonlySet<string>
  /** Called for each dropped digest (in-memory copies go too). */
  onDropped: (digest: string) => void
}

/** Slowest pace, so small caches finish a cycle well within it. */
const MIN_BYTES_PER_SECOND = 4 * 1024 * 1024
const PAGE = 100
const IDLE_MS = 60_000
/** Pause after a page whose every digest was busy (being filled or served). */
const BUSY_RETRY_MS = 1000

export class Scrubber {
  private timer?: NodeJS.Timeout
  private stopped = false

  constructor(private readonly opts: ScrubOptions) {}

  start(): void {
    if (this.opts.cycleMs <= 0) return
    this.schedule(Math.min(IDLE_MS, this.opts.cycleMs))
  }

  stop(): void {
    this.stopped = true
    if (this.timer) clearTimeout(this.timer)
  }

  private schedule(ms: number): void {
    if (this.stopped) return
    this.timer = setTimeout(() => void this.step(), ms)
    this.timer.unref()
  }

  /**
   * Verifies one page of the content most overdue for a check, paced to the cycle, then schedules
   * the next. Reading the page is two bounded index ranges (Metadata.dueForVerification): with a
   * million rows and none due, a step costs what it costs with ten.
   */
  private async step(): Promise<void> {
    const { meta, cycleMs } = this.opts
    try {
      const page = meta.dueForVerification(Date.now() - cycleMs, PAGE)
      if (page.length === 0) return this.schedule(Math.min(IDLE_MS, cycleMs))
      const rate = Math.max(MIN_BYTES_PER_SECOND, meta.totals().bytes / (cycleMs / 1000))
      let checked = 0
      let failed = 0
      for (const row of page) {
        if (this.stopped) return
        if (this.opts.busy().has(row.digest)) continue
        const started = Date.now()
        try {
          await this.check(row.digest)
          checked++
        } catch (err) {
          // Stays due (it comes first again next time); the rest of the page goes on.
          this.opts.log.error({ err, digest: row.digest }, 'scrub could not check stored content; trying again later')
          failed++
        }
        // Low priority: sleep so the average pace stays at `rate`.
        const wait = (row.size / rate) * 1000 - (Date.now() - started)
        if (wait > 0) await new Promise((r) => setTimeout(r, Math.min(wait, IDLE_MS)).unref())
      }
      // A page of busy or unreadable digests only comes back first next time: wait before reading it again.
      this.schedule(checked > 0 ? 0 : failed > 0 ? IDLE_MS : BUSY_RETRY_MS)
    } catch (err) {
      this.opts.log.error({ err }, 'scrub failed; trying again later')
      this.schedule(IDLE_MS)
    }
  }

  private async check(digest: string): Promise<void> {
    const { meta, store, metrics, log } = this.opts
    let ok: boolean
    try {
      ok = await store.verify(digest)
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err
      ok = false
    }
    metrics.scrubbed.inc({ result: ok ? 'ok' : 'corrupt' })
    if (ok) {
      meta.markVerified(digest)
      return
    }
    log.error({ digest }, 'stored content does not hash to its digest (damaged on disk); dropped, fetched again on the next request')
    meta.deleteContent(digest)
    await store.remove(digest)
    this.opts.onDropped(digest)
  }
}
