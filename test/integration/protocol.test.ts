// The pull side of the OCI distribution API (docs/protocol.md) checked with direct HTTP
// requests: regcache in front of two real registries (Debian's docker-registry 2.8), every answer
// compared with what the registry itself serves. Upstreams: `docker.io` (default; single-component
// names get `library/`) and `ghcr.io`. Each sits behind a pass-through that paginates tags/list
// like distribution 3 / Docker Hub, because distribution 2.8 ignores `n` and sends no Link header.

import { randomBytes } from 'node:crypto'
import t from 'tap'
import { MT, buildImage, buildIndex, pushImage } from '../helpers/images.js'
import {
  createHttpClient,
  header,
  ociErrors,
  sha256,
  startPaginatingFront,
  uploadBlob,
  type HttpResponse,
  type RequestHeaders,
} from '../helpers/http.js'
import { HELPER_USER_AGENT, startRegistry, type Registry } from '../helpers/registry.js'
import { startRegcache } from '../helpers/regcache.js'

/** containerd's tag-resolve Accept. */
const ACCEPT_CONTAINERD = `${MT.dockerManifest}, ${MT.dockerManifestList}, ${MT.ociManifest}, ${MT.ociIndex}, */*`
const ACCEPT_DOCKER_ONLY = MT.dockerManifest
const ACCEPT_OCI_ONLY = `${MT.ociManifest}, ${MT.ociIndex}`
const ACCEPT_DOCKER_LIST = `${MT.dockerManifest}, ${MT.dockerManifestList}`
const API_VERSION = 'registry/2.0'
const BLOB_SIZE = 2048

/** A subtest (the callback parameter of t.test). */
type Tap = Parameters<Parameters<typeof t.test>[0]>[0]

