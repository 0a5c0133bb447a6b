// Range requests (RFC 9110 §14) with the cases the OCI conformance suite checks on a
// 2048-byte blob (docs/protocol.md#blob-responses-and-ranges).
import t from 'tap'
import { parseRange, type RangeResult } from '../../server/range.js'

const full: RangeResult = { kind: 'full' }
const unsatisfiable: RangeResult = { kind: 'unsatisfiable' }
const part = (start: number, end: number): RangeResult => ({ kind: 'partial', start, end })

t.test('parseRange on a 2048-byte blob', async (t) => {
  const cases: [string, string | undefined, RangeResult][] = [
    ['no Range header → whole body', undefined, full],
    ['bytes=500-1499 → 500-1499 (Content-Range: bytes 500-1499/2048)', 'bytes=500-1499', part(500, 1499)],
    ['bytes=500- → from 500 to the end', 'bytes=500-', part(500, 2047)],
    ['bytes=-500 → the last 500 bytes', 'bytes=-500', part(1548, 2047)],
    ['bytes=2000-5000 → truncated to the end', 'bytes=2000-5000', part(2000, 2047)],
    ['bytes=500-0 (end before start: invalid) → ignored, whole body', 'bytes=500-0', full],
    ['bytes=5-2 (end before start: invalid) → ignored, whole body', 'bytes=5-2', full],
    ['bytes=3000-2 (invalid even though past the end) → ignored, whole body', 'bytes=3000-2', full],
    ['bytes=2048- (start at the size) → 416', 'bytes=2048-', unsatisfiable],
    ['bytes=3000-4000 (start past the end) → 416', 'bytes=3000-4000', unsatisfiable],
    ['bytes=-0 → 416', 'bytes=-0', unsatisfiable],
    ['bytes=0-0 → the first byte', 'bytes=0-0', part(0, 0)],
    ['bytes=2047- → the last byte', 'bytes=2047-', part(2047, 2047)],
    ['bytes=0-2047 → everything, as a 206', 'bytes=0-2047', part(0, 2047)],
    ['bytes=0- (containerd resuming from 0)', 'bytes=0-', part(0, 2047)],
    ['bytes=-5000 (suffix longer than the blob) → everything', 'bytes=-5000', part(0, 2047)],
    ['bytes=500-500 → one byte', 'bytes=500-500', part(500, 500)],
    ['unit is case-insensitive', 'BYTES=10-19', part(10, 19)],
    ['multi-range → whole body (never a single-part 206)', 'bytes=0-99,200-299', full],
    ['multi-range with a suffix → whole body', 'bytes=0-99, -100', full],
    ['malformed: not a number → whole body', 'bytes=abc', full],
    ['malformed: empty spec → whole body', 'bytes=', full],
    ['malformed: a lone dash → whole body', 'bytes=-', full],
    ['malformed: two dashes → whole body', 'bytes=1-2-3', full],
    ['malformed: end not a number → whole body', 'bytes=5-x', full],
    ['malformed: negative start → whole body', 'bytes=--5', full],
    ['malformed: no "=" → whole body', 'bytes 0-10', full],
    ['unknown unit → whole body', 'items=0-10', full],
    ['empty header → whole body', '', full],
  ]
  for (const [why, header, expect] of cases) t.strictSame(parseRange(header, 2048), expect, why)
})

t.test('parseRange on an empty blob', async (t) => {
  const cases: [string, string | undefined, RangeResult][] = [
    ['no Range header → whole (empty) body', undefined, full],
    ['bytes=0- → 416 (nothing to satisfy)', 'bytes=0-', unsatisfiable],
    ['bytes=0-0 → 416', 'bytes=0-0', unsatisfiable],
    ['bytes=-1 → 416', 'bytes=-1', unsatisfiable],
    ['bytes=-0 → 416', 'bytes=-0', unsatisfiable],
    ['multi-range → whole body', 'bytes=0-1,2-3', full],
  ]
  for (const [why, header, expect] of cases) t.strictSame(parseRange(header, 0), expect, why)
})

t.test('parseRange on a 1-byte blob', async (t) => {
  t.strictSame(parseRange('bytes=0-', 1), part(0, 0))
  t.strictSame(parseRange('bytes=-1', 1), part(0, 0))
  t.strictSame(parseRange('bytes=0-100', 1), part(0, 0))
  t.strictSame(parseRange('bytes=1-', 1), unsatisfiable)
})
