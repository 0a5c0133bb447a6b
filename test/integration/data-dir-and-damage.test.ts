// What regcache does about its own files and a misbehaving upstream body:
// - one data directory, one owner: a second `serve` on a directory in use refuses to start
//   before touching anything, and `fsck --repair` refuses beside a running server;
// - a stored file whose size differs from the record is never served; a flipped file is caught
//   while served (its transfer cut before the last byte) and by the background scrub, dropped,
//   and fetched again: a corrupt file is never served twice;
// - a manifest body that stalls after its headers is an outage (stale or 503, the upstream
//   marked down), never a 500; manifest bytes in flight are bounded (503 with Retry-After).

import { existsSync } from 'node:fs'
import { open, readFile, truncate, writeFile } from 'node:fs/promises'
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { join } from 'node:path'
import { createHash } from 'node:crypto'
import t from 'tap'
import { stringify } from 'yaml'
import { MT, buildImage, pushImage } from '../helpers/images.js'
import { createHttpClient, header, sha256 } from '../helpers/http.js'
import { freePort } from '../helpers/ports.js'
import { run, sleep, waitUntil } from '../helpers/proc.js'
import { startRegistry } from '../helpers/registry.js'
import { startRegcache } from '../helpers/regcache.js'
import { REGCACHE_MAIN, startChildRegcache } from '../helpers/child-regcache.js'
import { blobPath } from '../../storage/layout.js'

const ACCEPT = `${MT.dockerManifest}, ${MT.dockerManifestList}, ${MT.ociManifest}, ${MT.ociIndex}, */*`

t.test('one data directory, one owner', async (t) => {
  const reg = await startRegistry()
  t.teardown(reg.stop)
  const img = await buildImage({ layers: 1, layerSize: 32 * 1024 })
  t.teardown(img.remove)
  await pushImage(img, reg.host, 'library/app:1')
  const first = await startChildRegcache({ upstreams: { 'docker.io': { url: reg.url } } })
  t.teardown(first.stop)
  const http = createHttpClient()
  t.teardown(http.close)
  t.equal((await http.get(`${first.url}/v2/library/app/manifests/1`, { accept: ACCEPT })).status, 200, 'the first instance serves')

  // A download in progress of the first instance (as its fills leave in tmp/).
  const partial = join(first.dataDir, 'tmp', 'in-progress.partial')
  await writeFile(partial, 'bytes of a fill in progress')

  const secondConfig = join(first.dir, 'second.yaml')
  const doc = { ...(await import('yaml')).parse(await readFile(first.configFile, 'utf8')), listen: `127.0.0.1:${await freePort()}` }
  await writeFile(secondConfig, stringify(doc))
  const second = await run(process.execPath, [REGCACHE_MAIN, 'serve', '--config', secondConfig], { timeoutMs: 30_000 })
  t.equal(second.code, 1, `a second serve on the same data directory refuses to start\n${second.stderr}`)
  t.match(second.stderr, /in use by another regcache process/, 'with one clear line')
  t.notMatch(second.stderr, /\n\s+at /, 'no stack trace')
  t.ok(existsSync(partial), 'the first instance’s download in progress is untouched')
  t.equal((await http.get(`${first.url}/v2/library/app/manifests/1`, { accept: ACCEPT })).status, 200, 'and it still serves')

  const repair = await first.cli(['fsck', '--repair'])
  t.equal(repair.code, 1, 'fsck --repair refuses while the server runs')
  t.match(repair.stderr, /in use by another regcache process/)
  t.ok(existsSync(partial), 'and deletes nothing')
  const check = await first.cli(['fsck'])
  t.equal(check.code, 0, `a plain fsck runs beside the server\n${check.stdout}${check.stderr}`)

  // Once the owner is gone (even killed), the directory is free again: the kernel drops the lock.
  await first.kill9()
  const after = await run(process.execPath, [REGCACHE_MAIN, 'fsck', '--repair', '--config', first.configFile], { timeoutMs: 60_000 })
  t.equal(after.code, 0, `fsck --repair runs once the server is gone\n${after.stdout}${after.stderr}`)
})

