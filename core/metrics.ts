// Prometheus metrics, one Registry per app instance (no prom-client globals, so several apps
// can live in one process, as the tests do). Labels stay bounded: no repository or digest.

import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client'

export type RequestKind = 'manifest' | 'blob' | 'other'

export class Metrics {
  readonly registry = new Registry()
  readonly requests = new Counter({
    name: 'regcache_requests_total',
    help: 'Registry API requests answered, by kind, method, status and cache outcome.',
    labelNames: ['kind', 'method', 'status', 'outcome'] as const,
    registers: [this.registry],
  })
  readonly requestDuration = new Histogram({
    name: 'regcache_request_duration_seconds',
    help: 'Time to answer a registry API request (until the response headers and, for manifests, the body).',
    labelNames: ['kind'] as const,
    buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
    registers: [this.registry],
  })
  readonly bytesServed = new Counter({
    name: 'regcache_served_bytes_total',
    help: 'Bytes of manifests and blobs sent to clients, by where they came from.',
    labelNames: ['source'] as const,
    registers: [this.registry],
  })
  readonly upstreamRequests = new Counter({
    name: 'regcache_upstream_requests_total',
    help: 'Requests sent to upstream registries, by upstream, method and status class (or error).',
    labelNames: ['upstream', 'method', 'status'] as const,
    registers: [this.registry],
  })
  readonly upstreamDuration = new Histogram({
    name: 'regcache_upstream_request_duration_seconds',
    help: 'Time until upstream answered with headers.',
    labelNames: ['upstream', 'method'] as const,
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10],
    registers: [this.registry],
  })
  readonly upstreamUp = new Gauge({
    name: 'regcache_upstream_up',
    help: '1 when the upstream is reachable, 0 while it is marked down.',
    labelNames: ['upstream'] as const,
    registers: [this.registry],
  })
  readonly revalidations = new Counter({
    name: 'regcache_revalidations_total',
    help: 'Tag revalidations by upstream and result.',
    labelNames: ['upstream', 'result'] as const,
    registers: [this.registry],
  })
  readonly staleServes = new Counter({
    name: 'regcache_stale_served_total',
    help: 'Tag requests answered from cache because upstream could not answer, by upstream and reason.',
    labelNames: ['upstream', 'reason'] as const,
    registers: [this.registry],
  })
  readonly rateLimitRemaining = new Gauge({
    name: 'regcache_upstream_ratelimit_remaining',
    help: 'The last ratelimit-remaining value an upstream sent.',
    labelNames: ['upstream'] as const,
    registers: [this.registry],
  })
  readonly rateLimitLimit = new Gauge({
    name: 'regcache_upstream_ratelimit_limit',
    help: 'The last ratelimit-limit value an upstream sent.',
    labelNames: ['upstream'] as const,
    registers: [this.registry],
  })
  readonly fillsInFlight = new Gauge({
    name: 'regcache_fills_in_flight',
    help: 'Blob downloads from upstream in progress.',
    registers: [this.registry],
  })
  readonly fillResults = new Counter({
    name: 'regcache_fills_total',
    help: 'Blob downloads from upstream by result (ok, digest_mismatch, error, disk_error).',
    labelNames: ['result'] as const,
    registers: [this.registry],
  })
  readonly coalesced = new Counter({
    name: 'regcache_coalesced_total',
    help: 'Requests that shared another request\'s upstream call instead of making their own, by kind.',
    labelNames: ['kind'] as const,
    registers: [this.registry],
  })
  readonly authFailures = new Counter({
    name: 'regcache_auth_failures_total',
    help: 'Requests refused for their credentials or throttled, by reason (bad-credentials, anonymous-off, throttled, upstream-rejected, invalid-*).',
    labelNames: ['reason'] as const,
    registers: [this.registry],
  })
  readonly clientRechecks = new Counter({
    name: 'regcache_client_rechecks_total',
    help: 'For upstreams with credentials: client, times upstream was asked whether a client may read a repository, by outcome.',
    labelNames: ['upstream', 'outcome'] as const,
    registers: [this.registry],
  })
  readonly rangeForwards = new Counter({
    name: 'regcache_range_forwards_total',
    help: 'Ranges of blobs not cached yet asked for: forwarded upstream, coalesced with an identical forward, rejected (upstream answered another range), failed (no answer), or waited for the fill (blobs.rangeForwards reached).',
    labelNames: ['result'] as const,
    registers: [this.registry],
  })
  readonly rangeForwardedBytes = new Counter({
    name: 'regcache_range_forwarded_bytes_total',
    help: 'Bytes received from upstream for forwarded ranges (relayed to clients, never stored).',
    registers: [this.registry],
  })
  readonly cacheBytes = new Gauge({ name: 'regcache_cache_bytes', help: 'Bytes of content stored.', registers: [this.registry] })
  readonly cacheLimit = new Gauge({ name: 'regcache_cache_limit_bytes', help: 'cache.maxSize, 0 when unbounded.', registers: [this.registry] })
  readonly cacheBlobs = new Gauge({ name: 'regcache_cache_blobs', help: 'Blobs and manifests stored.', registers: [this.registry] })
  readonly evictions = new Counter({ name: 'regcache_evictions_total', help: 'Blobs evicted to stay under cache.maxSize or cache.maxAge.', registers: [this.registry] })
  readonly scrubbed = new Counter({
    name: 'regcache_scrub_checked_total',
    help: 'Stored content re-hashed by the background scrub or while served whole, by result (ok, corrupt).',
    labelNames: ['result'],
    registers: [this.registry],
  })
  readonly storeUp = new Gauge({
    name: 'regcache_store_up',
    help: 'Whether the content store answered its last readiness check (1) or not (0).',
    registers: [this.registry],
  })
  readonly storeErrors = new Counter({
    name: 'regcache_store_errors_total',
    help: 'Requests answered 503 because the content store could not be reached.',
    registers: [this.registry],
  })
  readonly redirects = new Counter({
    name: 'regcache_blob_redirects_total',
    help: 'Blob GETs answered with a presigned URL of the object store (redirect mode).',
    registers: [this.registry],
  })

  readonly prefetches = new Counter({
    name: 'regcache_prefetch_total',
    help: 'Prefetch checks of listed tags by result (fetched: new content was downloaded; cached: everything was stored already; error).',
    labelNames: ['result'] as const,
    registers: [this.registry],
  })
  readonly prefetchBytes = new Counter({
    name: 'regcache_prefetch_bytes_total',
    help: 'Blob bytes downloaded from upstream by prefetch, before any client asked.',
    registers: [this.registry],
  })
  readonly prefetchPending = new Gauge({
    name: 'regcache_prefetch_pending',
    help: 'Tags (switch: when-cached) whose clients are still served the previous digest while the new image is prefetched.',
    registers: [this.registry],
  })

  constructor() {
    collectDefaultMetrics({ register: this.registry, prefix: 'regcache_' })
    // Known label values start at 0, so rates, dashboards and alerts have a series before the first event.
    for (const result of ['fetched', 'cached', 'error']) this.prefetches.inc({ result }, 0)
    for (const result of ['ok', 'corrupt']) this.scrubbed.inc({ result }, 0)
    for (const result of ['forwarded', 'coalesced', 'waited', 'rejected', 'failed']) this.rangeForwards.inc({ result }, 0)
    for (const reason of ['bad-credentials', 'anonymous-off', 'throttled', 'upstream-rejected']) this.authFailures.inc({ reason }, 0)
  }
}

/** "2xx", "4xx", or the named transport failure. */
export function statusClass(status: number): string {
  return `${Math.floor(status / 100)}xx`
}
