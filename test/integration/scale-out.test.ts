// Replicas sharing one bucket on a real Ceph RADOS Gateway: what one replica fetched is a hit for
// every other, concurrent cold clients on different replicas cost upstream one GET per blob, a
// filler killed mid-download leaves nothing behind and is taken over, redirect mode hands real
// clients presigned URLs that expire, and a store that is gone is a prompt 503, never a hang.
//
// That a client without rights gets no URL in redirect mode: s3-redirect-auth.test.ts.

import { createHash } from 'node:crypto'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { DeleteObjectCommand, HeadObjectCommand, ListMultipartUploadsCommand, ListObjectsV2Command, PutObjectCommand } from '@aws-sdk/client-s3'
import t from 'tap'
import { request } from 'undici'
import { startChildRegcache } from '../helpers/child-regcache.js'
import { startContainerd, writeHostsToml } from '../helpers/containerd.js'
import { startDockerd } from '../helpers/dockerd.js'
import { startGate } from '../helpers/gate.js'
import { buildImage, pushImage, readLayoutBlob } from '../helpers/images.js'
import { ensureCommand } from '../helpers/packages.js'
import { makeTempDir, removeTempDir, run, waitUntil } from '../helpers/proc.js'
import { startRegcache, type Regcache } from '../helpers/regcache.js'
import { startRegistry } from '../helpers/registry.js'
import { rgwMissing, startRgw } from '../helpers/rgw.js'
import { blobKey } from '../../storage/s3-keys.js'

const MiB = 1024 * 1024
// containerd falls back to `server` when the mirror fails: a dead port proves the mirror served.
const DEAD = 'http://127.0.0.1:9'
const PREFIX = 'scale/'

const missing = await rgwMissing()
if (missing) console.error(`scale-out.test: skipped, Ceph RADOS Gateway unavailable: ${missing}`)

function sha256(bytes: Buffer): string {
  return `sha256:${createHash('sha256').update(bytes).digest('hex')}`
}

/** GET that follows nothing and hashes the body. */
async function get(url: string, headers: Record<string, string> = {}) {
  const res = await request(url, { headers, headersTimeout: 60_000, bodyTimeout: 60_000 })
  const body = Buffer.from(await res.body.arrayBuffer())
  return { status: res.statusCode, headers: res.headers, body, digest: sha256(body) }
}

