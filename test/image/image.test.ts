// The container image, end to end with a real Docker engine: the project's Dockerfile is built
// (classic builder) on a base image made on this machine (no registry is reachable), the image
// runs as documented (non-root, /data volume, HEALTHCHECK, graceful stop), and containerd pulls
// an image through the running container.
//
// Slow (a cold `docker build` on the vfs storage driver, compiling better-sqlite3): it is its own
// suite, `npm run test:image`, outside `npm test`.

import { chmod, copyFile, mkdir, readdir, readFile, stat, writeFile } from 'node:fs/promises'
import { dirname, join } from 'node:path'
import { tmpdir } from 'node:os'
import { fileURLToPath } from 'node:url'
import t from 'tap'
import { stringify } from 'yaml'
import { baseImageTarball, baseImageUnsupported, importBaseImage } from '../helpers/base-image.js'
import { copyBuildContext } from '../helpers/build-context.js'
import { startContainerd, writeHostsToml } from '../helpers/containerd.js'
import { startDockerd, type Dockerd } from '../helpers/dockerd.js'
import { buildImage, pushImage } from '../helpers/images.js'
import { npmRegistryInfo } from '../helpers/npm-ca.js'
import { ensureCommand } from '../helpers/packages.js'
import { freePort } from '../helpers/ports.js'
import { makeTempDir, removeTempDir, run, sleep, waitUntil } from '../helpers/proc.js'
import { startRegistry } from '../helpers/registry.js'

// Cold machine: debootstrap + a full docker build on vfs; tap's default (300 s) is too short.
t.setTimeout(15 * 60_000)

const REPO = fileURLToPath(new URL('../../../', import.meta.url))
const BASE_TAG = `regcache-test-base:node${process.versions.node.split('.')[0]}`
const IMAGE = 'regcache:image-test'
const CONTAINER = `regcache-image-test-${process.pid}`
const UID = '10001'
// containerd falls back to `server` when the mirror fails: a dead port proves the mirror served.
const DEAD = 'http://127.0.0.1:9'

const started = Date.now()
const elapsed = () => `${((Date.now() - started) / 1000).toFixed(0)}s`

// Programs this test drives, from Debian's packages (installed on demand as root).
const needs: Array<[string, string]> = [
  ['dockerd', 'docker.io'],
  ['debootstrap', 'debootstrap'],
  ['containerd', 'containerd'],
  ['ctr', 'containerd'],
  ['docker-registry', 'docker-registry'],
  ['skopeo', 'skopeo'],
]
const missing: string[] = []
for (const [cmd, pkg] of needs) {
  const why = await ensureCommand(cmd, pkg)
  if (why) missing.push(why)
}
const unsupported = await baseImageUnsupported()
if (unsupported) missing.push(unsupported)
if (missing.length) console.error(`image.test: skipped: ${missing.join('; ')}`)

/** Mount points under dir, deepest first. */
async function mountsUnder(dir: string): Promise<string[]> {
  const info = await readFile('/proc/self/mountinfo', 'utf8').catch(() => '')
  return info
    .split('\n')
    .map((l) => l.split(' ')[4])
    .filter((p): p is string => !!p && p.startsWith(dir + '/'))
    .sort((a, b) => b.length - a.length)
}

/**
 * Stop the private dockerd. Running a --network host container makes dockerd bind-mount the
 * host network namespace at <exec-root>/netns/default and leave it there on exit; the helper's
 * recursive delete of its temp dir then fails (EBUSY) after long retries. Unmounted first here.
 */
async function stopDockerd(d: Dockerd): Promise<void> {
  const t0 = Date.now()
  const dir = dirname(d.socket)
  const ids = (await d.docker(['ps', '-aq'])).stdout.split('\n').filter(Boolean)
  if (ids.length) await d.docker(['rm', '-f', '-v', ...ids], 60_000)
  for (const p of await mountsUnder(join(dir, 'exec', 'netns'))) await run('umount', ['-l', p], { timeoutMs: 10_000 })
  const t1 = Date.now()
  try {
    await d.stop()
  } catch {
    for (const p of await mountsUnder(dir)) await run('umount', ['-l', p], { timeoutMs: 10_000 })
    await removeTempDir(dir)
  }
  console.error(`image.test: dockerd cleanup ${t1 - t0} ms (containers), stop + temp dir ${Date.now() - t1} ms`)
}

