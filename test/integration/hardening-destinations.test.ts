// Where regcache sends requests and credentials (docs/protocol.md#where-requests-and-credentials-go):
// 1. a real token-auth docker-registry whose realm moved to another host name: no credentials
//    there unless the upstream lists the host in tokenRealms (then they go, and the pull works);
// 2. an https upstream whose realm is plain http: the token request goes without credentials;
// 3. an upstream on localhost redirecting blob GETs into other address space (10.255.255.1,
//    169.254.169.254), to another scheme, or in a loop: refused before any connection is tried,
//    with a 502 OCI error. Everything listens on 127.0.0.1; nothing is ever sent elsewhere.

import { randomBytes } from 'node:crypto'
import { readFile, writeFile } from 'node:fs/promises'
import http from 'node:http'
import https from 'node:https'
import { join } from 'node:path'
import t from 'tap'
import { ALL_MANIFEST_TYPES, buildImage } from '../helpers/images.js'
import { createHttpClient, header, ociErrors } from '../helpers/http.js'
import { freePort } from '../helpers/ports.js'
import { makeTempDir, removeTempDir, runOk } from '../helpers/proc.js'
import { startRegcache } from '../helpers/regcache.js'
import { pushWithCreds, startAuthRegistry } from '../helpers/token-registry.js'
import { startTokenServer } from '../helpers/token-server.js'

const SERVICE = 'regcache-test-registry'
const ISSUER = 'regcache-test-issuer'
const ALICE = { username: 'alice', password: 'realm-test-secret' }
const DIGEST = 'sha256:' + 'ab'.repeat(32)

async function listenOn(server: http.Server | https.Server): Promise<number> {
  const port = await freePort()
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(port, '127.0.0.1', () => resolve())
  })
  return port
}

function stopServer(server: http.Server | https.Server): Promise<void> {
  return new Promise<void>((resolve) => {
    server.close(() => resolve())
    server.closeAllConnections()
  })
}

