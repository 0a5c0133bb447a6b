// Lazy pulling through the mirror: a range of a blob that is not cached yet (or whose download
// has not reached it) is answered from upstream at once while the blob is still downloaded once
// in the background. The main cases run against Debian's docker-registry behind a 2 MB/s link
// (a bandwidth-limited TCP forwarder); the odd upstreams (one that ignores Range, one whose
// Content-Range lies, one that holds answers to show coalescing and the per-blob bound) are tiny
// node:http servers. The stargz snapshotter's request pattern is replayed without ?ns=.

import { randomBytes } from 'node:crypto'
import http from 'node:http'
import type { AddressInfo } from 'node:net'
import t, { type Test } from 'tap'
import { Agent, request } from 'undici'
import { startForwarder, type Forwarder } from '../helpers/forwarder.js'
import { sha256, uploadBlob } from '../helpers/http.js'
import { startRegistry, type Registry } from '../helpers/registry.js'
import { startRegcache, type Regcache } from '../helpers/regcache.js'

const MB = 1_000_000
const LINK = 2 * MB

interface Got {
  status: number
  headers: Record<string, string | string[] | undefined>
  body: Buffer
}

const agent = new Agent({ keepAliveTimeout: 2000, connections: 32 })
t.teardown(() => agent.close())

async function get(url: string, headers: Record<string, string> = {}, method: 'GET' | 'HEAD' = 'GET'): Promise<Got> {
  const res = await request(url, { method, headers, dispatcher: agent, headersTimeout: 120_000, bodyTimeout: 120_000 })
  const body = Buffer.from(await res.body.arrayBuffer())
  return { status: res.statusCode, headers: res.headers, body }
}

const h = (g: Got, name: string) => {
  const v = g.headers[name]
  return Array.isArray(v) ? v[0] : v
}

/** Requests regcache's Blobs has not finished: a fill in flight. */
const fillRunning = (rc: Regcache) => rc.server.mirror.fillsInFlight > 0

async function waitFor(what: string, cond: () => boolean | Promise<boolean>, timeoutMs = 60_000): Promise<void> {
  const until = Date.now() + timeoutMs
  while (!(await cond())) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 20))
  }
}

/** Blob GETs the registry answered, by status (200: the whole blob; 206: a range). */
const blobGets = (reg: Registry, digest: string, status: number) => reg.requests({ method: 'GET', pathIncludes: `/blobs/${digest}`, status })

