// Proves the integration helpers work on their own (no regcache involved):
// a real registry, real images pushed by skopeo, a real containerd pulling
// through hosts.toml, and the failure-injecting forwarder.
import { createHash } from 'node:crypto'
import http from 'node:http'
import t from 'tap'
import { startContainerd, writeHostsToml } from '../helpers/containerd.js'
import { startForwarder } from '../helpers/forwarder.js'
import {
  ALL_MANIFEST_TYPES,
  MT,
  buildImage,
  buildIndex,
  deleteManifest,
  deleteTag,
  pushImage,
  resolveDigest,
} from '../helpers/images.js'
import { freePort } from '../helpers/ports.js'
import { makeTempDir, removeTempDir } from '../helpers/proc.js'
import { startRegistry } from '../helpers/registry.js'

interface RawResponse {
  status?: number
  headers?: http.IncomingHttpHeaders
  body: Buffer
  error?: NodeJS.ErrnoException
}

// A fresh connection per request (agent: false): pooled keep-alive sockets
// would bypass forwarder mode changes and make these checks meaningless.
function rawGet(url: string, signal?: AbortSignal): Promise<RawResponse> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = []
    let res: http.IncomingMessage | undefined
    const done = (error?: NodeJS.ErrnoException) =>
      resolve({ status: res?.statusCode, headers: res?.headers, body: Buffer.concat(chunks), error })
    const req = http.get(url, { agent: false, signal }, (r) => {
      res = r
      r.on('data', (c: Buffer) => chunks.push(c))
      r.once('end', () => done())
      r.once('error', (e) => done(e))
    })
    req.once('error', (e) => done(e))
  })
}

t.test('registry, images and containerd', async (t) => {
  const reg = await startRegistry()
  t.teardown(reg.stop)
  t.match(reg.url, /^http:\/\/127\.0\.0\.1:\d+$/)
  t.equal(reg.count(), 0, 'readiness probes are not counted')

  const app = await buildImage({ layers: 2, layerSize: 32 * 1024 })
  t.teardown(app.remove)
  const amd = await buildImage({ layers: 1, layerSize: 8 * 1024, arch: 'amd64' })
  t.teardown(amd.remove)
  const arm = await buildImage({ layers: 1, layerSize: 8 * 1024, arch: 'arm64', variant: 'v8' })
  t.teardown(arm.remove)
  const multi = await buildIndex([amd, arm])
  t.teardown(multi.remove)

  t.test('seeded builds are reproducible, unseeded differ', async (t) => {
    const a = await buildImage({ layers: 1, layerSize: 1024, seed: 's' })
    const b = await buildImage({ layers: 1, layerSize: 1024, seed: 's' })
    const c = await buildImage({ layers: 1, layerSize: 1024 })
    for (const x of [a, b, c]) t.teardown(x.remove)
    t.equal(a.manifestDigest, b.manifestDigest)
    t.not(a.manifestDigest, c.manifestDigest)
  })

  const v1 = await pushImage(app, reg.host, 'test/app:v1', { format: 'v2s2' })
  t.not(v1.digest, app.manifestDigest, 'v2s2 conversion changes the manifest digest')
  const m = await fetch(`${reg.url}/v2/test/app/manifests/v1`, { headers: { accept: ALL_MANIFEST_TYPES } })
  t.equal(m.headers.get('content-type'), MT.dockerManifest)
  const dockerManifest = (await m.json()) as { layers: Array<{ digest: string }> }
  t.same(
    dockerManifest.layers.map((l) => l.digest),
    app.layerDigests,
    'layer blobs are reused as-is',
  )

  const mv1 = await pushImage(multi, reg.host, 'test/multi:v1')
  t.equal(mv1.digest, multi.indexDigest, 'OCI index pushed unchanged')

  await reg.settle()
  // app: 1 manifest; multi: 2 child manifests + the index.
  t.equal(reg.count({ method: 'PUT', pathIncludes: '/manifests/' }), 4, 'manifest PUTs logged')
  t.equal(reg.count({ method: 'POST', pathIncludes: /^\/v2\/test\/app\/blobs\/uploads\/$/ }), 3, 'app: 2 layers + config uploaded')
  t.same(
    reg.requests().filter((r) => !r.userAgent.startsWith('skopeo')).map((r) => `${r.method} ${r.path} ${r.status}`),
    ['GET /v2/test/app/manifests/v1 200'],
    'besides skopeo only the test\'s own GET; helper look-ups are not counted',
  )
  if (process.env.HARNESS_DUMP) console.error(reg.allRequests())
  reg.resetRequests()
  t.equal(reg.count(), 0)

  t.test('untag and delete', async (t) => {
    const gone = await pushImage(app, reg.host, 'test/app:gone')
    t.equal(gone.digest, app.manifestDigest, 'OCI push keeps the digest')
    await reg.removeTag('test/app', 'gone')
    t.equal(await resolveDigest(reg.url, 'test/app', 'gone'), undefined, 'tag gone')
    t.equal(await resolveDigest(reg.url, 'test/app', gone.digest), gone.digest, 'manifest still there')
    t.equal(await deleteManifest(reg.url, 'test/app', gone.digest), 202)
    t.equal(await resolveDigest(reg.url, 'test/app', gone.digest), undefined, 'manifest deleted')

    await pushImage(app, reg.host, 'test/app:gone2')
    const del = await deleteTag(reg.url, 'test/app', 'gone2')
    t.equal(del.status, 202)
    t.equal(await resolveDigest(reg.url, 'test/app', 'gone2'), undefined)
    t.equal(await resolveDigest(reg.url, 'test/app', 'v1'), v1.digest, 'other tags untouched')
  })

  t.test('containerd pulls from the registry via hosts.toml', async (t) => {
    const ctd = await startContainerd()
    t.teardown(ctd.stop)
    const hostsDir = await makeTempDir()
    t.teardown(() => removeTempDir(hostsDir))
    await writeHostsToml(hostsDir, reg.host, reg.url, { server: reg.url })

    const ref = `${reg.host}/test/app:v1`
    const r = await ctd.pull(ref, { hostsDir })
    t.equal(r.code, 0, 'pull ok', { stderr: r.stderr, stdout: r.stdout })
    t.equal(await ctd.imageDigest(ref), v1.digest)
    const content = await ctd.contentDigests()
    for (const l of app.layerDigests) t.ok(content.includes(l), `layer ${l.slice(0, 19)} in content store`)
    await reg.settle()
    t.ok(reg.count({ method: 'GET', pathIncludes: app.layerDigests[0]! }) >= 1, 'registry served the layer')

    const mref = `${reg.host}/test/multi:v1`
    const rm = await ctd.pull(mref, { hostsDir, allPlatforms: true })
    t.equal(rm.code, 0, 'multi-arch pull ok', { stderr: rm.stderr })
    t.equal(await ctd.imageDigest(mref), multi.indexDigest)
    const all = await ctd.contentDigests()
    t.ok(all.includes(arm.layerDigests[0]!) && all.includes(amd.layerDigests[0]!), 'both platforms fetched')

    await ctd.removeAllContent()
    t.same(await ctd.images(), [])
    t.same(await ctd.contentDigests(), [])

    // Through a forwarder as the only mirror and as `server`: proves ctr
    // really uses the mirror and does not quietly fall back to the registry.
    const fwd = await startForwarder({ host: '127.0.0.1', port: reg.port })
    t.teardown(fwd.stop)
    const viaDir = await makeTempDir()
    t.teardown(() => removeTempDir(viaDir))
    await writeHostsToml(viaDir, reg.host, fwd.url, { server: fwd.url })
    const via = await ctd.pull(ref, { hostsDir: viaDir })
    t.equal(via.code, 0, 'pull through forwarder ok', { stderr: via.stderr })
    t.ok(fwd.connections() > 0, 'mirror was used')
    await ctd.removeAllContent()
    await fwd.setMode('refuse')
    const down = await ctd.pull(ref, { hostsDir: viaDir, timeoutMs: 20_000 })
    t.not(down.code, 0, 'pull fails while the mirror refuses')
    t.notOk(down.timedOut)
  })
})

