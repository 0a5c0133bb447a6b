// Per-upstream circuit breaker. After `failures` consecutive failures the upstream is marked
// down: tag requests are answered from cache without an attempt (no node waits on a hanging
// registry), and a background probe of GET /v2/ every `probeInterval` notices recovery.

import { EventEmitter } from 'node:events'

export type HealthState = 'up' | 'down'

export interface HealthOptions {
  failures: number
  probeIntervalMs: number
  /** Resolves true when upstream answered at all (any status below 500). */
  probe: () => Promise<boolean>
}

export class UpstreamHealth extends EventEmitter {
  state: HealthState = 'up'
  consecutiveFailures = 0
  lastFailure?: { at: number; reason: string }
  private timer?: NodeJS.Timeout
  private closed = false

  constructor(
    readonly name: string,
    private readonly opts: HealthOptions,
  ) {
    super()
  }

  get isDown(): boolean {
    return this.state === 'down'
  }

  success(): void {
    this.consecutiveFailures = 0
    if (this.state === 'down') this.setState('up')
  }

  /**
   * Counts a failure. A timeout marks the upstream down at once: a hanging registry would
   * otherwise make the next `failures - 1` requests wait the whole timeout too.
   */
  failure(reason: string): void {
    this.consecutiveFailures = reason === 'timeout' ? Math.max(this.consecutiveFailures + 1, this.opts.failures) : this.consecutiveFailures + 1
    this.lastFailure = { at: Date.now(), reason }
    if (this.state === 'up' && this.consecutiveFailures >= this.opts.failures) this.setState('down')
  }

  private setState(state: HealthState): void {
    this.state = state
    this.emit('change', state)
    if (state === 'down') this.scheduleProbe()
    else if (this.timer) {
      clearTimeout(this.timer)
      this.timer = undefined
    }
  }

  private scheduleProbe(): void {
    if (this.closed || this.timer) return
    this.timer = setTimeout(async () => {
      this.timer = undefined
      let ok = false
      try {
        ok = await this.opts.probe()
      } catch {
        ok = false
      }
      if (this.closed) return
      if (ok) this.success()
      else this.scheduleProbe()
    }, this.opts.probeIntervalMs)
    this.timer.unref()
  }

  close(): void {
    this.closed = true
    if (this.timer) clearTimeout(this.timer)
  }
}