t.test('damaged files on disk are never served twice', async (t) => {
  const reg = await startRegistry()
  t.teardown(reg.stop)
  const img = await buildImage({ layers: 2, layerSize: 256 * 1024 })
  t.teardown(img.remove)
  await pushImage(img, reg.host, 'library/app:1')
  const rc = await startRegcache({ upstreams: { 'docker.io': { url: reg.url } }, extra: { cache: { scrub: '2s' } } })
  t.teardown(rc.stop)
  const http = createHttpClient()
  t.teardown(http.close)
  const [truncated, flipped] = img.layerDigests as [string, string]
  const url = (d: string) => `${rc.url}/v2/library/app/blobs/${d}`
  for (const d of [truncated, flipped]) t.equal(sha256((await http.get(url(d))).body), d, `${d.slice(7, 19)} cached`)

  await t.test('a truncated file: never served, fetched again', async (t) => {
    await truncate(blobPath(rc.dataDir, truncated), 1000)
    await reg.settle()
    const before = reg.count({ method: 'GET', pathIncludes: `/blobs/${truncated}` })
    const res = await http.get(url(truncated))
    t.equal(res.status, 200)
    t.equal(sha256(res.body), truncated, 'the client gets the right bytes')
    t.equal(header(res, 'x-regcache-cache'), 'miss', 'fetched from upstream, not served from the damaged file')
    await reg.settle()
    t.equal(reg.count({ method: 'GET', pathIncludes: `/blobs/${truncated}` }), before + 1, 'one upstream GET')
    t.equal((await readFile(blobPath(rc.dataDir, truncated))).length, img.layerSizes[0], 'stored whole again')
  })

  await t.test('a flipped file: the transfer is cut before the end, the file dropped, the next request correct', async (t) => {
    const fh = await open(blobPath(rc.dataDir, flipped), 'r+')
    const b = Buffer.alloc(1)
    await fh.read(b, 0, 1, 4321)
    b[0] ^= 0xff
    await fh.write(b, 0, 1, 4321)
    await fh.close()
    await sleep(2200) // older than one scrub cycle: the next whole read is verified as it goes out
    let body: Buffer | undefined
    try {
      const res = await fetch(url(flipped))
      body = Buffer.from(await res.arrayBuffer())
    } catch {
      body = undefined // the transfer was cut
    }
    const wrongAndComplete = body !== undefined && body.length === img.layerSizes[1] && `sha256:${createHash('sha256').update(body).digest('hex')}` !== flipped
    t.notOk(wrongAndComplete, 'the damaged bytes never arrive complete (cut, or already replaced by the scrub)')
    await waitUntil(
      'the damaged blob dropped (or already fetched again)',
      async () => !existsSync(blobPath(rc.dataDir, flipped)) || sha256(await readFile(blobPath(rc.dataDir, flipped))) === flipped,
      { timeoutMs: 10_000 },
    )
    const res = await http.get(url(flipped))
    t.equal(res.status, 200)
    t.equal(sha256(res.body), flipped, 'the next request gets the right bytes from upstream')
    t.ok((await rc.metric('regcache_scrub_checked_total', { result: 'corrupt' })) >= 1, 'counted as corrupt')
  })

  await t.test('the background scrub finds damage nobody asked for', async (t) => {
    const target = truncated
    const fh = await open(blobPath(rc.dataDir, target), 'r+')
    await fh.write(Buffer.from('not the original bytes'), 0, 22, 100)
    await fh.close()
    await waitUntil('the scrub to drop it', async () => !existsSync(blobPath(rc.dataDir, target)), { timeoutMs: 30_000 })
    t.equal(rc.storage.meta.getContent(target), undefined, 'its record is gone too')
    const res = await http.get(url(target))
    t.equal(sha256(res.body), target, 'fetched again, correct')
  })
})

