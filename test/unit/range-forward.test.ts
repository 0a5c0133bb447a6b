// Ranges before the blob size is known, the check of upstream's answer to a forwarded range, and
// the `blobs` configuration section.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { ConfigError, loadConfig } from '../../config/config.js'
import { resolveRange } from '../../core/byte-range.js'
import { checkRangeAnswer } from '../../core/range-forward.js'
import { parseRangeSpec } from '../../server/range.js'

t.test('parseRangeSpec needs no size; resolveRange applies one', async (t) => {
  t.equal(parseRangeSpec(undefined), undefined)
  t.equal(parseRangeSpec('bytes=0-1,5-9'), undefined, 'multi-range: the whole body')
  t.equal(parseRangeSpec('items=0-1'), undefined)
  t.strictSame(parseRangeSpec('bytes=-50000'), { kind: 'suffix', length: 50_000 })
  t.strictSame(parseRangeSpec('bytes=100-'), { kind: 'from', start: 100 })
  t.strictSame(parseRangeSpec('bytes=0-1'), { kind: 'from', start: 0, end: 1 })
  t.strictSame(resolveRange({ kind: 'suffix', length: 50_000 }, 20_000_000), { kind: 'partial', start: 19_950_000, end: 19_999_999 })
  t.strictSame(resolveRange({ kind: 'suffix', length: 50_000 }, 10), { kind: 'partial', start: 0, end: 9 })
  t.strictSame(resolveRange({ kind: 'from', start: 5, end: 99 }, 10), { kind: 'partial', start: 5, end: 9 })
  t.strictSame(resolveRange({ kind: 'from', start: 10 }, 10), { kind: 'unsatisfiable' })
  t.strictSame(resolveRange(undefined, 10), { kind: 'full' })
})

t.test('checkRangeAnswer accepts exactly the range asked for, or the whole blob', async (t) => {
  const answer = (status: number, headers: Record<string, string>) => checkRangeAnswer({ status, headers }, 100, 199, 1000)
  t.equal(answer(206, { 'content-range': 'bytes 100-199/1000', 'content-length': '100' }), undefined)
  t.equal(answer(206, { 'content-range': 'bytes 100-199/1000' }), undefined, 'chunked: the length is checked while relaying')
  t.equal(answer(200, { 'content-length': '1000' }), undefined, 'Range ignored: cut to the slice')
  t.match(answer(200, { 'content-length': '999' }), /999 bytes of a 1000-byte blob/)
  t.match(answer(206, { 'content-range': 'bytes 101-200/1000', 'content-length': '100' }), /Content-Range "bytes 101-200\/1000"/)
  t.match(answer(206, { 'content-range': 'bytes 100-199/1001', 'content-length': '100' }), /Content-Range/)
  t.match(answer(206, { 'content-range': 'bytes 100-199/*', 'content-length': '100' }), /Content-Range/)
  t.match(answer(206, { 'content-length': '100' }), /Content-Range null/)
  t.match(answer(206, { 'content-range': 'bytes 100-199/1000', 'content-length': '99' }), /99-byte body/)
  t.match(answer(416, {}), /status 416/)
})

t.test('the blobs section: defaults and bad values', async (t) => {
  t.strictSame(loadConfig({ env: {} }).blobs, { rangeForwards: 8, rangeOnMiss: 'forward' })
  const dir = mkdtempSync(join(tmpdir(), 'regcache-blobs-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const load = (yaml: string) => {
    const file = join(dir, 'c.yaml')
    writeFileSync(file, yaml)
    return loadConfig({ file, env: {} })
  }
  t.strictSame(load('blobs:\n  rangeForwards: 2\n  rangeOnMiss: wait\n').blobs, { rangeForwards: 2, rangeOnMiss: 'wait' })
  for (const [yaml, key] of [
    ['blobs:\n  rangeForwards: 0\n', 'blobs.rangeForwards'],
    ['blobs:\n  rangeOnMiss: sometimes\n', 'blobs.rangeOnMiss'],
    ['blobs:\n  rangeForward: 3\n', 'blobs.rangeForward'],
  ]) {
    let err: unknown
    try {
      load(yaml)
    } catch (e) {
      err = e
    }
    t.ok(err instanceof ConfigError, yaml)
    t.match((err as ConfigError).problems.join('\n'), key)
  }
})
