// The revalidation contract (docs/behaviour.md#revalidation-contract) with real parts: containerd pulling through regcache,
// a real registry behind a TCP forwarder that refuses, hangs or passes connections.

import { execFile } from 'node:child_process'
import { promisify } from 'node:util'
import t from 'tap'
import { startContainerd, writeHostsToml, type Containerd } from '../helpers/containerd.js'
import { startForwarder } from '../helpers/forwarder.js'
import { buildImage, pushImage, type OciLayout } from '../helpers/images.js'
import { makeTempDir, removeTempDir, sleep } from '../helpers/proc.js'
import { startRegistry } from '../helpers/registry.js'
import { startRegcache, type Regcache } from '../helpers/regcache.js'

const exec = promisify(execFile)
const DEAD = 'http://127.0.0.1:9'
const ACCEPT = [
  'application/vnd.docker.distribution.manifest.v2+json',
  'application/vnd.docker.distribution.manifest.list.v2+json',
  'application/vnd.oci.image.manifest.v1+json',
  'application/vnd.oci.image.index.v1+json',
  '*/*',
].join(', ') // containerd's, so these requests share its cached tag entries

async function historyOf(rc: Regcache, image: string): Promise<{ events: { type: string; digest: string; count: number }[] }> {
  // The CLI, as an operator runs it, against the running server's database.
  const { stdout } = await exec(process.execPath, ['dist/cli/main.js', 'history', image, '--json', '--config', rc.configFile])
  return JSON.parse(stdout)
}

async function headTag(rc: Regcache, path: string): Promise<{ status: number; ms: number; digest: string | null; stale: string | null; body: string }> {
  const started = performance.now()
  const res = await fetch(`${rc.url}${path}`, { headers: { accept: ACCEPT } })
  const body = await res.text()
  return {
    status: res.status,
    ms: performance.now() - started,
    digest: res.headers.get('docker-content-digest'),
    stale: res.headers.get('x-regcache-stale'),
    body,
  }
}

