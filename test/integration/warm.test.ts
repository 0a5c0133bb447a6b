// regcache warm and invalidate, run as an operator would against a running mirror.

import { execFile } from 'node:child_process'
import { promisify } from 'node:util'
import t from 'tap'
import { startForwarder } from '../helpers/forwarder.js'
import { buildImage, buildIndex, pushImage } from '../helpers/images.js'
import { startRegistry } from '../helpers/registry.js'
import { startRegcache } from '../helpers/regcache.js'

const exec = promisify(execFile)
const cli = (...args: string[]) => exec(process.execPath, ['dist/cli/main.js', ...args])

t.test('warm fills the cache ahead of a pull; invalidate forgets a tag', async (t) => {
  const reg = await startRegistry()
  t.teardown(reg.stop)
  const fwd = await startForwarder({ host: '127.0.0.1', port: reg.port })
  t.teardown(fwd.stop)
  const amd = await buildImage({ layers: 2, layerSize: 8192, arch: 'amd64' })
  const arm = await buildImage({ layers: 2, layerSize: 8192, arch: 'arm64' })
  const idx = await buildIndex([amd, arm])
  for (const x of [amd, arm, idx]) t.teardown(x.remove)
  await pushImage(idx, reg.host, 'library/multi:1')
  const rc = await startRegcache({ upstreams: { 'docker.io': { url: fwd.url } } })
  t.teardown(rc.stop)

  const { stdout } = await cli('warm', '--config', rc.configFile, '--mirror', rc.url, 'docker.io/library/multi:1')
  t.match(stdout, /warmed docker\.io\/library\/multi:1 .*1 manifest\(s\), 3 blobs/)
  const store = rc.storage.store
  for (const d of [idx.indexDigest, amd.manifestDigest, amd.configDigest, ...amd.layerDigests]) t.ok(await store.size(d), `${d.slice(0, 19)} cached`)
  t.equal(await store.size(arm.layerDigests[0]), undefined, 'other platforms left alone')

  await reg.settle()
  reg.resetRequests()
  await fwd.setMode('refuse', { dropExisting: true })
  const stale = await fetch(`${rc.url}/v2/library/multi/manifests/1`, { headers: { accept: 'application/vnd.oci.image.index.v1+json, */*' } })
  t.equal(stale.status, 200, 'warmed tag served during an outage')

  const inv = await cli('invalidate', '--config', rc.configFile, 'docker.io/library/multi:1')
  t.match(inv.stdout, /forgot docker\.io\/library\/multi:1/)
  const gone = await fetch(`${rc.url}/v2/library/multi/manifests/1`, { headers: { accept: 'application/vnd.oci.image.index.v1+json, */*' } })
  t.equal(gone.status, 503, 'an invalidated tag is not answered from cache')
  await fwd.setMode('pass')
})