/** An upstream whose manifest GETs send their headers and part of the body, then stall. */
async function startStallingUpstream(manifestBytes: number, sendBytes: number): Promise<{ url: string; server: Server; gets: () => number }> {
  let gets = 0
  const body = Buffer.alloc(manifestBytes, 0x20)
  const server = createServer((req, res) => {
    if (req.url === '/v2/' || req.url === '/v2') {
      res.writeHead(200, { 'content-type': 'application/json' }).end('{}')
      return
    }
    const m = /\/manifests\/(sha256:[a-f0-9]{64})$/.exec(req.url ?? '')
    if (req.method === 'GET' && m) {
      gets++
      res.writeHead(200, { 'content-type': MT.ociManifest, 'content-length': String(manifestBytes), 'docker-content-digest': m[1] })
      res.write(body.subarray(0, sendBytes))
      return // and never more
    }
    res.writeHead(404, { 'content-type': 'application/json' }).end('{"errors":[{"code":"MANIFEST_UNKNOWN"}]}')
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, server, gets: () => gets }
}

t.test('a manifest body that stalls is an outage, and manifests in flight are bounded in memory', async (t) => {
  await t.test('a stall after the headers: stale, the upstream marked down, never a 500', async (t) => {
    const reg = await startRegistry()
    t.teardown(reg.stop)
    const v1 = await buildImage({ layers: 1, layerSize: 8 * 1024, seed: 'stall-v1' })
    const v2 = await buildImage({ layers: 1, layerSize: 8 * 1024, seed: 'stall-v2' })
    for (const x of [v1, v2]) t.teardown(x.remove)
    await pushImage(v1, reg.host, 'library/app:1')
    // In front of the real registry: HEADs pass, a manifest GET by digest stalls mid-body.
    let stall = false
    const front = createServer((req, res) => {
      const target = new URL(req.url ?? '/', reg.url)
      const headers = { ...(req.headers as Record<string, string>) }
      delete headers.host
      delete headers.connection
      fetch(target, { method: req.method, headers }).then(
        async (up) => {
          const headers: Record<string, string> = {}
          up.headers.forEach((v, k) => {
            if (k !== 'transfer-encoding' && k !== 'connection') headers[k] = v
          })
          const bytes = Buffer.from(await up.arrayBuffer())
          res.writeHead(up.status, headers)
          if (stall && req.method === 'GET' && /\/manifests\/sha256:/.test(req.url ?? '')) {
            res.write(bytes.subarray(0, Math.floor(bytes.length / 2)))
            return
          }
          res.end(req.method === 'HEAD' ? undefined : bytes)
        },
        () => res.destroy(),
      )
    })
    await new Promise<void>((resolve) => front.listen(0, '127.0.0.1', resolve))
    t.teardown(() => new Promise<void>((resolve) => front.close(() => resolve())))
    front.on('connection', (s) => t.teardown(() => s.destroy()))
    const frontUrl = `http://127.0.0.1:${(front.address() as AddressInfo).port}`
    const rc = await startRegcache({
      upstreams: { 'docker.io': { url: frontUrl, revalidate: { timeout: '1s' }, timeouts: { body: '3s' }, down: { failures: 3, probeInterval: '1h' } } },
    })
    t.teardown(rc.stop)
    const http = createHttpClient()
    t.teardown(http.close)
    const tag = () => http.get(`${rc.url}/v2/library/app/manifests/1`, { accept: ACCEPT })
    t.equal(header(await tag(), 'docker-content-digest'), v1.manifestDigest, 'v1 cached')

    await pushImage(v2, reg.host, 'library/app:1')
    stall = true
    const stale = await tag()
    t.equal(stale.status, 200, 'the stalled GET of the new manifest: the cached one is served')
    t.equal(header(stale, 'x-regcache-cache'), 'stale')
    t.equal(header(stale, 'docker-content-digest'), v1.manifestDigest)
    t.match(header(stale, 'x-regcache-stale') ?? '', /reason=timeout/, 'reason: timeout')
    t.equal(rc.server.mirror.upstreamState('docker.io'), 'down', 'a stalled body counts: the upstream is marked down')
    const next = await tag()
    t.equal(header(next, 'x-regcache-stale')?.match(/reason=(\S+)/)?.[1], 'down', 'the next request does not wait on upstream at all')
    const byDigest = await http.get(`${rc.url}/v2/library/app/manifests/${v2.manifestDigest}`, { accept: ACCEPT })
    t.equal(byDigest.status, 503, 'the uncached manifest by digest: 503, not 500')
    t.equal(JSON.parse(byDigest.body.toString()).errors[0].code, 'UNAVAILABLE')
  })

  await t.test('two hundred stalled 4 MB manifests do not take 800 MB: past the bound, 503 with Retry-After', async (t) => {
    const up = await startStallingUpstream(4 * 1024 * 1024 - 1024, 3 * 1024 * 1024)
    t.teardown(() => new Promise<void>((resolve) => up.server.close(() => resolve())))
    up.server.on('connection', (s) => t.teardown(() => s.destroy()))
    const rc = await startRegcache({ upstreams: { 'docker.io': { url: up.url, timeouts: { body: '20s', headers: '5s' }, down: { failures: 1000 } } } })
    t.teardown(rc.stop)
    const rssBefore = process.memoryUsage().rss
    const digests = Array.from({ length: 200 }, (_, i) => `sha256:${createHash('sha256').update(`m${i}`).digest('hex')}`)
    const answers = await Promise.all(
      digests.map(async (d) => {
        const ctrl = AbortSignal.timeout(25_000)
        const res = await fetch(`${rc.url}/v2/library/app/manifests/${d}`, { headers: { accept: ACCEPT }, signal: ctrl }).catch(() => undefined)
        if (!res) return { status: 0, retryAfter: null }
        await res.arrayBuffer().catch(() => {})
        return { status: res.status, retryAfter: res.headers.get('retry-after') }
      }),
    )
    const refused = answers.filter((a) => a.status === 503 && a.retryAfter !== null)
    t.ok(refused.length >= 150, `most are refused at once with 503 and Retry-After (${refused.length} of 200)`)
    t.ok(answers.every((a) => a.status !== 500 && a.status !== 200), 'none is a 500, none a (partial) success')
    const grown = process.memoryUsage().rss - rssBefore
    t.ok(grown < 300 * 1024 * 1024, `memory held for manifests stays bounded (RSS grew ${Math.round(grown / 1024 / 1024)} MB)`)
    t.ok(up.gets() >= 1, 'upstream was asked')
  })
})