t.test('OCI distribution protocol through regcache', async (t) => {
  const t0 = Date.now()
  const hub = await startRegistry()
  t.teardown(hub.stop)
  const ghcr = await startRegistry()
  t.teardown(ghcr.stop)
  const hubFront = await startPaginatingFront({ host: '127.0.0.1', port: hub.port })
  t.teardown(hubFront.stop)
  const ghcrFront = await startPaginatingFront({ host: '127.0.0.1', port: ghcr.port })
  t.teardown(ghcrFront.stop)

  const app = await buildImage({ layers: 2, layerSize: 8 * 1024 })
  const amd = await buildImage({ layers: 1, layerSize: 4 * 1024, arch: 'amd64' })
  const arm = await buildImage({ layers: 1, layerSize: 4 * 1024, arch: 'arm64', variant: 'v8' })
  const multi = await buildIndex([amd, arm])
  const alpine = await buildImage({ layers: 1, layerSize: 4 * 1024 })
  const imageA = await buildImage({ layers: 1, layerSize: 4 * 1024 })
  const imageB = await buildImage({ layers: 1, layerSize: 4 * 1024 })
  const tool1 = await buildImage({ layers: 1, layerSize: 4 * 1024 })
  const tool2 = await buildImage({ layers: 1, layerSize: 4 * 1024 })
  for (const x of [app, amd, arm, multi, alpine, imageA, imageB, tool1, tool2]) t.teardown(x.remove)

  // One sequence per repository; repositories in parallel.
  const [appPushes, multiPushes, , , , toolPushes] = await Promise.all([
    (async () => [await pushImage(app, hub.host, 'library/app:oci'), await pushImage(app, hub.host, 'library/app:v2s2', { format: 'v2s2' })])(),
    (async () => [await pushImage(multi, hub.host, 'library/multi:v1'), await pushImage(multi, hub.host, 'library/multi:docker', { format: 'v2s2' })])(),
    pushImage(alpine, hub.host, 'library/alpine:latest'),
    pushImage(imageA, hub.host, 'org/a:v1'),
    pushImage(imageB, hub.host, 'org/b:v1'),
    (async () => [await pushImage(tool1, ghcr.host, 'org/tool:v1'), await pushImage(tool2, ghcr.host, 'org/tool:v2')])(),
  ])
  const toolV1 = toolPushes[0]!.digest
  const toolV2 = toolPushes[1]!.digest
  t.equal(appPushes[0]!.digest, app.manifestDigest, 'the OCI push kept the manifest as built')
  t.not(appPushes[1]!.digest, app.manifestDigest, 'the v2s2 push converted the manifest')
  t.equal(multiPushes[0]!.digest, multi.indexDigest, 'the OCI index push kept the index as built')

  // Blobs of exactly 2048 bytes: one warm (requested in full first), one cold per Range case.
  const warmBlob = randomBytes(BLOB_SIZE)
  const warmDigest = await uploadBlob(hub.url, 'library/ranges', warmBlob)

  const rc = await startRegcache({
    upstreams: { 'docker.io': { url: hubFront.url }, 'ghcr.io': { url: ghcrFront.url } },
    defaultUpstream: 'docker.io',
  })
  t.teardown(rc.stop)

  const client = createHttpClient()
  t.teardown(client.close)
  // Direct requests to the registries, as the helper user agent so they stay out of the access-log counts.
  const direct = createHttpClient({ userAgent: `${HELPER_USER_AGENT}/protocol-test` })
  t.teardown(direct.close)

  const rcGet = (path: string, headers?: RequestHeaders) => client.get(rc.url + path, headers)
  const rcHead = (path: string, headers?: RequestHeaders) => client.head(rc.url + path, headers)

  const quiet = async () => {
    await Promise.all([hub.settle(), ghcr.settle()])
    hub.resetRequests()
    ghcr.resetRequests()
  }
  const upstreamCounts = async () => {
    await Promise.all([hub.settle(), ghcr.settle()])
    return { hub: hub.count(), ghcr: ghcr.count() }
  }

  t.comment(`setup took ${Date.now() - t0} ms`)

  await t.test('1. /v2/ answers 200 {} to GET and HEAD, with the API version header', async (t) => {
    const get = await rcGet('/v2/')
    t.equal(get.status, 200, 'GET /v2/ status')
    t.same(JSON.parse(get.body.toString('utf8')), {}, 'GET /v2/ body is {}')
    t.equal(header(get, 'docker-distribution-api-version'), API_VERSION, 'GET /v2/ API version')
    const head = await rcHead('/v2/')
    t.equal(head.status, 200, 'HEAD /v2/ status')
    t.equal(head.body.length, 0, 'HEAD /v2/ has no body')
    t.equal(header(head, 'docker-distribution-api-version'), API_VERSION, 'HEAD /v2/ API version')

    // Errors carry it too (every response is checked again in the last subtest).
    const errors: [string, string, string][] = [
      ['GET', '/v2/library/app/manifests/no-such-tag', '404 unknown tag'],
      ['GET', '/v2/Library/App/manifests/latest', '400 bad name'],
      ['PUT', '/v2/library/app/manifests/latest', '405 write'],
      ['GET', '/v2/library/app/manifests/latest?ns=evil.example.com', '403 unknown ns'],
      ['GET', '/v2/library/app/nothing/here', '404 unknown endpoint'],
      ['GET', '/nothing', '404 outside /v2'],
    ]
    for (const [method, path, what] of errors) {
      const res = await client.request(method, rc.url + path)
      t.ok(res.status >= 400, `${what}: ${method} ${path} -> ${res.status}`)
      t.equal(header(res, 'docker-distribution-api-version'), API_VERSION, `${what} carries the API version header`)
    }
  })

  /** Upstream's answer for a manifest, straight from the registry. */
  const upstreamManifest = async (reg: Registry, name: string, ref: string, accept: string | undefined) => {
    const headers: RequestHeaders = accept === undefined ? {} : { accept }
    const get = await direct.get(`${reg.url}/v2/${name}/manifests/${ref}`, headers)
    const head = await direct.head(`${reg.url}/v2/${name}/manifests/${ref}`, headers)
    return { get, head }
  }

  /** A 200 manifest answer from regcache matches upstream's GET exactly. */
  const checkManifest = (t: Tap, res: HttpResponse, expected: HttpResponse, what: string) => {
    const method = res.method
    t.equal(res.status, 200, `${what}: status`)
    if (res.status !== 200) {
      t.comment(`${what}: body ${res.body.toString('utf8').slice(0, 300)}`)
      return
    }
    const ct = header(res, 'content-type')
    t.equal(ct, header(expected, 'content-type'), `${what}: Content-Type is upstream's byte for byte`)
    t.notMatch(ct ?? '', /charset/i, `${what}: no charset parameter`)
    const len = header(res, 'content-length')
    t.equal(len, String(expected.body.length), `${what}: Content-Length exact`)
    t.ok(Number(len) > 0, `${what}: Content-Length nonzero`)
    t.equal(header(res, 'docker-content-digest'), header(expected, 'docker-content-digest'), `${what}: Docker-Content-Digest is upstream's`)
    t.equal(header(res, 'docker-content-digest'), sha256(expected.body), `${what}: Docker-Content-Digest is sha256 of the bytes`)
    if (method === 'HEAD') {
      t.equal(res.body.length, 0, `${what}: HEAD has no body`)
    } else {
      t.ok(res.body.equals(expected.body), `${what}: body bytes equal upstream's`)
      t.equal(sha256(res.body), header(res, 'docker-content-digest'), `${what}: body hashes to Docker-Content-Digest`)
    }
  }

  await t.test('2. manifests by tag and digest, GET and HEAD, byte-identical to upstream', async (t) => {
    const cases = [
      { label: 'OCI image manifest', name: 'library/app', tag: 'oci', type: MT.ociManifest, order: ['HEAD tag', 'GET tag', 'GET digest', 'HEAD digest'] },
      { label: 'Docker schema2 manifest', name: 'library/app', tag: 'v2s2', type: MT.dockerManifest, order: ['GET digest', 'HEAD digest', 'HEAD tag', 'GET tag'] },
      { label: 'OCI index', name: 'library/multi', tag: 'v1', type: MT.ociIndex, order: ['GET tag', 'HEAD tag', 'HEAD digest', 'GET digest'] },
    ]
    for (const c of cases) {
      await t.test(c.label, async (t) => {
        const up = await upstreamManifest(hub, c.name, c.tag, ACCEPT_CONTAINERD)
        t.equal(up.get.status, 200, 'upstream serves it')
        t.equal(header(up.get, 'content-type'), c.type, `upstream type is ${c.type}`)
        const digest = header(up.get, 'docker-content-digest')!
        for (const step of c.order) {
          const [method, by] = step.split(' ')
          const ref = by === 'tag' ? c.tag : digest
          const res = await client.request(method!, `${rc.url}/v2/${c.name}/manifests/${ref}`, { headers: { accept: ACCEPT_CONTAINERD } })
          checkManifest(t, res, up.get, `${method} ${c.name}:${ref.slice(0, 19)}`)
          t.equal(header(res, 'content-length'), header(up.head, 'content-length'), `${step}: Content-Length equals upstream HEAD's`)
        }
      })
    }

    await t.test("the index's children are fetchable by digest", async (t) => {
      for (const child of multi.children) {
        const up = await upstreamManifest(hub, 'library/multi', child.digest, `${MT.ociManifest}, */*`)
        t.equal(up.get.status, 200)
        // containerd: HEAD (cold) then GET, Accept: <the descriptor's media type>, */*.
        const head = await rcHead(`/v2/library/multi/manifests/${child.digest}`, { accept: `${MT.ociManifest}, */*` })
        checkManifest(t, head, up.get, `HEAD child ${child.platform.architecture}`)
        const get = await rcGet(`/v2/library/multi/manifests/${child.digest}`, { accept: `${MT.ociManifest}, */*` })
        checkManifest(t, get, up.get, `GET child ${child.platform.architecture}`)
        t.equal(header(get, 'docker-content-digest'), child.digest, 'the digest the index names')
      }
    })

    await t.test('a single-component name resolves to library/', async (t) => {
      await quiet()
      const up = await upstreamManifest(hub, 'library/alpine', 'latest', ACCEPT_CONTAINERD)
      t.equal(up.get.status, 200)
      checkManifest(t, await rcHead('/v2/alpine/manifests/latest', { accept: ACCEPT_CONTAINERD }), up.get, 'HEAD alpine:latest')
      checkManifest(t, await rcGet('/v2/alpine/manifests/latest', { accept: ACCEPT_CONTAINERD }), up.get, 'GET alpine:latest')
      checkManifest(t, await rcGet(`/v2/alpine/manifests/${alpine.manifestDigest}`, { accept: ACCEPT_CONTAINERD }), up.get, 'GET alpine@digest')
      const blob = await rcGet(`/v2/alpine/blobs/${alpine.layerDigests[0]}`)
      t.equal(blob.status, 200, 'alpine layer through /v2/alpine/blobs/')
      t.equal(sha256(blob.body), alpine.layerDigests[0], 'layer bytes hash to the digest')
      await hub.settle()
      t.ok(hub.count({ pathIncludes: '/v2/library/alpine/manifests/latest' }) >= 1, 'upstream asked for library/alpine')
      t.equal(hub.count({ pathIncludes: /^\/v2\/alpine\// }), 0, 'upstream never asked for a bare "alpine"')
    })
  })

  await t.test('3. content negotiation: each Accept gets what upstream gives it', async (t) => {
    // Order matters: the tag is first cached for a wide Accept, then asked with narrower ones.
    const plan: { name: string; tag: string; accepts: [string, string | RequestHeaders[string] | undefined][] }[] = [
      {
        name: 'library/app',
        tag: 'oci',
        accepts: [
          ['containerd', ACCEPT_CONTAINERD],
          ['docker schema2 only', ACCEPT_DOCKER_ONLY],
          ['OCI only', ACCEPT_OCI_ONLY],
          ['docker schema2 + list', ACCEPT_DOCKER_LIST],
          ['no Accept', undefined],
          ['containerd again', ACCEPT_CONTAINERD],
        ],
      },
      {
        name: 'library/multi',
        tag: 'v1',
        accepts: [
          ['OCI only', ACCEPT_OCI_ONLY],
          ['docker schema2 only', ACCEPT_DOCKER_ONLY],
          ['OCI types as two Accept lines', [MT.ociManifest, MT.ociIndex]],
          ['no Accept', undefined],
        ],
      },
      {
        name: 'library/multi',
        tag: 'docker',
        accepts: [
          ['containerd', ACCEPT_CONTAINERD],
          ['docker schema2 only', ACCEPT_DOCKER_ONLY],
          ['docker schema2 + list', ACCEPT_DOCKER_LIST],
          ['docker schema2 only again', ACCEPT_DOCKER_ONLY],
        ],
      },
      {
        name: 'library/app',
        tag: 'v2s2',
        accepts: [
          ['docker schema2 only', ACCEPT_DOCKER_ONLY],
          ['containerd', ACCEPT_CONTAINERD],
        ],
      },
    ]
    const digestsFor = new Map<string, string | undefined>()
    const runPlan = async (t: Tap, base: string) => {
      for (const p of plan) {
        for (const [label, accept] of p.accepts) {
          const headers: RequestHeaders = accept === undefined ? {} : { accept }
          const what = `${p.name}:${p.tag} with ${label}`
          const upGet = await direct.get(`${hub.url}/v2/${p.name}/manifests/${p.tag}`, headers)
          const upHead = await direct.head(`${hub.url}/v2/${p.name}/manifests/${p.tag}`, headers)
          const url = `${base}/v2/${p.name}/manifests/${p.tag}`
          for (const res of [await client.head(url, headers), await client.get(url, headers)]) {
            const w = `${res.method} ${what}`
            if (upGet.status === 200) {
              checkManifest(t, res, upGet, w)
              t.equal(header(res, 'content-length'), header(upHead, 'content-length'), `${w}: Content-Length equals upstream HEAD's`)
            } else {
              t.equal(res.status, upGet.status, `${w}: upstream answers ${upGet.status}, so does regcache`)
              if (res.method === 'GET') t.equal(ociErrors(res)?.[0]?.code, ociErrors(upGet)?.[0]?.code, `${w}: same error code as upstream`)
              t.notOk(header(res, 'docker-content-digest'), `${w}: no digest on an error`)
            }
          }
          digestsFor.set(`${p.name}:${p.tag} ${label}`, header(upGet, 'docker-content-digest'))
        }
      }
    }
    await t.test('revalidating on every request', (t) => runPlan(t, rc.url))
    // With a tag cache that answers without asking upstream, a cache keyed on anything less
    // than the Accept set would hand one client the manifest negotiated for another.
    const cached = await startRegcache({
      upstreams: { 'docker.io': { url: hubFront.url, revalidate: { minInterval: '1h' } } },
      defaultUpstream: 'docker.io',
    })
    t.teardown(cached.stop)
    await t.test('revalidate.minInterval 1h, first round (fills the tag cache)', (t) => runPlan(t, cached.url))
    await t.test('revalidate.minInterval 1h, second round (from the tag cache)', (t) => runPlan(t, cached.url))

    // The cases above are only meaningful if upstream really negotiates.
    const list = digestsFor.get('library/multi:docker containerd')
    const child = digestsFor.get('library/multi:docker docker schema2 only')
    t.ok(list && child && list !== child, 'upstream maps one tag to two digests (manifest list vs amd64 child)')
    t.equal(digestsFor.get('library/app:oci docker schema2 only'), undefined, 'upstream refuses an OCI manifest to a docker-only client')
  })

  const blobChecks = async (t: Tap, path: (digest: string) => string, cold: boolean) => {
    const cases: { range: string; status: number; start?: number; end?: number }[] = [
      { range: 'bytes=500-1499', status: 206, start: 500, end: 1499 },
      { range: 'bytes=500-', status: 206, start: 500, end: 2047 },
      { range: 'bytes=-500', status: 206, start: 1548, end: 2047 },
      { range: 'bytes=2000-5000', status: 206, start: 2000, end: 2047 },
      { range: 'bytes=500-0', status: 200 },
      { range: 'bytes=3000-', status: 416 },
      { range: 'bytes=0-99,200-299', status: 200 },
    ]
    for (const c of cases) {
      let bytes = warmBlob
      let digest = warmDigest
      if (cold) {
        bytes = randomBytes(BLOB_SIZE)
        digest = await uploadBlob(hub.url, 'library/ranges', bytes)
      }
      const what = `${cold ? 'cold' : 'cached'} ${c.range}`
      const res = await rcGet(path(digest), { range: c.range })
      t.equal(res.status, c.status, `${what}: status ${c.status}`)
      if (c.status === 206) {
        t.equal(header(res, 'content-range'), `bytes ${c.start}-${c.end}/${BLOB_SIZE}`, `${what}: Content-Range`)
        t.equal(header(res, 'content-length'), String(c.end! - c.start! + 1), `${what}: Content-Length`)
        t.ok(res.body.equals(bytes.subarray(c.start!, c.end! + 1)), `${what}: the requested bytes`)
      } else if (c.status === 416) {
        t.equal(header(res, 'content-range'), `bytes */${BLOB_SIZE}`, `${what}: Content-Range bytes */2048`)
      } else {
        t.notOk(header(res, 'content-range'), `${what}: no Content-Range on the full answer`)
        t.equal(header(res, 'content-length'), String(BLOB_SIZE), `${what}: full Content-Length`)
        t.ok(res.body.equals(bytes), `${what}: the whole blob`)
      }
      if (cold) {
        // The range request must not have left a partial or corrupt copy behind.
        const full = await rcGet(path(digest))
        t.equal(full.status, 200, `${what}: a full GET afterwards`)
        t.equal(sha256(full.body), digest, `${what}: the full GET afterwards hashes to the digest`)
      }
    }
  }

  await t.test('4. blobs: GET, HEAD and Range on a 2048-byte blob', async (t) => {
    const path = (d: string) => `/v2/library/ranges/blobs/${d}`

    await t.test('HEAD before the blob is cached', async (t) => {
      const bytes = randomBytes(BLOB_SIZE)
      const digest = await uploadBlob(hub.url, 'library/ranges', bytes)
      const head = await rcHead(path(digest))
      t.equal(head.status, 200)
      t.equal(header(head, 'content-length'), String(BLOB_SIZE), 'Content-Length')
      t.equal(header(head, 'docker-content-digest'), digest, 'Docker-Content-Digest')
      t.equal(header(head, 'accept-ranges'), 'bytes', 'Accept-Ranges')
      t.equal(head.body.length, 0, 'no body')
    })

    await t.test('GET in full, then HEAD', async (t) => {
      const get = await rcGet(path(warmDigest))
      t.equal(get.status, 200)
      t.equal(get.body.length, BLOB_SIZE, '2048 bytes')
      t.equal(sha256(get.body), warmDigest, 'bytes hash to the digest')
      t.ok(get.body.equals(warmBlob), "upstream's bytes")
      t.equal(header(get, 'content-length'), String(BLOB_SIZE), 'Content-Length')
      t.equal(header(get, 'docker-content-digest'), warmDigest, 'Docker-Content-Digest')
      t.equal(header(get, 'content-type'), 'application/octet-stream', 'Content-Type')
      t.equal(header(get, 'accept-ranges'), 'bytes', 'Accept-Ranges')
      const head = await rcHead(path(warmDigest))
      t.equal(head.status, 200)
      t.equal(header(head, 'content-length'), String(BLOB_SIZE), 'HEAD Content-Length')
      t.equal(header(head, 'docker-content-digest'), warmDigest, 'HEAD Docker-Content-Digest')
      t.equal(header(head, 'accept-ranges'), 'bytes', 'HEAD Accept-Ranges')
      t.equal(head.body.length, 0, 'HEAD has no body')
    })

    await t.test('Range on a cached blob', (t) => blobChecks(t, path, false))
    await t.test('Range as the first request ever for a blob', (t) => blobChecks(t, path, true))

    await t.test('three concurrent Range requests as the first requests for an 8 MiB blob', async (t) => {
      // Concurrent first requests share one download; each must get exactly its own bytes.
      const size = 8 * 1024 * 1024
      const bytes = randomBytes(size)
      const digest = await uploadBlob(hub.url, 'library/ranges', bytes)
      const [middle, resume, suffix] = await Promise.all([
        rcGet(path(digest), { range: 'bytes=6000000-6000999' }),
        rcGet(path(digest), { range: `bytes=${size - 100_000}-` }),
        rcGet(path(digest), { range: 'bytes=-10' }),
      ])
      t.equal(middle.status, 206, 'middle range: 206')
      t.equal(header(middle, 'content-range'), `bytes 6000000-6000999/${size}`, 'middle range: Content-Range')
      t.ok(middle.body.equals(bytes.subarray(6_000_000, 6_001_000)), 'middle range: the requested bytes')
      t.equal(resume.status, 206, 'resume (bytes=N-): 206')
      t.equal(header(resume, 'content-range'), `bytes ${size - 100_000}-${size - 1}/${size}`, 'resume: Content-Range')
      t.ok(resume.body.equals(bytes.subarray(size - 100_000)), 'resume: the requested bytes')
      t.equal(suffix.status, 206, 'suffix range: 206')
      t.ok(suffix.body.equals(bytes.subarray(size - 10)), 'suffix range: the last 10 bytes')
      const full = await rcGet(path(digest))
      t.equal(full.status, 200, 'full GET afterwards: 200')
      t.equal(sha256(full.body), digest, 'full GET afterwards hashes to the digest')
      await hub.settle()
      // Ranges the download has not reached are forwarded upstream (206s); the blob itself is
      // downloaded once.
      t.equal(hub.count({ method: 'GET', pathIncludes: `/blobs/${digest}`, status: 200 }), 1, 'one upstream download of the whole blob')
    })
  })

  await t.test('5. write methods answer 405 UNSUPPORTED', async (t) => {
    await quiet()
    const manifestBody = app.manifestBytes
    const d = app.manifestDigest
    const writes: [string, string, { headers?: RequestHeaders; body?: Buffer }?][] = [
      ['POST', '/v2/x/blobs/uploads/'],
      ['POST', `/v2/x/blobs/uploads/?mount=${d}&from=library/app`],
      ['POST', `/v2/x/blobs/uploads/?digest=${d}`, { headers: { 'content-type': 'application/octet-stream' }, body: Buffer.from('hello') }],
      ['PATCH', '/v2/x/blobs/uploads/3f1c0e5a-8d44-4b34-9a2b-0d4c3c0c0c0c', { headers: { 'content-type': 'application/octet-stream' }, body: Buffer.from('hello') }],
      ['PUT', `/v2/x/blobs/uploads/3f1c0e5a-8d44-4b34-9a2b-0d4c3c0c0c0c?digest=${d}`, { headers: { 'content-type': 'application/octet-stream' }, body: Buffer.from('hello') }],
      ['PUT', '/v2/x/manifests/latest', { headers: { 'content-type': MT.ociManifest }, body: manifestBody }],
      ['PUT', `/v2/x/manifests/${d}`, { headers: { 'content-type': MT.ociManifest }, body: manifestBody }],
      ['PATCH', '/v2/x/manifests/latest'],
      ['DELETE', `/v2/x/manifests/${d}`],
      ['DELETE', '/v2/library/app/manifests/oci'],
      ['PUT', `/v2/x/blobs/${d}`, { body: Buffer.from('hello') }],
      ['PATCH', `/v2/x/blobs/${d}`],
      ['DELETE', `/v2/library/app/blobs/${app.configDigest}`],
    ]
    for (const [method, p, opts] of writes) {
      const res = await client.request(method, rc.url + p, opts)
      t.equal(res.status, 405, `${method} ${p}: 405`)
      t.equal(ociErrors(res)?.[0]?.code, 'UNSUPPORTED', `${method} ${p}: UNSUPPORTED`)
    }
    t.same(await upstreamCounts(), { hub: 0, ghcr: 0 }, 'no write reached an upstream')
    // And nothing was deleted upstream.
    t.equal((await upstreamManifest(hub, 'library/app', 'oci', ACCEPT_CONTAINERD)).get.status, 200, 'library/app:oci still upstream')
  })

  await t.test('6. malformed input: 400 with the right code, upstream never contacted', async (t) => {
    await quiet()
    const good = app.manifestDigest
    const hex = good.slice('sha256:'.length)
    const badDigests = ['sha256:xyz', `sha256:${hex.toUpperCase()}`, `sha256:${hex.slice(1)}`, `sha256:${hex}0`, `sha512:${hex}`, `md5:${hex}`]
    const cases: [string, string, string][] = [
      ['GET', '/v2/Library/App/manifests/latest', 'NAME_INVALID'],
      ['HEAD', '/v2/Library/App/manifests/latest', 'NAME_INVALID'],
      ['GET', `/v2/library/App/blobs/${good}`, 'NAME_INVALID'],
      ['GET', '/v2/library/App/tags/list', 'NAME_INVALID'],
      ['GET', '/v2/ghcr.io/Org/tool/manifests/v1', 'NAME_INVALID'],
      ['GET', '/v2/org/Tool/manifests/v1?ns=ghcr.io', 'NAME_INVALID'],
    ]
    // Neither a tag nor a digest: names no manifest (404 MANIFEST_UNKNOWN, the conformance suite's answer).
    const notReferences: [string, string][] = [
      ['GET', `/v2/library/app/manifests/${'a'.repeat(129)}`],
      ['GET', '/v2/library/app/manifests/.hidden'],
      ['GET', '/v2/library/app/manifests/-dash'],
      ['HEAD', `/v2/library/app/manifests/${'a'.repeat(129)}`],
    ]
    for (const [method, p] of notReferences) {
      const res = await client.request(method, rc.url + p)
      t.equal(res.status, 404, `${method} ${p.slice(0, 60)}: 404`)
      if (method === 'GET') t.equal(ociErrors(res)?.[0]?.code, 'MANIFEST_UNKNOWN')
    }
    for (const d of badDigests) {
      cases.push(['GET', `/v2/library/app/manifests/${d}`, 'DIGEST_INVALID'])
      cases.push(['GET', `/v2/library/app/blobs/${d}`, 'DIGEST_INVALID'])
    }
    cases.push(['HEAD', '/v2/library/app/manifests/sha256:xyz', 'DIGEST_INVALID'])
    cases.push(['HEAD', '/v2/library/app/blobs/sha256:xyz', 'DIGEST_INVALID'])
    cases.push(['GET', '/v2/library/app/blobs/latest', 'DIGEST_INVALID'])
    for (const [method, p, code] of cases) {
      const res = await client.request(method, rc.url + p)
      const label = `${method} ${p.length > 90 ? p.slice(0, 90) + '…' : p}`
      t.equal(res.status, 400, `${label}: 400`)
      if (method === 'GET') {
        t.equal(ociErrors(res)?.[0]?.code, code, `${label}: ${code}`)
        t.match(header(res, 'content-type') ?? '', /^application\/json/, `${label}: JSON error body`)
      }
    }
    const unknown = ['/v2/library/app/nothing/here', '/v2/library/app/manifests', '/v2/library/app/blobs/', '/v2/library/app/tags', '/v3/', '/nothing']
    for (const p of unknown) {
      const res = await rcGet(p)
      t.equal(res.status, 404, `GET ${p}: 404`)
      t.ok(ociErrors(res), `GET ${p}: OCI error body`)
    }
    t.same(await upstreamCounts(), { hub: 0, ghcr: 0 }, 'no malformed request reached an upstream')

    // The tag limit is 128 characters, not fewer: this one goes upstream and is simply unknown.
    const longest = await rcGet(`/v2/library/app/manifests/${'a'.repeat(128)}`, { accept: ACCEPT_CONTAINERD })
    t.equal(longest.status, 404, 'a 128-character tag is valid (404 from upstream)')
    t.equal(ociErrors(longest)?.[0]?.code, 'MANIFEST_UNKNOWN', 'MANIFEST_UNKNOWN for the 128-character tag')
  })

  await t.test('7. upstream selection: ns, path prefix, default; unknown registries denied', async (t) => {
    await quiet()
    const byNs = await rcGet('/v2/org/tool/manifests/v1?ns=ghcr.io', { accept: ACCEPT_CONTAINERD })
    t.equal(byNs.status, 200, '?ns=ghcr.io: 200')
    t.equal(header(byNs, 'docker-content-digest'), toolV1, '?ns=ghcr.io: the ghcr.io registry served it')
    t.equal(header(byNs, 'oci-namespace'), 'ghcr.io', '?ns=ghcr.io: OCI-Namespace: ghcr.io')
    const nsBlob = await rcGet(`/v2/org/tool/blobs/${tool1.configDigest}?ns=ghcr.io`)
    t.equal(nsBlob.status, 200, '?ns=ghcr.io blob: 200')
    t.equal(sha256(nsBlob.body), tool1.configDigest, '?ns=ghcr.io blob bytes')
    t.equal(header(nsBlob, 'oci-namespace'), 'ghcr.io', '?ns=ghcr.io blob: OCI-Namespace')
    await ghcr.settle()
    t.ok(ghcr.count({ pathIncludes: '/v2/org/tool/manifests/v1' }) >= 1, 'ghcr.io registry asked for org/tool:v1')

    const byPrefix = await rcGet('/v2/ghcr.io/org/tool/manifests/v2', { accept: ACCEPT_CONTAINERD })
    t.equal(byPrefix.status, 200, '/v2/ghcr.io/org/tool: 200')
    t.equal(header(byPrefix, 'docker-content-digest'), toolV2, '/v2/ghcr.io/org/tool: the ghcr.io registry served it')
    const prefixBlob = await rcGet(`/v2/ghcr.io/org/tool/blobs/${tool2.layerDigests[0]}`)
    t.equal(prefixBlob.status, 200, '/v2/ghcr.io/org/tool blob: 200')
    t.equal(sha256(prefixBlob.body), tool2.layerDigests[0], '/v2/ghcr.io/org/tool blob bytes')
    await ghcr.settle()
    t.ok(ghcr.count({ pathIncludes: '/v2/org/tool/manifests/v2' }) >= 1, 'ghcr.io registry asked for org/tool:v2 (prefix stripped)')

    // podman's mirror location "mirror/docker.io": /v2/docker.io/library/<name>/...
    const hubPrefix = await rcGet('/v2/docker.io/library/app/manifests/oci', { accept: ACCEPT_CONTAINERD })
    t.equal(hubPrefix.status, 200, '/v2/docker.io/library/app: 200')
    t.equal(header(hubPrefix, 'docker-content-digest'), app.manifestDigest, '/v2/docker.io/library/app: the default registry served it')

    const hubNs = await rcGet('/v2/library/app/manifests/oci?ns=docker.io', { accept: ACCEPT_CONTAINERD })
    t.equal(hubNs.status, 200, '?ns=docker.io: 200')
    t.equal(header(hubNs, 'docker-content-digest'), app.manifestDigest, '?ns=docker.io: the default registry served it')
    t.equal(header(hubNs, 'oci-namespace'), 'docker.io', '?ns=docker.io: OCI-Namespace: docker.io')

    await Promise.all([hub.settle(), ghcr.settle()])
    t.equal(hub.count({ pathIncludes: 'org/tool' }), 0, 'the default upstream was never asked for org/tool')

    await quiet()
    const denied: [string, string][] = [
      ['GET', '/v2/org/tool/manifests/v1?ns=evil.example.com'],
      ['HEAD', '/v2/org/tool/manifests/v1?ns=evil.example.com'],
      ['GET', `/v2/org/tool/blobs/${tool1.configDigest}?ns=evil.example.com`],
      ['GET', '/v2/org/tool/tags/list?ns=evil.example.com'],
      ['GET', '/v2/quay.io/x/y/manifests/latest'],
      ['GET', `/v2/quay.io/x/y/blobs/${tool1.configDigest}`],
      ['GET', '/v2/quay.io/x/y/tags/list'],
    ]
    for (const [method, p] of denied) {
      const res = await client.request(method, rc.url + p, { headers: { accept: ACCEPT_CONTAINERD } })
      t.equal(res.status, 403, `${method} ${p}: 403`)
      if (method === 'GET') t.equal(ociErrors(res)?.[0]?.code, 'DENIED', `${method} ${p}: DENIED`)
    }
    t.same(await upstreamCounts(), { hub: 0, ghcr: 0 }, 'an unconfigured registry makes regcache contact nothing')
  })

  await t.test('8. repository isolation: cached content is only served to repositories upstream has it in', async (t) => {
    const layer = imageA.layerDigests[0]!
    const viaA = await rcGet(`/v2/org/a/blobs/${layer}`)
    t.equal(viaA.status, 200, 'blob of A through org/a')
    t.equal(sha256(viaA.body), layer, 'bytes hash to the digest')
    const manifestViaA = await rcGet(`/v2/org/a/manifests/${imageA.manifestDigest}`, { accept: ACCEPT_CONTAINERD })
    t.equal(manifestViaA.status, 200, 'manifest of A by digest through org/a')

    await quiet()
    for (const res of [await rcGet(`/v2/org/b/blobs/${layer}`), await rcHead(`/v2/org/b/blobs/${layer}`)]) {
      t.equal(res.status, 404, `${res.method} A's blob through org/b: 404`)
      t.notOk(header(res, 'docker-content-digest'), `${res.method} A's blob through org/b: no digest header`)
      if (res.method === 'GET') {
        t.equal(ociErrors(res)?.[0]?.code, 'BLOB_UNKNOWN', "A's blob through org/b: BLOB_UNKNOWN")
        t.not(sha256(res.body), layer, "A's bytes were not served")
      }
    }
    await hub.settle()
    t.ok(hub.count({ pathIncludes: `/v2/org/b/blobs/${layer}` }) >= 1, 'regcache asked upstream whether org/b has the blob')

    await quiet()
    for (const res of [
      await rcGet(`/v2/org/b/manifests/${imageA.manifestDigest}`, { accept: ACCEPT_CONTAINERD }),
      await rcHead(`/v2/org/b/manifests/${imageA.manifestDigest}`, { accept: ACCEPT_CONTAINERD }),
    ]) {
      t.equal(res.status, 404, `${res.method} A's manifest through org/b: 404`)
      if (res.method === 'GET') t.equal(ociErrors(res)?.[0]?.code, 'MANIFEST_UNKNOWN', "A's manifest through org/b: MANIFEST_UNKNOWN")
    }
    await hub.settle()
    t.ok(hub.count({ pathIncludes: `/v2/org/b/manifests/${imageA.manifestDigest}` }) >= 1, 'regcache asked upstream whether org/b has the manifest')

    const tagB = await rcGet('/v2/org/b/manifests/v1', { accept: ACCEPT_CONTAINERD })
    t.equal(header(tagB, 'docker-content-digest'), imageB.manifestDigest, 'org/b:v1 is B')

    // Now upstream has A in org/b too.
    await pushImage(imageA, hub.host, 'org/b:a')
    const nowB = await rcGet(`/v2/org/b/blobs/${layer}`)
    t.equal(nowB.status, 200, "A's blob through org/b after the push: 200")
    t.equal(sha256(nowB.body), layer, 'bytes hash to the digest')
    const nowBHead = await rcHead(`/v2/org/b/blobs/${layer}`)
    t.equal(nowBHead.status, 200, "HEAD A's blob through org/b after the push: 200")
    const manifestNowB = await rcGet(`/v2/org/b/manifests/${imageA.manifestDigest}`, { accept: ACCEPT_CONTAINERD })
    t.equal(manifestNowB.status, 200, "A's manifest through org/b after the push: 200")
    t.equal(header(manifestNowB, 'docker-content-digest'), imageA.manifestDigest, 'the same digest')
  })

  await t.test('9. not found: OCI error bodies', async (t) => {
    const absent = sha256(randomBytes(32))
    const cases: [string, string, string][] = [
      ['/v2/library/app/manifests/no-such-tag', 'MANIFEST_UNKNOWN', 'unknown tag'],
      [`/v2/library/app/manifests/${absent}`, 'MANIFEST_UNKNOWN', 'unknown manifest digest'],
      [`/v2/library/app/blobs/${absent}`, 'BLOB_UNKNOWN', 'unknown blob'],
    ]
    for (const [p, code, what] of cases) {
      const res = await rcGet(p, { accept: ACCEPT_CONTAINERD })
      t.equal(res.status, 404, `${what}: 404`)
      t.match(header(res, 'content-type') ?? '', /^application\/json(;|$)/, `${what}: Content-Type application/json`)
      let doc: any
      t.doesNotThrow(() => (doc = JSON.parse(res.body.toString('utf8'))), `${what}: JSON body`)
      t.ok(Array.isArray(doc?.errors) && doc.errors.length >= 1, `${what}: {"errors":[...]}`)
      const e = doc?.errors?.[0] ?? {}
      t.equal(e.code, code, `${what}: ${code}`)
      t.type(e.message, 'string', `${what}: message is a string`)
      t.ok('detail' in e, `${what}: detail present`)
      t.equal(header(res, 'content-length'), String(res.body.length), `${what}: Content-Length matches the body`)
      t.notOk(header(res, 'docker-content-digest'), `${what}: no Docker-Content-Digest`)
      const head = await rcHead(p, { accept: ACCEPT_CONTAINERD })
      t.equal(head.status, 404, `HEAD ${what}: 404`)
      t.equal(head.body.length, 0, `HEAD ${what}: no body`)
    }
    const noTags = await rcGet('/v2/no/such-repo/tags/list')
    t.equal(noTags.status, 404, 'tags/list of an unknown repository: 404')
    t.equal(ociErrors(noTags)?.[0]?.code, 'NAME_UNKNOWN', 'tags/list of an unknown repository: NAME_UNKNOWN')
    t.match(header(noTags, 'content-type') ?? '', /^application\/json(;|$)/, 'tags/list of an unknown repository: JSON')
    const noRepo = await rcGet('/v2/no/such-repo/manifests/latest', { accept: ACCEPT_CONTAINERD })
    t.equal(noRepo.status, 404, 'unknown repository: 404')
    t.ok(['MANIFEST_UNKNOWN', 'NAME_UNKNOWN'].includes(String(ociErrors(noRepo)?.[0]?.code)), 'unknown repository: MANIFEST_UNKNOWN or NAME_UNKNOWN')
  })

  await t.test('10. tags/list passes through; pagination Links point back at regcache', async (t) => {
    const upstream = await direct.get(`${hub.url}/v2/library/app/tags/list`)
    const full = await rcGet('/v2/library/app/tags/list')
    t.equal(full.status, 200, 'GET /v2/library/app/tags/list: 200')
    t.same(JSON.parse(full.body.toString('utf8')), JSON.parse(upstream.body.toString('utf8')), "body is upstream's")
    t.same(JSON.parse(full.body.toString('utf8')).tags, ['oci', 'v2s2'], 'lists the tags')
    t.match(header(full, 'content-type') ?? '', /^application\/json/, 'JSON')

    const rcOrigin = new URL(rc.url).origin
    const nextOf = (res: HttpResponse) => {
      const link = header(res, 'link')
      const m = link ? /<([^>]*)>\s*;\s*rel="?next"?/.exec(link) : null
      return m ? new URL(m[1]!, rc.url) : undefined
    }
    const pages: { first: string; path: string; ns?: string; tags: string[][]; reg: Registry; upstreamPath: string }[] = [
      { first: '/v2/library/app/tags/list?n=1', path: '/v2/library/app/tags/list', tags: [['oci'], ['v2s2']], reg: hub, upstreamPath: '/v2/library/app/tags/list' },
      { first: '/v2/app/tags/list?n=1', path: '/v2/app/tags/list', tags: [['oci'], ['v2s2']], reg: hub, upstreamPath: '/v2/library/app/tags/list' },
      { first: '/v2/org/tool/tags/list?n=1&ns=ghcr.io', path: '/v2/org/tool/tags/list', ns: 'ghcr.io', tags: [['v1'], ['v2']], reg: ghcr, upstreamPath: '/v2/org/tool/tags/list' },
      { first: '/v2/ghcr.io/org/tool/tags/list?n=1', path: '/v2/ghcr.io/org/tool/tags/list', tags: [['v1'], ['v2']], reg: ghcr, upstreamPath: '/v2/org/tool/tags/list' },
    ]
    for (const p of pages) {
      await t.test(p.first, async (t) => {
        await quiet()
        const first = await rcGet(p.first)
        t.equal(first.status, 200, 'first page: 200')
        t.same(JSON.parse(first.body.toString('utf8')).tags, p.tags[0], 'first page tags')
        const next = nextOf(first)
        t.ok(next, `first page has a rel="next" Link (got ${JSON.stringify(header(first, 'link'))})`)
        if (!next) return
        t.equal(next.origin, rcOrigin, 'the Link points at regcache, not upstream')
        t.equal(next.pathname, p.path, 'the Link names the path the client used')
        t.equal(next.searchParams.get('n'), '1', 'n kept')
        t.equal(next.searchParams.get('last'), p.tags[0]![0], 'last set')
        t.equal(next.searchParams.get('ns'), p.ns ?? null, p.ns ? 'ns kept' : 'no ns added')
        if (p.ns) t.equal(header(first, 'oci-namespace'), p.ns, 'OCI-Namespace on the page')
        const second = await rcGet(next.pathname + next.search)
        t.equal(second.status, 200, 'second page through the Link: 200')
        t.same(JSON.parse(second.body.toString('utf8')).tags, p.tags[1], 'second page tags')
        t.notOk(nextOf(second), 'last page has no next Link')
        await p.reg.settle()
        t.ok(p.reg.count({ pathIncludes: p.upstreamPath }) >= 2, `the right registry answered both pages (${p.upstreamPath})`)
      })
    }
  })

  await t.test('every response carried Docker-Distribution-API-Version: registry/2.0', async (t) => {
    const missing = client.responses.filter((r) => header(r, 'docker-distribution-api-version') !== API_VERSION)
    t.ok(client.responses.length > 100, `${client.responses.length} responses checked`)
    t.same(
      missing.map((r) => `${r.method} ${r.url.slice(rc.url.length)} -> ${r.status}`),
      [],
      'no response without the header',
    )
  })

  t.comment(`protocol test took ${Date.now() - t0} ms`)
})