t.test('over a 2 MB/s link: a real registry upstream', async (t) => {
  const reg = await startRegistry()
  t.teardown(() => reg.stop())
  const link: Forwarder = await startForwarder({ host: '127.0.0.1', port: reg.port }, { bytesPerSecond: LINK })
  t.teardown(() => link.stop())

  t.test('the last 50 kB of an uncached 20 MB blob come at once while another client reads the whole blob; upstream sends it once', async (t) => {
    const blob = randomBytes(20 * MB)
    const digest = await uploadBlob(reg.url, 'lazy/big', blob)
    const rc = await startRegcache({ upstreams: { 'docker.io': { url: link.url } } })
    t.teardown(() => rc.stop())
    reg.resetRequests()
    const url = `${rc.url}/v2/lazy/big/blobs/${digest}`

    const order: string[] = []
    const tail = get(url, { range: `bytes=${blob.length - 50_000}-${blob.length - 1}` }).then((g) => {
      order.push('tail')
      return { g, fillRunning: fillRunning(rc), cachedYet: rc.storage.meta.getContent(digest) !== undefined }
    })
    // The whole-blob client joins once the tail's range started the fill.
    await waitFor('the fill to start', () => fillRunning(rc))
    const whole = get(url).then((g) => {
      order.push('whole')
      return g
    })

    const a = await tail
    t.equal(a.g.status, 206)
    t.equal(h(a.g, 'content-range'), `bytes ${blob.length - 50_000}-${blob.length - 1}/${blob.length}`)
    t.equal(h(a.g, 'x-regcache-cache'), 'range-forwarded')
    t.ok(a.g.body.equals(blob.subarray(blob.length - 50_000)), 'the tail bytes are exactly the blob’s last 50 kB')
    t.ok(a.fillRunning, 'the tail was answered while the whole blob was still downloading')
    t.notOk(a.cachedYet, 'and before it was cached')

    const b = await whole
    t.equal(b.status, 200)
    t.equal(sha256(b.body), digest, 'the whole-blob client got verified bytes')
    t.strictSame(order, ['tail', 'whole'])

    await waitFor('the blob to be cached', () => rc.storage.meta.getContent(digest) !== undefined)
    await reg.settle()
    const full = blobGets(reg, digest, 200)
    const ranges = blobGets(reg, digest, 206)
    t.equal(full.length, 1, 'upstream sent the whole blob once')
    t.equal(full[0]?.bytes, blob.length)
    t.equal(ranges.length, 1, 'plus the one forwarded range')
    t.equal(ranges[0]?.bytes, 50_000)
    t.equal(await rc.metric('regcache_range_forwards_total', { result: 'forwarded' }), 1)
    t.equal(await rc.metric('regcache_range_forwarded_bytes_total'), 50_000)
    const lines = (await rc.logs()).filter((l) => l.msg === 'request' && l.digest === digest)
    t.ok(lines.some((l) => l.cache === 'range-forwarded' && l.status === 206), 'the request log shows range-forwarded')

    // Cached now: a range is a hit, nothing more upstream.
    const hit = await get(url, { range: 'bytes=-1000' })
    t.equal(h(hit, 'x-regcache-cache'), 'hit')
    t.ok(hit.body.equals(blob.subarray(blob.length - 1000)))
    await reg.settle()
    t.equal(blobGets(reg, digest, 206).length + blobGets(reg, digest, 200).length, 2)
  })

  t.test('a range the download already holds is served from it, not forwarded', async (t) => {
    const blob = randomBytes(6 * MB)
    const digest = await uploadBlob(reg.url, 'lazy/held', blob)
    const rc = await startRegcache({ upstreams: { 'docker.io': { url: link.url } } })
    t.teardown(() => rc.stop())
    reg.resetRequests()
    const url = `${rc.url}/v2/lazy/held/blobs/${digest}`
    // A streaming whole-blob client: its progress proves how far the download got.
    const res = await request(url, { dispatcher: agent, bodyTimeout: 120_000 })
    const chunks: Buffer[] = []
    let received = 0
    res.body.on('data', (c: Buffer) => {
      chunks.push(c)
      received += c.length
    })
    const ended = new Promise((r) => res.body.once('end', r))
    await waitFor('1 MB to arrive', () => received > MB)
    const early = await get(url, { range: 'bytes=100000-899999' })
    t.equal(early.status, 206)
    t.equal(h(early, 'x-regcache-cache'), 'coalesced', 'served from the download in progress')
    t.ok(early.body.equals(blob.subarray(100_000, 900_000)))
    t.ok(fillRunning(rc), 'while the download was still running')
    await ended
    t.equal(sha256(Buffer.concat(chunks)), digest)
    await reg.settle()
    t.equal(blobGets(reg, digest, 206).length, 0, 'nothing was forwarded')
    t.equal(blobGets(reg, digest, 200).length, 1)
  })

  t.test('rangeOnMiss: wait makes a range wait for the download', async (t) => {
    const blob = randomBytes(2 * MB)
    const digest = await uploadBlob(reg.url, 'lazy/wait', blob)
    const rc = await startRegcache({ upstreams: { 'docker.io': { url: link.url } }, extra: { blobs: { rangeOnMiss: 'wait' } } })
    t.teardown(() => rc.stop())
    reg.resetRequests()
    const g = await get(`${rc.url}/v2/lazy/wait/blobs/${digest}`, { range: 'bytes=-50000' })
    t.equal(g.status, 206)
    t.equal(h(g, 'x-regcache-cache'), 'miss')
    t.ok(g.body.equals(blob.subarray(blob.length - 50_000)))
    t.ok(rc.storage.meta.getContent(digest) !== undefined, 'the tail came only once the whole blob was verified and cached')
    await reg.settle()
    t.equal(blobGets(reg, digest, 206).length, 0, 'nothing was forwarded')
    t.equal(blobGets(reg, digest, 200).length, 1)
    t.equal(await rc.metric('regcache_range_forwards_total'), 0)
  })

  t.test('the stargz snapshotter’s request pattern, without ?ns=', async (t) => {
    const blob = randomBytes(8 * MB)
    const digest = await uploadBlob(reg.url, 'lazy/estargz', blob)
    const rc = await startRegcache({ upstreams: { 'registry.test': { url: link.url } } })
    t.teardown(() => rc.stop())
    reg.resetRequests()
    const url = `${rc.url}/v2/lazy/estargz/blobs/${digest}`
    const check = (g: Got, start: number, end: number, why: string) => {
      t.equal(g.status, 206, `${why}: 206`)
      t.equal(h(g, 'content-range'), `bytes ${start}-${end}/${blob.length}`, `${why}: Content-Range`)
      t.ok(g.body.equals(blob.subarray(start, end + 1)), `${why}: the right bytes`)
      return h(g, 'x-regcache-cache')
    }

    // Is it there, and how big is it?
    check(await get(url, { range: 'bytes=0-1' }), 0, 1, 'bytes=0-1')
    const head = await get(url, {}, 'HEAD')
    t.equal(head.status, 200)
    t.equal(h(head, 'content-length'), String(blob.length))
    // Footer and table of contents.
    const tocStart = blob.length - 51_200
    t.equal(check(await get(url, { range: `bytes=${tocStart}-${blob.length - 1}` }), tocStart, blob.length - 1, 'the tail'), 'range-forwarded')
    t.ok(fillRunning(rc), 'the table of contents came while the layer was still downloading')
    // Chunks the container touches: 1–2 MB, aligned to 50,000 bytes, two at a time.
    const chunks: [number, number][] = [
      [6_000_000, 7_499_999],
      [4_000_000, 4_999_999],
      [5_000_000, 5_999_999],
      [7_500_000, blob.length - 1],
    ]
    const outcomes = await Promise.all(chunks.map(([s, e]) => get(url, { range: `bytes=${s}-${e}` }).then((g) => check(g, s, e, `bytes=${s}-${e}`))))
    t.ok(outcomes.includes('range-forwarded'), `chunks ahead of the download were forwarded (${outcomes.join(', ')})`)
    // A chunk the download has passed comes from it.
    await waitFor('the blob to be cached', () => rc.storage.meta.getContent(digest) !== undefined)
    t.equal(check(await get(url, { range: 'bytes=1000000-2999999' }), 1_000_000, 2_999_999, 'a cached chunk'), 'hit')
    await reg.settle()
    t.equal(blobGets(reg, digest, 200).length, 1, 'the layer was downloaded once')
    t.ok(reg.requests().every((r) => !r.uri.includes('ns=')), 'upstream never saw ns=')
    const forwarded = blobGets(reg, digest, 206)
    t.equal(forwarded.length, await rc.metric('regcache_range_forwards_total', { result: 'forwarded' }), 'every forward reached upstream once')
  })
})

