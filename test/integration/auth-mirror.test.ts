// `credentials: mirror` with an `auth:` section, end to end: htpasswd users made with
// `htpasswd -B`, access rules over upstream and repository, anonymous pulls off. Enforced for
// tags and digests, manifests and blobs, GET and HEAD; a wrong password refused; the htpasswd file
// edited while regcache runs takes effect; skopeo --creds and podman (with a generated auth.json)
// pull through it.
//
// Failed logins block the client's address for minutes (auth/throttle.ts). The requests meant to
// fail come from their own loopback addresses, so that skopeo and podman on 127.0.0.1 are not
// answered 429: containers/image waits out a 429's Retry-After (up to a minute, several times),
// which looks like a pull that stalls after "Trying to pull".

import { mkdir, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import t from 'tap'
import { startContainerd } from '../helpers/containerd.js'
import { ALL_MANIFEST_TYPES, buildImage, pushImage } from '../helpers/images.js'
import { createHttpClient, header, ociErrors } from '../helpers/http.js'
import { makeTempDir, removeTempDir, run, waitUntil } from '../helpers/proc.js'
import { startRegcache } from '../helpers/regcache.js'
import { startRegistry } from '../helpers/registry.js'

const UPSTREAM = 'registry.test'
const CLI = new URL('../../cli/main.js', import.meta.url).pathname
const basic = (user: string, password: string) => `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`

t.test('htpasswd users and access rules', async (t) => {
  const reg = await startRegistry()
  t.teardown(reg.stop)
  const [a, b] = await Promise.all([buildImage({ layers: 2, layerSize: 16 * 1024 }), buildImage({ layers: 1, layerSize: 16 * 1024 })])
  t.teardown(a.remove)
  t.teardown(b.remove)
  await pushImage(a, reg.host, 'team-a/app:1')
  await pushImage(b, reg.host, 'team-b/app:1')

  const dir = await makeTempDir()
  t.teardown(() => removeTempDir(dir))
  const htpasswdFile = join(dir, 'htpasswd')
  const htpasswd = async (args: string[]) => {
    const r = await run('htpasswd', args)
    if (r.code !== 0) throw new Error(`htpasswd ${args[0]}: ${r.stderr}`)
  }
  await htpasswd(['-B', '-b', '-c', htpasswdFile, 'carol', 'carol-Pa55'])
  await htpasswd(['-B', '-b', htpasswdFile, 'erin', 'erin-Pa55'])

  const rc = await startRegcache({
    upstreams: { [UPSTREAM]: { url: reg.url } },
    extra: {
      auth: {
        htpasswd: htpasswdFile,
        anonymous: false,
        rules: [
          { users: ['carol'], upstreams: [UPSTREAM], repositories: ['team-a/*'] },
          { users: ['*'], upstreams: ['*'], repositories: ['team-b/*'] },
        ],
      },
    },
    logLevel: 'trace',
  })
  t.teardown(rc.stop)

  const http = createHttpClient()
  t.teardown(http.close)
  // Wrong passwords, and users not (or no longer) in the file, each from an address of their own.
  const guesser = createHttpClient({ localAddress: '127.0.0.2' })
  t.teardown(guesser.close)
  const editor = createHttpClient({ localAddress: '127.0.0.3' })
  t.teardown(editor.close)
  const CAROL = basic('carol', 'carol-Pa55')
  const ERIN = basic('erin', 'erin-Pa55')
  const req = (method: 'GET' | 'HEAD', path: string, auth?: string, client = http) =>
    client.request(method, `${rc.url}/v2/${UPSTREAM}/${path}`, { headers: { accept: ALL_MANIFEST_TYPES, ...(auth ? { authorization: auth } : {}) } })
  const pathsOf = (repo: string, img: typeof a) => [
    `${repo}/manifests/1`,
    `${repo}/manifests/${img.manifestDigest}`,
    `${repo}/blobs/${img.configDigest}`,
    ...img.layerDigests.map((d) => `${repo}/blobs/${d}`),
  ]

  await t.test('the login probe and anonymous requests', async (t) => {
    const probe = await http.get(`${rc.url}/v2/`)
    t.equal(probe.status, 401, 'GET /v2/ without credentials: 401')
    t.equal(header(probe, 'www-authenticate'), 'Basic realm="regcache"')
    t.equal((await http.get(`${rc.url}/v2/`, { authorization: CAROL })).status, 200, 'with good credentials: 200')
    t.equal((await guesser.get(`${rc.url}/v2/`, { authorization: basic('carol', 'wrong') })).status, 401, 'with a wrong password: 401')
    for (const p of pathsOf('team-a/app', a)) {
      for (const m of ['GET', 'HEAD'] as const) {
        const res = await req(m, p)
        t.equal(res.status, 401, `anonymous ${m} ${p}: 401`)
        if (m === 'GET') t.equal(ociErrors(res)?.[0]?.code, 'UNAUTHORIZED')
      }
    }
  })

  await t.test('rules: carol reads team-a and team-b; erin only team-b; tags and digests alike', async (t) => {
    for (const p of pathsOf('team-a/app', a)) for (const m of ['GET', 'HEAD'] as const) t.equal((await req(m, p, CAROL)).status, 200, `carol ${m} ${p}`)
    for (const p of pathsOf('team-b/app', b)) t.equal((await req('GET', p, ERIN)).status, 200, `erin GET ${p}`)
    // Everything of team-a is cached now; erin still gets nothing of it.
    for (const p of pathsOf('team-a/app', a)) {
      for (const m of ['GET', 'HEAD'] as const) {
        const res = await req(m, p, ERIN)
        t.equal(res.status, 403, `erin ${m} ${p}: 403`)
        t.equal(header(res, 'docker-content-digest'), undefined)
        if (m === 'GET') t.equal(ociErrors(res)?.[0]?.code, 'DENIED')
      }
    }
    for (const m of ['GET', 'HEAD'] as const) t.equal((await req(m, `team-a/app/blobs/${a.layerDigests[0]}`, basic('carol', 'wrong'), guesser)).status, 401, `a wrong password ${m}: 401`)
  })

  await t.test('the htpasswd file edited while running', async (t) => {
    const DAVE = basic('dave', 'dave-Pa55')
    t.equal((await req('GET', 'team-b/app/manifests/1', DAVE, editor)).status, 401, 'dave is not a user yet')
    await htpasswd(['-B', '-b', htpasswdFile, 'dave', 'dave-Pa55'])
    // Each refusal counts against the editor's address: a few seconds between tries stays under the
    // throttle's limit even if the change is only seen by the periodic stat.
    await waitUntil('dave accepted', async () => (await req('GET', 'team-b/app/manifests/1', DAVE, editor)).status === 200, { timeoutMs: 60_000, intervalMs: 4000 })
    await htpasswd(['-D', htpasswdFile, 'erin'])
    await waitUntil('erin refused', async () => (await req('GET', 'team-b/app/manifests/1', ERIN, editor)).status === 401, { timeoutMs: 90_000, intervalMs: 1000 })
    t.pass('users added and removed take effect')
  })

  await t.test('containerd with the Authorization header client-config writes into hosts.toml', async (t) => {
    const cdir = await makeTempDir()
    t.teardown(() => removeTempDir(cdir))
    const passwordFile = join(cdir, 'password')
    await writeFile(passwordFile, 'carol-Pa55\n')
    const hostsDir = join(cdir, 'certs.d')
    const gen = await run(process.execPath, [CLI, 'client-config', 'containerd', '--mirror', rc.url, '--output-dir', hostsDir, '--config', rc.configFile, '--no-fallback', '--username', 'carol', '--password-file', passwordFile])
    t.equal(gen.code, 0, gen.stderr)
    const ctd = await startContainerd()
    t.teardown(ctd.stop)
    const r = await ctd.pull(`${UPSTREAM}/team-a/app:1`, { hostsDir })
    t.equal(r.code, 0, r.stderr)
    t.equal(await ctd.imageDigest(`${UPSTREAM}/team-a/app:1`), a.manifestDigest)
    const served = (await rc.logs()).filter((l) => l.msg === 'request' && String(l.url).startsWith(`/v2/team-a/app/blobs/`) && l.status === 200)
    t.ok(served.length > 0 && served.every((l) => l.user === 'carol'), 'every blob served went to carol')
  })

  await t.test('skopeo --creds', async (t) => {
    const inspect = (repo: string, creds?: string) =>
      run('skopeo', ['inspect', '--raw', '--tls-verify=false', '--retry-times', '0', ...(creds ? ['--creds', creds] : ['--no-creds']), `docker://${rc.host}/${UPSTREAM}/${repo}:1`], { timeoutMs: 60_000 })
    const ok = await inspect('team-a/app', 'carol:carol-Pa55')
    t.equal(ok.code, 0, ok.stderr)
    t.equal(JSON.parse(ok.stdout).config?.digest, a.configDigest, 'the manifest')
    t.not((await inspect('team-a/app', 'dave:dave-Pa55')).code, 0, 'dave may not read team-a')
    t.not((await inspect('team-a/app', 'carol:wrong')).code, 0, 'a wrong password fails')
    t.not((await inspect('team-a/app')).code, 0, 'without credentials fails')
  })

  await t.test('podman with a generated auth.json', async (t) => {
    const pdir = await makeTempDir()
    t.teardown(() => removeTempDir(pdir))
    const passwordFile = join(pdir, 'password')
    await writeFile(passwordFile, 'carol-Pa55\n')
    const gen = await run(process.execPath, [CLI, 'client-config', 'podman', '--mirror', rc.url, '--output-dir', pdir, '--config', rc.configFile, '--username', 'carol', '--password-file', passwordFile])
    t.equal(gen.code, 0, gen.stderr)
    const authJson = JSON.parse(await readFile(join(pdir, 'auth.json'), 'utf8'))
    t.same(Object.keys(authJson.auths), [rc.host], 'credentials for the mirror host')
    const policy = join(pdir, 'policy.json')
    await writeFile(policy, JSON.stringify({ default: [{ type: 'insecureAcceptAnything' }] }))
    await writeFile(join(pdir, 'containers.conf'), '')
    await mkdir(join(pdir, 'xdg-run'), { mode: 0o700 })
    const env: NodeJS.ProcessEnv = {
      ...process.env,
      CONTAINERS_REGISTRIES_CONF: join(pdir, 'registries.conf'),
      CONTAINERS_CONF: join(pdir, 'containers.conf'),
      REGISTRY_AUTH_FILE: join(pdir, 'auth.json'),
      HOME: pdir,
      XDG_CONFIG_HOME: join(pdir, 'config'),
      XDG_RUNTIME_DIR: join(pdir, 'xdg-run'),
    }
    delete env.CONTAINERS_STORAGE_CONF
    const podman = (args: string[]) =>
      run('podman', ['--root', join(pdir, 'root'), '--runroot', join(pdir, 'runroot'), '--tmpdir', join(pdir, 'tmp'), '--storage-driver', 'vfs', '--cgroup-manager', 'cgroupfs', '--events-backend', 'file', ...args], { env, timeoutMs: 90_000 })
    const info = await podman(['info', '--format', '{{.Store.GraphDriverName}}'])
    if (info.code !== 0) {
      t.skip(`podman cannot run here: ${info.stderr.trim().split('\n').pop()}`, () => {})
      return
    }
    const before = (await rc.logs()).length
    const pull = await podman(['pull', '--signature-policy', policy, `${UPSTREAM}/team-a/app:1`])
    t.equal(pull.code, 0, `podman pull through the mirror with auth.json: ${pull.stderr}`)
    const inspect = await podman(['image', 'inspect', '--format', '{{.Id}}', `${UPSTREAM}/team-a/app:1`])
    t.equal(`sha256:${inspect.stdout.trim()}`, a.configDigest, 'the image pulled is team-a/app:1')
    const lines = (await rc.logs()).slice(before).filter((l) => l.msg === 'request')
    const served = lines.filter((l) => String(l.url).startsWith(`/v2/${UPSTREAM}/team-a/app/blobs/`) && l.status === 200)
    t.same(new Set(served.map((l) => l.digest)), new Set([a.configDigest, ...a.layerDigests]), 'the mirror served every blob of the image')
    t.ok(served.every((l) => l.user === 'carol'), 'to carol')
    t.notOk(lines.some((l) => l.status === 429), 'podman was never throttled')
  })

  await t.test('no secret in logs, metrics or status; failures counted', async (t) => {
    const logs = JSON.stringify(await rc.logs())
    const metrics = (await http.get(`${rc.url}/metrics`)).body.toString()
    const status = (await http.get(`${rc.url}/api/status`)).body.toString()
    for (const [name, text] of Object.entries({ logs, metrics, status })) {
      for (const s of ['carol-Pa55', 'erin-Pa55', 'dave-Pa55', CAROL.slice(6), ERIN.slice(6)]) t.notOk(text.includes(s), `${name}: no credential`)
    }
    t.ok((await rc.metric('regcache_auth_failures_total', { reason: 'bad-credentials' })) > 0, 'bad credentials counted')
    t.ok(logs.includes('"user":"carol"'), 'request lines name the user')
    t.match(logs, /client authentication is on but regcache serves plain HTTP/, 'the plain HTTP warning')
    t.same(JSON.parse(status).auth, { enabled: true })
  })
})
