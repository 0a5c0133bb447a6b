// podman as a client (docs/protocol.md#podman-and-skopeo): registries.conf from `regcache client-config podman`
// makes podman pull docker.io images from mirror.example/docker.io/…, i.e. regcache sees
// /v2/docker.io/library/<name>/… and routes by that path prefix (no ns).

import { mkdir, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import t from 'tap'
import { ensureCommand } from '../helpers/packages.js'
import { buildImage, pushImage } from '../helpers/images.js'
import { makeTempDir, removeTempDir, run } from '../helpers/proc.js'
import { startRegistry } from '../helpers/registry.js'
import { startRegcache } from '../helpers/regcache.js'

const CLI = new URL('../../cli/main.js', import.meta.url).pathname

// Debian's podman is installed here when it is missing and we are root.
const missing = await ensureCommand('podman', 'podman')
if (missing) console.error(`podman.test: skipped, podman unavailable: ${missing}`)

t.test('podman pulls through regcache with a generated registries.conf', { skip: missing ? `podman unavailable: ${missing}` : false }, async (t) => {
  const hub = await startRegistry()
  t.teardown(hub.stop)
  const img = await buildImage({ layers: 2, layerSize: 32 * 1024 })
  t.teardown(img.remove)
  const pushed = await pushImage(img, hub.host, 'library/hello:1')
  await hub.settle()
  hub.resetRequests()

  const rc = await startRegcache({ upstreams: { 'docker.io': { url: hub.url } }, defaultUpstream: 'docker.io' })
  t.teardown(rc.stop)

  const dir = await makeTempDir()
  t.teardown(() => removeTempDir(dir))
  const gen = await run(process.execPath, [CLI, 'client-config', 'podman', '--mirror', rc.url, '--output-dir', dir, '--config', rc.configFile])
  t.equal(gen.code, 0, gen.stderr)
  const registriesConf = join(dir, 'registries.conf')
  const conf = await readFile(registriesConf, 'utf8')
  t.match(conf, `location = "${rc.host}/docker.io"`, 'the mirror location carries the docker.io path prefix')
  t.match(conf, 'insecure = true', 'plain http mirror marked insecure')

  // Everything podman reads or writes is under `dir`: its storage, run state, tmp, and config.
  const policy = join(dir, 'policy.json')
  await writeFile(policy, JSON.stringify({ default: [{ type: 'insecureAcceptAnything' }] }))
  const containersConf = join(dir, 'containers.conf')
  await writeFile(containersConf, '')
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    CONTAINERS_REGISTRIES_CONF: registriesConf,
    CONTAINERS_CONF: containersConf,
    HOME: dir,
    XDG_CONFIG_HOME: join(dir, 'config'),
    XDG_RUNTIME_DIR: join(dir, 'xdg-run'),
  }
  delete env.CONTAINERS_STORAGE_CONF
  await mkdir(join(dir, 'xdg-run'), { mode: 0o700 })
  const podman = (args: string[], timeoutMs = 60_000) =>
    run(
      'podman',
      [
        '--root', join(dir, 'root'),
        '--runroot', join(dir, 'runroot'),
        '--tmpdir', join(dir, 'tmp'),
        '--storage-driver', 'vfs',
        '--cgroup-manager', 'cgroupfs',
        '--events-backend', 'file',
        ...args,
      ],
      { env, timeoutMs },
    )

  // Whether podman works at all here (storage, runtime dirs), before blaming the mirror.
  const info = await podman(['info', '--format', '{{.Store.GraphDriverName}}'])
  if (info.code !== 0) {
    console.error(`podman.test: podman cannot run here: podman info exited ${info.code}:\n${info.stderr}`)
    t.skip(`podman cannot run here: ${info.stderr.trim().split('\n').pop()}`, () => {})
    return
  }
  t.equal(info.stdout.trim(), 'vfs', 'podman runs, with its own vfs storage')

  const pull = await podman(['pull', '--signature-policy', policy, 'docker.io/library/hello:1'], 90_000)
  t.equal(pull.code, 0, pull.code === 0 ? 'podman pull docker.io/library/hello:1' : `podman pull\n${pull.stdout}${pull.stderr}`)

  const inspect = await podman(['image', 'inspect', 'docker.io/library/hello:1'])
  t.equal(inspect.code, 0, inspect.stderr)
  const image = inspect.code === 0 ? JSON.parse(inspect.stdout)[0] : {}
  t.equal(image.Digest, pushed.digest, 'the pulled manifest digest is the one upstream serves')
  t.equal(`sha256:${image.Id}`, img.configDigest, 'image ID is the config digest')
  t.ok((image.RepoDigests as string[] | undefined)?.includes(`docker.io/library/hello@${pushed.digest}`), `RepoDigests ${JSON.stringify(image.RepoDigests)}`)

  // regcache saw the path-prefixed name and routed it to docker.io as library/hello.
  const served = (await rc.logs()).filter((l) => l.msg === 'request' && String(l.url).startsWith('/v2/docker.io/library/hello/'))
  t.ok(served.some((l) => String(l.url) === '/v2/docker.io/library/hello/manifests/1' && l.status === 200), 'manifest by tag under /v2/docker.io/library/hello/')
  for (const layer of img.layerDigests) {
    t.ok(served.some((l) => l.url === `/v2/docker.io/library/hello/blobs/${layer}` && l.status === 200), `layer ${layer.slice(0, 19)} through the prefix`)
  }
  t.ok(served.every((l) => l.upstream === 'docker.io' && l.repository === 'library/hello'), 'routed to docker.io, library/hello')
  await hub.settle()
  t.ok(hub.count({ pathIncludes: '/v2/library/hello/manifests/1' }) >= 1, 'the registry was asked for library/hello:1')
  t.same([...new Set(hub.requests().map((q) => q.userAgent))], ['regcache'], 'every registry request came from regcache')
})
