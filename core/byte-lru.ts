// A least-recently-used map bounded by the total size of its values. Keeps hot manifests in
// memory: tag requests are the most frequent request and each would otherwise read a file.

export class ByteLru {
  private readonly entries = new Map<string, Buffer>()
  private bytes = 0

  constructor(private readonly limitBytes: number) {}

  get(key: string): Buffer | undefined {
    const value = this.entries.get(key)
    if (value) {
      // Map keeps insertion order: re-inserting marks the entry most recently used.
      this.entries.delete(key)
      this.entries.set(key, value)
    }
    return value
  }

  has(key: string): boolean {
    return this.entries.has(key)
  }

  set(key: string, value: Buffer): void {
    this.delete(key)
    this.entries.set(key, value)
    this.bytes += value.length
    for (const [k, v] of this.entries) {
      if (this.bytes <= this.limitBytes) break
      this.entries.delete(k)
      this.bytes -= v.length
    }
  }

  delete(key: string): void {
    const value = this.entries.get(key)
    if (value) {
      this.entries.delete(key)
      this.bytes -= value.length
    }
  }
}
