// prefetch against a real registry: a listed tag moves upstream and regcache fetches the new image
// before any client asks, so containerd's pull after the move costs upstream no blob download;
// with switch: when-cached, clients keep the previous digest while a large new layer comes in
// through a throttled link, then switch; maxLag bounds how long they wait.

import t from 'tap'
import { CONTAINERD_ACCEPT } from '../../oci/media-types.js'
import { startContainerd, writeHostsToml } from '../helpers/containerd.js'
import { buildBigImage, buildImage, buildIndex, pushImage } from '../helpers/images.js'
import { makeTempDir, removeTempDir, waitUntil } from '../helpers/proc.js'
import { startRegistry } from '../helpers/registry.js'
import { startRegcache, type Regcache } from '../helpers/regcache.js'
import { startForwarder } from '../helpers/forwarder.js'

/** A client resolving the tag as containerd does. */
async function resolveTag(rc: Regcache, repo: string, tag: string): Promise<{ status: number; digest: string | null; pending: string | null }> {
  const res = await fetch(`${rc.url}/v2/${repo}/manifests/${tag}`, { method: 'HEAD', headers: { accept: CONTAINERD_ACCEPT } })
  await res.arrayBuffer()
  return { status: res.status, digest: res.headers.get('docker-content-digest'), pending: res.headers.get('x-regcache-prefetch') }
}

async function stored(rc: Regcache, digests: string[]): Promise<boolean> {
  for (const d of digests) if ((await rc.storage.store.size(d)) === undefined) return false
  return true
}

const events = (rc: Regcache, repo: string, tag: string) => rc.storage.meta.events('docker.io', repo, tag)

t.test('a listed tag that moves upstream is fetched before any client asks; the next ctr pull downloads no blob upstream', async (t) => {
  const reg = await startRegistry()
  t.teardown(reg.stop)
  const v1amd = await buildImage({ layers: 2, layerSize: 32 * 1024, arch: 'amd64' })
  const v1arm = await buildImage({ layers: 2, layerSize: 32 * 1024, arch: 'arm64' })
  const v1 = await buildIndex([v1amd, v1arm])
  const v2amd = await buildImage({ layers: 3, layerSize: 64 * 1024, arch: 'amd64' })
  const v2arm = await buildImage({ layers: 3, layerSize: 64 * 1024, arch: 'arm64' })
  const v2 = await buildIndex([v2amd, v2arm])
  for (const x of [v1amd, v1arm, v1, v2amd, v2arm, v2]) t.teardown(x.remove)
  await pushImage(v1, reg.host, 'library/app:1')

  const rc = await startRegcache({
    upstreams: { 'docker.io': { url: reg.url } },
    extra: { prefetch: [{ image: 'docker.io/library/app:1', every: '2s' }] },
  })
  t.teardown(rc.stop)
  const v1blobs = [v1amd.configDigest, ...v1amd.layerDigests]
  await waitUntil('the listed tag is prefetched at startup', () => stored(rc, v1blobs), { timeoutMs: 60_000 })

  const { digest: moved } = await pushImage(v2, reg.host, 'library/app:1')
  t.equal(moved, v2.indexDigest)
  const v2blobs = [v2amd.manifestDigest, v2amd.configDigest, ...v2amd.layerDigests]
  // Within `every` plus the download time, with no client asking.
  await waitUntil('the moved tag is prefetched', () => stored(rc, v2blobs), { timeoutMs: 60_000 })
  for (const d of [v2arm.configDigest, ...v2arm.layerDigests]) t.equal(await rc.storage.store.size(d), undefined, 'other platforms are not prefetched')
  await waitUntil('prefetched is in the history', async () => events(rc, 'library/app', '1').some((e) => e.type === 'prefetched' && e.digest === v2.indexDigest))
  const ev = events(rc, 'library/app', '1').find((e) => e.type === 'prefetched' && e.digest === v2.indexDigest)
  t.match(ev?.detail, /3 of 4 blobs|4 of 4 blobs/, 'the event says what was fetched')
  t.ok(events(rc, 'library/app', '1').some((e) => e.type === 'changed' && e.digest === v2.indexDigest), 'switch: immediate moves the tag at once')
  t.ok((await rc.metric('regcache_prefetch_total', { result: 'fetched' })) >= 2, 'prefetches counted')
  const layerBytes = v2amd.layerSizes.reduce((a, b) => a + b, 0)
  t.ok((await rc.metric('regcache_prefetch_bytes_total')) >= layerBytes, 'prefetched bytes counted')

  const status = (await (await fetch(`${rc.url}/api/status`)).json()) as { prefetch: { image: string; tags: { tag: string; digest?: string; state: string }[] }[] }
  t.equal(status.prefetch[0].image, 'docker.io/library/app:1', 'the status page lists the entry')
  t.equal(status.prefetch[0].tags[0].digest, v2.indexDigest)

  const ctd = await startContainerd()
  t.teardown(ctd.stop)
  const hosts = await makeTempDir()
  t.teardown(() => removeTempDir(hosts))
  await writeHostsToml(hosts, 'docker.io', rc.url, { server: 'http://127.0.0.1:9' })
  await reg.settle()
  reg.resetRequests()
  const pull = await ctd.pull('docker.io/library/app:1', { hostsDir: hosts, platform: 'linux/amd64' })
  t.equal(pull.code, 0, `ctr pull succeeds: ${pull.stderr}`)
  t.equal(await ctd.imageDigest('docker.io/library/app:1'), v2.indexDigest, 'the new image is pulled')
  await reg.settle()
  t.equal(reg.count({ method: 'GET', pathIncludes: '/blobs/' }), 0, 'no blob downloaded from upstream by the pull')
  t.equal(reg.count({ method: 'GET', pathIncludes: '/manifests/' }), 0, 'nor any manifest')
})

