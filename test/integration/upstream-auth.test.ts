// Upstream authentication and upstream misbehaviour (docs/protocol.md#upstream-authentication), end to end:
// 1. a real docker-registry with `auth: token:` against a token server of our own (RS256 JWTs,
//    x5c = a self-signed openssl certificate): anonymous tokens for public repositories, refusal
//    for private ones, Basic credentials on the token request when configured, token caching and
//    expiry, `access_token` instead of `token`, no secrets in the logs;
// 2. blob GETs redirected (307) from a front on 127.0.0.1 to a "CDN" on localhost: followed, no
//    Authorization on the cross-origin hop, Range forwarded on a resume, redirect never cached;
// 3. an upstream serving a different manifest than the digest asked for: nothing stored.

import { createHash, randomBytes } from 'node:crypto'
import { writeFile } from 'node:fs/promises'
import { dirname, join } from 'node:path'
import t from 'tap'
import { ALL_MANIFEST_TYPES, MT, buildImage, pushImage } from '../helpers/images.js'
import { createHttpClient, header, ociErrors, type HttpResponse } from '../helpers/http.js'
import { startBlobCdn, startInterceptingFront } from '../helpers/http-front.js'
import { makeTempDir, removeTempDir, sleep } from '../helpers/proc.js'
import { startRegcache, type Regcache } from '../helpers/regcache.js'
import { HELPER_USER_AGENT, startRegistry } from '../helpers/registry.js'
import { pushWithCreds, startAuthRegistry } from '../helpers/token-registry.js'
import { startTokenServer } from '../helpers/token-server.js'
import { Metadata } from '../../storage/metadata.js'
import { dbPath } from '../../storage/layout.js'

const UPSTREAM = 'registry.test'
const SERVICE = 'regcache-test-registry'
const ISSUER = 'regcache-test-issuer'
const ALICE = { username: 'alice', password: 'secret' }
const ALICE_BASIC = Buffer.from(`${ALICE.username}:${ALICE.password}`).toString('base64')
const PASSWORD_ENV = 'REGCACHE_TEST_UPSTREAM_PASSWORD'

const sha256 = (b: Buffer) => 'sha256:' + createHash('sha256').update(b).digest('hex')

/** Status/code pairs regcache may answer for "upstream refused these credentials". */
const isAuthRefusal = (res: HttpResponse) => {
  const code = ociErrors(res)?.[0]?.code
  return (res.status === 401 && code === 'UNAUTHORIZED') || (res.status === 403 && code === 'DENIED')
}

