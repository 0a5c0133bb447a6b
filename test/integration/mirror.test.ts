// The pull-through mirror with real parts: Debian's docker-registry as upstream, containerd's
// ctr pulling through regcache with hosts.toml mirror entries, skopeo through a path prefix.

import t from 'tap'
import { startContainerd, writeHostsToml } from '../helpers/containerd.js'
import { buildImage, buildIndex, pushImage } from '../helpers/images.js'
import { makeTempDir, removeTempDir, run } from '../helpers/proc.js'
import { startRegistry } from '../helpers/registry.js'
import { startRegcache } from '../helpers/regcache.js'

// containerd falls back to `server` when the mirror fails: a dead port proves the mirror served.
const DEAD = 'http://127.0.0.1:9'

t.test('containerd and skopeo pull through regcache', async (t) => {
  const hub = await startRegistry()
  t.teardown(hub.stop)
  const ghcr = await startRegistry()
  t.teardown(ghcr.stop)

  const app = await buildImage({ layers: 3, layerSize: 48 * 1024 })
  const amd = await buildImage({ layers: 1, layerSize: 16 * 1024, arch: 'amd64' })
  const arm = await buildImage({ layers: 1, layerSize: 16 * 1024, arch: 'arm64', variant: 'v8' })
  const multi = await buildIndex([amd, arm])
  const tool = await buildImage({ layers: 2, layerSize: 16 * 1024 })
  for (const x of [app, amd, arm, multi, tool]) t.teardown(x.remove)

  const appV1 = await pushImage(app, hub.host, 'library/app:v1', { format: 'v2s2' })
  const multiV1 = await pushImage(multi, hub.host, 'library/multi:v1')
  const toolV1 = await pushImage(tool, ghcr.host, 'org/tool:v1')

  const rc = await startRegcache({
    upstreams: { 'docker.io': { url: hub.url }, 'ghcr.io': { url: ghcr.url } },
    defaultUpstream: 'docker.io',
  })
  t.teardown(rc.stop)

  const ctd = await startContainerd()
  t.teardown(ctd.stop)
  const hostsDir = await makeTempDir()
  t.teardown(() => removeTempDir(hostsDir))
  await writeHostsToml(hostsDir, 'docker.io', rc.url, { server: DEAD })

  await t.test('a Docker Hub image, schema2, pulled by tag', async (t) => {
    const r = await ctd.pull('docker.io/library/app:v1', { hostsDir })
    t.equal(r.code, 0, r.stderr)
    t.equal(await ctd.imageDigest('docker.io/library/app:v1'), appV1.digest, 'digest as upstream serves it')
    const content = await ctd.contentDigests()
    for (const d of [...app.layerDigests]) t.ok(content.includes(d), `layer ${d.slice(0, 19)} pulled`)
  })

  await t.test('a second pull of the unchanged tag costs upstream one HEAD and no GET', async (t) => {
    await ctd.removeAllContent()
    await hub.settle()
    hub.resetRequests()
    const r = await ctd.pull('docker.io/library/app:v1', { hostsDir })
    t.equal(r.code, 0, r.stderr)
    await hub.settle()
    t.same(
      hub.requests().map((q) => `${q.method} ${q.path}`),
      ['HEAD /v2/library/app/manifests/v1'],
      'exactly one HEAD upstream',
    )
  })

  await t.test('a multi-arch index: the index and the chosen child come through', async (t) => {
    const r = await ctd.pull('docker.io/library/multi:v1', { hostsDir, platform: 'linux/arm64/v8' })
    t.equal(r.code, 0, r.stderr)
    t.equal(await ctd.imageDigest('docker.io/library/multi:v1'), multiV1.digest)
    const content = await ctd.contentDigests()
    t.ok(content.includes(arm.manifestDigest), 'arm64 child manifest pulled')
    t.ok(content.includes(arm.layerDigests[0]), 'arm64 layer pulled')
  })

  await t.test('one _default hosts.toml serves every registry, routed by ns', async (t) => {
    const defaultDir = await makeTempDir()
    t.teardown(() => removeTempDir(defaultDir))
    await writeHostsToml(defaultDir, '_default', rc.url, { server: DEAD })
    const r = await ctd.pull('ghcr.io/org/tool:v1', { hostsDir: defaultDir })
    t.equal(r.code, 0, r.stderr)
    t.equal(await ctd.imageDigest('ghcr.io/org/tool:v1'), toolV1.digest)
    await ghcr.settle()
    t.ok(ghcr.count({ method: 'HEAD', pathIncludes: '/v2/org/tool/manifests/v1' }) >= 1, 'the ghcr.io upstream answered')
    t.equal(hub.count({ pathIncludes: 'org/tool' }), 0, 'the default upstream was not asked')
  })

  await t.test('skopeo copies through a path-prefixed name', async (t) => {
    const out = await makeTempDir()
    t.teardown(() => removeTempDir(out))
    const r = await run('skopeo', ['copy', '--insecure-policy', '--src-tls-verify=false', `docker://${rc.host}/ghcr.io/org/tool:v1`, `oci:${out}:x`], {
      timeoutMs: 60_000,
    })
    t.equal(r.code, 0, r.stderr)
    const inspect = await run('skopeo', ['inspect', '--raw', '--tls-verify=false', `docker://${rc.host}/ghcr.io/org/tool:v1`])
    t.equal(inspect.code, 0, inspect.stderr)
    t.equal(JSON.parse(inspect.stdout).config.digest, tool.configDigest)
  })

  await t.test('every blob on disk hashes to its name', async (t) => {
    let n = 0
    for await (const digest of rc.storage.store.list()) {
      n++
      t.ok(await rc.storage.store.verify(digest), digest)
    }
    t.ok(n >= 10, `${n} blobs stored`)
  })
})