t.test('switch: when-cached keeps clients on the previous digest until the new image is stored', async (t) => {
  const reg = await startRegistry()
  t.teardown(reg.stop)
  // 6 MiB at 1 MiB/s: a few seconds during which clients must keep getting the old digest.
  const slow = await startForwarder({ host: '127.0.0.1', port: reg.port }, { bytesPerSecond: 1024 * 1024, perConnection: true })
  t.teardown(slow.stop)
  const v1 = await buildImage({ layers: 1, layerSize: 4096 })
  const v2 = await buildBigImage(6 * 1024 * 1024)
  for (const x of [v1, v2]) t.teardown(x.remove)
  await pushImage(v1, reg.host, 'library/big:1')

  const rc = await startRegcache({
    upstreams: { 'docker.io': { url: slow.url } },
    extra: { shutdownGrace: '1s', prefetch: [{ image: 'docker.io/library/big:1', every: '1s', switch: 'when-cached', maxLag: '10m' }] },
  })
  t.teardown(rc.stop)
  await waitUntil('the listed tag is prefetched at startup', () => stored(rc, v1.layerDigests), { timeoutMs: 60_000 })
  const before = await resolveTag(rc, 'library/big', '1')
  t.same(before, { status: 200, digest: v1.manifestDigest, pending: null }, 'clients get v1')

  await pushImage(v2, reg.host, 'library/big:1')
  let held: Awaited<ReturnType<typeof resolveTag>> | undefined
  await waitUntil('regcache notices the move', async () => {
    held = await resolveTag(rc, 'library/big', '1')
    return held.pending !== null || held.digest === v2.manifestDigest
  }, { timeoutMs: 30_000, intervalMs: 100 })
  t.same(held, { status: 200, digest: v1.manifestDigest, pending: `pending; serving=${v1.manifestDigest}` }, 'while the new layer comes in, clients get the previous digest, marked')
  t.equal(await rc.storage.store.size(v2.layerDigest), undefined, 'the new layer is not stored yet')
  t.equal(await rc.metric('regcache_prefetch_pending'), 1, 'one tag pending')
  const status = (await (await fetch(`${rc.url}/api/status`)).json()) as { prefetch: { tags: { state: string; serving?: string }[] }[] }
  t.match(status.prefetch[0].tags[0], { state: 'pending', serving: v1.manifestDigest }, 'the status page shows the tag pending')

  let after: Awaited<ReturnType<typeof resolveTag>> | undefined
  let unmarked = 0
  await waitUntil('clients are switched', async () => {
    after = await resolveTag(rc, 'library/big', '1')
    // Each answer until the switch is the previous digest, marked.
    if (after.digest === v1.manifestDigest && after.pending !== `pending; serving=${v1.manifestDigest}`) unmarked++
    return after.digest === v2.manifestDigest
  }, { timeoutMs: 120_000, intervalMs: 250 })
  t.equal(unmarked, 0, 'until the switch, every answer was the previous digest, marked')
  t.equal(after?.pending, null, 'no longer marked')
  t.ok(await rc.storage.store.size(v2.layerDigest), 'the switch came after the new layer was stored')
  t.equal(await rc.metric('regcache_prefetch_pending'), 0)

  const history = events(rc, 'library/big', '1')
  const prefetched = history.find((e) => e.type === 'prefetched' && e.digest === v2.manifestDigest)
  const switched = history.find((e) => e.type === 'switched')
  t.ok(prefetched, 'history: prefetched')
  t.match(switched, { digest: v2.manifestDigest, previousDigest: v1.manifestDigest }, 'history: switched from v1 to v2')
  t.match(switched?.detail, /previous digest served \d+\.\ds after upstream moved; the new image is stored/)
  t.ok((prefetched?.id ?? 0) < (switched?.id ?? 0), 'switched after prefetched')
  const api = (await (await fetch(`${rc.url}/api/history?image=docker.io/library/big:1`)).json()) as { events: { type: string }[] }
  t.ok(api.events.some((e) => e.type === 'switched') && api.events.some((e) => e.type === 'prefetched'), 'both events in the history API')
})

