// Chained mirrors (docs/protocol.md#chaining-mirrors): containerd → node-level regcache →
// cluster-level regcache → upstream registries. The node tier reaches the cluster tier through
// a path prefix (upstream url http://cluster/docker.io), the cluster tier routes by it.

import { cp, readdir } from 'node:fs/promises'
import { join } from 'node:path'
import t from 'tap'
import { startContainerd, writeHostsToml } from '../helpers/containerd.js'
import { startForwarder } from '../helpers/forwarder.js'
import { buildImage, pushImage } from '../helpers/images.js'
import { makeTempDir, removeTempDir, run } from '../helpers/proc.js'
import { startRegistry } from '../helpers/registry.js'
import { startRegcache } from '../helpers/regcache.js'

const CLI = new URL('../../cli/main.js', import.meta.url).pathname
// containerd falls back to `server` when the mirror fails: a dead port proves the mirror served.
const DEAD = 'http://127.0.0.1:9'

t.test('node tier → cluster tier → registries', async (t) => {
  const hub = await startRegistry()
  t.teardown(hub.stop)
  const ghcr = await startRegistry()
  t.teardown(ghcr.stop)
  // Between the cluster tier and the registries, to take the registries away later.
  const hubLink = await startForwarder({ host: '127.0.0.1', port: hub.port })
  t.teardown(hubLink.stop)
  const ghcrLink = await startForwarder({ host: '127.0.0.1', port: ghcr.port })
  t.teardown(ghcrLink.stop)

  const x = await buildImage({ layers: 2, layerSize: 32 * 1024 })
  const y = await buildImage({ layers: 2, layerSize: 32 * 1024 })
  const z = await buildImage({ layers: 1, layerSize: 32 * 1024 })
  for (const i of [x, y, z]) t.teardown(i.remove)
  const x1 = await pushImage(x, hub.host, 'library/x:1')
  const z1 = await pushImage(z, hub.host, 'library/z:1')
  const y1 = await pushImage(y, ghcr.host, 'org/y:1')
  for (const r of [hub, ghcr]) {
    await r.settle()
    r.resetRequests() // skopeo's pushes are not under test
  }

  const policy = { revalidate: { timeout: '1s' }, stale: { maxAge: '1h' }, down: { failures: 2, probeInterval: '500ms' } }
  const cluster = await startRegcache({
    upstreams: { 'docker.io': { url: hubLink.url, ...policy }, 'ghcr.io': { url: ghcrLink.url, ...policy } },
    defaultUpstream: 'docker.io',
  })
  t.teardown(cluster.stop)
  const node = await startRegcache({
    upstreams: {
      'docker.io': { url: `${cluster.url}/docker.io`, ...policy },
      'ghcr.io': { url: `${cluster.url}/ghcr.io`, ...policy },
    },
    defaultUpstream: 'docker.io',
  })
  t.teardown(node.stop)

  // The node's containerd: only the generated `_default` hosts.toml (one mirror for every registry, ns=).
  const generated = await makeTempDir()
  t.teardown(() => removeTempDir(generated))
  const gen = await run(process.execPath, [CLI, 'client-config', 'containerd', '--mirror', node.url, '--no-fallback', '--output-dir', generated, '--config', node.configFile])
  t.equal(gen.code, 0, gen.stderr)
  t.ok((await readdir(generated)).includes('_default'), 'client-config wrote _default/hosts.toml')
  const nodeHosts = await makeTempDir()
  t.teardown(() => removeTempDir(nodeHosts))
  await cp(join(generated, '_default'), join(nodeHosts, '_default'), { recursive: true })

  // A second containerd hosts dir that goes straight to the cluster tier.
  const clusterHosts = await makeTempDir()
  t.teardown(() => removeTempDir(clusterHosts))
  await writeHostsToml(clusterHosts, '_default', cluster.url, { server: DEAD })

  const ctd = await startContainerd()
  t.teardown(ctd.stop)
  const pull = (ref: string, hostsDir = nodeHosts) => ctd.pull(ref, { hostsDir, timeoutMs: 30_000 })

  const clusterRequests = async (pathPart: string) =>
    (await cluster.logs()).filter((l) => l.msg === 'request' && String(l.url).includes(pathPart))

  await t.test('docker.io and ghcr.io images come through both tiers from the right registry', async (t) => {
    let r = await pull('docker.io/library/x:1')
    t.equal(r.code, 0, r.stderr)
    t.equal(await ctd.imageDigest('docker.io/library/x:1'), x1.digest)
    r = await pull('ghcr.io/org/y:1')
    t.equal(r.code, 0, r.stderr)
    t.equal(await ctd.imageDigest('ghcr.io/org/y:1'), y1.digest)

    await hub.settle()
    await ghcr.settle()
    t.ok(hub.count({ method: 'HEAD', pathIncludes: '/v2/library/x/manifests/1' }) === 1, 'docker.io registry resolved library/x:1')
    for (const d of x.layerDigests) t.equal(hub.count({ method: 'GET', pathIncludes: `/v2/library/x/blobs/${d}` }), 1, `x layer ${d.slice(0, 19)} fetched once`)
    t.ok(ghcr.count({ method: 'HEAD', pathIncludes: '/v2/org/y/manifests/1' }) === 1, 'ghcr.io registry resolved org/y:1')
    for (const d of y.layerDigests) t.equal(ghcr.count({ method: 'GET', pathIncludes: `/v2/org/y/blobs/${d}` }), 1, `y layer ${d.slice(0, 19)} fetched once`)
    t.equal(hub.count({ pathIncludes: 'org/y' }), 0, 'docker.io registry never asked for the ghcr.io image')
    t.equal(ghcr.count({ pathIncludes: 'library/x' }), 0, 'ghcr.io registry never asked for the docker.io image')
    t.same([...new Set([...hub.requests(), ...ghcr.requests()].map((q) => q.userAgent))], ['regcache'], 'registries only saw regcache')

    // The node tier asked the cluster tier by path prefix; the cluster tier routed by it.
    const xAtCluster = await clusterRequests('/v2/docker.io/library/x/manifests/1')
    t.ok(xAtCluster.length >= 1, 'cluster saw /v2/docker.io/library/x/…')
    t.ok(xAtCluster.every((l) => l.upstream === 'docker.io' && l.repository === 'library/x'), 'cluster chose docker.io, library/x')
    const yAtCluster = await clusterRequests('/v2/ghcr.io/org/y/manifests/1')
    t.ok(yAtCluster.length >= 1, 'cluster saw /v2/ghcr.io/org/y/…')
    t.ok(yAtCluster.every((l) => l.upstream === 'ghcr.io' && l.repository === 'org/y'), 'cluster chose ghcr.io, org/y')
    const yAtNode = (await node.logs()).filter((l) => l.msg === 'request' && String(l.url).includes('/v2/org/y/manifests/1'))
    t.ok(yAtNode.length >= 1 && yAtNode.every((l) => l.upstream === 'ghcr.io' && String(l.url).includes('ns=ghcr.io')), 'node chose ghcr.io by ns')
  })

  await t.test('an unchanged tag pulled again costs the registry exactly one HEAD', async (t) => {
    await ctd.removeAllContent()
    await hub.settle()
    hub.resetRequests()
    const r = await pull('docker.io/library/x:1')
    t.equal(r.code, 0, r.stderr)
    t.equal(await ctd.imageDigest('docker.io/library/x:1'), x1.digest)
    await hub.settle()
    t.same(
      hub.requests().map((q) => `${q.method} ${q.path}`),
      ['HEAD /v2/library/x/manifests/1'],
      'one HEAD, no GET, across two tiers',
    )
  })

  await t.test('an image pulled straight through the cluster tier', async (t) => {
    await ctd.removeAllContent()
    const r = await pull('docker.io/library/z:1', clusterHosts)
    t.equal(r.code, 0, r.stderr)
    t.equal(await ctd.imageDigest('docker.io/library/z:1'), z1.digest)
    t.equal((await node.logs()).filter((l) => String(l.url ?? '').includes('library/z')).length, 0, 'the node tier was not involved')
    await ctd.removeAllContent()
  })

  await t.test('registries gone: the node tier serves what either tier cached', async (t) => {
    await hubLink.setMode('refuse', { dropExisting: true })
    await ghcrLink.setMode('refuse', { dropExisting: true })
    await hub.settle()
    hub.resetRequests()

    await t.test('(a) an image the node tier pulled before', async (t) => {
      await ctd.removeAllContent()
      let r = await pull('docker.io/library/x:1')
      t.equal(r.code, 0, r.stderr)
      t.equal(await ctd.imageDigest('docker.io/library/x:1'), x1.digest)
      r = await pull('ghcr.io/org/y:1')
      t.equal(r.code, 0, r.stderr)
      t.equal(await ctd.imageDigest('ghcr.io/org/y:1'), y1.digest)
      const stale = (await clusterRequests('/v2/docker.io/library/x/manifests/1')).filter((l) => l.cache === 'stale')
      t.ok(stale.length >= 1, 'the cluster tier could not revalidate and answered from its cache')
    })

    await t.test('(b) an image only the cluster tier cached, first time through the node tier', async (t) => {
      await ctd.removeAllContent()
      const r = await pull('docker.io/library/z:1')
      t.equal(r.code, 0, r.stderr)
      t.equal(await ctd.imageDigest('docker.io/library/z:1'), z1.digest)
      const content = await ctd.contentDigests()
      for (const d of z.layerDigests) t.ok(content.includes(d), `layer ${d.slice(0, 19)} pulled`)

      const stale = (await clusterRequests('/v2/docker.io/library/z/manifests/1')).filter((l) => l.cache === 'stale')
      t.ok(stale.length >= 1, 'the cluster tier answered the node tier from its stale cache')
      const atNode = (await node.logs()).filter((l) => l.msg === 'request' && String(l.url).includes('library/z/manifests/1'))
      t.ok(atNode.some((l) => l.cache === 'miss'), 'the node tier had it as a miss and fetched it from the cluster tier')
    })

    await hub.settle()
    t.equal(hub.count(), 0, 'nothing reached the docker.io registry')
  })
})
