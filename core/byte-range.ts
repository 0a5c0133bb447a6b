// A client's single byte range before the blob's size is known, and its resolution against a
// size (RFC 9110 §14.1.2). A range on a blob not cached yet is parsed before anyone knows how big
// the blob is, so the suffix form ("the last N bytes") stays unresolved until then.

export type RangeSpec = { kind: 'from'; start: number; end?: number } | { kind: 'suffix'; length: number }

export type ResolvedRange = { kind: 'full' } | { kind: 'partial'; start: number; end: number } | { kind: 'unsatisfiable' }

export function resolveRange(spec: RangeSpec | undefined, size: number): ResolvedRange {
  if (spec === undefined) return { kind: 'full' }
  if (spec.kind === 'suffix') {
    if (spec.length === 0 || size === 0) return { kind: 'unsatisfiable' }
    return { kind: 'partial', start: Math.max(0, size - spec.length), end: size - 1 }
  }
  if (spec.start >= size || (spec.end !== undefined && spec.end < spec.start)) return { kind: 'unsatisfiable' }
  return { kind: 'partial', start: spec.start, end: spec.end === undefined ? size - 1 : Math.min(spec.end, size - 1) }
}
