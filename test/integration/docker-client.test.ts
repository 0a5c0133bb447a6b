// Docker as a client (docs/protocol.md#docker): dockerd with the daemon.json `regcache client-config
// docker` writes (`registry-mirrors`), pulling a Docker Hub image. The mirror sees plain
// /v2/library/<name>/… requests (no ns, no prefix) and answers them from its default upstream.

import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import t from 'tap'
import { startDockerd } from '../helpers/dockerd.js'
import { ensureCommand } from '../helpers/packages.js'
import { buildImage, pushImage } from '../helpers/images.js'
import { makeTempDir, removeTempDir, run } from '../helpers/proc.js'
import { startRegistry } from '../helpers/registry.js'
import { startRegcache } from '../helpers/regcache.js'

const CLI = new URL('../../cli/main.js', import.meta.url).pathname

// Debian's docker.io is installed here when dockerd is missing and we are root.
const missing = await ensureCommand('dockerd', 'docker.io')
if (missing) console.error(`docker-client.test: skipped, dockerd unavailable: ${missing}`)

t.test('docker pull through regcache as registry mirror', { skip: missing ? `dockerd unavailable: ${missing}` : false }, async (t) => {

  const hub = await startRegistry()
  t.teardown(hub.stop)
  const img = await buildImage({ layers: 2, layerSize: 32 * 1024 })
  t.teardown(img.remove)
  // Docker Hub serves most images as Docker schema2.
  const pushed = await pushImage(img, hub.host, 'library/hello:1', { format: 'v2s2' })
  await hub.settle()
  hub.resetRequests()

  const rc = await startRegcache({ upstreams: { 'docker.io': { url: hub.url } }, defaultUpstream: 'docker.io' })
  t.teardown(rc.stop)

  const confDir = await makeTempDir()
  t.teardown(() => removeTempDir(confDir))
  const gen = await run(process.execPath, [CLI, 'client-config', 'docker', '--mirror', rc.url, '--output-dir', confDir, '--config', rc.configFile])
  t.equal(gen.code, 0, gen.stderr)
  const daemonJson = join(confDir, 'daemon.json')
  const conf = JSON.parse(await readFile(daemonJson, 'utf8'))
  t.same(conf['registry-mirrors'], [rc.url], 'daemon.json names regcache as the mirror')
  t.same(conf['insecure-registries'], [rc.host], 'plain http mirror listed as insecure')

  let dockerd
  try {
    dockerd = await startDockerd({ configFile: daemonJson })
  } catch (e) {
    // The precise reason goes into the output; the test is skipped, not failed, where Docker cannot run.
    const reason = (e as Error).message
    console.error(`docker-client.test: dockerd did not start:\n${reason}`)
    t.skip(`dockerd cannot run here: ${reason.split('\n')[0]}`, () => {})
    return
  }
  const d = dockerd
  t.teardown(() => d.stop())

  const info = await d.docker(['info', '--format', '{{json .RegistryConfig.Mirrors}}'])
  t.equal(info.code, 0, info.stderr)
  t.same(JSON.parse(info.stdout.trim()), [`${rc.url}/`], 'dockerd picked the mirror up from daemon.json')

  const pull = await d.docker(['pull', 'hello:1'], 90_000)
  t.equal(pull.code, 0, pull.code === 0 ? 'docker pull hello:1' : `docker pull hello:1\n${pull.stdout}${pull.stderr}\n--- dockerd ---\n${d.tail(40)}`)

  const inspect = await d.docker(['image', 'inspect', 'hello:1'])
  t.equal(inspect.code, 0, inspect.stderr)
  const image = inspect.code === 0 ? JSON.parse(inspect.stdout)[0] : {}
  t.equal(image.Id, img.configDigest, 'image ID is the config digest')
  t.same(image.RepoDigests, [`hello@${pushed.digest}`], 'RepoDigest is the manifest digest upstream serves')
  t.same(image.RootFS?.Layers, img.diffIds, 'layers unpacked to the expected diff IDs')

  // It went through regcache: the mirror logged the requests and upstream only saw regcache.
  const served = (await rc.logs()).filter((l) => l.msg === 'request' && String(l.url).startsWith('/v2/library/hello/'))
  t.ok(served.some((l) => String(l.url).includes('/manifests/') && l.status === 200), 'regcache answered the manifest request')
  for (const layer of img.layerDigests) {
    t.ok(served.some((l) => l.url === `/v2/library/hello/blobs/${layer}` && l.status === 200), `regcache served layer ${layer.slice(0, 19)}`)
  }
  t.ok(served.every((l) => l.upstream === 'docker.io'), 'routed to the docker.io upstream')
  await hub.settle()
  t.ok(hub.count({ pathIncludes: '/v2/library/hello/manifests/' }) >= 1, 'the registry was asked for the manifest')
  t.same([...new Set(hub.requests().map((q) => q.userAgent))], ['regcache'], 'every registry request came from regcache')
})
