// Blobs through the HTTP routes: one upstream GET however many clients ask, warm hits with no
// upstream call, ranges, repository isolation, and upstream misbehaving mid-blob.
import t from 'tap'
import { buildTestApp, type TestApp } from './app.js'

const SIZE = 48 * 1024

function blob(a: TestApp, repo: string, digest: string, headers: Record<string, string> = {}, method: 'GET' | 'HEAD' = 'GET') {
  return a.app.inject({ method, url: `/v2/${repo}/blobs/${digest}`, headers })
}

t.test('N concurrent clients, one upstream GET; then served from cache with no upstream call', async (t) => {
  const a = await buildTestApp(t)
  const b = a.registry.randomBlob('app', SIZE)
  const all = await Promise.all(Array.from({ length: 8 }, () => blob(a, 'app', b.digest)))
  for (const r of all) {
    t.equal(r.statusCode, 200)
    t.ok(r.rawPayload.equals(b.bytes))
  }
  t.equal(a.registry.count('GET', 'blob'), 1, 'one download')
  t.same(
    all.map((r) => r.headers['x-regcache-cache']).sort(),
    ['coalesced', 'coalesced', 'coalesced', 'coalesced', 'coalesced', 'coalesced', 'coalesced', 'miss'],
  )
  await a.drain()
  a.registry.resetCounts()
  a.meta.resetCalls()
  const warm = await blob(a, 'app', b.digest)
  t.equal(warm.headers['x-regcache-cache'], 'hit')
  t.ok(warm.rawPayload.equals(b.bytes))
  t.equal(a.registry.count(), 0, 'no upstream call')
  t.equal(a.meta.calls('putContent'), 0)
  t.equal(a.store.calls('createWriter'), 1, 'written once, by the first fill')
})

t.test('HEAD: from cache when cached, else asked upstream without downloading', async (t) => {
  const a = await buildTestApp(t)
  const b = a.registry.randomBlob('app', SIZE)
  const cold = await blob(a, 'app', b.digest, {}, 'HEAD')
  t.equal(cold.statusCode, 200)
  t.equal(cold.headers['content-length'], String(SIZE))
  t.equal(a.registry.count('GET'), 0)
  t.equal(a.store.calls('createWriter'), 0)
  await blob(a, 'app', b.digest)
  await a.drain()
  a.registry.resetCounts()
  const warm = await blob(a, 'app', b.digest, {}, 'HEAD')
  t.equal(warm.headers['x-regcache-cache'], 'hit')
  t.equal(a.registry.count(), 0)
})

t.test('ranges, cold and warm', async (t) => {
  const a = await buildTestApp(t)
  const b = a.registry.randomBlob('app', SIZE)
  for (const phase of ['cold', 'warm']) {
    const part = await blob(a, 'app', b.digest, { range: 'bytes=100-199' })
    t.equal(part.statusCode, 206, phase)
    t.equal(part.headers['content-range'], `bytes 100-199/${SIZE}`)
    t.ok(part.rawPayload.equals(b.bytes.subarray(100, 200)))
    await a.drain()
  }
  const tail = await blob(a, 'app', b.digest, { range: `bytes=${SIZE - 10}-` })
  t.ok(tail.rawPayload.equals(b.bytes.subarray(SIZE - 10)))
  const bad = await blob(a, 'app', b.digest, { range: `bytes=${SIZE}-` })
  t.equal(bad.statusCode, 416)
  t.equal(bad.headers['content-range'], `bytes */${SIZE}`)
  // One whole-blob GET (the fill), plus the cold range forwarded at once (lazy pulling); warm ranges come from the cache.
  t.equal(a.registry.count('GET', 'blob'), 2)
})

t.test('repository isolation: a blob cached for one repository is served to another only once upstream confirms it there', async (t) => {
  const a = await buildTestApp(t)
  const b = a.registry.randomBlob('one', SIZE)
  await blob(a, 'one', b.digest)
  await a.drain()
  a.registry.resetCounts()
  const other = await blob(a, 'two', b.digest)
  t.equal(other.statusCode, 404, 'upstream does not have it in "two"')
  t.equal(other.json().errors[0].code, 'BLOB_UNKNOWN')
  t.equal(a.registry.count('HEAD', 'blob'), 1, 'asked upstream')

  a.registry.addBlob('two', b.bytes)
  a.registry.resetCounts()
  const confirmed = await blob(a, 'two', b.digest)
  t.equal(confirmed.statusCode, 200)
  t.equal(confirmed.headers['x-regcache-cache'], 'hit')
  t.equal(a.registry.count('HEAD', 'blob'), 1, 'one HEAD to confirm')
  t.equal(a.registry.count('GET', 'blob'), 0, 'bytes from the cache')
  a.registry.resetCounts()
  await blob(a, 'two', b.digest)
  t.equal(a.registry.count(), 0, 'confirmed once, remembered')

  a.registry.fail({ kind: 'blob', path: '/v2/four/', times: 1 }, { status: 403 })
  t.equal((await blob(a, 'four', b.digest)).statusCode, 403, 'a denial for another repository is passed on')

  await a.registry.refuse()
  const three = await blob(a, 'three', b.digest)
  t.equal(three.statusCode, 503, 'upstream unreachable: not served to an unconfirmed repository')
})

