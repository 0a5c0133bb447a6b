// Blobs by digest (docs/behaviour.md#by-digest-guarantees): one upstream download per
// blob however many clients ask, streamed to each of them while it is written and verified;
// cut connections resumed with Range; wrong bytes never served whole nor kept; a crash mid-download
// leaves nothing behind; `regcache fsck` finds and repairs damaged files. Real parts throughout:
// Debian's docker-registry upstream, images pushed with skopeo, regcache in-process or as a child
// process, and TCP pass-throughs that cut or hold the upstream connection.

import { createHash } from 'node:crypto'
import { existsSync } from 'node:fs'
import { open, readdir, rm, stat } from 'node:fs/promises'
import { join } from 'node:path'
import t from 'tap'
import { startGate } from '../helpers/gate.js'
import { Agent, request, type Dispatcher } from 'undici'
import { startChildRegcache } from '../helpers/child-regcache.js'
import { startForwarder } from '../helpers/forwarder.js'
import { buildImage, pushImage, readLayoutBlob } from '../helpers/images.js'
import { waitUntil } from '../helpers/proc.js'
import { startRegistry, type Registry } from '../helpers/registry.js'
import { startRegcache } from '../helpers/regcache.js'

const MiB = 1024 * 1024
const hexOf = (digest: string) => digest.slice('sha256:'.length)
const blobFile = (dataDir: string, digest: string) => join(dataDir, 'blobs', 'sha256', hexOf(digest).slice(0, 2), hexOf(digest))
const registryBlobFile = (reg: Registry, digest: string) =>
  join(reg.dataDir, 'docker/registry/v2/blobs/sha256', hexOf(digest).slice(0, 2), hexOf(digest), 'data')

/** Images with big random layers, quick to make (see BuildImageOptions.fill). */
const buildBigImage = (layerSizes: number[]) => buildImage({ layers: layerSizes, fill: 'random' })


// ---------------------------------------------------------------------------------------------
// A client that hashes the body as it arrives (20 × 100 MB must not be buffered) and never
// throws on a cut transfer: a cut is a result to assert on.

interface DownloadResult {
  received: number
  digest: string
  /** Set when the transfer failed (connection cut, length mismatch). */
  error?: string
  aborted: boolean
  body?: Buffer
}

interface Download {
  status: number
  headers: Record<string, string | string[] | undefined>
  /** Bytes received so far (updated while the body streams). */
  received: number
  done: Promise<DownloadResult>
}

async function download(
  url: string,
  o: { dispatcher: Dispatcher; headers?: Record<string, string>; method?: 'GET' | 'HEAD'; abortAfter?: number; keep?: boolean },
): Promise<Download> {
  const res = await request(url, {
    method: o.method ?? 'GET',
    headers: { 'user-agent': 'regcache-blobs-test', ...(o.headers ?? {}) },
    dispatcher: o.dispatcher,
    headersTimeout: 60_000,
    bodyTimeout: 60_000,
  })
  const d: Download = { status: res.statusCode, headers: res.headers, received: 0, done: undefined as unknown as Promise<DownloadResult> }
  d.done = (async () => {
    const hash = createHash('sha256')
    const chunks: Buffer[] = []
    const result = (extra: Partial<DownloadResult>): DownloadResult => ({
      received: d.received,
      digest: 'sha256:' + hash.digest('hex'),
      aborted: false,
      body: o.keep ? Buffer.concat(chunks) : undefined,
      ...extra,
    })
    try {
      for await (const chunk of res.body) {
        const b = chunk as Buffer
        d.received += b.length
        hash.update(b)
        if (o.keep) chunks.push(b)
        if (o.abortAfter !== undefined && d.received >= o.abortAfter) {
          res.body.destroy()
          return result({ aborted: true })
        }
      }
      return result({})
    } catch (err) {
      return result({ error: `${(err as Error).name}: ${(err as Error).message}` })
    }
  })()
  return d
}

const header = (d: { headers: Record<string, string | string[] | undefined> }, name: string) => {
  const v = d.headers[name]
  return Array.isArray(v) ? v[0] : v
}

