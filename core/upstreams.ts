// The configured upstreams, each with its client and health. Every upstream call goes through
// call(), so metrics and the circuit breaker see all of them.

import type { Logger } from 'pino'
import type { Config, UpstreamConfig } from '../config/config.js'
import { UpstreamClient, type UpstreamRequest, type UpstreamResponse } from '../upstream/client.js'
import { UpstreamUnreachableError } from '../upstream/errors.js'
import { UpstreamHealth } from './upstream-health.js'
import { statusClass, type Metrics } from './metrics.js'

export interface Upstream {
  readonly name: string
  readonly config: UpstreamConfig
  readonly client: UpstreamClient
  readonly health: UpstreamHealth
}

export interface UpstreamsOptions {
  config: Config
  metrics: Metrics
  log: Logger
  clientFactory?: (c: UpstreamConfig) => UpstreamClient
}

export class Upstreams {
  private readonly byName = new Map<string, Upstream>()
  private readonly metrics: Metrics

  constructor({ config, metrics, log, clientFactory = (c) => new UpstreamClient(c, { log }) }: UpstreamsOptions) {
    this.metrics = metrics
    for (const uc of Object.values(config.upstreams)) {
      const client = clientFactory(uc)
      const health = new UpstreamHealth(uc.name, {
        failures: uc.down.failures,
        probeIntervalMs: uc.down.probeIntervalMs,
        probe: () => this.probe(uc.name),
      })
      health.on('change', (state) => {
        metrics.upstreamUp.set({ upstream: uc.name }, state === 'up' ? 1 : 0)
        if (state === 'down') log.warn({ upstream: uc.name, reason: health.lastFailure?.reason }, 'upstream marked down; answering tag requests from cache')
        else log.info({ upstream: uc.name }, 'upstream reachable again')
      })
      metrics.upstreamUp.set({ upstream: uc.name }, 1)
      this.byName.set(uc.name, { name: uc.name, config: uc, client, health })
    }
  }

  get(name: string): Upstream | undefined {
    return this.byName.get(name)
  }

  all(): Upstream[] {
    return [...this.byName.values()]
  }

  /**
   * Sends a request and records its outcome. Transport failures and 5xx count against the
   * upstream's health; any other answer counts for it.
   */
  async call(up: Upstream, req: UpstreamRequest): Promise<UpstreamResponse> {
    const started = process.hrtime.bigint()
    try {
      const res = await up.client.request(req)
      this.metrics.upstreamDuration.observe({ upstream: up.name, method: req.method }, Number(process.hrtime.bigint() - started) / 1e9)
      this.metrics.upstreamRequests.inc({ upstream: up.name, method: req.method, status: statusClass(res.status) })
      if (res.status >= 500) up.health.failure(`status ${res.status}`)
      else up.health.success()
      const rl = up.client.rateLimit
      if (rl) {
        const remaining = parseFloat(rl.remaining ?? '')
        const limit = parseFloat(rl.limit ?? '')
        if (Number.isFinite(remaining)) this.metrics.rateLimitRemaining.set({ upstream: up.name }, remaining)
        if (Number.isFinite(limit)) this.metrics.rateLimitLimit.set({ upstream: up.name }, limit)
      }
      return res
    } catch (err) {
      const failure = err instanceof UpstreamUnreachableError ? err.failure : 'other'
      this.metrics.upstreamRequests.inc({ upstream: up.name, method: req.method, status: failure })
      up.health.failure(failure)
      throw err
    }
  }

  /** A response whose body broke or stalled after its headers: a failure like any other. */
  bodyFailed(up: Upstream, failure: string): void {
    this.metrics.upstreamRequests.inc({ upstream: up.name, method: 'GET', status: `body_${failure}` })
    up.health.failure(failure)
  }

  private async probe(name: string): Promise<boolean> {
    const up = this.byName.get(name)
    if (!up) return false
    try {
      const res = await up.client.request({
        method: 'GET',
        path: '',
        signal: AbortSignal.timeout(up.config.revalidate.timeoutMs),
      })
      await res.body.dump().catch(() => {})
      return res.status < 500
    } catch {
      return false
    }
  }

  /** Aborts every request in flight (end of the shutdown grace period). */
  async destroy(): Promise<void> {
    for (const up of this.byName.values()) await up.client.destroy().catch(() => {})
  }

  async close(): Promise<void> {
    for (const up of this.byName.values()) {
      up.health.close()
      await up.client.close().catch(() => {})
    }
  }
}
