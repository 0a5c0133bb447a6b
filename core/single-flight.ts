// Concurrent calls with the same key share one execution (one upstream HEAD per tag, one GET per
// digest). `joined` tells a caller whether it rode on another's call, for the "coalesced" outcome.

export class SingleFlight<V> {
  private readonly inflight = new Map<string, Promise<V>>()

  run(key: string, fn: () => Promise<V>): { promise: Promise<V>; joined: boolean } {
    const existing = this.inflight.get(key)
    if (existing) return { promise: existing, joined: true }
    const promise = fn().finally(() => this.inflight.delete(key))
    this.inflight.set(key, promise)
    return { promise, joined: false }
  }

  get size(): number {
    return this.inflight.size
  }
}