/** Every file below `dir` (recursively), as paths relative to it; [] when it does not exist. */
async function filesUnder(dir: string): Promise<string[]> {
  const out: string[] = []
  const walk = async (rel: string) => {
    let entries
    try {
      entries = await readdir(join(dir, rel), { withFileTypes: true })
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return
      throw err
    }
    for (const e of entries) {
      const p = rel ? `${rel}/${e.name}` : e.name
      if (e.isDirectory()) await walk(p)
      else out.push(p)
    }
  }
  await walk('')
  return out
}

/** Sizes of the files in `<dataDir>/tmp` (fills in progress). */
async function partialSizes(dataDir: string): Promise<number[]> {
  const names = await readdir(join(dataDir, 'tmp')).catch(() => [] as string[])
  const sizes: number[] = []
  for (const n of names) {
    const s = await stat(join(dataDir, 'tmp', n)).catch(() => undefined)
    if (s) sizes.push(s.size)
  }
  return sizes
}

/** Flips bytes in place, keeping the size. */
async function corruptFile(path: string, offsets: number[]): Promise<void> {
  const fh = await open(path, 'r+')
  try {
    for (const off of offsets) {
      const b = Buffer.alloc(1)
      await fh.read(b, 0, 1, off)
      b[0] = b[0]! ^ 0xff
      await fh.write(b, 0, 1, off)
    }
  } finally {
    await fh.close()
  }
}

// ---------------------------------------------------------------------------------------------