t.test('revalidation, outages and history', async (t) => {
  const reg = await startRegistry()
  t.teardown(reg.stop)
  const fwd = await startForwarder({ host: '127.0.0.1', port: reg.port })
  t.teardown(fwd.stop)

  const images: OciLayout[] = []
  for (let i = 0; i < 3; i++) images.push(await buildImage({ layers: 2, layerSize: 16 * 1024 }))
  for (const x of images) t.teardown(x.remove)
  const [imgA, imgB, imgC] = images

  const common = { revalidate: { timeout: '1s' }, down: { failures: 2, probeInterval: '300ms' }, stale: { maxAge: '1h' } }
  const upstreams = {
    'docker.io': { url: fwd.url, ...common },
    // Same registry, other rules: refuse rollbacks, serve a deleted tag from cache.
    'quay.io': { url: fwd.url, ...common, onRollback: 'refuse', stale: { maxAge: '1h', onNotFound: 'serve' } },
    // Same registry, a short staleness limit.
    'ghcr.io': { url: fwd.url, ...common, stale: { maxAge: '1s' } },
  }
  const dataDir = await makeTempDir()
  t.teardown(() => removeTempDir(dataDir))
  let rc = await startRegcache({ upstreams, defaultUpstream: 'docker.io', dataDir })
  t.teardown(() => rc.stop())

  const ctd: Containerd = await startContainerd()
  t.teardown(ctd.stop)
  const hostsDir = await makeTempDir()
  t.teardown(() => removeTempDir(hostsDir))
  await writeHostsToml(hostsDir, '_default', rc.url, { server: DEAD })
  const pull = async (ref: string) => {
    const started = performance.now()
    const r = await ctd.pull(ref, { hostsDir, timeoutMs: 30_000 })
    return { ...r, ms: performance.now() - started }
  }

  const v1 = await pushImage(imgA, reg.host, 'library/web:v1')

  await t.test('1. an unchanged tag pulled twice costs upstream one HEAD the second time', async (t) => {
    t.equal((await pull('docker.io/library/web:v1')).code, 0)
    await reg.settle()
    reg.resetRequests()
    await ctd.removeAllContent()
    const r = await pull('docker.io/library/web:v1')
    t.equal(r.code, 0, r.stderr)
    await reg.settle()
    t.same(reg.requests().map((q) => `${q.method} ${q.path}`), ['HEAD /v2/library/web/manifests/v1'])
  })

  await t.test('2. a tag pushed anew: the next pull gets the new digest, history says changed', async (t) => {
    const v2 = await pushImage(imgB, reg.host, 'library/web:v1')
    const r = await pull('docker.io/library/web:v1')
    t.equal(r.code, 0, r.stderr)
    t.equal(await ctd.imageDigest('docker.io/library/web:v1'), v2.digest)
    const h = await historyOf(rc, 'docker.io/library/web:v1')
    t.ok(h.events.some((e) => e.type === 'changed' && e.digest === v2.digest), 'changed recorded')
    // Put v1 back for the following scenarios' baseline.
    await pushImage(imgA, reg.host, 'library/web:v1')
    t.equal((await pull('docker.io/library/web:v1')).code, 0)
  })

  await t.test('3. upstream refusing: the cached image pulls, history records the stale serve', async (t) => {
    await fwd.setMode('refuse', { dropExisting: true })
    t.teardown(() => fwd.setMode('pass'))
    const r = await pull('docker.io/library/web:v1')
    t.equal(r.code, 0, r.stderr)
    const direct = await headTag(rc, '/v2/library/web/manifests/v1')
    t.equal(direct.status, 200)
    t.match(direct.stale, /reason=(refused|down)/, 'response says it is stale')
    const h = await historyOf(rc, 'docker.io/library/web:v1')
    const stale = h.events.filter((e) => e.type === 'stale_served')
    t.equal(stale.length, 1, 'one stale_served event for this outage')
    t.ok(stale[0].count >= 2, `with a count (${stale[0].count})`)
    t.ok((await rc.metric('regcache_stale_served_total', { upstream: 'docker.io' })) >= 2, 'stale serves counted')
    await fwd.setMode('pass')
    // Let the probe notice recovery before the next scenario.
    await waitUp(rc, 'docker.io')
  })

  await t.test('4. upstream hanging: answered within timeout + 1 s, then at once while marked down, recovery noticed', async (t) => {
    await fwd.setMode('hang', { dropExisting: true })
    const first = await pull('docker.io/library/web:v1')
    t.equal(first.code, 0, first.stderr)
    t.ok(first.ms < 1000 + 1000 + 1500, `first pull took ${Math.round(first.ms)} ms (timeout 1 s)`)
    // The second failure marks it down (down.failures: 2).
    await headTag(rc, '/v2/library/web/manifests/v1')
    t.equal(await rc.metric('regcache_upstream_up', { upstream: 'docker.io' }), 0, 'marked down')
    const times: number[] = []
    for (let i = 0; i < 10; i++) {
      const r = await headTag(rc, '/v2/library/web/manifests/v1')
      t.equal(r.status, 200)
      times.push(r.ms)
    }
    t.ok(Math.max(...times) < 100, `next ten answered in ${times.map((x) => x.toFixed(1)).join(', ')} ms`)
    await fwd.setMode('pass')
    await waitUp(rc, 'docker.io')
    const after = await headTag(rc, '/v2/library/web/manifests/v1')
    t.equal(after.stale, null, 'fresh again after recovery')
  })

  await t.test('5. v1 → v2 → v1 is a rollback; with onRollback: refuse the newest keeps being served', async (t) => {
    // Separate tags per upstream name so the two rule sets do not share history.
    const a = await pushImage(imgA, reg.host, 'library/rb:1')
    t.equal((await pull('docker.io/library/rb:1')).code, 0)
    t.equal((await pull('quay.io/library/rb:1')).code, 0)
    const b = await pushImage(imgB, reg.host, 'library/rb:1')
    t.equal((await pull('docker.io/library/rb:1')).code, 0)
    t.equal((await pull('quay.io/library/rb:1')).code, 0)
    t.equal(await ctd.imageDigest('quay.io/library/rb:1'), b.digest)
    await pushImage(imgA, reg.host, 'library/rb:1')

    t.equal((await pull('docker.io/library/rb:1')).code, 0)
    t.equal(await ctd.imageDigest('docker.io/library/rb:1'), a.digest, 'follow: back on v1')
    const follow = await historyOf(rc, 'docker.io/library/rb:1')
    t.ok(follow.events.some((e) => e.type === 'rollback' && e.digest === a.digest), 'rollback recorded')

    t.equal((await pull('quay.io/library/rb:1')).code, 0)
    t.equal(await ctd.imageDigest('quay.io/library/rb:1'), b.digest, 'refuse: still v2')
    const refuse = await historyOf(rc, 'quay.io/library/rb:1')
    t.ok(refuse.events.some((e) => e.type === 'rollback_refused' && e.digest === a.digest), 'rollback_refused recorded')
  })

  await t.test('7. a tag deleted upstream: 404 by default, served from cache with onNotFound: serve', async (t) => {
    await pushImage(imgC, reg.host, 'library/gone:1')
    t.equal((await pull('docker.io/library/gone:1')).code, 0)
    t.equal((await pull('quay.io/library/gone:1')).code, 0)
    await reg.removeTag('library/gone', '1')
    t.equal((await headTag(rc, '/v2/library/gone/manifests/1?ns=docker.io')).status, 404, 'passthrough')
    const served = await headTag(rc, '/v2/library/gone/manifests/1?ns=quay.io')
    t.equal(served.status, 200, 'onNotFound: serve')
    t.equal(served.digest, imgC.manifestDigest)
    t.equal((await pull('quay.io/library/gone:1')).code, 0)
    const h = await historyOf(rc, 'quay.io/library/gone:1')
    t.ok(h.events.some((e) => e.type === 'upstream_not_found'))
  })

  await t.test('9. past the staleness limit: 503, not a stale manifest', async (t) => {
    await pushImage(imgA, reg.host, 'library/old:1')
    t.equal((await pull('ghcr.io/library/old:1')).code, 0)
    await fwd.setMode('refuse', { dropExisting: true })
    t.teardown(() => fwd.setMode('pass'))
    await sleep(1300)
    const r = await headTag(rc, '/v2/library/old/manifests/1?ns=ghcr.io')
    t.equal(r.status, 503)
    t.match(JSON.parse(r.body), { errors: [{ code: 'UNAVAILABLE' }] })
    const p = await pull('ghcr.io/library/old:1')
    t.not(p.code, 0, 'containerd does not get the stale image')
    await fwd.setMode('pass')
    await waitUp(rc, 'ghcr.io')
  })

  await t.test('8. restarted while upstream is down: cached tags still pull', async (t) => {
    await rc.stop()
    await fwd.setMode('refuse', { dropExisting: true })
    t.teardown(() => fwd.setMode('pass'))
    rc = await startRegcache({ upstreams, defaultUpstream: 'docker.io', dataDir, listen: rc.host })
    await ctd.removeAllContent()
    const r = await pull('docker.io/library/web:v1')
    t.equal(r.code, 0, r.stderr)
    t.equal(await ctd.imageDigest('docker.io/library/web:v1'), v1.digest)
  })

  await t.test('history shows the events of scenarios 2, 3 and 5', async (t) => {
    const web = await historyOf(rc, 'docker.io/library/web:v1')
    const types = new Set(web.events.map((e) => e.type))
    t.ok(types.has('first_seen') && types.has('changed') && types.has('stale_served'), [...types].join(', '))
    const rb = await historyOf(rc, 'docker.io/library/rb:1')
    t.ok(rb.events.some((e) => e.type === 'rollback'))
  })
})

