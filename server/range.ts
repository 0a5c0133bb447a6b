// Single byte ranges (RFC 9110 §14.1.2), with the answers the OCI conformance suite checks
// (docs/protocol.md#blob-responses-and-ranges). Multi-range requests are answered with the whole body: podman falls back,
// and a single-part 206 to a multi-range request would be wrong.

export type RangeResult =
  | { kind: 'full' }
  | { kind: 'partial'; start: number; end: number }
  | { kind: 'unsatisfiable' }

export function parseRange(header: string | undefined, size: number): RangeResult {
  if (header === undefined) return { kind: 'full' }
  const m = /^\s*bytes\s*=\s*(.*)$/i.exec(header)
  if (!m) return { kind: 'full' }
  const spec = m[1].trim()
  if (spec.includes(',')) return { kind: 'full' }
  const r = /^(\d*)\s*-\s*(\d*)$/.exec(spec)
  if (!r || (r[1] === '' && r[2] === '')) return { kind: 'full' }
  if (r[1] === '') {
    const suffix = Number(r[2])
    if (suffix === 0 || size === 0) return { kind: 'unsatisfiable' }
    return { kind: 'partial', start: Math.max(0, size - suffix), end: size - 1 }
  }
  const start = Number(r[1])
  // A last position before the first makes the range invalid, and an invalid Range is ignored
  // (RFC 9110 §14.1.1, §14.2): the whole body, not a 416.
  if (r[2] !== '' && Number(r[2]) < start) return { kind: 'full' }
  const end = r[2] === '' ? size - 1 : Math.min(Number(r[2]), size - 1)
  if (start >= size) return { kind: 'unsatisfiable' }
  return { kind: 'partial', start, end }
}
