// Redirect mode (blobs answered with a presigned URL of the object store) behind client
// authentication, on a real Ceph RADOS Gateway: a presigned URL is a bearer ticket to the bytes,
// so it goes only to a request that would have been served the bytes themselves.
//
// - `credentials: mirror` with htpasswd users and rules: an allowed user gets a 307 whose URL
//   serves the right bytes (and ctr pulls through it with --user); a user the rules keep out, an
//   anonymous client and a wrong password get 401/403 with no Location and no URL in the body, GET
//   and HEAD, for blobs that are in the bucket.
// - `credentials: client` on a token-auth upstream: alice (rights) gets the 307; bob (no rights on
//   the repository) and anonymous get nothing, although the blobs are in the bucket; a blob asked
//   under another repository gets no URL; during an outage only credentials accepted recently
//   (within `authorization.offline`) do.
// - The URL carries none of the client's credentials, and no log line (at trace) carries the
//   URL's signature.

import { createHash } from 'node:crypto'
import { join } from 'node:path'
import { HeadObjectCommand } from '@aws-sdk/client-s3'
import t, { type Test } from 'tap'
import { Agent, request } from 'undici'
import { startContainerd, writeHostsToml } from '../helpers/containerd.js'
import { startForwarder } from '../helpers/forwarder.js'
import { ALL_MANIFEST_TYPES, buildImage, pushImage, readLayoutBlob, type OciLayout } from '../helpers/images.js'
import { makeTempDir, removeTempDir, run, sleep, waitUntil } from '../helpers/proc.js'
import { startRegcache, type Regcache } from '../helpers/regcache.js'
import { startRegistry } from '../helpers/registry.js'
import { rgwMissing, startRgw } from '../helpers/rgw.js'
import { pushWithCreds, startAuthRegistry } from '../helpers/token-registry.js'
import { startTokenServer, teamUsers } from '../helpers/token-server.js'
import { blobKey } from '../../storage/s3-keys.js'

const MIRROR_UPSTREAM = 'registry.test'
const CLIENT_UPSTREAM = 'secure.test'
const SERVICE = 'regcache-test-registry'
const ISSUER = 'regcache-test-issuer'
// containerd falls back to `server` when the mirror fails: a dead port proves the mirror served.
const DEAD = 'http://127.0.0.1:9'

const missing = await rgwMissing()
if (missing) console.error(`s3-redirect-auth.test: skipped, Ceph RADOS Gateway unavailable: ${missing}`)

const basic = (user: string, password: string) => `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`
const sha256 = (b: Buffer) => `sha256:${createHash('sha256').update(b).digest('hex')}`

interface Answer {
  method: 'GET' | 'HEAD'
  status: number
  headers: Record<string, string | string[] | undefined>
  body: Buffer
}

