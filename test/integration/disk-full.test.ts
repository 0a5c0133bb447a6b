// A full disk while caching a blob: the clients still get their (verified) bytes, nothing partial
// is kept, the error is logged and counted, and the server keeps running. The data directory is
// a real 4 MiB tmpfs, so ENOSPC comes from the kernel.

import { createHash } from 'node:crypto'
import { readdir } from 'node:fs/promises'
import { join } from 'node:path'
import t from 'tap'
import { buildImage, pushImage } from '../helpers/images.js'
import { makeTempDir, removeTempDir, run } from '../helpers/proc.js'
import { startRegistry } from '../helpers/registry.js'
import { startRegcache } from '../helpers/regcache.js'

async function sha256Of(url: string): Promise<{ status: number; digest: string; bytes: number }> {
  const res = await fetch(url)
  const hash = createHash('sha256')
  let bytes = 0
  for await (const chunk of res.body as AsyncIterable<Uint8Array>) {
    hash.update(chunk)
    bytes += chunk.length
  }
  return { status: res.status, digest: `sha256:${hash.digest('hex')}`, bytes }
}

t.test('ENOSPC while filling', { skip: process.getuid?.() !== 0 ? 'mounting a tmpfs needs root' : false }, async (t) => {
  const dataDir = await makeTempDir()
  const mount = await run('mount', ['-t', 'tmpfs', '-o', 'size=4m', 'tmpfs', dataDir])
  t.equal(mount.code, 0, `tmpfs mounted: ${mount.stderr}`)
  t.teardown(async () => {
    await run('umount', [dataDir])
    await removeTempDir(dataDir)
  })

  const reg = await startRegistry()
  t.teardown(reg.stop)
  const img = await buildImage({ layers: 1, layerSize: 8 * 1024 * 1024 })
  t.teardown(img.remove)
  await pushImage(img, reg.host, 'library/big:1')
  const layer = img.layerDigests[0]

  const rc = await startRegcache({ upstreams: { 'docker.io': { url: reg.url } }, dataDir })
  t.teardown(rc.stop)
  const url = `${rc.url}/v2/library/big/blobs/${layer}`

  const results = await Promise.all([sha256Of(url), sha256Of(url)])
  for (const r of results) {
    t.equal(r.status, 200)
    t.equal(r.digest, layer, `a client got all ${r.bytes} bytes, verified`)
  }
  // The relay finishes its clean-up right after the last byte went out.
  for (let i = 0; i < 100 && (await rc.metric('regcache_fills_in_flight')) > 0; i++) await new Promise((r) => setTimeout(r, 20))
  t.equal(await rc.metric('regcache_fills_total', { result: 'disk_error' }), 1, 'the disk error is counted')
  t.same(await readdir(join(dataDir, 'tmp')), [], 'no partial file left')
  t.equal(await rc.storage.store.size(layer), undefined, 'the blob is not kept')
  t.equal(rc.storage.meta.getContent(layer), undefined, 'nor recorded')
  const logs = await rc.logs()
  t.ok(logs.some((l) => l.level >= 50 && /disk full/.test(l.msg)), 'an error is logged')

  const again = await sha256Of(url)
  t.equal(again.digest, layer, 'a later request is served too')
  const base = await fetch(`${rc.url}/v2/`)
  t.equal(base.status, 200, 'the server keeps running')
})
