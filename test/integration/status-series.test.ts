// The status page's series are kept in SQLite: after a restart on the same data directory the
// charts still show what happened before it.

import t from 'tap'
import { join } from 'node:path'
import { buildImage, pushImage } from '../helpers/images.js'
import { makeTempDir, removeTempDir } from '../helpers/proc.js'
import { startRegistry } from '../helpers/registry.js'
import { startRegcache } from '../helpers/regcache.js'

interface SeriesBody {
  hour: { at: number; fromCache: number; fromUpstream: number; bytesCache: number; bytesUpstream: number; cacheBytes: number }[]
  day: unknown[]
}

t.test('series and pull counts survive a restart', async (t) => {
  const reg = await startRegistry()
  t.teardown(reg.stop)
  const img = await buildImage({ layers: 1, layerSize: 64 * 1024 })
  t.teardown(img.remove)
  await pushImage(img, reg.host, 'library/kept:1')
  const dir = await makeTempDir()
  t.teardown(() => removeTempDir(dir))
  const dataDir = join(dir, 'data')
  const upstreams = { 'docker.io': { url: reg.url } }

  const first = await startRegcache({ upstreams, dataDir })
  const get = async (url: string, path: string) => {
    const res = await fetch(`${url}${path}`, { headers: { accept: 'application/vnd.oci.image.manifest.v1+json' } })
    await res.arrayBuffer()
    return res.status
  }
  for (let i = 0; i < 3; i++) {
    t.equal(await get(first.url, '/v2/library/kept/manifests/1'), 200)
    t.equal(await get(first.url, `/v2/library/kept/blobs/${img.layerDigests[0]}`), 200)
  }
  // Stopped at once: what happened since the last 10 s sample is written at shutdown.
  await first.stop()

  const second = await startRegcache({ upstreams, dataDir })
  t.teardown(second.stop)
  const after = (await (await fetch(`${second.url}/api/series`)).json()) as SeriesBody
  t.ok(after.hour.some((r) => r.fromCache > 0 && r.bytesCache > 0), 'requests and bytes from the cache are in the hour series after the restart')
  t.ok(after.hour.some((r) => r.fromUpstream > 0 && r.bytesUpstream > 0), 'and those from upstream')
  t.ok(after.hour.some((r) => r.cacheBytes > 0), 'and the disk used')
  t.ok(after.day.length > 0, 'and the day series')
  const status = (await (await fetch(`${second.url}/api/status`)).json()) as { topPulls: { image: string; pulls: number }[] }
  t.same(status.topPulls, [{ image: 'docker.io/library/kept:1', pulls: 3 }], 'pull counts kept')
})