t.test('where requests and credentials go', async (t) => {
  const secrets = await makeTempDir()
  t.teardown(() => removeTempDir(secrets))
  const passwordFile = join(secrets, 'password')
  await writeFile(passwordFile, ALICE.password)
  const client = createHttpClient()
  t.teardown(client.close)

  t.test('1. a realm on another host name gets credentials only when listed in tokenRealms', async (t) => {
    const ts = await startTokenServer({ issuer: ISSUER, users: { [ALICE.username]: ALICE.password } })
    t.teardown(ts.stop)
    // The registry sends clients to the token server as `localhost`, while regcache reaches the
    // registry as 127.0.0.1: same machine, another host name.
    const movedRealm = `http://localhost:${ts.port}/token`
    const reg = await startAuthRegistry({ auth: { token: { realm: movedRealm, service: SERVICE, issuer: ISSUER, rootcertbundle: ts.certFile } } })
    t.teardown(reg.stop)
    const img = await buildImage({ layers: 1, layerSize: 4 * 1024 })
    t.teardown(img.remove)
    await pushWithCreds(img, reg.host, 'private/app:1', ALICE)

    const upstream = { url: reg.url, username: ALICE.username, passwordFile }
    const unlisted = await startRegcache({ upstreams: { 'registry.test': upstream } })
    t.teardown(unlisted.stop)
    const before = ts.requests.length
    for (let i = 0; i < 2; i++) {
      const res = await client.get(`${unlisted.url}/v2/private/app/manifests/1`, { accept: ALL_MANIFEST_TYPES })
      t.ok([401, 403].includes(res.status), `unlisted realm: the private manifest is refused (${res.status})`)
      t.ok(ociErrors(res), 'as an OCI error')
    }
    const asked = ts.requests.slice(before)
    t.ok(asked.length > 0, 'the realm was asked')
    t.ok(asked.every((r) => !r.basic), 'but never with credentials')
    const logs = await unlisted.logs()
    const warnings = logs.filter((l) => l.msg === 'token realm gets no credentials: asking it anonymously')
    t.equal(warnings.length, 1, 'said once in the log')
    t.equal(warnings[0]?.realm, `http://localhost:${ts.port}`)
    t.notOk(JSON.stringify(logs).includes(ALICE.password), 'the password is not in the log')
    t.notOk(JSON.stringify(logs).includes(Buffer.from(`${ALICE.username}:${ALICE.password}`).toString('base64')), 'nor its Basic encoding')

    const listed = await startRegcache({ upstreams: { 'registry.test': { ...upstream, tokenRealms: ['localhost'] } } })
    t.teardown(listed.stop)
    const mark = ts.requests.length
    const res = await client.get(`${listed.url}/v2/private/app/manifests/1`, { accept: ALL_MANIFEST_TYPES })
    t.equal(res.status, 200, 'listed realm: the private manifest is served')
    t.ok(ts.requests.slice(mark).some((r) => r.basic && r.user === ALICE.username), 'with the credentials on the token request')
  })

  t.test('2. an http realm for an https upstream gets no credentials', async (t) => {
    const dir = await makeTempDir()
    t.teardown(() => removeTempDir(dir))
    const key = join(dir, 'tls.key')
    const cert = join(dir, 'tls.crt')
    await runOk('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-sha256', '-days', '1', '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1', '-keyout', key, '-out', cert])
    const tokenAuth: (string | undefined)[] = []
    const tokens = http.createServer((req, res) => {
      req.resume()
      tokenAuth.push(req.headers.authorization)
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ token: 'anonymous-token', expires_in: 300 }))
    })
    const tokenPort = await listenOn(tokens)
    t.teardown(() => stopServer(tokens))
    const upstreamSeen: (string | undefined)[] = []
    const upstream = https.createServer({ key: await readFile(key), cert: await readFile(cert) }, (req, res) => {
      req.resume()
      upstreamSeen.push(req.headers.authorization)
      if (req.headers.authorization !== 'Bearer anonymous-token') {
        res.writeHead(401, { 'www-authenticate': `Bearer realm="http://127.0.0.1:${tokenPort}/token",service="test"`, 'content-type': 'application/json' })
        return res.end('{"errors":[{"code":"UNAUTHORIZED","message":"auth"}]}')
      }
      res.writeHead(404, { 'content-type': 'application/json' }).end('{"errors":[{"code":"MANIFEST_UNKNOWN","message":"unknown"}]}')
    })
    const upstreamPort = await listenOn(upstream)
    t.teardown(() => stopServer(upstream))
    const rc = await startRegcache({
      upstreams: { 'secure.test': { url: `https://127.0.0.1:${upstreamPort}`, caFile: cert, username: ALICE.username, passwordFile } },
    })
    t.teardown(rc.stop)
    const res = await client.get(`${rc.url}/v2/app/manifests/1`, { accept: ALL_MANIFEST_TYPES })
    t.equal(res.status, 404, 'the anonymous token was used and upstream answered')
    t.ok(tokenAuth.length > 0, 'the realm was asked')
    t.ok(tokenAuth.every((a) => a === undefined), 'without any Authorization header')
    t.ok(upstreamSeen.every((a) => a === undefined || a.startsWith('Bearer ')), 'upstream never got Basic credentials either')
  })

  t.test('3. redirects out of the upstream\'s address space are refused before connecting', async (t) => {
    const seen: string[] = []
    let target = ''
    const upstream = http.createServer((req, res) => {
      req.resume()
      seen.push(`${req.method} ${req.url}`)
      if (req.url === '/v2/') return res.writeHead(200, { 'content-type': 'application/json' }).end('{}')
      if (req.url?.startsWith('/loop')) return res.writeHead(307, { location: `/loop${randomBytes(2).toString('hex')}` }).end()
      res.writeHead(307, { location: target }).end()
    })
    const port = await listenOn(upstream)
    t.teardown(() => stopServer(upstream))
    // The upstream is named `localhost`: loopback, so redirects may stay on loopback, nowhere else.
    const rc = await startRegcache({
      upstreams: { 'local.test': { url: `http://localhost:${port}`, down: { failures: 1000 }, timeouts: { connect: '60s' } } },
    })
    t.teardown(rc.stop)
    const cases: [string, string, RegExp][] = [
      ['another private range', 'http://10.255.255.1:9/blob?X-Signature=cdn-secret', /private address/],
      ['cloud metadata (link-local)', 'http://169.254.169.254/latest/meta-data/', /link-local address/],
      ['IPv4-mapped private address', 'http://[::ffff:192.168.7.7]/blob', /private address/],
      ['a scheme other than http(s)', 'ftp://127.0.0.1/blob', /scheme ftp/],
      ['a redirect loop', `http://localhost:${port}/loop`, /more than 5 redirects/],
    ]
    for (const [why, location, reason] of cases) {
      target = location
      const res = await client.get(`${rc.url}/v2/app/blobs/${DIGEST}`)
      t.equal(res.status, 502, `${why}: 502`)
      const err = ociErrors(res)?.[0]
      t.equal(err?.code, 'UPSTREAM_ERROR', `${why}: UPSTREAM_ERROR`)
      t.match(err?.message, reason, `${why}: says why`)
      t.notMatch(err?.message, /cdn-secret/, `${why}: no query string of the refused URL in the answer`)
      t.equal(header(res, 'content-type'), 'application/json')
    }
    const logs = JSON.stringify(await rc.logs())
    t.notOk(logs.includes('cdn-secret'), 'nor in the log')
    // The 10.255.255.1 refusal came from the URL check; a connection attempt would have waited
    // for the 60 s connect timeout, so the fact that the request finished with the guard's
    // reason shows no connection was started.
    t.ok(seen.length >= cases.length, 'every case reached the upstream first')
  })
})