t.test('a blob that does not match its digest never reaches a client complete, and is not cached', async (t) => {
  const a = await buildTestApp(t)
  const b = a.registry.randomBlob('app', SIZE)
  a.registry.fail({ kind: 'blob', method: 'GET', times: 1 }, { wrongBytes: true })
  const bad = await blob(a, 'app', b.digest).catch((err: Error) => err)
  if (bad instanceof Error) t.pass('the transfer was cut')
  else t.ok(bad.rawPayload.length < SIZE, `cut short (${bad.rawPayload.length} bytes)`)
  await a.drain()
  t.equal(a.totals().count, 0, 'nothing recorded')
  const good = await blob(a, 'app', b.digest)
  t.equal(good.statusCode, 200)
  t.ok(good.rawPayload.equals(b.bytes), 'fetched again on the next request')
})

t.test('a connection cut mid-blob is resumed with a Range request', async (t) => {
  const a = await buildTestApp(t)
  const b = a.registry.randomBlob('app', SIZE)
  a.registry.fail({ kind: 'blob', method: 'GET', times: 1 }, { cutAfter: 10_000 })
  const res = await blob(a, 'app', b.digest)
  t.equal(res.statusCode, 200)
  t.ok(res.rawPayload.equals(b.bytes))
  t.equal(a.registry.count('GET', 'blob'), 2, 'the first GET and the resume')
})

t.test('a blob stalled mid-body is resumed after the body timeout', async (t) => {
  const a = await buildTestApp(t, { upstream: { timeouts: { connect: '1s', headers: '1s', body: '300ms' } } })
  const b = a.registry.randomBlob('app', SIZE)
  a.registry.fail({ kind: 'blob', method: 'GET', times: 1 }, { stallAfter: 1000 })
  const res = await blob(a, 'app', b.digest)
  t.ok(res.rawPayload.equals(b.bytes))
  t.match(a.registry.log.filter((l) => l.startsWith('GET blob')).length, 2)
  await a.drain()
  t.equal(a.totals().count, 1)
})

t.test('odd upstream answers for a blob', async (t) => {
  const cases = [
    { name: '404', fault: { status: 404 }, status: 404 },
    { name: '401', fault: { status: 401 }, status: 401 },
    { name: '403', fault: { status: 403 }, status: 403 },
    { name: '429', fault: { status: 429 }, status: 429 },
    { name: '500', fault: { status: 500 }, status: 503 },
  ]
  for (const c of cases) {
    await t.test(c.name, async (t) => {
      const a = await buildTestApp(t)
      const b = a.registry.randomBlob('app', 1000)
      a.registry.fail({ kind: 'blob' }, c.fault)
      const res = await blob(a, 'app', b.digest)
      t.equal(res.statusCode, c.status)
      t.equal(a.totals().count, 0)
    })
  }
})

// Found here: Blobs.startFill destroys the upstream body without an error listener when the
// Content-Length is missing; undici then emits an AbortError nobody handles, which ends the
// process. Not run until fixed, because it would take the test process down with it.
t.test('a blob without Content-Length is refused with 502 and the process survives', async (t) => {
  const a = await buildTestApp(t)
  const b = a.registry.randomBlob('app', 1000)
  a.registry.fail({ kind: 'blob' }, { noContentLength: true })
  const res = await blob(a, 'app', b.digest)
  t.equal(res.statusCode, 502)
  t.equal(a.totals().count, 0)
})

t.test('a redirected blob is followed and cached', async (t) => {
  const a = await buildTestApp(t)
  const b = a.registry.randomBlob('app', SIZE)
  a.registry.fail({ kind: 'blob', method: 'GET' }, { redirect: true })
  const res = await blob(a, 'app', b.digest)
  t.ok(res.rawPayload.equals(b.bytes))
  t.equal(a.registry.count('GET', 'redirected-blob'), 1)
  await a.drain()
  t.equal(a.totals().count, 1)
})

t.test('invalid digests are refused without asking upstream', async (t) => {
  const a = await buildTestApp(t)
  const res = await blob(a, 'app', 'sha256:1234')
  t.equal(res.statusCode, 400)
  t.equal(res.json().errors[0].code, 'DIGEST_INVALID')
  t.equal(a.registry.count(), 0)
})
