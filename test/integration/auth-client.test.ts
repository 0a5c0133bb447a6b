// `credentials: client` end to end: a real token-auth docker-registry (alice pulls team-a/*, bob
// team-b/*, anonymous public/*) behind a TCP forwarder, regcache in front, containerd's ctr with
// --user. Cached content goes only to credentials upstream accepted for that repository: by tag,
// by digest, every blob, GET and HEAD; during an outage only to credentials accepted before; and
// not any more once upstream takes the right away. No secret in logs (trace), metrics or status.

import t, { type Test } from 'tap'
import { Agent, request } from 'undici'
import { startContainerd, writeHostsToml } from '../helpers/containerd.js'
import { startForwarder } from '../helpers/forwarder.js'
import { ALL_MANIFEST_TYPES, buildImage } from '../helpers/images.js'
import { createHttpClient, header, ociErrors, sha256, type HttpResponse } from '../helpers/http.js'
import { makeTempDir, removeTempDir, run, sleep, waitUntil } from '../helpers/proc.js'
import { startRegcache } from '../helpers/regcache.js'
import { pushWithCreds, startAuthRegistry } from '../helpers/token-registry.js'
import { startTokenServer, teamUsers } from '../helpers/token-server.js'

const UPSTREAM = 'registry.test'
const SERVICE = 'regcache-test-registry'
const ISSUER = 'regcache-test-issuer'
const DEAD = 'http://127.0.0.1:9'

const basic = (user: string, password: string) => `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`