// ---------------------------------------------------------------------------------------------
// Tiny upstreams for the answers a real registry does not give.

type RangeAnswer = 'correct' | 'ignore' | 'lie' | 'wrong-size' | 'short'

interface TinyUpstream {
  url: string
  /** Range headers received, in order (GETs without one are not listed). */
  ranges: string[]
  /** GETs without a Range header. */
  fullGets(): number
  /** Lets the held whole-blob answer finish. */
  releaseFill(): void
  /** Lets held range answers go. */
  releaseRanges(): void
  stop(): Promise<void>
}

/**
 * One blob at /v2/tiny/blob/blobs/<digest>. The whole-blob GET sends its headers and first 64 kB,
 * then waits for releaseFill(), so the fill stays behind every range in these tests.
 */
async function startTinyUpstream(blob: Buffer, answer: RangeAnswer, opts: { holdRanges?: boolean } = {}): Promise<TinyUpstream> {
  const digest = sha256(blob)
  const ranges: string[] = []
  let fullGets = 0
  let releaseFill!: () => void
  const fillReleased = new Promise<void>((r) => (releaseFill = r))
  let releaseRanges!: () => void
  const rangesReleased = opts.holdRanges ? new Promise<void>((r) => (releaseRanges = r)) : Promise.resolve()
  if (!opts.holdRanges) releaseRanges = () => {}
  const server = http.createServer((req, res) => {
    if (req.url !== `/v2/tiny/blob/blobs/${digest}`) {
      res.writeHead(404).end()
      return
    }
    if (req.method === 'HEAD') {
      res.writeHead(200, { 'content-length': blob.length }).end()
      return
    }
    const range = req.headers.range
    if (range === undefined) {
      fullGets++
      res.writeHead(200, { 'content-length': blob.length })
      res.write(blob.subarray(0, 65_536))
      void fillReleased.then(() => res.end(blob.subarray(65_536)))
      return
    }
    ranges.push(range)
    const m = /^bytes=(\d+)-(\d+)$/.exec(range)
    if (!m) {
      res.writeHead(400).end()
      return
    }
    const [start, end] = [Number(m[1]), Number(m[2])]
    void rangesReleased.then(() => {
      switch (answer) {
        case 'correct':
          res.writeHead(206, { 'content-range': `bytes ${start}-${end}/${blob.length}`, 'content-length': end - start + 1 })
          res.end(blob.subarray(start, end + 1))
          break
        case 'ignore':
          res.writeHead(200, { 'content-length': blob.length })
          res.end(blob)
          break
        case 'lie':
          // Claims the requested range but sends (and names) the one after it.
          res.writeHead(206, { 'content-range': `bytes ${start + 1}-${end + 1}/${blob.length}`, 'content-length': end - start + 1 })
          res.end(blob.subarray(start + 1, end + 2))
          break
        case 'wrong-size':
          res.writeHead(206, { 'content-range': `bytes ${start}-${end}/${blob.length + 1}`, 'content-length': end - start + 1 })
          res.end(blob.subarray(start, end + 1))
          break
        case 'short':
          // Right headers, no Content-Length (chunked), half the bytes.
          res.writeHead(206, { 'content-range': `bytes ${start}-${end}/${blob.length}` })
          res.end(blob.subarray(start, start + Math.floor((end - start + 1) / 2)))
          break
      }
    })
  })
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  const port = (server.address() as AddressInfo).port
  return {
    url: `http://127.0.0.1:${port}`,
    ranges,
    fullGets: () => fullGets,
    releaseFill: () => releaseFill(),
    releaseRanges: () => releaseRanges(),
    async stop() {
      releaseFill()
      releaseRanges()
      server.closeAllConnections()
      await new Promise<void>((r) => server.close(() => r()))
    },
  }
}