t.test('6. upstream 401/403 is passed on, never answered from cache', async (t) => {
  const reg = await startRegistry({ auth: { username: 'alice', password: 'right' } })
  t.teardown(reg.stop)
  const img = await buildImage({ layers: 1, layerSize: 4096 })
  t.teardown(img.remove)
  await pushImage(img, reg.host, 'private/app:1', { auth: reg.auth })
  const dir = await makeTempDir()
  t.teardown(() => removeTempDir(dir))
  const { writeFile } = await import('node:fs/promises')
  await writeFile(`${dir}/pw`, 'right\n')
  const dataDir = `${dir}/data`
  let rc = await startRegcache({ upstreams: { 'ghcr.io': { url: reg.url, username: 'alice', passwordFile: `${dir}/pw` } }, dataDir })
  const ok = await headTag(rc, '/v2/private/app/manifests/1')
  t.equal(ok.status, 200, 'cached with valid credentials')
  await rc.stop()
  // Credentials revoked: the cached manifest must not be served.
  await writeFile(`${dir}/pw`, 'wrong\n')
  rc = await startRegcache({ upstreams: { 'ghcr.io': { url: reg.url, username: 'alice', passwordFile: `${dir}/pw` } }, dataDir })
  t.teardown(() => rc.stop())
  const denied = await headTag(rc, '/v2/private/app/manifests/1')
  t.equal(denied.status, 401)
  t.match(JSON.parse(denied.body), { errors: [{ code: 'UNAUTHORIZED' }] })
  t.equal(denied.digest, null, 'no cached digest leaked')
})

async function waitUp(rc: Regcache, upstream: string): Promise<void> {
  const until = Date.now() + 10_000
  while (Date.now() < until) {
    if (rc.server.mirror.upstreamState(upstream) === 'up') return
    await sleep(100)
  }
  throw new Error(`${upstream} still marked down`)
}
