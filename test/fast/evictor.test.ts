// Eviction keeps the cache under cache.maxSize, least recently used first, and never removes a
// blob that is being served.
import t from 'tap'
import { buildTestApp, type TestApp } from './app.js'

const KIB = 1024
const MIB = 1024 * KIB
const LIMIT = 40 * KIB

async function pull(a: TestApp, digest: string) {
  const res = await a.app.inject({ method: 'GET', url: `/v2/app/blobs/${digest}` })
  await a.drain()
  return res
}

t.test('the cache is brought under its limit, least recently used first; an evicted blob is fetched again', async (t) => {
  const a = await buildTestApp(t, { maxSize: '40KiB' })
  const blobs = Array.from({ length: 6 }, () => a.registry.randomBlob('app', 10 * KIB))
  for (const b of blobs) t.equal((await pull(a, b.digest)).statusCode, 200)
  // The first blob is used again: now the second is the least recently used.
  await pull(a, blobs[0].digest)
  await a.evict()
  t.ok(a.totals().bytes <= LIMIT * 0.9, `under the low watermark (${a.totals().bytes} bytes)`)
  a.registry.resetCounts()
  await pull(a, blobs[0].digest)
  t.equal(a.registry.count('GET', 'blob'), 0, 'the recently used blob stayed')
  const again = await pull(a, blobs[1].digest)
  t.equal(again.headers['x-regcache-cache'], 'miss', 'the least recently used one went')
  t.equal(a.registry.count('GET', 'blob'), 1)
})

t.test('a blob being served is never evicted', async (t) => {
  const a = await buildTestApp(t, { maxSize: '3MiB' })
  // Larger than the buffers between the file and an unread response, so the read stays open.
  const held = a.registry.randomBlob('app', 2.5 * MIB)
  await pull(a, held.digest)
  const slow = await a.app.inject({ method: 'GET', url: `/v2/app/blobs/${held.digest}`, payloadAsStream: true })
  t.equal(slow.statusCode, 200)
  for (let i = 0; i < 4; i++) await pull(a, a.registry.randomBlob('app', MIB / 4).digest)
  t.ok(a.busy().has(held.digest), 'the oldest blob is busy')
  await a.evict()
  t.ok(a.totals().bytes <= 3 * MIB, 'the limit is kept with the others')
  const chunks: Buffer[] = []
  for await (const c of slow.stream()) chunks.push(c as Buffer)
  t.ok(Buffer.concat(chunks).equals(held.bytes), 'the slow client got the whole blob')
  a.registry.resetCounts()
  const warm = await pull(a, held.digest)
  t.equal(warm.headers['x-regcache-cache'], 'hit', 'still cached')
  t.equal(a.registry.count(), 0)
})

t.test('no limit: nothing is evicted', async (t) => {
  const a = await buildTestApp(t)
  for (let i = 0; i < 3; i++) await pull(a, a.registry.randomBlob('app', 20 * KIB).digest)
  t.equal(await a.evict(), 0)
  t.equal(a.totals().count, 3)
})
