// The status page's charts, sampled every 10 s from the metrics and the cache totals into SQLite
// (one row per 10 s kept for an hour, one per minute for a day), so a restart does not blank them.

import type { Logger } from 'pino'
import type { Metadata, SeriesRow } from '../storage/metadata.js'
import type { Metrics } from './metrics.js'
import type { Upstream } from './upstreams.js'

export const SAMPLE_MS = 10_000
const HOUR_MS = 3_600_000
const DAY_MS = 86_400_000
/** Pull counts are kept per day for this long; "most pulled" covers the last 7 days. */
const PULLS_KEPT_MS = 30 * DAY_MS
export const TOP_PULLS_MS = 7 * DAY_MS
/** Distinct images counted between two samples; beyond it further new ones wait for the next. */
const MAX_PENDING_IMAGES = 10_000

/** Outcomes answered without downloading the content from upstream. */
export const FROM_CACHE: ReadonlySet<string> = new Set(['hit', 'revalidated', 'coalesced', 'stale'])

export interface Series {
  /** Per 10 s over the last hour, oldest first. */
  hour: SeriesRow[]
  /** Per minute over the last day. */
  day: SeriesRow[]
}

export interface SeriesSamplerOptions {
  meta: Metadata
  metrics: Metrics
  upstreams: () => Upstream[]
  log: Logger
}

interface Counts {
  fromCache: number
  fromUpstream: number
  bytesCache: number
  bytesUpstream: number
}

export class SeriesSampler {
  private timer?: NodeJS.Timeout
  /** The counters at the last sample: rows hold what happened between two samples. */
  private last: Counts = { fromCache: 0, fromUpstream: 0, bytesCache: 0, bytesUpstream: 0 }
  /** Tag resolutions since the last sample, by image; written with the sample. */
  private pulls = new Map<string, number>()

  constructor(private readonly o: SeriesSamplerOptions) {}

  start(): void {
    this.timer = setInterval(() => void this.sample().catch((err) => this.o.log.warn({ err }, 'sampling the status page series failed')), SAMPLE_MS)
    this.timer.unref()
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer)
  }

  /** A client resolved a tag (a pull starts with that): counted in memory, written with the next sample. */
  countPull(upstream: string, repository: string, tag: string): void {
    const k = `${upstream}\n${repository}\n${tag}`
    const n = this.pulls.get(k)
    if (n !== undefined) this.pulls.set(k, n + 1)
    else if (this.pulls.size < MAX_PENDING_IMAGES) this.pulls.set(k, 1)
  }

  /** The most pulled images over the last 7 days. */
  topPulls(now = Date.now()): { image: string; pulls: number }[] {
    return this.o.meta.topPulls(now - TOP_PULLS_MS).map((r) => ({ image: `${r.upstream}/${r.repository}:${r.tag}`, pulls: r.pulls }))
  }

  /** Takes one sample now (the timer does this every 10 s). */
  async sample(now = Date.now()): Promise<void> {
    const counts = await this.counts()
    const row: SeriesRow = {
      at: now,
      fromCache: counts.fromCache - this.last.fromCache,
      fromUpstream: counts.fromUpstream - this.last.fromUpstream,
      bytesCache: counts.bytesCache - this.last.bytesCache,
      bytesUpstream: counts.bytesUpstream - this.last.bytesUpstream,
      upstreamsDown: this.o.upstreams().filter((u) => u.health.isDown).length,
      cacheBytes: this.o.meta.totals().bytes,
    }
    this.last = counts
    this.o.meta.addSample(SAMPLE_MS / 1000, HOUR_MS, row)
    this.o.meta.addSample(60, DAY_MS, row)
    const pulls = this.pulls
    this.pulls = new Map()
    this.o.meta.addPulls(Math.floor(now / DAY_MS) * DAY_MS, pulls, now - PULLS_KEPT_MS)
  }

  read(now = Date.now()): Series {
    return { hour: this.o.meta.series(SAMPLE_MS / 1000, now - HOUR_MS), day: this.o.meta.series(60, now - DAY_MS) }
  }

  private async counts(): Promise<Counts> {
    const c: Counts = { fromCache: 0, fromUpstream: 0, bytesCache: 0, bytesUpstream: 0 }
    for (const v of (await this.o.metrics.requests.get()).values) {
      const kind = String(v.labels.kind)
      const outcome = String(v.labels.outcome ?? 'none')
      if ((kind !== 'manifest' && kind !== 'blob') || outcome === 'none') continue
      if (FROM_CACHE.has(outcome)) c.fromCache += v.value
      else c.fromUpstream += v.value
    }
    for (const v of (await this.o.metrics.bytesServed.get()).values) {
      if (v.labels.source === 'cache') c.bytesCache += v.value
      else c.bytesUpstream += v.value
    }
    return c
  }
}
