// What a real dockerd sends to a `registry-mirrors` mirror that asks for credentials, and how a
// Docker user gets through: regcache with an htpasswd user and anonymous pulls off, dockerd with
// the daemon.json `regcache client-config docker` writes. dockerd's fallback to Docker Hub goes to
// a dead proxy, so nothing leaves the machine.

import { mkdir, writeFile } from 'node:fs/promises'
import { dirname, join } from 'node:path'
import t from 'tap'
import { startDockerd } from '../helpers/dockerd.js'
import { ensureCommand } from '../helpers/packages.js'
import { buildImage, pushImage } from '../helpers/images.js'
import { makeTempDir, removeTempDir, run } from '../helpers/proc.js'
import { startRegistry } from '../helpers/registry.js'
import { startRegcache } from '../helpers/regcache.js'

const CLI = new URL('../../cli/main.js', import.meta.url).pathname
const missing = await ensureCommand('dockerd', 'docker.io')

t.test('docker and a mirror that asks for credentials', { skip: missing ? `dockerd unavailable: ${missing}` : false }, async (t) => {
  const hub = await startRegistry()
  t.teardown(hub.stop)
  const img = await buildImage({ layers: 1, layerSize: 16 * 1024 })
  t.teardown(img.remove)
  await pushImage(img, hub.host, 'library/hello:1', { format: 'v2s2' })

  const dir = await makeTempDir()
  t.teardown(() => removeTempDir(dir))
  const htpasswdFile = join(dir, 'htpasswd')
  const made = await run('htpasswd', ['-B', '-b', '-c', htpasswdFile, 'dave', 'dave-Pa55'])
  t.equal(made.code, 0, made.stderr)
  const rc = await startRegcache({ upstreams: { 'docker.io': { url: hub.url } }, defaultUpstream: 'docker.io', extra: { auth: { htpasswd: htpasswdFile, anonymous: false } } })
  t.teardown(rc.stop)

  const gen = await run(process.execPath, [CLI, 'client-config', 'docker', '--mirror', rc.url, '--output-dir', dir, '--config', rc.configFile])
  t.equal(gen.code, 0, gen.stderr)

  // dockerd inherits the environment: its fallback to Docker Hub goes to a dead proxy.
  const saved = { HTTPS_PROXY: process.env.HTTPS_PROXY, HTTP_PROXY: process.env.HTTP_PROXY, NO_PROXY: process.env.NO_PROXY }
  Object.assign(process.env, { HTTPS_PROXY: 'http://127.0.0.1:9', HTTP_PROXY: 'http://127.0.0.1:9', NO_PROXY: '127.0.0.1,localhost' })
  let dockerd
  try {
    dockerd = await startDockerd({ configFile: join(dir, 'daemon.json') })
  } catch (e) {
    t.skip(`dockerd cannot run here: ${(e as Error).message.split('\n')[0]}`, () => {})
    return
  } finally {
    for (const [k, v] of Object.entries(saved)) {
      if (v === undefined) delete process.env[k]
      else process.env[k] = v
    }
  }
  const d = dockerd
  t.teardown(() => d.stop())

  let seen = 0
  /** The request lines regcache logged since the last call. */
  const requests = async () => {
    const lines = (await rc.logs()).filter((l) => l.msg === 'request')
    const fresh = lines.slice(seen)
    seen = lines.length
    return fresh.map((l) => ({ method: l.method as string, url: l.url as string, status: l.status as number, user: l.user as string | undefined }))
  }
  await requests()

  await t.test('without credentials: the mirror refuses, dockerd goes around it', async (t) => {
    const pull = await d.docker(['pull', 'hello:1'], 90_000)
    const seenNow = await requests()
    t.comment(`docker pull exit ${pull.code}; regcache saw ${JSON.stringify(seenNow)}`)
    t.not(pull.code, 0, 'the pull fails (the fallback to Docker Hub is cut off here)')
    t.ok(seenNow.some((r) => r.url === '/v2/' && r.status === 401), 'dockerd probed /v2/ and got the challenge')
    t.notOk(seenNow.some((r) => r.status === 200 && r.url !== '/v2/'), 'nothing served')
  })

  await t.test('docker login to the mirror host, then a pull through registry-mirrors', async (t) => {
    const login = await run('sh', ['-c', `printf 'dave-Pa55' | docker -H unix://${d.socket} login ${rc.host} --username dave --password-stdin`], {
      env: { ...process.env, DOCKER_CONFIG: join(dirname(d.socket), 'cli-config') },
      timeoutMs: 60_000,
    })
    t.equal(login.code, 0, `docker login ${rc.host}: ${login.stdout}${login.stderr}`)
    t.ok((await requests()).some((r) => r.url === '/v2/' && r.status === 200 && r.user === 'dave'), 'login probed /v2/ with dave')
    const pull = await d.docker(['pull', 'hello:1'], 90_000)
    const seenNow = await requests()
    t.comment(`docker pull hello:1 after login to the mirror host: exit ${pull.code}; regcache saw ${JSON.stringify(seenNow)}`)
    t.not(pull.code, 0, 'credentials stored for the mirror host are not sent to a registry-mirrors mirror')
    t.notOk(seenNow.some((r) => r.user === 'dave'), 'no request carried them')
  })

  await t.test("credentials stored for Docker Hub are what dockerd sends to the mirror", async (t) => {
    const config = join(dirname(d.socket), 'cli-config')
    await mkdir(config, { recursive: true })
    const auth = Buffer.from('dave:dave-Pa55').toString('base64')
    await writeFile(join(config, 'config.json'), JSON.stringify({ auths: { 'https://index.docker.io/v1/': { auth } } }))
    const pull = await d.docker(['pull', 'hello:1'], 90_000)
    const seenNow = await requests()
    t.comment(`docker pull hello:1 with Docker Hub credentials: exit ${pull.code}; regcache saw ${JSON.stringify(seenNow)}`)
    t.equal(pull.code, 0, `docker pull hello:1: ${pull.stderr}`)
    t.ok(seenNow.some((r) => r.url.startsWith('/v2/library/hello/blobs/') && r.status === 200 && r.user === 'dave'), 'the mirror served dave')
  })

  await t.test('the mirror by name, with credentials for its host', async (t) => {
    const auth = Buffer.from('dave:dave-Pa55').toString('base64')
    await writeFile(join(dirname(d.socket), 'cli-config', 'config.json'), JSON.stringify({ auths: { [rc.host]: { auth } } }))
    await d.docker(['rmi', '-f', 'hello:1'])
    const pull = await d.docker(['pull', `${rc.host}/docker.io/library/hello:1`], 90_000)
    const seenNow = await requests()
    t.equal(pull.code, 0, `docker pull ${rc.host}/docker.io/library/hello:1: ${pull.stderr}`)
    t.ok(seenNow.some((r) => r.url.startsWith('/v2/docker.io/library/hello/manifests/') && r.status === 200 && r.user === 'dave'), 'served to dave')
  })
})
