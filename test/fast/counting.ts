// Call counters on a live store object. The methods are replaced on the instance itself, so
// every holder of the object (manifests, blobs, evictor) goes through the counter: a test can
// assert "this request read no file" or "nothing was written" without a second implementation
// of the store to keep in step.

export type Counted<T> = T & {
  /** Calls of one method since the last reset (or since counting began). */
  calls(method: keyof T & string): number
  resetCalls(): void
}

export function countCalls<T extends object>(target: T, methods: readonly (keyof T & string)[]): Counted<T> {
  const calls = new Map<string, number>()
  const self = target as Record<string, unknown>
  for (const name of methods) {
    const original = self[name]
    if (typeof original !== 'function') throw new TypeError(`${name} is not a method`)
    self[name] = function (this: unknown, ...args: unknown[]) {
      calls.set(name, (calls.get(name) ?? 0) + 1)
      return (original as (...a: unknown[]) => unknown).apply(this, args)
    }
  }
  return Object.assign(target, {
    calls: (method: string) => calls.get(method) ?? 0,
    resetCalls: () => calls.clear(),
  }) as Counted<T>
}

/** The Metadata methods that write. */
export const METADATA_WRITES = ['putContent', 'deleteContents', 'link', 'setTag', 'confirmTag', 'observeDigest', 'deleteTag', 'deleteTagEntry', 'addEvent'] as const
/** The Metadata methods that read. */
export const METADATA_READS = ['getContent', 'isLinked', 'getTag', 'tagEntries', 'digestStanding', 'totals', 'leastRecentlyUsed'] as const
/** Every BlobStore method that touches files. */
export const STORE_METHODS = ['size', 'read', 'createReadStream', 'remove', 'put', 'createWriter'] as const