t.test('switch: when-cached switches after maxLag even while the new image is still coming', async (t) => {
  const reg = await startRegistry()
  t.teardown(reg.stop)
  // 8 MiB at 128 KiB/s: about a minute, far beyond maxLag.
  const slow = await startForwarder({ host: '127.0.0.1', port: reg.port }, { bytesPerSecond: 128 * 1024, perConnection: true })
  t.teardown(slow.stop)
  const v1 = await buildImage({ layers: 1, layerSize: 4096 })
  const v2 = await buildBigImage(8 * 1024 * 1024)
  for (const x of [v1, v2]) t.teardown(x.remove)
  await pushImage(v1, reg.host, 'library/lag:1')

  const rc = await startRegcache({
    upstreams: { 'docker.io': { url: slow.url } },
    extra: { shutdownGrace: '1s', prefetch: [{ image: 'docker.io/library/lag:1', every: '1s', switch: 'when-cached', maxLag: '4s' }] },
  })
  t.teardown(rc.stop)
  await waitUntil('the listed tag is prefetched at startup', () => stored(rc, v1.layerDigests), { timeoutMs: 60_000 })
  t.equal((await resolveTag(rc, 'library/lag', '1')).digest, v1.manifestDigest)

  await pushImage(v2, reg.host, 'library/lag:1')
  await waitUntil('regcache notices the move', async () => (await resolveTag(rc, 'library/lag', '1')).pending !== null, { timeoutMs: 30_000, intervalMs: 100 })
  await waitUntil('clients are switched after maxLag', async () => (await resolveTag(rc, 'library/lag', '1')).digest === v2.manifestDigest, {
    timeoutMs: 60_000,
    intervalMs: 250,
  })
  t.equal(await rc.storage.store.size(v2.layerDigest), undefined, 'switched before the new layer was stored')
  const switched = events(rc, 'library/lag', '1').find((e) => e.type === 'switched')
  t.match(switched?.detail, /maxLag \(4s\) reached/, 'history says maxLag made it switch')
  const servedS = Number(/served (\d+\.\d)s/.exec(switched?.detail ?? '')?.[1])
  t.ok(servedS >= 4, `the previous digest was served for maxLag, not less (${servedS}s)`)
})

t.test('a repository with a tags pattern: every matching tag is prefetched, the others are not', async (t) => {
  const reg = await startRegistry()
  t.teardown(reg.stop)
  const [a, b, other] = await Promise.all([1, 2, 3].map(() => buildImage({ layers: 1, layerSize: 16 * 1024 })))
  for (const x of [a, b, other]) t.teardown(x.remove)
  await pushImage(a, reg.host, 'library/many:v1.0')
  await pushImage(b, reg.host, 'library/many:v2.0')
  await pushImage(other, reg.host, 'library/many:latest')

  const rc = await startRegcache({
    upstreams: { 'docker.io': { url: reg.url } },
    extra: { prefetch: [{ image: 'docker.io/library/many', tags: '^v[0-9]+\\.', every: '2s' }] },
  })
  t.teardown(rc.stop)
  await waitUntil('the matching tags are prefetched', () => stored(rc, [...a.layerDigests, ...b.layerDigests]), { timeoutMs: 60_000 })
  t.equal(await rc.storage.store.size(other.layerDigests[0]), undefined, 'a tag the pattern does not match is left alone')
  const status = (await (await fetch(`${rc.url}/api/status`)).json()) as { prefetch: { tags: { tag: string; digest?: string }[] }[] }
  t.same(status.prefetch[0].tags.map((x) => x.tag).sort(), ['v1.0', 'v2.0'], 'the status page lists the matching tags')
})