t.test('redirect mode hands presigned URLs only to clients allowed the blob', { skip: missing ? `Ceph RADOS Gateway unavailable: ${missing}` : false }, async (t) => {
  const rgw = await startRgw()
  t.teardown(rgw.stop)
  const s3 = rgw.client()
  t.teardown(() => s3.destroy())
  const storage = (prefix: string) => ({
    type: 's3',
    s3: {
      endpoint: rgw.endpoint,
      region: rgw.region,
      bucket: rgw.bucket,
      prefix,
      forcePathStyle: true,
      accessKeyFile: rgw.accessKeyFile,
      secretKeyFile: rgw.secretKeyFile,
      redirect: true,
      redirectExpiry: '120s',
    },
  })
  const inBucket = (prefix: string, digest: string) =>
    s3.send(new HeadObjectCommand({ Bucket: rgw.bucket, Key: blobKey(prefix, digest) })).then(
      () => true,
      () => false,
    )

  const agent = new Agent({ keepAliveTimeout: 2000, connect: { timeout: 5000 } })
  t.teardown(() => agent.close())
  // Failed logins are throttled per client address: wrong passwords come from their own loopback
  // address, so that the block does not fall on the other clients of this test.
  const guesserAgent = new Agent({ localAddress: '127.0.0.2', connect: { timeout: 5000 } })
  t.teardown(() => guesserAgent.close())
  /** One request that follows nothing. */
  const ask = async (method: 'GET' | 'HEAD', url: string, auth?: string, guesser = false): Promise<Answer> => {
    const res = await request(url, {
      method,
      headers: { accept: ALL_MANIFEST_TYPES, ...(auth ? { authorization: auth } : {}) },
      dispatcher: guesser ? guesserAgent : agent,
      headersTimeout: 60_000,
      bodyTimeout: 60_000,
    })
    return { method, status: res.statusCode, headers: res.headers, body: Buffer.from(await res.body.arrayBuffer()) }
  }
  /** Every presigned URL handed out, to look for their signatures in the logs afterwards. */
  const locations: string[] = []
  const storeHost = new URL(rgw.endpoint).host

  /** A 307 to the store, with none of `clientSecrets` in the URL; the URL serves exactly the blob. */
  const assertRedirect = async (t: Test, res: Answer, digest: string, bytes: Buffer, clientSecrets: string[], what: string) => {
    t.equal(res.status, 307, `${what}: 307`)
    const location = res.headers.location
    if (typeof location !== 'string') {
      t.fail(`${what}: a Location header`)
      return
    }
    locations.push(location)
    t.ok(location.startsWith(`${rgw.endpoint}/`), `${what}: to the object store`)
    t.match(location, /[?&]X-Amz-Signature=[0-9a-f]+/, `${what}: a presigned URL`)
    t.equal(res.headers['cache-control'], 'no-store', `${what}: not to be cached`)
    const decoded = decodeURIComponent(location)
    for (const s of clientSecrets) t.notOk(location.includes(s) || decoded.includes(s), `${what}: the URL carries no client credential`)
    const u = new URL(location)
    t.equal(u.username, '', `${what}: no userinfo in the URL`)
    const direct = await request(location, { dispatcher: agent, headersTimeout: 60_000, bodyTimeout: 60_000 })
    const body = Buffer.from(await direct.body.arrayBuffer())
    t.equal(direct.statusCode, 200, `${what}: the store serves the URL`)
    t.ok(body.equals(bytes), `${what}: the URL serves the blob's bytes`)
    t.equal(sha256(body), digest, `${what}: which hash to the digest`)
  }
  /** Refused, and nothing in the answer points at the store. */
  const assertNoUrl = (t: Test, res: Answer, allowed: number[], what: string) => {
    t.ok(allowed.includes(res.status), `${what}: ${res.status} (expected one of ${allowed.join('/')})`)
    t.equal(res.headers.location, undefined, `${what}: no Location`)
    t.equal(res.headers['docker-content-digest'], undefined, `${what}: no digest`)
    const body = res.body.toString('utf8')
    for (const s of [storeHost, rgw.bucket, 'X-Amz', 'x-amz']) t.notOk(body.includes(s), `${what}: no URL in the body`)
  }

  /** The log file (trace) of a regcache that handed out URLs: none of their signatures, no store key, no password. */
  const assertLogsClean = async (t: Test, rc: Regcache, passwords: string[]) => {
    const lines = await rc.logs()
    t.ok(lines.some((l) => l.msg === 'request' && l.status === 307), 'the redirects are logged (without their URL)')
    const logs = JSON.stringify(lines)
    t.ok(locations.length > 0, 'URLs were handed out')
    for (const s of ['X-Amz-Signature', 'X-Amz-Credential', 'x-amz-signature', 'x-amz-credential', rgw.secretKey, rgw.accessKey]) t.notOk(logs.includes(s), `no ${s.slice(0, 16)} in the logs`)
    for (const location of locations) {
      const u = new URL(location)
      const sig = u.searchParams.get('X-Amz-Signature') ?? ''
      t.ok(sig.length > 0 && !logs.includes(sig), 'no signature in the logs')
      t.notOk(logs.includes(u.search.slice(1)), 'no query string of a URL in the logs')
    }
    for (const s of passwords) t.notOk(logs.includes(s), 'no client credential in the logs')
  }

  const ctd = await startContainerd()
  t.teardown(ctd.stop)

  await t.test('credentials: mirror with htpasswd users and rules', async (t) => {
    const reg = await startRegistry()
    t.teardown(reg.stop)
    const img = await buildImage({ layers: 2, layerSize: 200 * 1024, fill: 'random' })
    t.teardown(img.remove)
    const pushed = await pushImage(img, reg.host, 'team-a/app:1')
    const other = await buildImage({ layers: 1, layerSize: 16 * 1024 })
    t.teardown(other.remove)
    await pushImage(other, reg.host, 'team-b/app:1')

    const dir = await makeTempDir()
    t.teardown(() => removeTempDir(dir))
    const htpasswdFile = join(dir, 'htpasswd')
    for (const [i, [user, password]] of [['carol', 'carol-Pa55'], ['erin', 'erin-Pa55']].entries()) {
      const r = await run('htpasswd', ['-B', '-b', ...(i === 0 ? ['-c'] : []), htpasswdFile, user!, password!])
      t.equal(r.code, 0, r.stderr)
    }
    const PREFIX = 'mirror/'
    const rc = await startRegcache({
      upstreams: { [MIRROR_UPSTREAM]: { url: reg.url } },
      extra: {
        storage: storage(PREFIX),
        auth: {
          htpasswd: htpasswdFile,
          anonymous: false,
          rules: [
            { users: ['carol'], upstreams: [MIRROR_UPSTREAM], repositories: ['team-a/*'] },
            { users: ['*'], upstreams: ['*'], repositories: ['team-b/*'] },
          ],
        },
      },
      logLevel: 'trace',
    })
    t.teardown(rc.stop)
    const CAROL = basic('carol', 'carol-Pa55')
    const ERIN = basic('erin', 'erin-Pa55')
    const WRONG = basic('carol', 'not-her-password')
    const clientSecrets = ['carol-Pa55', 'erin-Pa55', CAROL.slice(6), ERIN.slice(6), 'carol']
    const blobUrl = (repo: string, d: string) => `${rc.url}/v2/${MIRROR_UPSTREAM}/${repo}/blobs/${d}`
    const blobs = [img.configDigest, ...img.layerDigests]

    await t.test('carol fills the cache, then gets 307s whose URLs serve the bytes', async (t) => {
      t.equal((await ask('GET', `${rc.url}/v2/${MIRROR_UPSTREAM}/team-a/app/manifests/1`, CAROL)).status, 200, 'the manifest')
      for (const d of blobs) {
        const first = await ask('GET', blobUrl('team-a/app', d), CAROL)
        t.equal(first.status, 200, `${d.slice(0, 19)}: a cold blob streams through the fill`)
        t.equal(sha256(first.body), d)
      }
      for (const d of blobs) {
        await waitUntil(`${d.slice(0, 19)} in the bucket`, () => inBucket(PREFIX, d), { timeoutMs: 60_000 })
        await assertRedirect(t, await ask('GET', blobUrl('team-a/app', d), CAROL), d, await readLayoutBlob(img, d), clientSecrets, `carol GET ${d.slice(0, 19)}`)
        const head = await ask('HEAD', blobUrl('team-a/app', d), CAROL)
        t.equal(head.status, 200, 'HEAD is answered by regcache itself')
        t.equal(head.headers.location, undefined, 'HEAD: no Location')
      }
    })

    await t.test('erin (rules), anonymous and a wrong password get no URL for blobs in the bucket', async (t) => {
      for (const d of blobs) {
        t.ok(await inBucket(PREFIX, d), `${d.slice(0, 19)} is in the bucket`)
        for (const m of ['GET', 'HEAD'] as const) {
          assertNoUrl(t, await ask(m, blobUrl('team-a/app', d), ERIN), [403], `erin ${m} ${d.slice(0, 19)}`)
          assertNoUrl(t, await ask(m, blobUrl('team-a/app', d)), [401], `anonymous ${m} ${d.slice(0, 19)}`)
          assertNoUrl(t, await ask(m, blobUrl('team-a/app', d), WRONG, true), [401], `wrong password ${m} ${d.slice(0, 19)}`)
        }
      }
    })

    await t.test('a team-a blob asked under team-b/app (which carol may read) gets no URL', async (t) => {
      for (const d of blobs) {
        for (const m of ['GET', 'HEAD'] as const) {
          for (const [who, auth] of [['carol', CAROL], ['erin', ERIN]] as const) {
            const res = await ask(m, blobUrl('team-b/app', d), auth)
            t.not(res.status, 200, `${who} ${m} team-b/app/blobs/${d.slice(0, 19)}: ${res.status}`)
            assertNoUrl(t, res, [401, 403, 404], `${who} ${m} team-b/app/blobs/${d.slice(0, 19)}`)
          }
        }
      }
    })

    await t.test('ctr --user pulls through the redirects', async (t) => {
      const hostsDir = await makeTempDir()
      t.teardown(() => removeTempDir(hostsDir))
      await writeHostsToml(hostsDir, MIRROR_UPSTREAM, rc.url, { server: DEAD })
      await ctd.removeAllContent()
      const redirects = async () => (await rc.logs()).filter((l) => l.msg === 'request' && l.status === 307)
      const before = (await redirects()).length
      const r = await ctd.pull(`${MIRROR_UPSTREAM}/team-a/app:1`, { hostsDir, user: 'carol:carol-Pa55', timeoutMs: 120_000 })
      t.equal(r.code, 0, r.stderr)
      t.equal(await ctd.imageDigest(`${MIRROR_UPSTREAM}/team-a/app:1`), pushed.digest)
      const after = await redirects()
      t.ok(after.length - before >= blobs.length, `the blobs went out as redirects (${after.length - before})`)
      t.ok(after.every((l) => l.user === 'carol'), 'every redirect went to carol')
      const refused = await ctd.pull(`${MIRROR_UPSTREAM}/team-a/app:1`, { hostsDir, user: 'erin:erin-Pa55', timeoutMs: 120_000 }).catch((e) => ({ code: -1, stderr: String(e) }))
      t.not(refused.code, 0, 'ctr as erin fails')
    })

    await t.test('no presigned signature, store key or client credential in the logs (trace)', async (t) => {
      await assertLogsClean(t, rc, clientSecrets.filter((s) => s !== 'carol').concat(WRONG.slice(6), 'not-her-password'))
    })
  })

  await t.test('credentials: client on a token-auth upstream', async (t) => {
    const users = teamUsers()
    const ts = await startTokenServer({ issuer: ISSUER, users })
    t.teardown(ts.stop)
    const reg = await startAuthRegistry({ auth: { token: { realm: ts.realm, service: SERVICE, issuer: ISSUER, rootcertbundle: ts.certFile } } })
    t.teardown(reg.stop)
    const fwd = await startForwarder({ host: '127.0.0.1', port: Number(new URL(reg.url).port) })
    t.teardown(fwd.stop)
    const [teamA, teamB] = await Promise.all([buildImage({ layers: 2, layerSize: 200 * 1024, fill: 'random' }), buildImage({ layers: 1, layerSize: 16 * 1024 })])
    t.teardown(teamA.remove)
    t.teardown(teamB.remove)
    const seeder = { username: 'seeder', password: users.seeder.password }
    await pushWithCreds(teamA, reg.host, 'team-a/app:1', seeder)
    await pushWithCreds(teamB, reg.host, 'team-b/app:1', seeder)

    const PREFIX = 'client/'
    const rc = await startRegcache({
      upstreams: {
        [CLIENT_UPSTREAM]: {
          url: fwd.url,
          credentials: 'client',
          authorization: { recheck: '2s', offline: '1h' },
          revalidate: { timeout: '2s' },
          down: { failures: 2, probeInterval: '1s' },
          timeouts: { connect: '2s', headers: '5s', body: '10s' },
        },
      },
      extra: { storage: storage(PREFIX), auth: { anonymous: true } },
      logLevel: 'trace',
    })
    t.teardown(rc.stop)
    const ALICE = basic('alice', users.alice.password)
    const BOB = basic('bob', users.bob.password)
    const WRONG = basic('alice', 'not-her-password')
    const clientSecrets = [users.alice.password, users.bob.password, ALICE.slice(6), BOB.slice(6), 'alice']
    const blobUrl = (repo: string, d: string) => `${rc.url}/v2/${CLIENT_UPSTREAM}/${repo}/blobs/${d}`
    const blobs = [teamA.configDigest, ...teamA.layerDigests]
    const bytesOf = (img: OciLayout, d: string) => readLayoutBlob(img, d)

    await t.test('alice (upstream gave her team-a) fills the cache, then gets 307s', async (t) => {
      t.equal((await ask('GET', `${rc.url}/v2/${CLIENT_UPSTREAM}/team-a/app/manifests/1`, ALICE)).status, 200, 'the manifest')
      for (const d of blobs) {
        const first = await ask('GET', blobUrl('team-a/app', d), ALICE)
        t.equal(first.status, 200, `${d.slice(0, 19)}: a cold blob streams through the fill`)
        t.equal(sha256(first.body), d)
      }
      for (const d of blobs) {
        await waitUntil(`${d.slice(0, 19)} in the bucket`, () => inBucket(PREFIX, d), { timeoutMs: 60_000 })
        await assertRedirect(t, await ask('GET', blobUrl('team-a/app', d), ALICE), d, await bytesOf(teamA, d), clientSecrets, `alice GET ${d.slice(0, 19)}`)
      }
    })

    await t.test('bob, anonymous and a wrong password get no URL, although the blobs are in the bucket', async (t) => {
      for (const d of blobs) {
        t.ok(await inBucket(PREFIX, d), `${d.slice(0, 19)} is in the bucket`)
        for (const m of ['GET', 'HEAD'] as const) {
          assertNoUrl(t, await ask(m, blobUrl('team-a/app', d), BOB), [403], `bob ${m} ${d.slice(0, 19)}`)
          assertNoUrl(t, await ask(m, blobUrl('team-a/app', d)), [401], `anonymous ${m} ${d.slice(0, 19)}`)
          assertNoUrl(t, await ask(m, blobUrl('team-a/app', d), WRONG, true), [401], `wrong password ${m} ${d.slice(0, 19)}`)
        }
      }
    })

    await t.test('a team-a blob asked under team-b/app (bob may read team-b) gets no URL', async (t) => {
      t.equal((await ask('GET', `${rc.url}/v2/${CLIENT_UPSTREAM}/team-b/app/manifests/1`, BOB)).status, 200, 'bob reads his own repository')
      for (const d of blobs) {
        for (const m of ['GET', 'HEAD'] as const) {
          const res = await ask(m, blobUrl('team-b/app', d), BOB)
          t.not(res.status, 200, `${m} team-b/app/blobs/${d.slice(0, 19)}: ${res.status}`)
          assertNoUrl(t, res, [401, 403, 404], `bob ${m} team-b/app/blobs/${d.slice(0, 19)}`)
        }
      }
    })

    await t.test('ctr --user as alice pulls through the redirects', async (t) => {
      const hostsDir = await makeTempDir()
      t.teardown(() => removeTempDir(hostsDir))
      await writeHostsToml(hostsDir, CLIENT_UPSTREAM, rc.url, { server: DEAD })
      await ctd.removeAllContent()
      const redirects = async () => (await rc.logs()).filter((l) => l.msg === 'request' && l.status === 307)
      const before = (await redirects()).length
      const r = await ctd.pull(`${CLIENT_UPSTREAM}/team-a/app:1`, { hostsDir, user: `alice:${users.alice.password}`, timeoutMs: 120_000 })
      t.equal(r.code, 0, r.stderr)
      t.equal(await ctd.imageDigest(`${CLIENT_UPSTREAM}/team-a/app:1`), teamA.manifestDigest)
      const after = await redirects()
      t.ok(after.length - before >= blobs.length, `the blobs went out as redirects (${after.length - before})`)
      t.ok(after.every((l) => l.user === 'alice'), 'every redirect went to alice')
    })

    await t.test('outage: only credentials upstream accepted recently get a URL', async (t) => {
      await fwd.setMode('refuse', { dropExisting: true })
      // Past `recheck`: upstream must be asked (and cannot answer) before anything is served.
      await sleep(2500)
      for (const d of blobs) {
        await assertRedirect(t, await ask('GET', blobUrl('team-a/app', d), ALICE), d, await bytesOf(teamA, d), clientSecrets, `outage: alice GET ${d.slice(0, 19)}`)
        for (const m of ['GET', 'HEAD'] as const) {
          assertNoUrl(t, await ask(m, blobUrl('team-a/app', d), BOB), [401, 403, 503], `outage: bob ${m} ${d.slice(0, 19)}`)
          assertNoUrl(t, await ask(m, blobUrl('team-a/app', d)), [401, 503], `outage: anonymous ${m} ${d.slice(0, 19)}`)
          assertNoUrl(t, await ask(m, blobUrl('team-a/app', d), WRONG, true), [401, 429, 503], `outage: wrong password ${m} ${d.slice(0, 19)}`)
          assertNoUrl(t, await ask(m, blobUrl('team-b/app', d), BOB), [401, 403, 404, 503], `outage: bob ${m} team-b/app/blobs/${d.slice(0, 19)}`)
        }
      }
      t.equal(rc.server.mirror.upstreamState(CLIENT_UPSTREAM), 'down', 'upstream is down meanwhile')
      await fwd.setMode('pass', { dropExisting: true })
      await waitUntil('upstream up again', async () => rc.server.mirror.upstreamState(CLIENT_UPSTREAM) === 'up', { timeoutMs: 60_000 })
    })

    await t.test('an outage longer than `offline`: then not even alice gets a URL', async (t) => {
      // A second replica on the same bucket whose offline window is short.
      const OFFLINE_MS = 15_000
      const short = await startRegcache({
        upstreams: {
          [CLIENT_UPSTREAM]: {
            url: fwd.url,
            credentials: 'client',
            authorization: { recheck: '1s', offline: `${OFFLINE_MS / 1000}s` },
            revalidate: { timeout: '2s' },
            down: { failures: 2, probeInterval: '1s' },
            timeouts: { connect: '2s', headers: '5s', body: '10s' },
          },
        },
        extra: { storage: storage(PREFIX), auth: { anonymous: true } },
        logLevel: 'trace',
      })
      t.teardown(short.stop)
      const url = (d: string) => `${short.url}/v2/${CLIENT_UPSTREAM}/team-a/app/blobs/${d}`
      const d = teamA.layerDigests[0]!
      t.equal((await ask('GET', `${short.url}/v2/${CLIENT_UPSTREAM}/team-a/app/manifests/1`, ALICE)).status, 200, 'the manifest')
      await sleep(1200)
      // Past `recheck`: this request has upstream accept alice again, the last time before the outage.
      await assertRedirect(t, await ask('GET', url(d), ALICE), d, await bytesOf(teamA, d), clientSecrets, 'alice before the outage')
      const acceptedAt = Date.now()
      await fwd.setMode('refuse', { dropExisting: true })
      await sleep(1500)
      await assertRedirect(t, await ask('GET', url(d), ALICE), d, await bytesOf(teamA, d), clientSecrets, 'alice early in the outage')
      await sleep(Math.max(0, acceptedAt + OFFLINE_MS + 1000 - Date.now()))
      for (const m of ['GET', 'HEAD'] as const) assertNoUrl(t, await ask(m, url(d), ALICE), [401, 403, 503], `alice ${m} past the offline window`)
      await assertLogsClean(t, short, clientSecrets.filter((s) => s !== 'alice'))
      await fwd.setMode('pass', { dropExisting: true })
    })

    await t.test('no presigned signature, store key, token or client credential in the logs (trace)', async (t) => {
      await assertLogsClean(t, rc, clientSecrets.filter((s) => s !== 'alice').concat(WRONG.slice(6), 'not-her-password'))
      const logs = JSON.stringify(await rc.logs())
      const tokens = ts.tokens()
      t.ok(tokens.length > 0, 'tokens were issued')
      t.notOk(tokens.some((tok) => logs.includes(tok) || logs.includes(tok.split('.')[2] ?? tok)), 'no upstream token in the logs')
    })
  })
})
