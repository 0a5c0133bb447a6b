// cache.maxSize with real pulls: least recently used blobs go, the cache stays under its limit,
// evicted blobs are fetched again on the next pull, and a blob being served is never evicted.

import { createHash } from 'node:crypto'
import t from 'tap'
import { startContainerd, writeHostsToml } from '../helpers/containerd.js'
import { buildImage, pushImage, type OciLayout } from '../helpers/images.js'
import { makeTempDir, removeTempDir } from '../helpers/proc.js'
import { startRegistry } from '../helpers/registry.js'
import { startRegcache } from '../helpers/regcache.js'

const MiB = 1024 * 1024

t.test('eviction keeps the cache under cache.maxSize without breaking pulls', async (t) => {
  const reg = await startRegistry()
  t.teardown(reg.stop)
  const images: OciLayout[] = []
  for (let i = 0; i < 4; i++) images.push(await buildImage({ layers: 2, layerSize: 512 * 1024 }))
  for (const x of images) t.teardown(x.remove)
  for (let i = 0; i < images.length; i++) await pushImage(images[i], reg.host, `library/img${i}:1`)

  const limit = 3 * MiB
  const rc = await startRegcache({ upstreams: { 'docker.io': { url: reg.url } }, extra: { cache: { maxSize: '3MiB' } } })
  t.teardown(rc.stop)
  const mirror = rc.server.mirror
  const { meta, store } = rc.storage
  const ctd = await startContainerd()
  t.teardown(ctd.stop)
  const hostsDir = await makeTempDir()
  t.teardown(() => removeTempDir(hostsDir))
  await writeHostsToml(hostsDir, 'docker.io', rc.url, { server: 'http://127.0.0.1:9' })

  for (let i = 0; i < images.length; i++) {
    const r = await ctd.pull(`docker.io/library/img${i}:1`, { hostsDir })
    t.equal(r.code, 0, `img${i} pulled: ${r.stderr}`)
  }
  await mirror.evictNow()
  // The server's own totals: they are kept in memory by the connection that writes them.
  const { bytes } = (await mirror.status()).cache
  t.ok(bytes <= limit, `cache holds ${bytes} bytes, limit ${limit}`)
  let onDisk = 0
  for await (const d of store.list()) onDisk += (await store.size(d)) ?? 0
  t.equal(onDisk, bytes, 'files and metadata agree')
  t.ok((await rc.metric('regcache_evictions_total')) > 0, 'evictions counted')
  const firstLayer = images[0].layerDigests[0]
  t.equal(meta.getContent(firstLayer), undefined, 'the least recently used image was evicted')

  await t.test('an evicted image pulls again, its blobs fetched anew', async (t) => {
    await ctd.removeAllContent()
    await reg.settle()
    reg.resetRequests()
    const r = await ctd.pull('docker.io/library/img0:1', { hostsDir })
    t.equal(r.code, 0, r.stderr)
    await reg.settle()
    t.ok(reg.count({ method: 'GET', pathIncludes: firstLayer }) === 1, 'evicted layer fetched again')
  })

  await t.test('a blob being served is not evicted, even over the limit', async (t) => {
    // Bigger than the limit and than the socket buffers, so the server is still sending it.
    const big = await buildImage({ layers: 1, layerSize: 16 * MiB })
    t.teardown(big.remove)
    await pushImage(big, reg.host, 'library/big:1')
    const layer = big.layerDigests[0]
    const res = await fetch(`${rc.url}/v2/library/big/blobs/${layer}`)
    const reader = res.body!.getReader()
    const first = await reader.read()
    while (mirror.fillsInFlight > 0) await new Promise((r) => setTimeout(r, 20))
    t.ok(meta.getContent(layer), 'cached once its fill completed')
    t.ok(mirror.busyDigests().has(layer), 'the server is still sending it')
    await mirror.evictNow()
    t.ok(meta.getContent(layer), 'not evicted while being served')
    const hash = createHash('sha256').update(first.value!)
    for (;;) {
      const { done, value } = await reader.read()
      if (done) break
      hash.update(value)
    }
    t.equal(`sha256:${hash.digest('hex')}`, layer, 'the slow client got the whole blob')
    await new Promise((r) => setTimeout(r, 50))
    await mirror.evictNow()
    t.equal(meta.getContent(layer), undefined, 'evicted once nobody reads it')
    t.ok((await mirror.status()).cache.bytes <= limit, 'back under the limit')
  })
})