const tail = (s: string, n = 4000) => (s.length > n ? '…' + s.slice(-n) : s)

t.test('the Dockerfile builds, the image runs and serves a pull', { skip: missing.length ? missing.join('; ') : false }, async (t) => {
  // The classic builder: BuildKit would want a frontend image; the CLI env is captured at start.
  process.env.DOCKER_BUILDKIT = '0'
  let dockerd: Dockerd
  try {
    dockerd = await startDockerd()
  } catch (e) {
    const reason = (e as Error).message
    console.error(`image.test: dockerd did not start:\n${reason}`)
    t.skip(`dockerd cannot run here: ${reason.split('\n')[0]}`, () => {})
    return
  }
  const d = dockerd
  t.teardown(() => stopDockerd(d))
  const info = await d.docker(['info', '--format', '{{.Driver}}'])
  t.equal(info.stdout.trim(), 'vfs', 'private dockerd on the vfs storage driver')

  // --- 2. base image -------------------------------------------------------------------------
  const base = await baseImageTarball((m) => t.comment(`${elapsed()} base: ${m}`))
  t.comment(`${elapsed()} base tarball ${base.cached ? 'from cache' : 'built'}: ${base.path}`)
  await importBaseImage(d, base.path, BASE_TAG)
  const ver = await d.docker(['run', '--rm', '--network', 'host', BASE_TAG, 'node', '-p', 'process.version'])
  t.equal(ver.stdout.trim(), process.version, `${BASE_TAG} runs this machine's Node.js`)
  const tools = await d.docker(['run', '--rm', '--network', 'host', BASE_TAG, 'sh', '-c', 'command -v g++ || command -v make || command -v python3 || echo none'])
  t.equal(tools.stdout.trim(), 'none', 'the base has no build tools, like node:20-bookworm-slim (the Dockerfile installs them)')
  t.comment(`${elapsed()} base image imported`)

  // --- 3. build ------------------------------------------------------------------------------
  const ctx = await makeTempDir()
  t.teardown(() => removeTempDir(ctx))
  const caDir = join(REPO, 'deploy/docker/build-ca')
  const caDirBefore = (await readdir(caDir)).sort()
  const copied = await copyBuildContext(REPO, ctx)
  t.ok(copied.includes('Dockerfile') && copied.includes('package-lock.json'), 'build context has the Dockerfile and lockfile')
  t.notOk(copied.some((f) => /^(node_modules|dist|test|\.git)\//.test(f)), 'build context copy honours .dockerignore')
  const npm = await npmRegistryInfo()
  t.comment(`npm registry ${npm.registry}: ${npm.reason}`)
  if (npm.caFile) {
    await mkdir(join(ctx, 'deploy/docker/build-ca'), { recursive: true })
    await copyFile(npm.caFile, join(ctx, 'deploy/docker/build-ca/ca.crt'))
  }
  const buildArgs = ['--build-arg', `NODE_IMAGE=${BASE_TAG}`, '--build-arg', `NPM_REGISTRY=${npm.registry}`]
  const build = await d.docker(['build', '--network', 'host', ...buildArgs, '-t', IMAGE, ctx], 11 * 60_000)
  const buildLog = build.stdout + build.stderr
  // Outside the working tree, beside the cached base image.
  const logFile = join(tmpdir(), 'regcache-image-cache', 'last-build.log')
  await mkdir(dirname(logFile), { recursive: true })
  await writeFile(logFile, buildLog)
  t.comment(`${elapsed()} docker build finished (${build.code}); full log in ${logFile}`)
  t.same((await readdir(caDir)).sort(), caDirBefore, 'the working tree build-ca directory is untouched')
  t.equal(build.code, 0, build.code === 0 ? 'docker build succeeded' : `docker build failed:\n${tail(buildLog)}`)
  if (build.code !== 0) return
  t.match(buildLog, /Successfully tagged regcache:image-test/, 'the classic builder built and tagged the image')
  t.match(buildLog, /Setting up g\+\+/, 'the build stage installed python3/make/g++ with apt-get')
  t.notMatch(buildLog, /npm error/, 'npm ci and the build ran without npm errors')

  // --- image metadata ------------------------------------------------------------------------
  const insp = await d.docker(['image', 'inspect', IMAGE])
  t.equal(insp.code, 0, `docker image inspect ${insp.stderr}`)
  const cfg = JSON.parse(insp.stdout)[0].Config
  t.equal(cfg.User, `${UID}:${UID}`, 'USER 10001:10001')
  t.same(Object.keys(cfg.Volumes ?? {}), ['/data'], 'VOLUME /data')
  t.same(Object.keys(cfg.ExposedPorts ?? {}), ['5000/tcp'], 'EXPOSE 5000')
  t.same(cfg.Entrypoint, ['node', '/app/dist/cli/main.js'], 'exec-form ENTRYPOINT: node is PID 1')
  t.same(cfg.Cmd, ['serve'], 'CMD serve')
  t.equal(cfg.Healthcheck?.Test?.[0], 'CMD', 'HEALTHCHECK present')
  t.ok(cfg.Env.includes('REGCACHE_DATA_DIR=/data') && cfg.Env.includes('NODE_ENV=production'), 'ENV REGCACHE_DATA_DIR and NODE_ENV')

  // What the runtime image holds, and what it must not (build CA, npm settings, tests, dev deps).
  const probe = await d.docker([
    'run', '--rm', '--network', 'host', '--user', '0', '--entrypoint', 'sh', IMAGE, '-c',
    [
      'for p in /tmp/build-ca /root/.npmrc /app/test /app/dist/test /app/dist/bench /app/node_modules/typescript /app/node_modules/tap \\',
      '  /app/node_modules/better-sqlite3/deps /app/node_modules/better-sqlite3/build/Release/obj.target \\',
      '  /app/node_modules/better-sqlite3/build/Release/sqlite3.a; do',
      '  if [ -e "$p" ]; then echo "present: $p"; fi; done',
      'test -f /app/node_modules/better-sqlite3/build/Release/better_sqlite3.node || echo "missing: better_sqlite3.node"',
      'test -f /app/config.example.yaml || echo "missing: config.example.yaml"',
      'stat -c "%u %a" /data',
      'find /app ! -user 0 | head -3',
      'true',
    ].join('\n'),
  ])
  t.equal(probe.code, 0, `inspect the runtime image's files ${probe.stderr}`)
  const probeLines = probe.stdout.trim().split('\n')
  t.same(probeLines.filter((l) => /^(present|missing):/.test(l)), [], 'no build CA, npm config, tests or dev dependencies; the native addon is there')
  t.ok(probeLines.includes(`${UID} 755`), '/data belongs to 10001')
  t.same(probeLines.filter((l) => l.startsWith('/app')), [], '/app is owned by root')
  if (npm.caFile) {
    const pem = (await readFile(npm.caFile, 'utf8')).split('\n').find((l) => l.length > 40 && !l.startsWith('-----'))!
    const leak = await d.docker(['run', '--rm', '--network', 'host', '--user', '0', '--entrypoint', 'sh', IMAGE, '-c', `grep -rlF -- '${pem}' /app /tmp /root /etc 2>/dev/null | head -3; true`])
    t.equal(leak.stdout.trim(), '', 'the build-time CA did not reach the runtime image')
  }
  const sqlite = await d.docker([
    'run', '--rm', '--network', 'host', '--entrypoint', 'node', IMAGE, '-e',
    "const D=require('/app/node_modules/better-sqlite3');console.log(new D(':memory:').prepare('select sqlite_version() v').get().v, process.getuid())",
  ])
  t.equal(sqlite.code, 0, `better-sqlite3 loads in the runtime image ${sqlite.stderr}`)
  t.match(sqlite.stdout.trim(), new RegExp(`^3\\.\\d+\\.\\d+ ${UID}$`), 'better-sqlite3 works as uid 10001')
  // The sendfile addon is optional for installs without a compiler, but the image builds it.
  const addon = await d.docker([
    'run', '--rm', '--network', 'host', '--entrypoint', 'node', IMAGE, '-e',
    "const a=require('/app/native/sendfile');console.log(typeof a.start)",
  ])
  t.equal(addon.code, 0, `the sendfile addon loads in the runtime image ${addon.stderr}`)
  t.equal(addon.stdout.trim(), 'function', 'the sendfile addon exports start()')
  const help = await d.docker(['run', '--rm', '--network', 'host', IMAGE, '--help'])
  t.equal(help.code, 0, `regcache --help runs ${help.stderr}`)
  t.comment(`${elapsed()} image checked`)

  // --- 4. run it, pull through it ---------------------------------------------------------------
  const hub = await startRegistry()
  t.teardown(hub.stop)
  const img = await buildImage({ layers: 2, layerSize: 32 * 1024 })
  t.teardown(img.remove)
  const pushed = await pushImage(img, hub.host, 'library/hello:1')
  await hub.settle()
  hub.resetRequests()

  const confDir = await makeTempDir()
  t.teardown(() => removeTempDir(confDir))
  const confFile = join(confDir, 'config.yaml')
  // listen and dataDir here are overridden by the image's REGCACHE_LISTEN / REGCACHE_DATA_DIR.
  await writeFile(
    confFile,
    stringify({ listen: '0.0.0.0:1', dataDir: '/nonexistent', logLevel: 'info', defaultUpstream: 'docker.io', upstreams: { 'docker.io': { url: hub.url } } }),
  )
  await chmod(confFile, 0o644)
  const port = await freePort()
  const url = `http://127.0.0.1:${port}`
  const runRes = await d.docker([
    'run', '-d', '--name', CONTAINER, '--network', 'host', '--stop-timeout', '35',
    '-e', `REGCACHE_LISTEN=127.0.0.1:${port}`,
    '-v', `${confFile}:/etc/regcache/config.yaml:ro`,
    IMAGE, 'serve', '--config', '/etc/regcache/config.yaml',
  ])
  t.equal(runRes.code, 0, `docker run -d ${runRes.stderr}`)
  if (runRes.code !== 0) return
  const logs = async () => {
    const r = await d.docker(['logs', CONTAINER])
    return (r.stdout + r.stderr)
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => {
        try {
          return JSON.parse(l) as Record<string, any>
        } catch {
          return {}
        }
      })
  }
  const state = async () => JSON.parse((await d.docker(['inspect', '--format', '{{json .State}}', CONTAINER])).stdout || '{}')
  try {
    await waitUntil('regcache container /healthz', async () => (await fetch(`${url}/healthz`, { signal: AbortSignal.timeout(2000) })).ok, {
      timeoutMs: 60_000,
      intervalMs: 250,
    })
  } catch (e) {
    t.fail(`regcache did not come up: ${(e as Error).message}\n${JSON.stringify(await state())}\n${(await d.docker(['logs', CONTAINER])).stderr}`)
    return
  }
  t.pass(`regcache answers on ${url} (REGCACHE_LISTEN)`)
  const listening = (await logs()).find((l) => l.msg === 'regcache listening')
  t.equal(listening?.dataDir, '/data', 'REGCACHE_DATA_DIR wins over the config file: data in /data')
  t.same(listening?.upstreams, [`docker.io=${hub.url}`], 'the mounted config file was loaded')

  const st = await state()
  const status = await readFile(`/proc/${st.Pid}/status`, 'utf8').catch(() => '')
  t.match(status, new RegExp(`^Uid:\\s+${UID}\\s+${UID}\\s+${UID}\\s+${UID}$`, 'm'), 'the server process (PID 1 in the container) runs as uid 10001')
  t.match(await readFile(`/proc/${st.Pid}/cmdline`, 'utf8').catch(() => ''), /^node\0\/app\/dist\/cli\/main\.js\0serve\0/, 'PID 1 is node itself (exec form)')
  const idu = await d.docker(['exec', CONTAINER, 'id', '-u'])
  t.equal(idu.stdout.trim(), UID, 'docker exec runs as 10001 too')
  const mounts: Array<Record<string, any>> = JSON.parse((await d.docker(['inspect', '--format', '{{json .Mounts}}', CONTAINER])).stdout)
  const dataMount = mounts.find((m) => m.Destination === '/data')
  t.equal(dataMount?.Type, 'volume', '/data is a volume')

  // containerd pulls through the container; the dead fallback server proves the mirror served it.
  const ctd = await startContainerd()
  t.teardown(ctd.stop)
  const hostsDir = await makeTempDir()
  t.teardown(() => removeTempDir(hostsDir))
  await writeHostsToml(hostsDir, 'docker.io', url, { server: DEAD })
  const ref = 'docker.io/library/hello:1'
  const pull = await ctd.pull(ref, { hostsDir, platform: 'linux/amd64', timeoutMs: 90_000 })
  t.equal(pull.code, 0, pull.code === 0 ? `ctr pull ${ref} through the container` : `ctr pull failed:\n${pull.stderr}${pull.stdout}`)
  if (pull.code === 0) {
    t.equal(await ctd.imageDigest(ref), pushed.digest, 'containerd got the digest the upstream serves')
    const content = await ctd.contentDigests()
    for (const l of img.layerDigests) t.ok(content.includes(l), `layer ${l.slice(0, 19)} pulled`)
  }
  const served = (await logs()).filter((l) => l.msg === 'request' && String(l.url).startsWith('/v2/library/hello/'))
  t.ok(served.some((l) => String(l.url).includes('/manifests/1') && l.status === 200), 'the container logged the manifest request')
  t.ok(img.layerDigests.every((dg) => served.some((l) => String(l.url).includes(`/blobs/${dg}`) && l.status === 200)), 'the container served every layer')
  await hub.settle()
  t.same([...new Set(hub.requests().map((q) => q.userAgent))], ['regcache'], 'upstream only saw regcache')

  // The cache landed in the volume, owned by the service user.
  if (dataMount?.Source) {
    const db = await stat(join(dataMount.Source, 'regcache.db')).catch(() => undefined)
    t.equal(db?.uid, Number(UID), 'regcache.db in the /data volume, owned by 10001')
    const blobs = await run('find', [dataMount.Source, '-type', 'f', '-size', '+16k'])
    t.ok(blobs.stdout.trim().split('\n').filter(Boolean).length >= img.layerDigests.length, 'the layers are stored in the volume')
  }

  // HEALTHCHECK: the image's own settings (interval 30s, so the first check comes after ~30s).
  let health = ''
  const healthDeadline = Date.now() + 120_000
  while (Date.now() < healthDeadline) {
    health = (await state()).Health?.Status ?? ''
    if (health === 'healthy' || health === 'unhealthy') break
    await sleep(1000)
  }
  const hstate = await state()
  t.equal(health, 'healthy', `HEALTHCHECK reports healthy ${health === 'healthy' ? '' : JSON.stringify(hstate.Health)}`)
  t.comment(`${elapsed()} container healthy`)

  // Graceful stop: SIGTERM to node as PID 1, drained well within the stop timeout, exit 0.
  const t0 = Date.now()
  const stop = await d.docker(['stop', '-t', '35', CONTAINER], 60_000)
  const stopMs = Date.now() - t0
  t.equal(stop.code, 0, `docker stop -t 35 ${stop.stderr}`)
  const end = await state()
  t.equal(end.Running, false, 'stopped')
  t.equal(end.ExitCode, 0, 'exit code 0 after SIGTERM')
  t.notOk(end.OOMKilled, 'not killed')
  t.ok(stopMs < 30_000, `stopped in ${stopMs} ms, without waiting for SIGKILL`)
  const last = await logs()
  t.ok(last.some((l) => l.signal === 'SIGTERM' && /shutting down/.test(String(l.msg))), 'regcache logged the SIGTERM')
  t.ok(last.some((l) => l.msg === 'stopped'), 'regcache logged a clean stop')
  t.comment(`${elapsed()} done`)
})
