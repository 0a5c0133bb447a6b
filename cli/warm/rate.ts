// Download rate over a sliding window, so the rate and the ETA follow what the link does now
// rather than the average since the start. Time is passed in, which keeps this testable.

export class RateMeter {
  private readonly samples: Array<{ at: number; bytes: number }> = []

  constructor(private readonly windowMs = 5000) {}

  /** Records that `bytes` had arrived in total at time `at` (milliseconds). */
  record(at: number, bytes: number): void {
    const last = this.samples[this.samples.length - 1]
    if (last && last.at === at) last.bytes = bytes
    else this.samples.push({ at, bytes })
    // Keep one sample older than the window so the window is always fully covered.
    while (this.samples.length > 2 && this.samples[1].at <= at - this.windowMs) this.samples.shift()
  }

  /** Bytes per second over the window ending at `at`; 0 until two samples span some time. */
  rate(at: number): number {
    if (this.samples.length < 2) return 0
    const first = this.samples[0]
    const last = this.samples[this.samples.length - 1]
    const span = Math.max(at, last.at) - first.at
    return span > 0 ? ((last.bytes - first.bytes) * 1000) / span : 0
  }
}