async function tinySetup(t: Test, answer: RangeAnswer, opts: { holdRanges?: boolean; blobs?: Record<string, unknown> } = {}) {
  const blob = randomBytes(4 * MB)
  const digest = sha256(blob)
  const up = await startTinyUpstream(blob, answer, opts)
  t.teardown(() => up.stop())
  const rc = await startRegcache({ upstreams: { 'docker.io': { url: up.url } }, extra: opts.blobs ? { blobs: opts.blobs } : {} })
  t.teardown(() => rc.stop())
  return { blob, digest, up, rc, url: `${rc.url}/v2/tiny/blob/blobs/${digest}` }
}

t.test('an upstream that ignores Range: its whole-blob answer is cut to the requested slice', async (t) => {
  const { blob, digest, up, rc, url } = await tinySetup(t, 'ignore')
  const g = await get(url, { range: 'bytes=3000000-3099999' })
  t.equal(g.status, 206)
  t.equal(h(g, 'x-regcache-cache'), 'range-forwarded')
  t.equal(h(g, 'content-range'), `bytes 3000000-3099999/${blob.length}`)
  t.ok(g.body.equals(blob.subarray(3_000_000, 3_100_000)))
  t.strictSame(up.ranges, ['bytes=3000000-3099999'])
  up.releaseFill()
  await waitFor('the blob to be cached', () => rc.storage.meta.getContent(digest) !== undefined)
  t.equal(up.fullGets(), 1)
})