t.test('blobs through regcache', async (t) => {
  const started = Date.now()
  const reg = await startRegistry()
  t.teardown(reg.stop)
  const agent = new Agent({ connections: 64, keepAliveTimeout: 2000 })
  t.teardown(() => agent.close())

  await t.test('1. fan-out: 20 concurrent cold clients, one upstream GET, every byte right', async (t) => {
    const SIZE = 100 * MiB
    const img = await buildBigImage([SIZE])
    t.teardown(img.remove)
    await pushImage(img, reg.host, 'library/fanout:1', { timeoutMs: 120_000 })
    const digest = img.layerDigests[0]!
    const layer = await readLayoutBlob(img, digest)
    const size = layer.length

    const gate = await startGate({ host: '127.0.0.1', port: reg.port })
    t.teardown(gate.stop)
    const rc = await startRegcache({ upstreams: { 'docker.io': { url: gate.url } } })
    t.teardown(rc.stop)
    await reg.settle()
    reg.resetRequests()

    // Upstream delivers the first half, then stalls until released: the fill is half done.
    const HOLD = Math.floor(size / 2)
    gate.hold(HOLD)
    const url = `${rc.url}/v2/library/fanout/blobs/${digest}`
    const [clients, aborter] = await Promise.all([
      Promise.all(Array.from({ length: 20 }, () => download(url, { dispatcher: agent }))),
      download(url, { dispatcher: agent, abortAfter: MiB }),
    ])
    await waitUntil('the fill reaches the hold point', async () => gate.held() === 1 && (await partialSizes(rc.dataDir)).some((s) => s >= HOLD - 64 * 1024), {
      timeoutMs: 30_000,
    })

    const aborted = await aborter.done
    t.ok(aborted.aborted && aborted.received >= MiB && aborted.received < size, `the extra client hung up after ${aborted.received} bytes`)

    // Late joiner with a Range, while the fill is half done.
    const N = Math.floor(HOLD / 2) + 12345
    const ranged = await download(url, { dispatcher: agent, headers: { range: `bytes=${N}-` }, keep: true })
    t.equal(ranged.status, 206, 'Range mid-fill: 206')
    t.equal(header(ranged, 'content-range'), `bytes ${N}-${size - 1}/${size}`, 'Range mid-fill: Content-Range')
    t.equal(header(ranged, 'content-length'), String(size - N), 'Range mid-fill: Content-Length')

    // Bytes are streamed while the download runs, not after it.
    await waitUntil(
      'every client received the bytes on disk',
      async () => clients.every((c) => c.received >= HOLD / 2) && ranged.received >= Math.floor(HOLD / 4),
      { timeoutMs: 30_000 },
    ).then(
      () => t.pass('all clients got bytes while the fill was half done'),
      (err) => t.fail(`clients did not receive bytes while the fill was running: ${(err as Error).message}`),
    )
    t.ok(
      clients.every((c) => c.received < size),
      'no client has the whole blob before upstream sent it',
    )
    t.equal(gate.held(), 1, 'upstream is still held (the fill is mid-way)')
    gate.release()

    const results = await Promise.all(clients.map((c) => c.done))
    for (const [i, c] of clients.entries()) {
      const r = results[i]!
      t.equal(c.status, 200, `client ${i}: 200`)
      t.equal(header(c, 'content-length'), String(size), `client ${i}: Content-Length`)
      t.equal(header(c, 'docker-content-digest'), digest, `client ${i}: Docker-Content-Digest`)
      t.notOk(r.error, `client ${i}: no transfer error`)
      t.equal(r.received, size, `client ${i}: ${r.received} bytes`)
      t.equal(r.digest, digest, `client ${i}: the bytes hash to the digest`)
    }
    const rr = await ranged.done
    t.notOk(rr.error, 'Range client: no transfer error')
    t.ok(rr.body?.equals(layer.subarray(N)), `Range client: bytes ${N}- of the blob (${rr.received} bytes)`)

    const outcomes = [...clients, aborter].map((c) => header(c, 'x-regcache-cache'))
    t.equal(outcomes.filter((o) => o === 'miss').length, 1, 'one client was the miss')
    t.equal(outcomes.filter((o) => o === 'coalesced').length, outcomes.length - 1, `the others coalesced (${outcomes.join(', ')})`)
    t.equal(header(ranged, 'x-regcache-cache'), 'coalesced', 'the Range client coalesced')

    await reg.settle()
    t.equal(reg.count({ method: 'GET', pathIncludes: `/blobs/${digest}` }), 1, 'exactly one upstream GET for the blob')
    await waitUntil('fill result counted', async () => (await rc.metric('regcache_fills_total')) >= 1, { timeoutMs: 10_000 }).catch(() => {})
    t.equal(await rc.metric('regcache_fills_total', { result: 'ok' }), 1, 'regcache_fills_total{result="ok"} is 1')
    t.equal(await rc.metric('regcache_fills_total'), 1, 'no other fill results')
    t.ok(existsSync(blobFile(rc.dataDir, digest)), 'the blob is stored')
    t.same(await filesUnder(join(rc.dataDir, 'tmp')), [], 'tmp/ is empty')

    const again = await download(url, { dispatcher: agent })
    const againR = await again.done
    t.equal(header(again, 'x-regcache-cache'), 'hit', 'afterwards: a hit')
    t.equal(againR.digest, digest, 'afterwards: right bytes')
    await reg.settle()
    t.equal(reg.count({ method: 'GET', pathIncludes: `/blobs/${digest}` }), 1, 'still one upstream GET')
  })

  await t.test('1b. the client whose request started the fill hangs up: the others still get the blob', async (t) => {
    const img = await buildBigImage([8 * MiB])
    t.teardown(img.remove)
    await pushImage(img, reg.host, 'library/quitter:1')
    const digest = img.layerDigests[0]!
    const size = img.layerSizes[0]!
    const gate = await startGate({ host: '127.0.0.1', port: reg.port })
    t.teardown(gate.stop)
    const rc = await startRegcache({ upstreams: { 'docker.io': { url: gate.url } } })
    t.teardown(rc.stop)
    await reg.settle()
    reg.resetRequests()
    gate.hold(Math.floor(size / 2))
    const url = `${rc.url}/v2/library/quitter/blobs/${digest}`

    const first = await download(url, { dispatcher: agent, abortAfter: MiB })
    t.equal(header(first, 'x-regcache-cache'), 'miss', 'the first client started the fill')
    const quit = await first.done
    t.ok(quit.aborted, `the first client hung up after ${quit.received} bytes`)
    await waitUntil('the fill reaches the hold point', async () => gate.held() === 1, { timeoutMs: 30_000 })
    const others = await Promise.all([0, 1, 2].map(() => download(url, { dispatcher: agent })))
    gate.release()
    for (const [i, o] of others.entries()) {
      const r = await o.done
      t.equal(header(o, 'x-regcache-cache'), 'coalesced', `client ${i} joined the running fill`)
      t.notOk(r.error, `client ${i}: no transfer error`)
      t.equal(r.received, size, `client ${i}: the whole blob`)
      t.equal(r.digest, digest, `client ${i}: the bytes hash to the digest`)
    }
    await reg.settle()
    t.equal(reg.count({ method: 'GET', pathIncludes: `/blobs/${digest}` }), 1, 'one upstream GET')
    await waitUntil('fill result counted', async () => (await rc.metric('regcache_fills_total')) >= 1, { timeoutMs: 10_000 }).catch(() => {})
    t.equal(await rc.metric('regcache_fills_total', { result: 'ok' }), 1, 'the fill completed')
    t.ok(existsSync(blobFile(rc.dataDir, digest)), 'the blob is stored')
  })

  await t.test('2. resume: a cut upstream connection is resumed with Range', async (t) => {
    const img = await buildBigImage([4 * MiB])
    t.teardown(img.remove)
    await pushImage(img, reg.host, 'library/resume:1')
    const digest = img.layerDigests[0]!
    const size = img.layerSizes[0]!

    const fwd = await startForwarder({ host: '127.0.0.1', port: reg.port })
    t.teardown(fwd.stop)
    const rc = await startRegcache({ upstreams: { 'docker.io': { url: fwd.url } } })
    t.teardown(rc.stop)
    await reg.settle()
    reg.resetRequests()

    await fwd.setMode('cut', { cutAfterBytes: Math.floor(size / 2), cutConnections: 1 })
    const d = await download(`${rc.url}/v2/library/resume/blobs/${digest}`, { dispatcher: agent, keep: true })
    const r = await d.done
    t.equal(d.status, 200, 'status 200')
    t.notOk(r.error, 'no transfer error')
    t.equal(r.received, size, 'the whole blob')
    t.equal(r.digest, digest, 'the bytes hash to the digest')
    t.ok(r.body?.equals(await readLayoutBlob(img, img.layerDigests[0]!)), 'byte for byte')

    await reg.settle()
    const gets = reg.requests({ method: 'GET', pathIncludes: `/blobs/${digest}` })
    t.ok(gets.length >= 2, `upstream saw ${gets.length} GETs for the blob (the first one was cut)`)
    t.equal(gets.length, 2, 'exactly one resume')
    t.ok(
      gets.some((g) => g.status === 206),
      `a GET answered 206, i.e. it carried a Range (${gets.map((g) => g.status).join(', ')})`,
    )
    const logs = await rc.logs()
    const warn = logs.find((l) => /resuming blob download/.test(String(l.msg)))
    t.ok(warn, "the 'resuming blob download' warning was logged")
    if (warn) t.ok(warn.offset > 0 && warn.offset < size, `resumed at byte ${warn.offset}`)
    await waitUntil('fill result counted', async () => (await rc.metric('regcache_fills_total')) >= 1, { timeoutMs: 10_000 }).catch(() => {})
    t.equal(await rc.metric('regcache_fills_total', { result: 'ok' }), 1, 'the fill succeeded')
    t.ok(existsSync(blobFile(rc.dataDir, digest)), 'the blob is stored')
    t.same(await filesUnder(join(rc.dataDir, 'tmp')), [], 'tmp/ is empty')
  })

  await t.test('3. wrong bytes from upstream: never served whole, never kept', async (t) => {
    const img = await buildBigImage([2 * MiB])
    t.teardown(img.remove)
    await pushImage(img, reg.host, 'library/liar:1')
    const digest = img.layerDigests[0]!
    const size = img.layerSizes[0]!
    // The registry now serves different bytes of the same length under the same digest.
    const stored = registryBlobFile(reg, digest)
    t.equal((await stat(stored)).size, size, 'found the blob in the registry storage')
    await corruptFile(stored, [1000, Math.floor(size / 2), size - 2])

    // Held mid-way so several readers share the lying fill: every one of them must be cut.
    const gate = await startGate({ host: '127.0.0.1', port: reg.port })
    t.teardown(gate.stop)
    const rc = await startRegcache({ upstreams: { 'docker.io': { url: gate.url } } })
    t.teardown(rc.stop)
    await reg.settle()
    reg.resetRequests()
    const url = `${rc.url}/v2/library/liar/blobs/${digest}`

    /** Asserts that a response never delivered its whole body. */
    const assertCut = async (what: string, started: Promise<Download>, expectedLength: number) => {
      let d: Download
      try {
        d = await started
      } catch (err) {
        t.pass(`${what}: the request failed before any body (${(err as Error).message})`)
        return
      }
      const r = await d.done
      const announced = Number(header(d, 'content-length') ?? NaN)
      if (d.status === 200 || d.status === 206) {
        t.equal(announced, expectedLength, `${what}: Content-Length ${announced}`)
        t.ok(
          r.error !== undefined || r.received < announced,
          `${what}: the client did not receive a complete body (status ${d.status}, ${r.received} of ${announced} bytes, error: ${r.error ?? 'none'})`,
        )
        t.ok(r.received < expectedLength, `${what}: fewer than ${expectedLength} bytes arrived (${r.received})`)
        t.not(header(d, 'x-regcache-cache'), 'hit', `${what}: not served from cache`)
      } else {
        t.ok(d.status >= 500, `${what}: an error status (${d.status})`)
      }
    }
    const attempt = (what: string) => assertCut(what, download(url, { dispatcher: agent }), size)

    gate.hold(Math.floor(size / 2))
    const readers = [0, 1, 2].map(() => download(url, { dispatcher: agent }))
    await Promise.allSettled(readers)
    await waitUntil('the fill reaches the hold point', async () => gate.held() === 1, { timeoutMs: 30_000 })
    const R = Math.floor(size / 4)
    const lateRange = download(url, { dispatcher: agent, headers: { range: `bytes=${R}-` } })
    await Promise.allSettled([lateRange])
    gate.release()
    for (const [i, r] of readers.entries()) await assertCut(`concurrent reader ${i}`, r, size)
    await assertCut('late Range reader', lateRange, size - R)
    await reg.settle()
    t.equal(reg.count({ method: 'GET', pathIncludes: `/blobs/${digest}` }), 1, 'the four readers shared one upstream GET')
    await waitUntil('fill result counted', async () => (await rc.metric('regcache_fills_total')) >= 1, { timeoutMs: 10_000 }).catch(() => {})
    t.equal(await rc.metric('regcache_fills_total', { result: 'digest_mismatch' }), 1, 'regcache_fills_total{result="digest_mismatch"} is 1')
    t.equal(await rc.metric('regcache_fills_total', { result: 'ok' }), 0, 'no successful fill')
    t.same(
      (await filesUnder(join(rc.dataDir, 'blobs'))).filter((f) => f.includes(hexOf(digest))),
      [],
      'nothing for the digest under blobs/',
    )
    t.same(await filesUnder(join(rc.dataDir, 'tmp')), [], 'tmp/ is empty')
    t.notOk(rc.storage.meta.getContent(digest), 'no metadata row for the digest')

    await attempt('a later request')
    await reg.settle()
    t.equal(reg.count({ method: 'GET', pathIncludes: `/blobs/${digest}` }), 2, 'the later request went upstream again')
    t.same(
      (await filesUnder(join(rc.dataDir, 'blobs'))).filter((f) => f.includes(hexOf(digest))),
      [],
      'still nothing for the digest under blobs/',
    )
    t.same(await filesUnder(join(rc.dataDir, 'tmp')), [], 'tmp/ is still empty')
  })

  await t.test('4. crash mid-fill, restart, fsck and hand-deleted files (child process)', async (t) => {
    const img = await buildBigImage([32 * MiB, MiB, MiB])
    t.teardown(img.remove)
    await pushImage(img, reg.host, 'library/crash:1')
    const [big, damaged, deleted] = img.layerDigests as [string, string, string]
    const [bigLayer, damagedLayer, deletedLayer] = await Promise.all([big, damaged, deleted].map((d) => readLayoutBlob(img, d)))

    const gate = await startGate({ host: '127.0.0.1', port: reg.port })
    t.teardown(gate.stop)
    const rc = await startChildRegcache({ upstreams: { 'docker.io': { url: gate.url } } })
    t.teardown(rc.stop)
    await reg.settle()
    reg.resetRequests()
    const urlOf = (d: string) => `${rc.url}/v2/library/crash/blobs/${d}`

    // Upstream stalls after 8 MiB of the 32 MiB blob: the fill is mid-way when regcache dies.
    const HOLD = 8 * MiB
    gate.hold(HOLD)
    const client = await download(urlOf(big), { dispatcher: agent })
    t.equal(client.status, 200, 'the download started')
    await waitUntil('a partial file in tmp/', async () => (await partialSizes(rc.dataDir)).some((s) => s >= HOLD - 64 * 1024), { timeoutMs: 30_000 })
    const exit = await rc.kill9()
    t.equal(exit.signal, 'SIGKILL', 'regcache was killed with SIGKILL')
    const cut = await client.done
    t.ok(cut.error !== undefined && cut.received < bigLayer.length, `the client's transfer was cut (${cut.received} bytes, ${cut.error})`)
    t.ok((await partialSizes(rc.dataDir)).length > 0, 'the crash left a partial file in tmp/')
    gate.release()

    await rc.restart()
    t.same(await filesUnder(join(rc.dataDir, 'tmp')), [], 'after the restart tmp/ is empty')
    t.notOk(existsSync(blobFile(rc.dataDir, big)), 'the half-downloaded blob is not in blobs/')

    const get = async (digest: string, bytes: Buffer, what: string) => {
      const d = await download(urlOf(digest), { dispatcher: agent, keep: true })
      const r = await d.done
      t.equal(d.status, 200, `${what}: 200`)
      t.notOk(r.error, `${what}: no transfer error`)
      t.equal(r.digest, digest, `${what}: the bytes hash to the digest`)
      t.ok(r.body?.equals(bytes), `${what}: byte for byte`)
      return d
    }
    const afterRestart = await get(big, bigLayer, 'after the restart, the big blob')
    t.equal(header(afterRestart, 'x-regcache-cache'), 'miss', 'after the restart, the big blob: a miss (fetched anew)')
    await get(damaged, damagedLayer, 'a second blob')
    await get(deleted, deletedLayer, 'a third blob')
    for (const d of [big, damaged, deleted]) t.ok(existsSync(blobFile(rc.dataDir, d)), `${d.slice(0, 19)} stored`)

    // fsck on a clean store.
    const clean = await rc.cli(['fsck'])
    t.equal(clean.code, 0, `fsck on a clean store exits 0\n${clean.stdout}${clean.stderr}`)
    t.match(clean.stdout, /checked \d+ blobs: \d+ ok, 0 corrupt, 0 orphaned, 0 missing/)

    // One stored blob damaged on disk.
    await corruptFile(blobFile(rc.dataDir, damaged), [12345])
    const check = await rc.cli(['fsck'])
    t.equal(check.code, 1, `fsck finds the damage: exit 1\n${check.stderr}`)
    t.match(check.stdout, new RegExp(`^corrupt\\s+${damaged}\\b`, 'm'), 'fsck names the damaged blob as corrupt')
    t.notMatch(check.stdout, new RegExp(`^\\S+\\s+(${big}|${deleted})\\b`, 'm'), 'and no other blob')
    t.match(check.stdout, /checked \d+ blobs: \d+ ok, 1 corrupt, 0 orphaned, 0 missing/, 'summary line')

    // Repairs delete files: refused while the server owns the data directory.
    const refused = await rc.cli(['fsck', '--repair'])
    t.equal(refused.code, 1, `fsck --repair while the server runs is refused\n${refused.stdout}${refused.stderr}`)
    t.match(refused.stderr, /in use by another regcache process/, 'with a clear message')
    t.ok(existsSync(blobFile(rc.dataDir, damaged)), 'and nothing is removed')
    await rc.kill9()
    const repair = await rc.cli(['fsck', '--repair'])
    t.equal(repair.code, 0, `fsck --repair exits 0\n${repair.stdout}${repair.stderr}`)
    t.match(repair.stdout, new RegExp(`^corrupt\\s+${damaged}\\b`, 'm'), 'fsck --repair names it too')
    t.notOk(existsSync(blobFile(rc.dataDir, damaged)), 'the corrupt file is gone')
    const after = await rc.cli(['fsck'])
    t.equal(after.code, 0, `fsck after the repair exits 0\n${after.stdout}`)
    await rc.restart()

    await reg.settle()
    const before = reg.count({ method: 'GET', pathIncludes: `/blobs/${damaged}` })
    await get(damaged, damagedLayer, 'after the repair, the damaged blob')
    await reg.settle()
    t.equal(reg.count({ method: 'GET', pathIncludes: `/blobs/${damaged}` }), before + 1, 'it was fetched from upstream again')
    t.ok(existsSync(blobFile(rc.dataDir, damaged)), 'and stored again')

    // A blob recorded in the database but deleted by hand, while the server runs.
    await rm(blobFile(rc.dataDir, deleted))
    const beforeDeleted = reg.count({ method: 'GET', pathIncludes: `/blobs/${deleted}` })
    const refetched = await get(deleted, deletedLayer, 'a blob whose file was deleted by hand')
    t.equal(header(refetched, 'x-regcache-cache'), 'miss', 'a blob whose file was deleted by hand: a miss')
    await reg.settle()
    t.equal(reg.count({ method: 'GET', pathIncludes: `/blobs/${deleted}` }), beforeDeleted + 1, 'it was fetched from upstream again')
    t.ok(existsSync(blobFile(rc.dataDir, deleted)), 'and stored again')

    const final = await rc.cli(['fsck'])
    t.equal(final.code, 0, `fsck at the end exits 0\n${final.stdout}`)
    t.match(final.stdout, /checked \d+ blobs: \d+ ok, 0 corrupt, 0 orphaned, 0 missing/)
  })

  await t.test('5. HEAD on a cold blob answers from upstream without downloading it', async (t) => {
    const img = await buildBigImage([MiB])
    t.teardown(img.remove)
    await pushImage(img, reg.host, 'library/headonly:1')
    const digest = img.layerDigests[0]!
    const size = img.layerSizes[0]!
    const rc = await startRegcache({ upstreams: { 'docker.io': { url: reg.url } } })
    t.teardown(rc.stop)
    await reg.settle()
    reg.resetRequests()

    const d = await download(`${rc.url}/v2/library/headonly/blobs/${digest}`, { dispatcher: agent, method: 'HEAD' })
    const r = await d.done
    t.equal(d.status, 200, 'HEAD: 200')
    t.equal(header(d, 'content-length'), String(size), 'Content-Length is the blob size')
    t.equal(header(d, 'docker-content-digest'), digest, 'Docker-Content-Digest')
    t.equal(r.received, 0, 'no body')
    await reg.settle()
    t.equal(reg.count({ method: 'HEAD', pathIncludes: `/blobs/${digest}` }), 1, 'one upstream HEAD')
    t.equal(reg.count({ method: 'GET', pathIncludes: `/blobs/${digest}` }), 0, 'no upstream GET')
    t.equal(await rc.metric('regcache_fills_total'), 0, 'no fill started')
    t.same(await filesUnder(join(rc.dataDir, 'tmp')), [], 'nothing in tmp/')
    t.notOk(existsSync(blobFile(rc.dataDir, digest)), 'nothing stored')
  })

  t.comment(`blobs.test: ${((Date.now() - started) / 1000).toFixed(1)} s`)
})

