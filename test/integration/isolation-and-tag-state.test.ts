// Repository isolation and tag state that does not depend on who asks, against a real upstream
// (Debian's docker-registry) and regcache on a real socket:
// - a manifest that names another repository's digests (in `subject`, in `blobs`, as a layer)
//   gives no access to them: a digest is served under a repository only after upstream
//   confirmed it there (docs/behaviour.md#b5-repository-isolation);
// - clients with different Accept headers share one story per tag: rollback detection, outage
//   events, 404s and the bounded state (docs/behaviour.md#revalidation-contract).

import { randomBytes } from 'node:crypto'
import { request } from 'undici'
import t from 'tap'
import { MT, buildImage, buildIndex, pushImage } from '../helpers/images.js'
import { createHttpClient, header, sha256, uploadBlob } from '../helpers/http.js'
import { startForwarder } from '../helpers/forwarder.js'
import { HELPER_USER_AGENT, startRegistry } from '../helpers/registry.js'
import { startRegcache } from '../helpers/regcache.js'

const ACCEPT_CONTAINERD = `${MT.dockerManifest}, ${MT.dockerManifestList}, ${MT.ociManifest}, ${MT.ociIndex}, */*`
const ACCEPT_OCI = `${MT.ociManifest}, ${MT.ociIndex}`
const ACCEPT_SKOPEO = `${MT.ociManifest}, ${MT.dockerManifest}, ${MT.dockerManifestList}, ${MT.ociIndex}, application/vnd.docker.distribution.manifest.v1+prettyjws`
const ACCEPT_DOCKER_ONLY = MT.dockerManifest

async function putManifest(registryUrl: string, repo: string, ref: string, body: Buffer, contentType: string): Promise<void> {
  const res = await request(`${registryUrl}/v2/${repo}/manifests/${ref}`, {
    method: 'PUT',
    headers: { 'content-type': contentType, 'user-agent': `${HELPER_USER_AGENT}/put` },
    body,
  })
  const text = await res.body.text()
  if (res.statusCode !== 201) throw new Error(`PUT ${repo}:${ref}: ${res.statusCode} ${text}`)
}

t.test('a manifest naming another repository’s digests gives no access to them', async (t) => {
  // Foreign layers are taken on their URL, without the registry holding them (as registries
  // configured for Windows base layers do): the attacker's way to name any digest as a layer.
  const reg = await startRegistry({ foreignLayerUrls: ['^https://example\\.invalid/'] })
  t.teardown(reg.stop)
  const victim = await buildImage({ layers: 2, layerSize: 16 * 1024 })
  t.teardown(victim.remove)
  await pushImage(victim, reg.host, 'victim/app:1')

  const rc = await startRegcache({ upstreams: { 'docker.io': { url: reg.url } } })
  t.teardown(rc.stop)
  const http = createHttpClient()
  t.teardown(http.close)

  // A legitimate client pulls the victim image: everything is cached and linked to victim/app.
  const m = await http.get(`${rc.url}/v2/victim/app/manifests/1`, { accept: ACCEPT_CONTAINERD })
  t.equal(m.status, 200, 'victim manifest pulled')
  const victimDigests = [victim.configDigest, ...victim.layerDigests]
  for (const d of victimDigests) t.equal((await http.get(`${rc.url}/v2/victim/app/blobs/${d}`)).status, 200, `victim blob ${d.slice(7, 19)} pulled`)

  // The attacker pushes to their own repository a manifest whose subject, blobs and a
  // (non-distributable) layer name the victim's digests. Upstream accepts it: it only checks the
  // attacker's own config blob.
  const config = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [] } }))
  const configDigest = await uploadBlob(reg.url, 'attacker/app', config)
  const foreign = 'application/vnd.oci.image.layer.nondistributable.v1.tar+gzip'
  const attack = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: MT.ociManifest,
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: configDigest, size: config.length },
      layers: [{ mediaType: foreign, digest: victim.layerDigests[0], size: victim.layerSizes[0], urls: ['https://example.invalid/layer'] }],
      blobs: [{ mediaType: 'application/octet-stream', digest: victim.layerDigests[1], size: victim.layerSizes[1] }],
      subject: { mediaType: MT.ociManifest, digest: victim.manifestDigest, size: victim.manifestSize },
    }),
  )
  await putManifest(reg.url, 'attacker/app', '1', attack, MT.ociManifest)
  const am = await http.get(`${rc.url}/v2/attacker/app/manifests/1`, { accept: ACCEPT_CONTAINERD })
  t.equal(am.status, 200, 'the attacker manifest is served (it is theirs)')
  t.equal(sha256(am.body), sha256(attack))

  await reg.settle()
  reg.resetRequests()
  for (const d of [...victimDigests, victim.manifestDigest]) {
    for (const method of ['GET', 'HEAD'] as const) {
      const b = await http.request(method, `${rc.url}/v2/attacker/app/blobs/${d}`)
      t.equal(b.status, 404, `${method} attacker/app/blobs/${d.slice(7, 19)}: 404 (upstream has no such blob there)`)
      t.notOk(b.body.length > 0 && sha256(b.body) === d, 'and none of the victim’s bytes')
    }
  }
  for (const method of ['GET', 'HEAD'] as const) {
    const mm = await http.request(method, `${rc.url}/v2/attacker/app/manifests/${victim.manifestDigest}`, { headers: { accept: ACCEPT_CONTAINERD } })
    t.equal(mm.status, 404, `${method} the victim manifest by digest under attacker/app: 404`)
  }
  await reg.settle()
  t.ok(reg.count({ pathIncludes: '/v2/attacker/app/blobs/' }) >= victimDigests.length, 'upstream was asked about each digest in attacker/app (and said no)')
  t.equal(reg.count({ pathIncludes: '/v2/victim/app/' }), 0, 'regcache never used the victim repository to answer')

  // Asking again changes nothing: a refusal is not remembered as a link.
  const again = await http.get(`${rc.url}/v2/attacker/app/blobs/${victim.layerDigests[0]}`)
  t.equal(again.status, 404, 'still 404 the second time')

  // The legitimate repository still costs nothing extra: one confirmation per (repository, digest).
  reg.resetRequests()
  for (const d of victimDigests) {
    const b = await http.get(`${rc.url}/v2/victim/app/blobs/${d}`)
    t.equal(header(b, 'x-regcache-cache'), 'hit', `victim/app ${d.slice(7, 19)}: a hit`)
  }
  await reg.settle()
  t.equal(reg.count({}), 0, 'no upstream request for warm pulls of the right repository')
})