t.test('registry with htpasswd auth', async (t) => {
  const auth = { username: 'alice', password: 's3cret' }
  const reg = await startRegistry({ auth })
  t.teardown(reg.stop)
  t.equal((await fetch(`${reg.url}/v2/`)).status, 401)
  t.equal((await fetch(`${reg.url}/v2/`, { headers: { authorization: reg.authorization! } })).status, 200)
  const img = await buildImage({ layers: 1, layerSize: 1024 })
  t.teardown(img.remove)
  const { digest } = await pushImage(img, reg.host, 'private/app:1', { auth })
  t.equal(digest, img.manifestDigest)
})

t.test('forwarder modes', async (t) => {
  const reg = await startRegistry()
  t.teardown(reg.stop)
  const img = await buildImage({ layers: 1, layerSize: 256 * 1024 })
  t.teardown(img.remove)
  await pushImage(img, reg.host, 'fwd/app:1')
  const fwd = await startForwarder({ host: '127.0.0.1', port: reg.port })
  t.teardown(fwd.stop)
  t.equal(fwd.url, `http://127.0.0.1:${fwd.port}`)

  const ok = await rawGet(`${fwd.url}/v2/`)
  t.equal(ok.status, 200, 'pass')
  t.equal(fwd.connections(), 1)

  await fwd.setMode('refuse')
  const refused = await rawGet(`${fwd.url}/v2/`)
  t.equal(refused.error?.code, 'ECONNREFUSED', 'refuse')
  t.equal(fwd.connections(), 1, 'refused connects are not accepted')
  await fwd.setMode('pass')
  t.equal((await rawGet(`${fwd.url}/v2/`)).status, 200, 'same port listens again')

  await fwd.setMode('hang')
  const started = Date.now()
  const hung = await rawGet(`${fwd.url}/v2/`, AbortSignal.timeout(300))
  t.equal(hung.error?.name, 'AbortError', 'hang: only the client timeout ends it')
  t.ok(Date.now() - started >= 250)
  // A second hung client whose socket the forwarder must destroy on switch.
  const pending = rawGet(`${fwd.url}/v2/`)
  await new Promise((r) => setTimeout(r, 100))
  await fwd.setMode('pass')
  t.ok((await pending).error, 'hung socket destroyed when leaving hang')

  const blobUrl = `${fwd.url}/v2/fwd/app/blobs/${img.layerDigests[0]}`
  await fwd.setMode('cut', { cutAfterBytes: 4096, cutConnections: 1 })
  const cut = await rawGet(blobUrl)
  t.ok(cut.body.length < img.layerSizes[0]!, `cut: got ${cut.body.length} of ${img.layerSizes[0]} bytes`)
  t.ok(cut.error || cut.body.length < Number(cut.headers?.['content-length']), 'client sees a truncated body')
  const whole = await rawGet(blobUrl)
  t.equal(whole.status, 200, 'only the first connection is cut')
  t.equal('sha256:' + createHash('sha256').update(whole.body).digest('hex'), img.layerDigests[0])

  await fwd.stop()
  const after = await rawGet(`${fwd.url}/v2/`)
  t.equal(after.error?.code, 'ECONNREFUSED', 'stopped')
})

t.test('freePort', async (t) => {
  const p = await freePort()
  t.ok(p > 0 && p < 65536)
})
