// Single byte ranges (RFC 9110 §14.1.2), with the answers the OCI conformance suite checks
// (docs/protocol.md#blob-responses-and-ranges). Multi-range requests are answered with the whole body: podman falls back,
// and a single-part 206 to a multi-range request would be wrong.

import { resolveRange, type RangeSpec, type ResolvedRange } from '../core/byte-range.js'

export type RangeResult = ResolvedRange

/** The one range a Range header asks for; undefined when the whole body is to be sent. */
export function parseRangeSpec(header: string | undefined): RangeSpec | undefined {
  if (header === undefined) return undefined
  const m = /^\s*bytes\s*=\s*(.*)$/i.exec(header)
  if (!m) return undefined
  const spec = m[1].trim()
  if (spec.includes(',')) return undefined
  const r = /^(\d*)\s*-\s*(\d*)$/.exec(spec)
  if (!r || (r[1] === '' && r[2] === '')) return undefined
  if (r[1] === '') return { kind: 'suffix', length: Number(r[2]) }
  // A last position before the first makes the range invalid, and an invalid Range is ignored
  // (RFC 9110 §14.1.1, §14.2): the whole body, not a 416.
  if (r[2] !== '' && Number(r[2]) < Number(r[1])) return undefined
  return r[2] === '' ? { kind: 'from', start: Number(r[1]) } : { kind: 'from', start: Number(r[1]), end: Number(r[2]) }
}

export function parseRange(header: string | undefined, size: number): RangeResult {
  return resolveRange(parseRangeSpec(header), size)
}