t.test('upstream authentication, redirects and a lying upstream', async (t) => {
  const t0 = Date.now()
  const root = t

  // ---- token-auth registry, token server, images --------------------------------------------
  const ts = await startTokenServer({ issuer: ISSUER, users: { [ALICE.username]: ALICE.password } })
  t.teardown(ts.stop)
  const [reg, reg2] = await Promise.all([
    startAuthRegistry({ auth: { token: { realm: ts.realm, service: SERVICE, issuer: ISSUER, rootcertbundle: ts.certFile } } }),
    startRegistry({ auth: ALICE }),
  ])
  t.teardown(reg.stop)
  t.teardown(reg2.stop)

  const [pub, priv, redir, lieA, lieB] = await Promise.all([
    buildImage({ layers: 2, layerSize: 16 * 1024 }),
    buildImage({ layers: 1, layerSize: 16 * 1024 }),
    buildImage({ layers: 2, layerSize: 256 * 1024 }),
    buildImage({ layers: 1, layerSize: 4 * 1024 }),
    buildImage({ layers: 1, layerSize: 4 * 1024 }),
  ])
  for (const x of [pub, priv, redir, lieA, lieB]) t.teardown(x.remove)
  await Promise.all([
    pushWithCreds(pub, reg.host, 'public/app:1', ALICE),
    pushWithCreds(priv, reg.host, 'private/app:1', ALICE),
    pushImage(redir, reg2.host, 'redir/app:1', { auth: ALICE }),
    (async () => {
      await pushImage(lieA, reg2.host, 'liar/app:1', { auth: ALICE })
      await pushImage(lieB, reg2.host, 'liar/app:2', { auth: ALICE })
    })(),
  ])
  t.ok(ts.requests.some((r) => r.basic && r.user === 'alice' && r.scopes.some((s) => s.includes('push'))), 'skopeo seeded through the token server with credentials')

  const secretsDir = await makeTempDir()
  t.teardown(() => removeTempDir(secretsDir))
  const passwordFile = join(secretsDir, 'upstream-password')
  await writeFile(passwordFile, `${ALICE.password}\n`)

  const client = createHttpClient()
  t.teardown(client.close)
  const get = (rc: Regcache, path: string, headers: Record<string, string> = {}) => client.get(rc.url + path, headers)
  const getManifest = (rc: Regcache, repo: string, ref: string) => get(rc, `/v2/${repo}/manifests/${ref}`, { accept: ALL_MANIFEST_TYPES })
  const head = (rc: Regcache, path: string) => client.head(rc.url + path, { accept: ALL_MANIFEST_TYPES })

  /** Every regcache started, for the log checks at the end. */
  const instances: Regcache[] = []
  const start = async (opts: Parameters<typeof startRegcache>[0]) => {
    const rc = await startRegcache(opts)
    instances.push(rc)
    t.teardown(rc.stop)
    return rc
  }
  const tokensSince = (mark: number) => ts.requests.slice(mark)

  t.comment(`setup took ${Date.now() - t0} ms`)

  // ---- 1. token auth ----------------------------------------------------------------------------

  const rcAnon = await start({ upstreams: { [UPSTREAM]: { url: reg.url } }, defaultUpstream: UPSTREAM })

  await t.test('1a. anonymous: a public image comes through with an anonymous pull token, then the token is reused', async (t) => {
    const mark = ts.requests.length
    const m = await getManifest(rcAnon, 'public/app', '1')
    t.equal(m.status, 200, 'public/app:1 manifest status')
    t.equal(header(m, 'docker-content-digest'), pub.manifestDigest, 'manifest digest')
    t.ok(m.body.equals(pub.manifestBytes), 'manifest bytes as pushed')
    for (const d of [pub.configDigest, ...pub.layerDigests]) {
      const b = await get(rcAnon, `/v2/public/app/blobs/${d}`)
      t.equal(b.status, 200, `blob ${d.slice(0, 19)} status`)
      t.equal(sha256(b.body), d, `blob ${d.slice(0, 19)} bytes hash to their digest`)
    }
    const reqs = tokensSince(mark)
    t.equal(reqs.length, 1, 'one token request for the whole pull')
    t.same(reqs[0]?.scopes, ['repository:public/app:pull'], 'scope from the challenge')
    t.equal(reqs[0]?.service, SERVICE, 'service from the challenge')
    t.equal(reqs[0]?.basic, false, 'anonymous: no Basic credentials on the token request')
    t.same(reqs[0]?.granted, [{ type: 'repository', name: 'public/app', actions: ['pull'] }], 'the token granted pull')

    // Again: tag revalidation (HEAD upstream), a by-digest manifest and a cached blob.
    const m2 = await getManifest(rcAnon, 'public/app', '1')
    t.equal(m2.status, 200, 'second tag request status')
    t.equal(header(m2, 'docker-content-digest'), pub.manifestDigest, 'second tag request digest')
    const byDigest = await getManifest(rcAnon, 'public/app', pub.manifestDigest)
    t.equal(byDigest.status, 200, 'by-digest request status')
    const b2 = await get(rcAnon, `/v2/public/app/blobs/${pub.layerDigests[0]}`)
    t.equal(b2.status, 200, 'cached blob status')
    await reg.settle()
    t.ok(reg.requests().some((r) => r.method === 'HEAD' && r.path === '/v2/public/app/manifests/1' && r.status === 200), 'the tag was revalidated upstream with the token')
    t.equal(ts.requests.length - mark, 1, 'no new token request: the cached token was reused')
  })

  await t.test('1b. anonymous: a private image is refused and never cached', async (t) => {
    const mark = ts.requests.length
    const m = await getManifest(rcAnon, 'private/app', '1')
    t.ok(isAuthRefusal(m), `GET private/app:1 refused with 401 UNAUTHORIZED or 403 DENIED (got ${m.status} ${m.body.toString('utf8').slice(0, 200)})`)
    const h = await head(rcAnon, '/v2/private/app/manifests/1')
    t.ok(h.status === 401 || h.status === 403, `HEAD private/app:1 refused (got ${h.status})`)
    const byDigest = await getManifest(rcAnon, 'private/app', priv.manifestDigest)
    t.ok(isAuthRefusal(byDigest), `GET private/app@digest refused (got ${byDigest.status})`)
    const blob = await get(rcAnon, `/v2/private/app/blobs/${priv.layerDigests[0]}`)
    t.ok(isAuthRefusal(blob), `GET private blob refused (got ${blob.status})`)

    const reqs = tokensSince(mark)
    t.ok(reqs.length >= 1, 'regcache asked for a token')
    t.ok(reqs.every((r) => !r.basic), 'all anonymous')
    t.ok(reqs.some((r) => r.scopes.includes('repository:private/app:pull')), 'for repository:private/app:pull')
    t.ok(reqs.every((r) => r.granted.length === 0), 'and the token server granted nothing')

    const { meta, store } = rcAnon.storage
    for (const d of [priv.manifestDigest, priv.configDigest, ...priv.layerDigests]) {
      t.equal(meta.getContent(d), undefined, `no metadata for ${d.slice(0, 19)}`)
      t.equal(await store.size(d), undefined, `no file for ${d.slice(0, 19)}`)
    }
    t.same(meta.tagEntries(UPSTREAM, 'private/app', '1'), [], 'no tag entry')
  })

  const authDataDir = join(await makeTempDir(), 'data')
  t.teardown(() => removeTempDir(dirname(authDataDir)))
  let rcAuthLogs: Record<string, any>[] = []

  await t.test('1c. with username + passwordFile: the private image comes through, Basic on the token request', async (t) => {
    const rcAuth = await start({
      upstreams: { [UPSTREAM]: { url: reg.url, username: ALICE.username, passwordFile } },
      defaultUpstream: UPSTREAM,
      dataDir: authDataDir,
    })
    root.teardown(() => removeTempDir(dirname(rcAuth.configFile)))
    const mark = ts.requests.length
    const m = await getManifest(rcAuth, 'private/app', '1')
    t.equal(m.status, 200, 'private/app:1 manifest status')
    t.equal(header(m, 'docker-content-digest'), priv.manifestDigest, 'manifest digest')
    for (const d of [priv.configDigest, ...priv.layerDigests]) {
      const b = await get(rcAuth, `/v2/private/app/blobs/${d}`)
      t.equal(b.status, 200, `blob ${d.slice(0, 19)} status`)
      t.equal(sha256(b.body), d, `blob ${d.slice(0, 19)} bytes hash to their digest`)
    }
    const reqs = tokensSince(mark)
    t.equal(reqs.length, 1, 'one token request')
    t.same(reqs[0]?.scopes, ['repository:private/app:pull'], 'scope repository:private/app:pull')
    t.equal(reqs[0]?.service, SERVICE, 'service from the challenge')
    t.equal(reqs[0]?.basic, true, 'Basic credentials on the token request')
    t.equal(reqs[0]?.user, 'alice', 'as alice')
    t.equal(reqs[0]?.status, 200, 'accepted (right password from passwordFile)')
    t.ok(rcAuth.storage.meta.getContent(priv.manifestDigest), 'the private manifest is now in this data directory')
    rcAuthLogs = await rcAuth.logs()
    await rcAuth.stop()
  })

  await t.test('1b. anonymous instance on the data directory of the authenticated one: the tag is still refused', async (t) => {
    const rcShared = await start({ upstreams: { [UPSTREAM]: { url: reg.url } }, defaultUpstream: UPSTREAM, dataDir: authDataDir })
    root.teardown(() => removeTempDir(dirname(rcShared.configFile)))
    t.ok(rcShared.storage.meta.getContent(priv.manifestDigest), 'precondition: the private manifest is cached in the shared data directory')
    const m = await getManifest(rcShared, 'private/app', '1')
    t.ok(isAuthRefusal(m), `GET private/app:1 refused, not served from cache (got ${m.status})`)
    t.not(header(m, 'docker-content-digest'), priv.manifestDigest, 'no digest of the private manifest in the refusal')
    const h = await head(rcShared, '/v2/private/app/manifests/1')
    t.ok(h.status === 401 || h.status === 403, `HEAD private/app:1 refused (got ${h.status})`)
    // By digest, docs/behaviour.md#b1-content-by-digest-is-immutable makes content immutable and served without asking upstream;
    // report what happens rather than assert it.
    const byDigest = await getManifest(rcShared, 'private/app', priv.manifestDigest)
    const blob = await get(rcShared, `/v2/private/app/blobs/${priv.layerDigests[0]}`)
    t.comment(`observation: by-digest manifest -> ${byDigest.status} (${header(byDigest, 'x-regcache-cache') ?? '-'}), blob -> ${blob.status} (${header(blob, 'x-regcache-cache') ?? '-'})`)
  })

  await t.test('token expiry (expires_in 2 s) and an `access_token`-only response', async (t) => {
    const rcExp = await start({ upstreams: { [UPSTREAM]: { url: reg.url } }, defaultUpstream: UPSTREAM })
    ts.expiresIn = 2
    ts.style = 'access_token'
    t.teardown(() => {
      ts.expiresIn = 300
      ts.style = 'token'
    })
    const mark = ts.requests.length
    const m1 = await getManifest(rcExp, 'public/app', '1')
    t.equal(m1.status, 200, 'first request with an access_token-only token response')
    t.equal(header(m1, 'docker-content-digest'), pub.manifestDigest, 'digest')
    t.equal(ts.requests.length - mark, 1, 'one token request')
    const m2 = await getManifest(rcExp, 'public/app', '1')
    t.equal(m2.status, 200, 'second request, token still valid')
    t.equal(ts.requests.length - mark, 1, 'no new token while it is valid')
    await sleep(2200)
    const m3 = await getManifest(rcExp, 'public/app', '1')
    t.equal(m3.status, 200, 'request after expiry')
    const reqs = tokensSince(mark)
    t.equal(reqs.length, 2, 'a new token was fetched after expiry')
    t.same(reqs[1]?.scopes, ['repository:public/app:pull'], 'same scope')
    t.equal(reqs[1]?.basic, false, 'still anonymous')
  })

  // ---- 2. redirects -------------------------------------------------------------------------

  await t.test('2. blob redirects to another origin: followed, no Authorization leaked, never cached', async (t) => {
    const blobCache = new Map<string, Buffer>()
    const cdn = await startBlobCdn(async (digest) => {
      let b = blobCache.get(digest)
      if (!b) {
        const res = await fetch(`${reg2.url}/v2/redir/app/blobs/${digest}`, {
          headers: { 'user-agent': `${HELPER_USER_AGENT}/cdn`, authorization: `Basic ${ALICE_BASIC}` },
        })
        if (res.status !== 200) return undefined
        b = Buffer.from(await res.arrayBuffer())
        blobCache.set(digest, b)
      }
      return b
    })
    t.teardown(cdn.stop)
    const redirects: { digest: string; sig: string }[] = []
    const front = await startInterceptingFront({ host: '127.0.0.1', port: reg2.port }, (req, res) => {
      const m = /^\/v2\/(.+)\/blobs\/(sha256:[a-f0-9]{64})$/.exec((req.url ?? '').split('?')[0]!)
      // Unauthenticated requests go to the registry, which answers the Basic challenge.
      if (req.method !== 'GET' || !m || req.headers.authorization === undefined) return false
      const sig = randomBytes(8).toString('hex')
      redirects.push({ digest: m[2]!, sig })
      req.resume()
      res.writeHead(307, { location: `${cdn.url}/blob/${m[2]}?sig=${sig}`, 'content-length': 0 })
      res.end()
      return true
    })
    t.teardown(front.stop)

    process.env[PASSWORD_ENV] = ALICE.password
    t.teardown(() => {
      delete process.env[PASSWORD_ENV]
    })
    const rc = await start({
      upstreams: { [UPSTREAM]: { url: front.url, username: ALICE.username, passwordEnv: PASSWORD_ENV } },
      defaultUpstream: UPSTREAM,
    })
    const { store, meta } = rc.storage
    const layer = redir.layerDigests[0]!
    const cdnFor = (d: string) => cdn.requests.filter((r) => r.digest === d)
    const redirectsFor = (d: string) => redirects.filter((r) => r.digest === d)

    const m = await getManifest(rc, 'redir/app', '1')
    t.equal(m.status, 200, 'manifest through the front with Basic credentials')
    t.equal(header(m, 'docker-content-digest'), redir.manifestDigest, 'manifest digest')

    const b1 = await get(rc, `/v2/redir/app/blobs/${layer}`)
    t.equal(b1.status, 200, 'redirected blob status')
    t.equal(b1.body.length, redir.layerSizes[0], 'redirected blob length')
    t.equal(sha256(b1.body), layer, 'redirected blob hashes to its digest')
    t.equal(redirectsFor(layer).length, 1, 'the front redirected once')
    t.ok(
      front.requests.some((r) => r.method === 'GET' && r.url === `/v2/redir/app/blobs/${layer}` && r.headers.authorization === `Basic ${ALICE_BASIC}`),
      'regcache sent its Basic credentials to the front (same origin as configured)',
    )
    t.equal(cdnFor(layer).length, 1, 'the CDN served the blob once')
    t.equal(cdnFor(layer)[0]?.sig, redirectsFor(layer)[0]?.sig, 'at the URL the front gave')
    t.ok(cdn.requests.every((r) => r.headers.authorization === undefined), 'no Authorization header reached the CDN (cross-origin hop)')

    const b2 = await get(rc, `/v2/redir/app/blobs/${layer}`)
    t.equal(b2.status, 200, 'second request status')
    t.equal(sha256(b2.body), layer, 'second request bytes')
    t.equal(header(b2, 'x-regcache-cache'), 'hit', 'second request served from the cache')
    t.equal(cdnFor(layer).length, 1, 'CDN not asked again')
    t.equal(redirectsFor(layer).length, 1, 'front not asked again')

    await store.remove(layer)
    // The test's own view of the database is read-only; forgetting the blob needs a writer.
    const writer = new Metadata(dbPath(rc.dataDir))
    writer.deleteContent(layer)
    writer.close()
    const b3 = await get(rc, `/v2/redir/app/blobs/${layer}`)
    t.equal(b3.status, 200, 'after removal from the cache: status')
    t.equal(sha256(b3.body), layer, 'after removal from the cache: bytes')
    t.equal(redirectsFor(layer).length, 2, 'the front was asked again (the redirect was not cached)')
    t.equal(cdnFor(layer).length, 2, 'the CDN served it again')
    t.equal(cdnFor(layer)[1]?.sig, redirectsFor(layer)[1]?.sig, 'at the new URL the front gave, not the old one')

    // Resume: the CDN cuts the first transfer halfway; regcache resumes with Range through the front.
    const layer2 = redir.layerDigests[1]!
    const size2 = redir.layerSizes[1]!
    cdn.cutOnce.add(layer2)
    const b4 = await get(rc, `/v2/redir/app/blobs/${layer2}`)
    t.equal(b4.status, 200, 'blob cut mid-transfer: status')
    t.equal(b4.body.length, size2, 'blob cut mid-transfer: full length')
    t.equal(sha256(b4.body), layer2, 'blob cut mid-transfer: bytes hash to the digest')
    const ranged = cdnFor(layer2).filter((r) => r.headers.range !== undefined)
    t.equal(ranged.length, 1, 'one ranged request reached the CDN')
    const rm = /^bytes=(\d+)-$/.exec(String(ranged[0]?.headers.range ?? ''))
    t.ok(rm && Number(rm[1]) > 0 && Number(rm[1]) < size2, `Range forwarded across the redirect (${ranged[0]?.headers.range})`)
    t.equal(ranged[0]?.status, 206, 'the CDN answered 206')
    t.ok(cdn.requests.every((r) => r.headers.authorization === undefined), 'still no Authorization at the CDN')
    t.ok(
      front.requests.some((r) => r.url === `/v2/redir/app/blobs/${layer2}` && r.headers.range !== undefined),
      'the resume asked the front (with Range), not the old CDN URL',
    )
    const logs = await rc.logs()
    t.ok(logs.some((l) => /resum/i.test(String(l.msg))), 'the resume was logged')
  })

  // ---- 3. lying upstream ------------------------------------------------------------------------

  await t.test('3. upstream sends another manifest than the digest asked for: error, nothing stored', async (t) => {
    const digestA = lieA.manifestDigest
    const digestB = lieB.manifestDigest
    let lies = 0
    const front = await startInterceptingFront({ host: '127.0.0.1', port: reg2.port }, (req, res) => {
      if (req.method !== 'GET' || req.url !== `/v2/liar/app/manifests/${digestA}` || req.headers.authorization === undefined) return false
      lies++
      req.resume()
      res.writeHead(200, {
        'content-type': MT.ociManifest,
        'content-length': lieB.manifestBytes.length,
        'docker-content-digest': digestA,
        'docker-distribution-api-version': 'registry/2.0',
      })
      res.end(lieB.manifestBytes)
      return true
    })
    t.teardown(front.stop)
    const rc = await start({
      upstreams: { [UPSTREAM]: { url: front.url, username: ALICE.username, passwordFile } },
      defaultUpstream: UPSTREAM,
    })
    const { meta, store } = rc.storage

    const byTag = await getManifest(rc, 'liar/app', '1')
    t.ok(byTag.status >= 500 && byTag.status < 600, `by tag: 5xx (got ${byTag.status})`)
    t.ok(ociErrors(byTag), 'by tag: an OCI error body')
    t.not(header(byTag, 'docker-content-digest'), digestA, 'by tag: no digest header')
    t.ok(lies >= 1, 'the front lied')
    t.ok(
      front.requests.some((r) => r.method === 'HEAD' && r.url === '/v2/liar/app/manifests/1' && r.by === 'forward'),
      'the tag HEAD went to the registry (correct digest)',
    )
    const byDigest = await getManifest(rc, 'liar/app', digestA)
    t.ok(byDigest.status >= 500 && byDigest.status < 600, `by digest: 5xx (got ${byDigest.status})`)
    t.notOk(byDigest.body.equals(lieB.manifestBytes), 'by digest: the wrong bytes were not relayed')

    for (const [name, d] of [['A (asked for)', digestA], ['B (sent)', digestB]] as const) {
      t.equal(meta.getContent(d), undefined, `no metadata under ${name}`)
      t.equal(await store.size(d), undefined, `no file under ${name}`)
    }
    t.same(meta.tagEntries(UPSTREAM, 'liar/app', '1'), [], 'no tag entry')
    const logs = await rc.logs()
    const line = logs.find((l) => /manifest.*(not match|mismatch)|digest.*mismatch/i.test(String(l.msg)))
    t.ok(line, 'the log says the manifest did not match its digest')
    t.ok(line && JSON.stringify(line).includes(digestA), 'naming the digest asked for')
  })

  // ---- 1d. no secrets in the logs -------------------------------------------------------------

  await t.test('1d. neither the password nor any token appears in the logs', async (t) => {
    const all: Record<string, any>[] = [...rcAuthLogs]
    for (const rc of instances) all.push(...(await rc.logs()))
    t.ok(all.length > 20, `logs were written (${all.length} lines)`)
    const text = JSON.stringify(all)
    t.notOk(text.includes(ALICE.password), 'no password')
    t.notOk(text.includes(ALICE_BASIC), 'no Basic credentials')
    const tokens = ts.tokens()
    t.ok(tokens.length >= 4, `tokens were issued (${tokens.length})`)
    const leaked = tokens.filter((tok) => text.includes(tok) || text.includes(tok.split('.')[2]!))
    t.equal(leaked.length, 0, 'no token (nor token signature) in the logs')
  })

  t.comment(`total ${Date.now() - t0} ms`)
})