for (const [answer, what] of [
  ['lie', 'a Content-Range naming another range'],
  ['wrong-size', 'a Content-Range naming another blob size'],
] as const) {
  t.test(`an upstream answering with ${what}: rejected, nothing served`, async (t) => {
    const { blob, digest, up, rc, url } = await tinySetup(t, answer)
    const g = await get(url, { range: 'bytes=3000000-3099999' })
    t.equal(g.status, 502)
    t.match(JSON.parse(g.body.toString('utf8')), { errors: [{ code: 'UPSTREAM_ERROR' }] })
    t.notOk(g.body.includes(blob.subarray(3_000_001, 3_000_033)), 'none of the blob’s bytes')
    t.equal(await rc.metric('regcache_range_forwards_total', { result: 'rejected' }), 1)
    // The download goes on unharmed.
    up.releaseFill()
    const whole = await get(url)
    t.equal(sha256(whole.body), digest)
  })
}

t.test('an upstream that cuts a range short: the client sees an error or a cut transfer, never a complete-looking answer', async (t) => {
  const { blob, url } = await tinySetup(t, 'short')
  const got = await get(url, { range: 'bytes=3000000-3099999' }).then(
    (g) => g,
    (err: Error) => err,
  )
  if (got instanceof Error) {
    t.pass(`the transfer was cut (${got.message})`)
  } else {
    t.equal(got.status, 502, 'the shortfall showed before the first byte: an error answer')
    t.match(JSON.parse(got.body.toString('utf8')), { errors: [{ code: 'UPSTREAM_ERROR' }] })
    t.notOk(got.body.includes(blob.subarray(3_000_000, 3_000_032)))
  }
})

t.test('identical concurrent ranges share one upstream request', async (t) => {
  const { blob, up, url } = await tinySetup(t, 'correct', { holdRanges: true })
  const a = get(url, { range: 'bytes=2000000-2099999' })
  await waitFor('the forward', () => up.ranges.length === 1)
  const b = get(url, { range: 'bytes=2000000-2099999' })
  await new Promise((r) => setTimeout(r, 200))
  up.releaseRanges()
  for (const g of await Promise.all([a, b])) {
    t.equal(h(g, 'x-regcache-cache'), 'range-forwarded')
    t.ok(g.body.equals(blob.subarray(2_000_000, 2_100_000)))
  }
  t.equal(up.ranges.length, 1)
})

t.test('past blobs.rangeForwards (default 8) a range waits for the download', async (t) => {
  const { blob, up, rc, url } = await tinySetup(t, 'correct', { holdRanges: true })
  const span = (i: number): [number, number] => [1_000_000 + i * 100_000, 1_000_000 + i * 100_000 + 49_999]
  const forwarded = Array.from({ length: 8 }, (_, i) => get(url, { range: `bytes=${span(i)[0]}-${span(i)[1]}` }))
  await waitFor('eight forwards upstream', () => up.ranges.length === 8)
  let ninthDone = false
  const ninth = get(url, { range: `bytes=${span(8)[0]}-${span(8)[1]}` }).then((g) => {
    ninthDone = true
    return g
  })
  await waitFor('the ninth to be held', async () => (await rc.metric('regcache_range_forwards_total', { result: 'waited' })) === 1)
  t.equal(up.ranges.length, 8, 'the ninth was not forwarded')
  t.notOk(ninthDone, 'the ninth waits')
  up.releaseFill()
  const g9 = await ninth
  t.equal(h(g9, 'x-regcache-cache'), 'coalesced', 'the ninth came from the download')
  t.ok(g9.body.equals(blob.subarray(span(8)[0], span(8)[1] + 1)))
  up.releaseRanges()
  for (const [i, g] of (await Promise.all(forwarded)).entries()) {
    t.equal(h(g, 'x-regcache-cache'), 'range-forwarded')
    t.ok(g.body.equals(blob.subarray(span(i)[0], span(i)[1] + 1)), `forward ${i}`)
  }
  t.equal(up.ranges.length, 8)
  t.equal(up.fullGets(), 1)
})
