// Blob bodies sent with sendfile(2) (server/registry/blob-sendfile.ts, native/sendfile), cached
// and while the blob downloads: the same bytes and headers as the streamed path, whole and in
// ranges; keep-alive and pipelined
// requests on one connection; a client that hangs up mid-body leaves no descriptor or hold
// behind; a client that stops reading holds up nobody else; when the kernel refuses (at the
// start or part way) the rest is streamed; REGCACHE_SENDFILE=off streams everything.
// Real parts: Debian's docker-registry upstream, an image pushed with skopeo, regcache
// in-process, and raw TCP clients that read (or do not read) exactly as each case needs.

import { createHash } from 'node:crypto'
import { readdirSync } from 'node:fs'
import { connect, type Socket } from 'node:net'
import t from 'tap'
import { buildImage, pushImage, readLayoutBlob } from '../helpers/images.js'
import { waitUntil } from '../helpers/proc.js'
import { startRegistry } from '../helpers/registry.js'
import { startRegcache, type Regcache } from '../helpers/regcache.js'
import { readFile, truncate, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { pino } from 'pino'
import { stringify } from 'yaml'
import { loadConfig } from '../../config/config.js'
import { Mirror } from '../../core/mirror.js'
import { BlobStore } from '../../storage/blob-store.js'
import { blobPath } from '../../storage/layout.js'
import { buildApp } from '../../server/app.js'
import { loadSendfile, type SendfileAddon } from '../../server/registry/blob-sendfile.js'
import { makeTempDir, removeTempDir } from '../helpers/proc.js'

const MiB = 1024 * 1024
const sha256 = (b: Buffer) => 'sha256:' + createHash('sha256').update(b).digest('hex')
const openFds = () => readdirSync('/proc/self/fd').length

interface RawResponse {
  status: number
  headers: Record<string, string>
  body: Buffer
}

/** One TCP connection speaking HTTP/1.1 by hand: what is sent and read, and when, is the test's. */
class Connection {
  private buffered: Buffer = Buffer.alloc(0)
  private wake: (() => void) | undefined
  private ended = false
  received = 0

  private constructor(readonly socket: Socket) {
    socket.on('data', (c: Buffer) => {
      this.received += c.length
      this.buffered = this.buffered.length === 0 ? c : Buffer.concat([this.buffered, c])
      this.wake?.()
    })
    const end = () => {
      this.ended = true
      this.wake?.()
    }
    socket.on('end', end)
    socket.on('close', end)
    socket.on('error', () => {})
  }

  static open(host: string): Promise<Connection> {
    const [h, p] = [host.slice(0, host.lastIndexOf(':')), Number(host.slice(host.lastIndexOf(':') + 1))]
    return new Promise((resolve, reject) => {
      const s = connect({ host: h, port: p }, () => resolve(new Connection(s)))
      s.once('error', reject)
    })
  }

  send(method: string, path: string, headers: Record<string, string> = {}): void {
    const lines = [`${method} ${path} HTTP/1.1`, 'host: regcache.test', ...Object.entries(headers).map(([k, v]) => `${k}: ${v}`)]
    this.socket.write(lines.join('\r\n') + '\r\n\r\n')
  }

  private async more(): Promise<void> {
    if (this.ended) throw new Error('connection closed')
    await new Promise<void>((r) => (this.wake = r))
    this.wake = undefined
  }

  /** Reads one response; a HEAD's has no body whatever its Content-Length says. */
  async response(head = false): Promise<RawResponse> {
    let end: number
    while ((end = this.buffered.indexOf('\r\n\r\n')) < 0) await this.more()
    const [statusLine, ...lines] = this.buffered.subarray(0, end).toString('latin1').split('\r\n')
    this.buffered = this.buffered.subarray(end + 4)
    const headers: Record<string, string> = {}
    for (const l of lines) headers[l.slice(0, l.indexOf(':')).toLowerCase()] = l.slice(l.indexOf(':') + 1).trim()
    const length = head ? 0 : Number(headers['content-length'] ?? 0)
    while (this.buffered.length < length) await this.more()
    const body = Buffer.from(this.buffered.subarray(0, length))
    this.buffered = this.buffered.subarray(length)
    return { status: Number(statusLine!.split(' ')[1]), headers, body }
  }

  get closed(): boolean {
    return this.ended
  }

  close(): void {
    this.socket.destroy()
  }
}

/** The debug log lines of blob bodies, by how many bytes went through sendfile. */
async function bodyLines(rc: Regcache): Promise<{ sendfile: number; streamed: number }[]> {
  return (await rc.logs()).filter((l) => l.msg === 'blob body sent').map((l) => ({ sendfile: l.sendfile, streamed: l.streamed }))
}

t.test('cached blob bodies with sendfile', { skip: loadSendfile().ok ? false : 'the sendfile addon is not built here' }, async (t) => {
  const reg = await startRegistry()
  t.teardown(reg.stop)
  const img = await buildImage({ layers: [24 * MiB], fill: 'random' })
  t.teardown(img.remove)
  await pushImage(img, reg.host, 'library/sf:1', { timeoutMs: 120_000 })
  const digest = img.layerDigests[0]!
  const layer = await readLayoutBlob(img, digest)
  const size = layer.length
  const path = `/v2/library/sf/blobs/${digest}`

  const rc = await startRegcache({ upstreams: { 'docker.io': { url: reg.url } } })
  t.teardown(rc.stop)
  // Cached once (sent from the fill's file as it grew), then every answer below is a hit.
  {
    const c = await Connection.open(rc.host)
    c.send('GET', path)
    const r = await c.response()
    c.close()
    t.equal(r.status, 200, 'first GET fills the cache')
    t.equal(sha256(r.body), digest, 'first GET: bytes verify')
    await waitUntil('the blob is stored', async () => (await rc.storage.store.size(digest)) === size, { timeoutMs: 30_000 })
  }

  await t.test('whole blob and ranges, byte for byte, with the streamed answer headers', async (t) => {
    const c = await Connection.open(rc.host)
    t.teardown(() => c.close())
    c.send('GET', path)
    const whole = await c.response()
    t.equal(whole.status, 200)
    t.equal(whole.headers['x-regcache-cache'], 'hit', 'a cache hit')
    t.equal(whole.headers['content-length'], String(size))
    t.equal(whole.headers['docker-content-digest'], digest)
    t.equal(whole.headers['docker-distribution-api-version'], 'registry/2.0', 'the headers every answer has')
    t.equal(whole.headers['accept-ranges'], 'bytes')
    t.equal(sha256(whole.body), digest, 'whole body hashes to its digest')
    const cases: [string, number, number][] = [
      ['bytes=0-0', 0, 0],
      ['bytes=1000-2000000', 1000, 2000000],
      [`bytes=${size - 5}-`, size - 5, size - 1],
      ['bytes=-70000', size - 70000, size - 1],
      [`bytes=123456-${size + 1000}`, 123456, size - 1],
    ]
    for (const [range, from, to] of cases) {
      c.send('GET', path, { range })
      const r = await c.response()
      t.equal(r.status, 206, `${range}: 206`)
      t.equal(r.headers['content-range'], `bytes ${from}-${to}/${size}`, `${range}: Content-Range`)
      t.ok(r.body.equals(layer.subarray(from, to + 1)), `${range}: the same bytes as the blob`)
    }
    c.send('GET', path, { range: `bytes=${size}-` })
    t.equal((await c.response()).status, 416, 'a range past the end: 416')
    t.notOk(c.closed, 'all of it on one keep-alive connection')
    const lines = await bodyLines(rc)
    t.ok(lines.filter((l) => l.sendfile > 0 && l.streamed === 0).length >= 1 + cases.length, 'the bodies went out through sendfile')
  })

  await t.test('pipelined requests on one connection are answered in order', async (t) => {
    const c = await Connection.open(rc.host)
    t.teardown(() => c.close())
    c.send('GET', path)
    c.send('GET', path, { range: 'bytes=10-19' })
    c.send('HEAD', path)
    c.send('GET', '/v2/library/sf/manifests/1', { accept: 'application/vnd.oci.image.manifest.v1+json' })
    const a = await c.response()
    const b = await c.response()
    const h = await c.response(true)
    const m = await c.response()
    t.equal(sha256(a.body), digest, 'first: the whole blob')
    t.ok(b.body.equals(layer.subarray(10, 20)), 'second: its range')
    t.equal(h.status, 200, 'HEAD: 200')
    t.equal(h.headers['content-length'], String(size), 'HEAD: Content-Length of the blob')
    t.equal(h.headers['docker-content-digest'], digest, 'HEAD: digest')
    t.equal(m.status, 200, 'then a manifest')
    t.ok(JSON.parse(m.body.toString()).layers, 'the manifest is JSON with layers')
  })

  await t.test('a client that hangs up mid-body leaves no descriptor and no hold behind', async (t) => {
    const before = openFds()
    for (let i = 0; i < 3; i++) {
      const c = await Connection.open(rc.host)
      c.send('GET', path)
      await waitUntil('part of the body arrived', async () => c.received >= MiB, { timeoutMs: 30_000 })
      // Unread bytes are left in the socket: closing it resets the connection.
      c.socket.pause()
      c.close()
    }
    await waitUntil('descriptors back to where they were', async () => openFds() <= before, { timeoutMs: 30_000 })
    await waitUntil('the blob is no longer held against eviction', async () => !rc.server.mirror.busyDigests().has(digest), { timeoutMs: 30_000 })
    t.pass(`descriptors: ${before} before, ${openFds()} after`)
    const errors = (await rc.logs()).filter((l) => l.level >= 50 && l.msg.includes('stored blob'))
    t.same(errors, [], 'a client leaving is not an error')
  })

  await t.test('a client that stops reading does not hold up others', async (t) => {
    const stalled = await Connection.open(rc.host)
    t.teardown(() => stalled.close())
    stalled.socket.pause()
    stalled.send('GET', path)
    // Long enough for the server to fill the socket's buffers and wait for it.
    await new Promise((r) => setTimeout(r, 500))
    const c = await Connection.open(rc.host)
    t.teardown(() => c.close())
    c.send('GET', path)
    t.equal(sha256((await c.response()).body), digest, 'another client gets the whole blob meanwhile')
    c.send('GET', '/v2/')
    t.equal((await c.response()).status, 200, 'and other requests are answered')
    t.ok(rc.server.mirror.busyDigests().has(digest), 'the stalled transfer still holds the blob')
    stalled.close()
    await waitUntil('the stalled transfer is let go', async () => !rc.server.mirror.busyDigests().has(digest), { timeoutMs: 30_000 })
  })

  for (const mode of ['copy', 'kernel'] as const) {
    await t.test(`REGCACHE_SENDFILE=${mode}: clients of a blob being downloaded follow the download; a file cut short cuts the client`, async (t) => {
      const cold = await startRegcache({ upstreams: { 'docker.io': { url: reg.url } }, env: { REGCACHE_SENDFILE: mode } })
      t.teardown(cold.stop)
      const getsBefore = reg.count({ method: 'GET', pathIncludes: `/blobs/${digest}` })
      const conns = await Promise.all(Array.from({ length: 5 }, () => Connection.open(cold.host)))
      t.teardown(() => conns.forEach((c) => c.close()))
      for (const c of conns) c.send('GET', path)
      const answers = await Promise.all(conns.map((c) => c.response()))
      for (const [i, r] of answers.entries()) {
        t.equal(r.status, 200, `client ${i}: 200`)
        t.match(r.headers['x-regcache-cache'], /^(miss|coalesced)$/, `client ${i}: answered by the download (${r.headers['x-regcache-cache']})`)
        t.equal(sha256(r.body), digest, `client ${i}: bytes verify`)
      }
      t.equal(reg.count({ method: 'GET', pathIncludes: `/blobs/${digest}` }) - getsBefore, 1, 'one upstream GET for all of them')
      await waitUntil('every body logged', async () => (await bodyLines(cold)).length >= 5, { timeoutMs: 30_000 })
      const lines = await bodyLines(cold)
      t.ok(lines.every((l) => l.sendfile === size && l.streamed === 0), `every body went out through the native sender: ${JSON.stringify(lines)}`)
      await waitUntil('nothing holds the blob once done', async () => !cold.server.mirror.busyDigests().has(digest), { timeoutMs: 30_000 })
      conns[0]!.send('GET', path, { range: 'bytes=0-9' })
      const next = await conns[0]!.response()
      t.equal(next.headers['x-regcache-cache'], 'hit', 'the connection stays open; the next answer is a hit')
      t.ok(next.body.equals(layer.subarray(0, 10)), 'and its bytes are right')

      // The stored file loses its tail while a client that stopped reading is part way through.
      const stalled = await Connection.open(cold.host)
      t.teardown(() => stalled.close())
      stalled.socket.pause()
      stalled.send('GET', path)
      await new Promise((r) => setTimeout(r, 500))
      await truncate(blobPath(cold.dataDir, digest), 12 * MiB)
      stalled.socket.resume()
      await waitUntil('the connection is cut', async () => stalled.closed, { timeoutMs: 30_000 })
      t.ok(stalled.received < size, `the client got ${stalled.received} bytes of ${size}, never a whole-looking body`)
      const errors = (await cold.logs()).filter((l) => l.level >= 50 && l.msg.includes('stored blob failed'))
      t.equal(errors.length, 1, 'the short file is logged as an error')
    })
  }

  await t.test('HEAD has the headers and no body', async (t) => {
    const c = await Connection.open(rc.host)
    t.teardown(() => c.close())
    c.send('HEAD', path)
    const h = await c.response(true)
    c.send('GET', path, { range: 'bytes=0-3' })
    const r = await c.response()
    t.equal(h.status, 200)
    t.equal(h.headers['content-length'], String(size))
    t.equal(h.headers['x-regcache-cache'], 'hit')
    t.ok(r.body.equals(layer.subarray(0, 4)), 'nothing of a body came after the HEAD answer')
  })

  await t.test('REGCACHE_SENDFILE=off streams the same bytes', async (t) => {
    const off = await startRegcache({ upstreams: { 'docker.io': { url: reg.url } }, env: { REGCACHE_SENDFILE: 'off' } })
    t.teardown(off.stop)
    const c = await Connection.open(off.host)
    t.teardown(() => c.close())
    c.send('GET', path)
    t.equal(sha256((await c.response()).body), digest, 'filled')
    await waitUntil('the blob is stored', async () => (await off.storage.store.size(digest)) === size, { timeoutMs: 30_000 })
    c.send('GET', path)
    const hit = await c.response()
    t.equal(hit.headers['x-regcache-cache'], 'hit')
    t.equal(sha256(hit.body), digest, 'a streamed hit: bytes verify')
    c.send('GET', path, { range: 'bytes=5-9' })
    t.ok((await c.response()).body.equals(layer.subarray(5, 10)), 'a streamed range')
    t.same(await bodyLines(off), [], 'nothing went through sendfile')
  })

  await t.test('when sendfile refuses the socket or file, the body is streamed, whole', async (t) => {
    const load = loadSendfile()
    if (!load.ok) return
    const real = load.addon
    const EINVAL = 22
    // The kernel refusing at the start, and refusing after sending the first half.
    const refuses: SendfileAddon = {
      ...real,
      start: () => {
        throw Object.assign(new Error('refused'), { errno: EINVAL })
      },
    }
    const stopsHalfway: SendfileAddon = {
      ...real,
      start: (sock, file, offset, length, cb) => real.start(sock, file, offset, Math.floor(length / 2), (errno, sent, short) => cb(errno || EINVAL, sent, short)),
    }
    for (const [label, addon] of [['refused at the start', refuses], ['refused halfway', stopsHalfway]] as const) {
      const dir = await makeTempDir()
      t.teardown(() => removeTempDir(dir))
      const configFile = join(dir, 'config.yaml')
      await writeFile(configFile, stringify({ listen: '127.0.0.1:0', dataDir: join(dir, 'data'), upstreams: { 'docker.io': { url: reg.url } } }))
      const log = pino({ level: 'debug' }, pino.destination({ dest: join(dir, 'log'), sync: true }))
      const mirror = await Mirror.open({ config: loadConfig({ file: configFile }), log })
      const app = buildApp({ mirror, log, sendfile: addon })
      await app.listen({ host: '127.0.0.1', port: 0 })
      const addr = app.server.address()
      const c = await Connection.open(`127.0.0.1:${typeof addr === 'object' && addr ? addr.port : 0}`)
      try {
        c.send('GET', path)
        t.equal(sha256((await c.response()).body), digest, `${label}: filled`)
        const store = new BlobStore(join(dir, 'data'))
        await waitUntil('the blob is stored', async () => (await store.size(digest)) === size && !mirror.busyDigests().has(digest), { timeoutMs: 30_000 })
        c.send('GET', path)
        const whole = await c.response()
        t.equal(whole.headers['x-regcache-cache'], 'hit', `${label}: a hit`)
        t.equal(sha256(whole.body), digest, `${label}: the whole blob, bytes verify`)
        c.send('GET', path, { range: 'bytes=100-3000099' })
        t.ok((await c.response()).body.equals(layer.subarray(100, 3000100)), `${label}: a range, the same bytes`)
        t.notOk(c.closed, `${label}: the connection stays open for the next request`)
        const lines = (await readFile(join(dir, 'log'), 'utf8')).split('\n').filter((l) => l.includes('"blob body sent"')).map((l) => JSON.parse(l) as { sendfile: number; streamed: number; end: number; start: number })
        t.equal(lines.length, 3, `${label}: the body that followed the download and both hits took the sendfile path`)
        for (const l of lines) {
          t.equal(l.sendfile + l.streamed, l.end - l.start + 1, `${label}: every byte counted once`)
          t.ok(addon === refuses ? l.sendfile === 0 : l.sendfile > 0 && l.streamed > 0, `${label}: ${l.sendfile} bytes by sendfile, ${l.streamed} streamed`)
        }
      } finally {
        c.close()
        await app.close()
        await mirror.close()
      }
    }
  })
})

