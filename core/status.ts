// A snapshot of the mirror's state for the status page (GET /api/status).

import type { HistoryEvent, Metadata } from '../storage/metadata.js'
import type { Metrics } from './metrics.js'
import type { PrefetchEntryStatus } from './prefetch.js'
import { FROM_CACHE } from './series.js'
import type { Upstream } from './upstreams.js'

export interface Status {
  startedAt: number
  upstreams: {
    name: string
    url: string
    state: 'up' | 'down'
    consecutiveFailures: number
    lastFailure?: { at: number; reason: string }
    rateLimit?: { limit?: string; remaining?: string; at: number }
    /** Whose credentials go upstream: the configured ones (`mirror`) or each client's own (`client`). */
    credentials: 'mirror' | 'client'
  }[]
  /** Whether clients are asked for credentials (an `auth:` section is configured). */
  auth: { enabled: boolean }
  cache: { bytes: number; limitBytes: number | null; blobs: number; fillsInFlight: number }
  requests: { total: number; fromCache: number; hitRatio: number | null; byOutcome: Record<string, number> }
  /** What the cache spared upstream since start: bytes sent from the cache, manifest and blob requests answered without a download. */
  saved: { bytes: number; requests: number }
  recentChanges: HistoryEvent[]
  recentProblems: HistoryEvent[]
  prefetch: PrefetchEntryStatus[]
  /** The most pulled images over the last 7 days (tag resolutions). */
  topPulls: { image: string; pulls: number }[]
}

/** Events that are news about a tag, not problems. */
const CHANGES: ReadonlySet<string> = new Set(['changed', 'first_seen', 'prefetched', 'switched'])

export interface StatusSources {
  startedAt: number
  meta: Metadata
  upstreams: Upstream[]
  metrics: Metrics
  fillsInFlight: number
  limitBytes: number | undefined
  prefetch: PrefetchEntryStatus[]
  topPulls: { image: string; pulls: number }[]
  authEnabled: boolean
}

export async function statusOf(s: StatusSources): Promise<Status> {
  const totals = s.meta.totals()
  const byOutcome: Record<string, number> = {}
  for (const v of (await s.metrics.requests.get()).values) {
    const outcome = String(v.labels.outcome ?? 'none')
    if (outcome === 'none') continue
    byOutcome[outcome] = (byOutcome[outcome] ?? 0) + v.value
  }
  const total = Object.values(byOutcome).reduce((a, b) => a + b, 0)
  const fromCache = Object.entries(byOutcome).reduce((a, [k, v]) => a + (FROM_CACHE.has(k) ? v : 0), 0)
  const recent = s.meta.recentEvents(200)
  let savedBytes = 0
  for (const v of (await s.metrics.bytesServed.get()).values) if (v.labels.source === 'cache') savedBytes += v.value
  let savedRequests = 0
  for (const v of (await s.metrics.requests.get()).values) {
    if ((v.labels.kind === 'manifest' || v.labels.kind === 'blob') && FROM_CACHE.has(String(v.labels.outcome))) savedRequests += v.value
  }
  return {
    startedAt: s.startedAt,
    upstreams: s.upstreams.map((u) => ({
      name: u.name,
      url: u.config.url,
      state: u.health.state,
      consecutiveFailures: u.health.consecutiveFailures,
      lastFailure: u.health.lastFailure,
      rateLimit: u.client.rateLimit,
      credentials: u.config.credentials,
    })),
    auth: { enabled: s.authEnabled },
    cache: { bytes: totals.bytes, limitBytes: s.limitBytes ?? null, blobs: totals.count, fillsInFlight: s.fillsInFlight },
    requests: { total, fromCache, hitRatio: total > 0 ? fromCache / total : null, byOutcome },
    saved: { bytes: savedBytes, requests: savedRequests },
    recentChanges: recent.filter((e) => CHANGES.has(e.type)).slice(0, 25),
    recentProblems: recent.filter((e) => !CHANGES.has(e.type)).slice(0, 25),
    prefetch: s.prefetch,
    topPulls: s.topPulls,
  }
}