function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  return Promise.race([
    p.finally(() => clearTimeout(timer)),
    new Promise<T>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what}: still waiting after ${ms} ms`)), ms)
    }),
  ])
}

t.test('replicas on one shared bucket', { skip: missing ? `Ceph RADOS Gateway unavailable: ${missing}` : false }, async (t) => {
  const rgw = await startRgw()
  t.teardown(rgw.stop)
  const s3 = rgw.client()
  t.teardown(() => s3.destroy())
  const storage = (more: Record<string, unknown> = {}) => ({
    storage: {
      type: 's3',
      s3: {
        endpoint: rgw.endpoint,
        region: rgw.region,
        bucket: rgw.bucket,
        prefix: PREFIX,
        forcePathStyle: true,
        accessKeyFile: rgw.accessKeyFile,
        secretKeyFile: rgw.secretKeyFile,
        leaseTtl: '3s',
        ...more,
      },
    },
  })

  const hub = await startRegistry()
  t.teardown(hub.stop)
  const upstreams = { 'docker.io': { url: hub.url } }
  const replicas: Regcache[] = []
  for (let i = 0; i < 3; i++) {
    const rc = await startRegcache({ upstreams, extra: storage() })
    t.teardown(rc.stop)
    replicas.push(rc)
  }
  const [r1, r2, r3] = replicas as [Regcache, Regcache, Regcache]
  const stored = async (digest: string) =>
    s3.send(new HeadObjectCommand({ Bucket: rgw.bucket, Key: blobKey(PREFIX, digest) })).then(
      () => true,
      () => false,
    )
  const uploads = async () => (await s3.send(new ListMultipartUploadsCommand({ Bucket: rgw.bucket, Prefix: PREFIX }))).Uploads ?? []

  const ctd = await startContainerd()
  t.teardown(ctd.stop)

  await t.test('an image pulled through replica 1 is pulled through replica 2 without upstream blob GETs', async (t) => {
    const img = await buildImage({ layers: 3, layerSize: 256 * 1024, fill: 'random' })
    t.teardown(img.remove)
    const pushed = await pushImage(img, hub.host, 'library/app:v1', { format: 'v2s2' })
    const hosts1 = await makeTempDir()
    const hosts2 = await makeTempDir()
    t.teardown(() => removeTempDir(hosts1))
    t.teardown(() => removeTempDir(hosts2))
    await writeHostsToml(hosts1, 'docker.io', r1.url, { server: DEAD })
    await writeHostsToml(hosts2, 'docker.io', r2.url, { server: DEAD })

    const first = await ctd.pull('docker.io/library/app:v1', { hostsDir: hosts1 })
    t.equal(first.code, 0, first.stderr)
    for (const d of img.layerDigests) t.ok(await stored(d), `layer ${d.slice(0, 19)} is in the bucket`)
    await r1.stop()

    await ctd.removeAllContent()
    await hub.settle()
    hub.resetRequests()
    const second = await ctd.pull('docker.io/library/app:v1', { hostsDir: hosts2 })
    t.equal(second.code, 0, second.stderr)
    t.equal(await ctd.imageDigest('docker.io/library/app:v1'), pushed.digest)
    await hub.settle()
    t.equal(hub.count({ method: 'GET', pathIncludes: '/blobs/' }), 0, 'zero upstream blob GETs through replica 2')
    t.ok(hub.count({ method: 'HEAD', pathIncludes: '/blobs/' }) > 0, 'replica 2 asked upstream whether the repository has each blob')
  })

  // Replica 1 is stopped; a fresh one takes its place for the rest.
  const r1b = await startRegcache({ upstreams, extra: storage() })
  t.teardown(r1b.stop)
  const three = [r1b, r2, r3]

  await t.test('10 concurrent cold clients on three replicas: one upstream GET per blob, verified bytes for all', async (t) => {
    const img = await buildImage({ layers: [6 * MiB, 2 * MiB, 300 * 1024], fill: 'random' })
    t.teardown(img.remove)
    await pushImage(img, hub.host, 'library/cold:v1')
    const blobs = await Promise.all(img.layerDigests.map(async (d) => ({ digest: d, bytes: await readLayoutBlob(img, d) })))
    await hub.settle()
    hub.resetRequests()
    const results = await Promise.all(
      Array.from({ length: 10 }, (_, i) =>
        Promise.all(blobs.map(async (b) => ({ want: b.digest, got: await get(`${three[i % 3]!.url}/v2/library/cold/blobs/${b.digest}`) }))),
      ),
    )
    for (const [i, client] of results.entries()) {
      for (const r of client) {
        t.equal(r.got.status, 200, `client ${i}: 200`)
        t.equal(r.got.digest, r.want, `client ${i}: ${r.want.slice(0, 19)} verified`)
      }
    }
    await hub.settle()
    for (const b of blobs) {
      t.equal(hub.count({ method: 'GET', pathIncludes: `/blobs/${b.digest}` }), 1, `exactly one upstream GET of ${b.digest.slice(0, 19)}`)
    }
    t.same(await uploads(), [], 'no multipart upload left behind')
  })

  await t.test('kill -9 of the filling replica mid-fill: nothing published, its upload cleaned up, the next request completes; fsck of the bucket', async (t) => {
    const img = await buildImage({ layers: [24 * MiB], fill: 'random' })
    t.teardown(img.remove)
    await pushImage(img, hub.host, 'library/crash:v1')
    const [digest] = img.layerDigests as [string]
    const bytes = await readLayoutBlob(img, digest)
    const gate = await startGate({ host: '127.0.0.1', port: hub.port })
    t.teardown(gate.stop)
    const filler = await startChildRegcache({ upstreams: { 'docker.io': { url: gate.url } }, extra: storage() })
    t.teardown(filler.stop)

    // Upstream stalls after 12 MiB: past the first 8 MiB part, so a multipart upload exists.
    gate.hold(12 * MiB)
    const ctl = new AbortController()
    const client = request(`${filler.url}/v2/library/crash/blobs/${digest}`, { signal: ctl.signal }).then(
      async (res) => {
        await res.body.dump().catch(() => {})
        return res.statusCode
      },
      () => 0,
    )
    await waitUntil('the fill is held mid-way with a multipart upload begun', async () => gate.held() === 1 && (await uploads()).length > 0, {
      timeoutMs: 60_000,
    })
    const exit = await filler.kill9()
    t.equal(exit.signal, 'SIGKILL', 'the filling replica was killed')
    ctl.abort()
    await client
    gate.release()
    t.notOk(await stored(digest), 'no object under the digest key')
    t.ok((await uploads()).length > 0, 'the dead filler left its upload (and lease) behind')

    // Another replica waits for the dead filler's lease to run out, takes over, aborts the leftover upload.
    const r = await within(get(`${r2.url}/v2/library/crash/blobs/${digest}`), 90_000, 'the next request')
    t.equal(r.status, 200)
    t.equal(r.digest, digest, 'the next request gets the whole blob, verified')
    t.ok(r.body.equals(bytes), 'byte for byte')
    t.ok(await stored(digest), 'now published under its digest')
    t.same(await uploads(), [], 'no leftover upload after the takeover')

    // fsck with the killed replica's configuration and database (its data directory stays).
    const listed = await s3.send(new ListObjectsV2Command({ Bucket: rgw.bucket, Prefix: `${PREFIX}blobs/` }))
    const clean = await filler.cli(['fsck'])
    t.equal(clean.code, 0, `${clean.stdout}${clean.stderr}`)
    t.match(clean.stdout, new RegExp(`checked ${listed.KeyCount} blobs: ${listed.KeyCount} ok, 0 corrupt`), 'every object re-hashed')

    // An object whose bytes are not its digest's (written behind regcache's back).
    const wrong = sha256(Buffer.from('the bytes this digest names'))
    await s3.send(new PutObjectCommand({ Bucket: rgw.bucket, Key: blobKey(PREFIX, wrong), Body: Buffer.from('other bytes') }))
    const check = await filler.cli(['fsck'])
    t.equal(check.code, 1, `fsck finds it\n${check.stdout}${check.stderr}`)
    t.match(check.stdout, new RegExp(`^corrupt\\s+${wrong}`, 'm'))
    const repair = await filler.cli(['fsck', '--repair'])
    t.equal(repair.code, 0, `${repair.stdout}${repair.stderr}`)
    t.notOk(await stored(wrong), '--repair removed the corrupt object')
    const again = await filler.cli(['fsck'])
    t.equal(again.code, 0, `clean afterwards\n${again.stdout}`)
  })

  await t.test('redirect mode: presigned URLs for ctr, skopeo and dockerd; the URL expires', async (t) => {
    const redirecting = await startRegcache({ upstreams, extra: storage({ redirect: true, redirectExpiry: '3s' }) })
    t.teardown(redirecting.stop)
    const img = await buildImage({ layers: 2, layerSize: 200 * 1024, fill: 'random' })
    t.teardown(img.remove)
    const pushed = await pushImage(img, hub.host, 'library/redir:v1', { format: 'v2s2' })
    const [layer] = img.layerDigests as [string]
    const bytes = await readLayoutBlob(img, layer)

    const miss = await get(`${redirecting.url}/v2/library/redir/blobs/${layer}`)
    t.equal(miss.status, 200, 'a cold blob streams through the fill')
    t.equal(miss.digest, layer)
    const hit = await get(`${redirecting.url}/v2/library/redir/blobs/${layer}`)
    t.equal(hit.status, 307, 'a stored blob is a redirect')
    t.equal(hit.headers['cache-control'], 'no-store')
    const location = String(hit.headers.location)
    t.ok(location.startsWith(rgw.endpoint), 'to the object store')
    const head = await request(`${redirecting.url}/v2/library/redir/blobs/${layer}`, { method: 'HEAD' })
    await head.body.dump()
    t.equal(head.statusCode, 200, 'HEAD is answered by regcache itself')
    const direct = await get(location)
    t.equal(direct.status, 200)
    t.ok(direct.body.equals(bytes), 'the URL serves the blob')
    const ranged = await get(location, { range: 'bytes=10-19' })
    t.equal(ranged.status, 206, 'the store serves ranges itself')
    t.ok(ranged.body.equals(bytes.subarray(10, 20)))
    await new Promise((r) => setTimeout(r, 4500))
    const expired = await get(location)
    t.equal(expired.status, 403, 'the presigned URL expired')
    t.ok((await redirecting.metric('regcache_blob_redirects_total')) >= 1, 'redirects are counted')

    const hosts = await makeTempDir()
    t.teardown(() => removeTempDir(hosts))
    await writeHostsToml(hosts, 'docker.io', redirecting.url, { server: DEAD })
    await ctd.removeAllContent()
    const pulled = await ctd.pull('docker.io/library/redir:v1', { hostsDir: hosts })
    t.equal(pulled.code, 0, `ctr pulls through redirects\n${pulled.stderr}`)
    t.equal(await ctd.imageDigest('docker.io/library/redir:v1'), pushed.digest)

    const out = await makeTempDir()
    t.teardown(() => removeTempDir(out))
    const copy = await run('skopeo', ['copy', '--insecure-policy', '--src-tls-verify=false', `docker://${redirecting.host}/library/redir:v1`, `oci:${out}:x`], {
      timeoutMs: 120_000,
    })
    t.equal(copy.code, 0, `skopeo copies through redirects\n${copy.stderr}`)

    const dockerMissing = await ensureCommand('dockerd', 'docker.io')
    if (dockerMissing) {
      t.skip(`dockerd unavailable: ${dockerMissing}`, () => {})
      return
    }
    const conf = await makeTempDir()
    t.teardown(() => removeTempDir(conf))
    const daemonJson = join(conf, 'daemon.json')
    await writeFile(daemonJson, JSON.stringify({ 'registry-mirrors': [redirecting.url], 'insecure-registries': [redirecting.host] }))
    let dockerd
    try {
      dockerd = await startDockerd({ configFile: daemonJson })
    } catch (e) {
      t.skip(`dockerd cannot run here: ${(e as Error).message.split('\n')[0]}`, () => {})
      return
    }
    const d = dockerd
    t.teardown(() => d.stop())
    const pull = await d.docker(['pull', 'redir:v1'], 120_000)
    t.equal(pull.code, 0, pull.code === 0 ? 'docker pulls through redirects' : `docker pulls through redirects\n${pull.stdout}${pull.stderr}\n${d.tail(30)}`)
  })

  await t.test('eviction in the shared bucket: one replica at a time, never what a replica is filling', async (t) => {
    const img = await buildImage({ layers: [600_000, 600_000, 600_000], fill: 'random' })
    t.teardown(img.remove)
    await pushImage(img, hub.host, 'library/evict:v1')
    const [a, b, c] = img.layerDigests as [string, string, string]
    const lease = (name: string, body: string) => s3.send(new PutObjectCommand({ Bucket: rgw.bucket, Key: `${PREFIX}leases/${name}`, Body: body }))
    const unlease = (name: string) => s3.send(new DeleteObjectCommand({ Bucket: rgw.bucket, Key: `${PREFIX}leases/${name}` }))
    // Another replica is evicting: this one's passes are skipped until the lease is gone.
    await lease('evictor', JSON.stringify({ owner: 'other-replica', token: 'x', expiresAt: Date.now() + 120_000 }))
    const ev = await startRegcache({ upstreams, extra: { ...storage(), cache: { maxSize: '1MB' } } })
    t.teardown(ev.stop)
    for (const d of [a, b, c]) {
      const r = await get(`${ev.url}/v2/library/evict/blobs/${d}`)
      t.equal(r.digest, d)
    }
    t.equal(await ev.server.mirror.evictNow(), 0, 'no eviction while another replica holds the evictor lease')
    for (const d of [a, b, c]) t.ok(await stored(d), `${d.slice(0, 19)} still stored`)

    // The least recently used blob has a fill lease (a replica is about to publish it): kept.
    await lease(a, JSON.stringify({ owner: 'other-replica', token: 'y', expiresAt: Date.now() + 120_000 }))
    await unlease('evictor')
    t.equal(await ev.server.mirror.evictNow(), 2, 'two blobs evicted to get under 90% of 1 MB')
    t.ok(await stored(a), 'the blob with a fill lease is kept')
    t.notOk(await stored(b), 'an unleased blob is evicted from the bucket')
    t.notOk(await stored(c), 'and the next one')
    await unlease(a)
    const again = await get(`${r2.url}/v2/library/evict/blobs/${b}`)
    t.equal(again.digest, b, 'the next request for it, on any replica, fetches it again')
  })

  await t.test('the store unreachable: a prompt 503 and /readyz not ready, never a hang', async (t) => {
    const img = await buildImage({ layers: 1, layerSize: 64 * 1024, fill: 'random' })
    t.teardown(img.remove)
    await pushImage(img, hub.host, 'library/gone:v1')
    const [layer] = img.layerDigests as [string]
    const ok = await get(`${r3.url}/v2/library/gone/blobs/${layer}`)
    t.equal(ok.status, 200)
    const ready = await request(`${r3.url}/readyz`)
    await ready.body.dump()
    t.equal(ready.statusCode, 200, 'ready while the store answers')

    // A fill under way when the store goes: held upstream after 12 MiB of 24 MiB.
    const bigImg = await buildImage({ layers: [24 * MiB], fill: 'random' })
    t.teardown(bigImg.remove)
    await pushImage(bigImg, hub.host, 'library/midway:v1')
    const [bigLayer] = bigImg.layerDigests as [string]
    const gate = await startGate({ host: '127.0.0.1', port: hub.port })
    t.teardown(gate.stop)
    const gated = await startRegcache({ upstreams: { 'docker.io': { url: gate.url } }, extra: storage() })
    t.teardown(gated.stop)
    gate.hold(12 * MiB)
    const midway = await request(`${gated.url}/v2/library/midway/blobs/${bigLayer}`, { headersTimeout: 60_000, bodyTimeout: 60_000 })
    t.equal(midway.statusCode, 200, 'the download started')
    const received = (async () => {
      let n = 0
      try {
        for await (const chunk of midway.body) n += (chunk as Buffer).length
        return { n, error: undefined as string | undefined }
      } catch (err) {
        return { n, error: (err as Error).message }
      }
    })()
    await waitUntil('the fill is held mid-way', async () => gate.held() === 1, { timeoutMs: 60_000 })

    await rgw.stopGateway()
    gate.release()
    const cut = await within(received, 60_000, 'the client of a fill whose store went away')
    const size = bigImg.layerSizes[0]!
    t.ok(cut.error !== undefined, `the client's transfer is cut, never a short success (${cut.n} bytes, ${cut.error})`)
    t.ok(cut.n < size, `it did not get the whole blob (${cut.n} of ${size} bytes)`)
    const r = await within(get(`${r3.url}/v2/library/gone/blobs/${layer}`), 30_000, 'a blob GET with the store gone')
    t.equal(r.status, 503, 'a stored blob with the store gone is 503')
    t.match(JSON.parse(r.body.toString()), { errors: [{ code: 'UNAVAILABLE' }] })
    t.equal(r.headers['retry-after'], '5')
    const cold = await within(get(`${r3.url}/v2/library/gone/blobs/${img.layerDigests[0]}x`), 30_000, 'an invalid digest')
    t.equal(cold.status, 400, 'requests that need no store are still answered')
    await within(
      waitUntil('/readyz not ready', async () => {
        const res = await request(`${r3.url}/readyz`)
        const text = await res.body.text()
        return res.statusCode === 503 && text.includes('content store')
      }, { timeoutMs: 10_000 }),
      15_000,
      '/readyz',
    )
    t.equal(await r3.metric('regcache_store_up'), 0, 'regcache_store_up is 0')
    t.ok((await r3.metric('regcache_store_errors_total')) >= 1, 'the failure is counted')

    // A replica started while the store is down starts, and says it is not ready.
    const late = await within(startRegcache({ upstreams, extra: storage() }), 30_000, 'starting a replica with the store down')
    t.teardown(late.stop)
    const lateReady = await request(`${late.url}/readyz`)
    t.equal(lateReady.statusCode, 503, 'a replica started with the store down is not ready')
    t.match(await lateReady.body.text(), /content store/)
  })
})