t.test('client credentials: cached content bound to the credentials upstream accepted', async (t) => {
  const users = teamUsers()
  const ts = await startTokenServer({ issuer: ISSUER, users })
  t.teardown(ts.stop)
  const reg = await startAuthRegistry({ auth: { token: { realm: ts.realm, service: SERVICE, issuer: ISSUER, rootcertbundle: ts.certFile } } })
  t.teardown(reg.stop)
  const fwd = await startForwarder({ host: '127.0.0.1', port: Number(new URL(reg.url).port) })
  t.teardown(fwd.stop)

  const [teamA, teamB, pub, fill] = await Promise.all([
    buildImage({ layers: 2, layerSize: 32 * 1024 }),
    buildImage({ layers: 1, layerSize: 16 * 1024 }),
    buildImage({ layers: 1, layerSize: 16 * 1024 }),
    buildImage({ layers: 1, layerSize: 8 * 1024 * 1024 }),
  ])
  for (const x of [teamA, teamB, pub, fill]) t.teardown(x.remove)
  const seeder = { username: 'seeder', password: users.seeder.password }
  await pushWithCreds(teamA, reg.host, 'team-a/app:1', seeder)
  await pushWithCreds(teamB, reg.host, 'team-b/app:1', seeder)
  await pushWithCreds(pub, reg.host, 'public/app:1', seeder)
  await pushWithCreds(fill, reg.host, 'team-a/fill:1', seeder)

  const rc = await startRegcache({
    upstreams: {
      [UPSTREAM]: {
        url: fwd.url,
        credentials: 'client',
        authorization: { recheck: '2s', offline: '1h' },
        revalidate: { timeout: '2s' },
        down: { failures: 2, probeInterval: '1s' },
        timeouts: { connect: '2s', headers: '5s', body: '10s' },
      },
    },
    extra: { auth: { anonymous: true } },
    logLevel: 'trace',
  })
  t.teardown(rc.stop)

  const ctd = await startContainerd()
  t.teardown(ctd.stop)
  const hostsDir = await makeTempDir()
  t.teardown(() => removeTempDir(hostsDir))
  await writeHostsToml(hostsDir, UPSTREAM, rc.url, { server: DEAD })

  const http = createHttpClient()
  t.teardown(http.close)
  const ALICE = basic('alice', users.alice.password)
  const BOB = basic('bob', users.bob.password)
  const ALICE_WRONG = basic('alice', 'not-her-password')
  // Failed logins are throttled per client address: the password guesser gets its own loopback
  // address, so that its block does not fall on the other clients of this test.
  const guesserAgent = new Agent({ localAddress: '127.0.0.2', connect: { timeout: 5000 } })
  t.teardown(() => guesserAgent.close())
  const req = async (method: 'GET' | 'HEAD', path: string, auth?: string): Promise<HttpResponse> => {
    const url = `${rc.url}/v2/${UPSTREAM}/${path}`
    const headers = { accept: ALL_MANIFEST_TYPES, ...(auth ? { authorization: auth } : {}) }
    if (auth !== ALICE_WRONG) return http.request(method, url, { headers })
    const res = await request(url, { method, headers, dispatcher: guesserAgent })
    const body = Buffer.from(await res.body.arrayBuffer())
    return { method, url, status: res.statusCode, headers: res.headers, body }
  }
  const teamAPaths = [
    'team-a/app/manifests/1',
    `team-a/app/manifests/${teamA.manifestDigest}`,
    `team-a/app/blobs/${teamA.configDigest}`,
    ...teamA.layerDigests.map((d) => `team-a/app/blobs/${d}`),
  ]
  /** No content, no hint: an auth error (or 503), no digest header, no body beyond the OCI error. */
  const refused = (t: Test, res: HttpResponse, what: string, allowed: number[] = [401, 403]) => {
    t.ok(allowed.includes(res.status), `${what}: ${res.status} (expected one of ${allowed.join('/')})`)
    t.equal(header(res, 'docker-content-digest'), undefined, `${what}: no digest`)
    if (res.method === 'GET') t.ok(ociErrors(res)?.length, `${what}: an OCI error body`)
    if (res.status === 401) t.match(header(res, 'www-authenticate') ?? '', /^Basic realm="regcache"/, `${what}: the Basic challenge`)
  }
  const assertNoContent = async (t: Test, auth: string | undefined, who: string, allowed?: number[]) => {
    for (const path of teamAPaths) for (const method of ['GET', 'HEAD'] as const) refused(t, await req(method, path, auth), `${who} ${method} ${path}`, allowed)
  }

  await t.test('alice pulls team-a/app with ctr --user; everything is cached', async (t) => {
    const r = await ctd.pull(`${UPSTREAM}/team-a/app:1`, { hostsDir, user: `alice:${users.alice.password}` })
    t.equal(r.code, 0, r.stderr)
    t.equal(await ctd.imageDigest(`${UPSTREAM}/team-a/app:1`), teamA.manifestDigest)
    for (const d of [teamA.manifestDigest, teamA.configDigest, ...teamA.layerDigests]) t.ok(rc.storage.meta.getContent(d), `${d.slice(0, 19)} cached`)
    for (const path of teamAPaths) t.equal((await req('GET', path, ALICE)).status, 200, `alice GET ${path}`)
  })

  await t.test('one download serves every authorized client: alice and seeder ask for an uncached blob at once', async (t) => {
    const SEEDER = basic('seeder', users.seeder.password)
    const layer = fill.layerDigests[0]!
    await reg.settle()
    const before = reg.count({ method: 'GET', pathIncludes: `/blobs/${layer}` })
    const [a, s] = await Promise.all([req('GET', `team-a/fill/blobs/${layer}`, ALICE), req('GET', `team-a/fill/blobs/${layer}`, SEEDER)])
    t.equal(a.status, 200, 'alice')
    t.equal(s.status, 200, 'seeder')
    t.equal(sha256(a.body), layer, "alice's bytes hash to the digest")
    t.equal(sha256(s.body), layer, "seeder's bytes hash to the digest")
    await reg.settle()
    t.equal(reg.count({ method: 'GET', pathIncludes: `/blobs/${layer}` }) - before, 1, 'upstream sent the blob once')
    for (const m of ['GET', 'HEAD'] as const) t.equal((await req(m, `team-a/fill/blobs/${layer}`, BOB)).status, 403, `bob ${m}: 403`)
  })

  await t.test('bob, anonymous and a wrong password get nothing of team-a, although all is cached', async (t) => {
    await assertNoContent(t, BOB, 'bob', [403])
    await assertNoContent(t, undefined, 'anonymous', [401])
    await assertNoContent(t, ALICE_WRONG, 'alice with a wrong password', [401, 429])
    t.equal((await req('GET', 'team-a/app/manifests/1', ALICE_WRONG)).status, 429, 'the guessing address is throttled')
    t.equal((await req('GET', 'team-a/app/manifests/1', ALICE)).status, 200, 'others are not')
    const r = await ctd.pull(`${UPSTREAM}/team-a/app:1`, { hostsDir, user: `bob:${users.bob.password}` }).catch((e) => ({ code: -1, stderr: String(e) }))
    t.not(r.code, 0, 'ctr as bob fails')
  })

  await t.test('bob asking for a team-a blob under team-b/app gets nothing', async (t) => {
    t.equal((await req('GET', 'team-b/app/manifests/1', BOB)).status, 200, 'bob reads his own repository')
    for (const d of [teamA.configDigest, ...teamA.layerDigests]) {
      for (const method of ['GET', 'HEAD'] as const) {
        const res = await req(method, `team-b/app/blobs/${d}`, BOB)
        t.not(res.status, 200, `${method} team-b/app/blobs/${d.slice(0, 19)}: ${res.status}`)
        t.equal(header(res, 'docker-content-digest'), undefined)
      }
    }
    for (const method of ['GET', 'HEAD'] as const) t.not((await req(method, `team-b/app/manifests/${teamA.manifestDigest}`, BOB)).status, 200, `${method} team-a's manifest under team-b/app`)
  })

  await t.test('anonymous pulls public/app; alice and bob may too', async (t) => {
    const r = await ctd.pull(`${UPSTREAM}/public/app:1`, { hostsDir })
    t.equal(r.code, 0, r.stderr)
    t.equal((await req('GET', 'public/app/manifests/1', BOB)).status, 200, 'bob reads public/app')
    t.equal((await req('GET', `public/app/blobs/${pub.layerDigests[0]}`, ALICE)).status, 200, 'alice reads a public blob')
  })

  await t.test('past recheck, one token request for many concurrent requests of the same credentials', async (t) => {
    await sleep(2500)
    const before = ts.requests.length
    const results = await Promise.all(Array.from({ length: 20 }, (_, i) => req('GET', `team-a/app/blobs/${teamA.layerDigests[i % teamA.layerDigests.length]}`, ALICE)))
    t.ok(results.every((r) => r.status === 200), 'all served from cache')
    const asked = ts.requests.slice(before).filter((r) => r.user === 'alice')
    t.equal(asked.length, 1, `one token request for alice: ${JSON.stringify(asked.map((r) => r.scopes))}`)
  })

  await t.test('skopeo --creds through the path prefix: GET /v2/ asks for credentials, upstream judges them', async (t) => {
    const inspect = (repo: string, creds?: string) =>
      run('skopeo', ['inspect', '--raw', '--tls-verify=false', '--retry-times', '0', ...(creds ? ['--creds', creds] : ['--no-creds']), `docker://${rc.host}/${UPSTREAM}/${repo}:1`], { timeoutMs: 60_000 })
    const probe = await http.get(`${rc.url}/v2/`)
    t.equal(probe.status, 401, 'GET /v2/ without credentials: 401, so that containers/image sends them')
    const alice = await inspect('team-a/app', `alice:${users.alice.password}`)
    t.equal(alice.code, 0, alice.stderr)
    t.equal(JSON.parse(alice.stdout || '{}').config?.digest, teamA.configDigest, 'alice reads team-a/app')
    t.not((await inspect('team-a/app', `bob:${users.bob.password}`)).code, 0, 'bob does not')
    t.equal((await inspect('public/app')).code, 0, 'anonymous reads public/app')
  })

  await t.test('outage: alice still pulls from cache; bob, anonymous and a wrong password get nothing', async (t) => {
    for (const mode of ['refuse', 'hang'] as const) {
      await fwd.setMode(mode, { dropExisting: true })
      // Past `recheck`: upstream must be asked (and cannot answer) before anything is served.
      await sleep(2500)
      await ctd.removeAllContent()
      const r = await ctd.pull(`${UPSTREAM}/team-a/app:1`, { hostsDir, user: `alice:${users.alice.password}`, timeoutMs: 120_000 })
      t.equal(r.code, 0, `${mode}: ctr as alice pulls from cache: ${r.stderr}`)
      for (const path of teamAPaths) t.equal((await req('GET', path, ALICE)).status, 200, `${mode}: alice GET ${path}`)
      await assertNoContent(t, BOB, `${mode}: bob`, [401, 403, 503])
      await assertNoContent(t, undefined, `${mode}: anonymous`, [401, 503])
      await assertNoContent(t, ALICE_WRONG, `${mode}: alice with a wrong password`, [401, 429, 503])
    }
    await fwd.setMode('pass', { dropExisting: true })
    await waitUntil('upstream up again', async () => rc.server.mirror.upstreamState(UPSTREAM) === 'up', { timeoutMs: 60_000 })
  })

  await t.test('revocation: alice loses her rights upstream; after recheck she gets no manifest and no blob', async (t) => {
    t.equal((await req('GET', 'team-a/app/manifests/1', ALICE)).status, 200, 'alice before')
    ts.setRights('alice', { pull: [] })
    await sleep(2500)
    await assertNoContent(t, ALICE, 'alice after revocation', [403])
    ts.setRights('alice', { pull: ['team-a/*'] })
  })

  await t.test('no password, token or Authorization value in logs (trace), /metrics, /api/status or the status page', async (t) => {
    const logs = JSON.stringify(await rc.logs())
    const metrics = (await http.get(`${rc.url}/metrics`)).body.toString()
    const status = (await http.get(`${rc.url}/api/status`)).body.toString()
    const page = (await http.get(`${rc.url}/`)).body.toString()
    const secrets = [users.alice.password, users.bob.password, 'not-her-password', ALICE, BOB, ALICE_WRONG].map((s) => s.replace(/^Basic /, ''))
    const tokens = ts.tokens()
    t.ok(tokens.length > 0, 'tokens were issued')
    for (const [name, text] of Object.entries({ logs, metrics, status, page })) {
      for (const s of secrets) t.notOk(text.includes(s), `${name}: no credential`)
      t.notOk(tokens.some((tok) => text.includes(tok) || text.includes(tok.split('.')[2] ?? tok)), `${name}: no token`)
    }
    const s = JSON.parse(status) as { auth: { enabled: boolean }; upstreams: { name: string; credentials: string }[] }
    t.same(s.auth, { enabled: true })
    t.equal(s.upstreams.find((u) => u.name === UPSTREAM)?.credentials, 'client')
    t.ok(logs.includes('"user":"alice"'), 'the request log names the user')
    t.ok((await rc.metric('regcache_auth_failures_total')) > 0, 'failed attempts counted')
  })
})