t.test('tag state is the tag’s, whichever client asks', async (t) => {
  const reg = await startRegistry()
  t.teardown(reg.stop)
  const fwd = await startForwarder({ host: '127.0.0.1', port: reg.port })
  t.teardown(fwd.stop)
  const v1 = await buildImage({ layers: 1, layerSize: 8 * 1024, seed: 'tag-state-v1' })
  const v2 = await buildImage({ layers: 1, layerSize: 8 * 1024, seed: 'tag-state-v2' })
  const amd = await buildImage({ layers: 1, layerSize: 4 * 1024, arch: 'amd64', seed: 'tag-state-amd' })
  const arm = await buildImage({ layers: 1, layerSize: 4 * 1024, arch: 'arm64', seed: 'tag-state-arm' })
  const multi = await buildIndex([amd, arm])
  for (const x of [v1, v2, amd, arm, multi]) t.teardown(x.remove)
  await pushImage(v1, reg.host, 'library/app:1')
  await pushImage(multi, reg.host, 'library/multi:1')

  const rc = await startRegcache({
    upstreams: { 'docker.io': { url: fwd.url, onRollback: 'refuse', revalidate: { timeout: '1s' }, down: { failures: 100, probeInterval: '100ms' } } },
  })
  t.teardown(rc.stop)
  const http = createHttpClient()
  t.teardown(http.close)
  const tag = (path: string, accept: string) => http.get(`${rc.url}/v2/${path}`, { accept })
  const history = (image: string) => rc.server.mirror.history(image)

  await t.test('a move back to an earlier digest is a rollback, also for an Accept set never seen before', async (t) => {
    t.equal(header(await tag('library/app/manifests/1', ACCEPT_CONTAINERD), 'docker-content-digest'), v1.manifestDigest, 'containerd gets v1')
    await pushImage(v2, reg.host, 'library/app:1')
    t.equal(header(await tag('library/app/manifests/1', ACCEPT_CONTAINERD), 'docker-content-digest'), v2.manifestDigest, 'containerd follows the move to v2')
    await pushImage(v1, reg.host, 'library/app:1')

    // A kind of client never seen before reveals the move back to v1.
    const fresh = await tag('library/app/manifests/1', ACCEPT_OCI)
    t.equal(fresh.status, 200)
    t.equal(header(fresh, 'docker-content-digest'), v2.manifestDigest, 'onRollback: refuse applies to it: it gets what the others are served (v2)')
    const other = await tag('library/app/manifests/1', ACCEPT_CONTAINERD)
    t.equal(header(other, 'docker-content-digest'), v2.manifestDigest, 'and containerd keeps v2 too')
    const skopeo = await tag('library/app/manifests/1', ACCEPT_SKOPEO)
    t.equal(header(skopeo, 'docker-content-digest'), v2.manifestDigest, 'and a third kind of client as well')
    const h = history('docker.io/library/app:1')
    t.ok(h.events.some((e) => e.type === 'rollback_refused' && e.digest === v1.manifestDigest), 'history: rollback_refused for v1')
    t.notOk(h.events.some((e) => e.type === 'first_seen' && e.digest === v1.manifestDigest && e.acceptKey !== h.events[h.events.length - 1]?.acceptKey), 'not recorded as a new first_seen')
    t.strictSame(
      h.digests.map((d) => d.digest).sort(),
      [v1.manifestDigest, v2.manifestDigest].sort(),
      'history: each digest once, whoever asked',
    )
    t.ok(h.digests.every((d) => d.mediaType === MT.ociManifest), 'with the media type it was served as')
    t.ok(h.digests.find((d) => d.digest === v2.manifestDigest)?.current, 'v2 is current')
  })

  await t.test('a 404 for one client’s narrow Accept set forgets nothing of the others', async (t) => {
    const ok = await tag('library/multi/manifests/1', ACCEPT_CONTAINERD)
    t.equal(header(ok, 'docker-content-digest'), multi.indexDigest, 'containerd gets the index')
    const narrow = await tag('library/multi/manifests/1', ACCEPT_DOCKER_ONLY)
    t.ok(narrow.status === 404 || narrow.status === 200, `a client accepting only Docker manifests: ${narrow.status}`)
    const entries = rc.storage.meta.tagEntries('docker.io', 'library/multi', '1')
    t.ok(entries.some((e) => e.digest === multi.indexDigest), 'the index entry of the other clients is kept')
    await fwd.setMode('refuse', { dropExisting: true })
    const stale = await tag('library/multi/manifests/1', ACCEPT_CONTAINERD)
    t.equal(stale.status, 200, 'upstream down: containerd is still served')
    t.equal(header(stale, 'x-regcache-cache'), 'stale')
    t.equal(header(stale, 'docker-content-digest'), multi.indexDigest)
    await fwd.setMode('pass')
  })

  await t.test('one stale_served event per tag per outage, however many kinds of client ask', async (t) => {
    t.equal((await tag('library/app/manifests/1', ACCEPT_CONTAINERD)).status, 200, 'a successful check first')
    await fwd.setMode('refuse', { dropExisting: true })
    const accepts = [ACCEPT_CONTAINERD, ACCEPT_OCI, ACCEPT_SKOPEO, `${MT.ociManifest}, application/json`, ACCEPT_CONTAINERD, ACCEPT_OCI]
    for (const a of accepts) {
      const r = await tag('library/app/manifests/1', a)
      t.equal(r.status, 200, `served during the outage (${a.slice(0, 40)})`)
      t.equal(header(r, 'x-regcache-cache'), 'stale')
    }
    await fwd.setMode('pass')
    const outage = history('docker.io/library/app:1').events.filter((e) => e.type === 'stale_served')
    t.equal(outage.length, 1, 'one stale_served event')
    t.equal(outage[0]?.count, accepts.length, 'counting every stale answer')
  })

  await t.test('an anonymous client varying the Accept header cannot grow the state', async (t) => {
    const before = history('docker.io/library/app:1')
    for (let i = 0; i < 60; i++) {
      const junk = `application/x-junk-${randomBytes(6).toString('hex')}, ${i % 2 ? MT.ociManifest : MT.dockerManifest};q=0.${i % 9}`
      const r = await tag('library/app/manifests/1', junk)
      t.ok(r.status === 200 || r.status === 404, `junk Accept ${i}: ${r.status}`)
    }
    const entries = rc.storage.meta.tagEntries('docker.io', 'library/app', '1')
    t.ok(entries.length <= 6, `entries for the tag stay few (${entries.length})`)
    const after = history('docker.io/library/app:1')
    t.equal(after.digests.length, before.digests.length, 'no new digests recorded')
    t.ok(after.events.length <= before.events.length + 1, 'at most one new event')
  })
})
