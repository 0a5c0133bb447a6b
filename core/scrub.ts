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

export class Scrubber {
  private timer?: NodeJS.Timeout
  private stopped = false
  private cursor = ''

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

  /** Verifies one page of content due for a check, paced to the cycle, then schedules the next. */
  private async step(): Promise<void> {
    const { meta, cycleMs } = this.opts
    try {
      const due = Date.now() - cycleMs
      let page = meta.unverifiedPage(this.cursor, due, PAGE)
      if (page.length === 0 && this.cursor !== '') {
        this.cursor = ''
        page = meta.unverifiedPage('', due, PAGE)
      }
      if (page.length === 0) return this.schedule(Math.min(IDLE_MS, cycleMs))
      const rate = Math.max(MIN_BYTES_PER_SECOND, meta.totals().bytes / (cycleMs / 1000))
      for (const row of page) {
        if (this.stopped) return
        this.cursor = row.digest
        if (this.opts.busy().has(row.digest)) continue
        const started = Date.now()
        await this.check(row.digest)
        // Low priority: sleep so the average pace stays at `rate`.
        const wait = (row.size / rate) * 1000 - (Date.now() - started)
        if (wait > 0) await new Promise((r) => setTimeout(r, Math.min(wait, IDLE_MS)).unref())
      }
      this.schedule(0)
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
