// A bound on bytes held in memory by requests in flight (manifests being downloaded): many
// stalled or slow upstream bodies must not add up to an out-of-memory kill.

export class ByteBudget {
  private used = 0

  constructor(readonly limitBytes: number) {}

  /** Takes `n` bytes if they fit; false (nothing taken) when they do not. */
  take(n: number): boolean {
    if (this.used + n > this.limitBytes) return false
    this.used += n
    return true
  }

  give(n: number): void {
    this.used = Math.max(0, this.used - n)
  }

  get inUse(): number {
    return this.used
  }
}
