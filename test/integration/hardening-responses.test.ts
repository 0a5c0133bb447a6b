// What regcache answers, whoever asks (docs/protocol.md#responses): a real docker-registry behind
// it, plus a small upstream that labels a manifest text/html. Every response carries
// `X-Content-Type-Options: nosniff`; manifests go out only as manifest types; tags/list and
// referrers with their own types; every error, down to the HTTP parser's 431 and 400, as an OCI
// error body. Spec conformance: a reference that is neither tag nor digest is 404
// MANIFEST_UNKNOWN, a malformed digest 400 DIGEST_INVALID, an invalid Range ignored; and
// /api/history refuses a repeated parameter.

import { createHash } from 'node:crypto'
import http from 'node:http'
import { connect } from 'node:net'
import t from 'tap'
import { ALL_MANIFEST_TYPES, MT, buildImage, pushImage } from '../helpers/images.js'
import { createHttpClient, header, ociErrors, type HttpResponse } from '../helpers/http.js'
import { freePort } from '../helpers/ports.js'
import { startRegcache } from '../helpers/regcache.js'
import { startRegistry } from '../helpers/registry.js'

/** A raw request, for what no HTTP client will send (oversized headers, a broken request line). */
function rawRequest(port: number, text: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1')
    let out = ''
    socket.on('data', (c) => (out += c.toString('latin1')))
    socket.on('error', (err) => (out !== '' ? resolve(out) : reject(err)))
    socket.on('close', () => resolve(out))
    socket.write(text)
  })
}

function rawBody(response: string): unknown {
  return JSON.parse(response.slice(response.indexOf('\r\n\r\n') + 4))
}

t.test('responses and spec conformance', async (t) => {
  const reg = await startRegistry()
  t.teardown(reg.stop)
  const img = await buildImage({ layers: 1, layerSize: 8 * 1024 })
  t.teardown(img.remove)
  await pushImage(img, reg.host, 'app/web:1')

  // An upstream whose manifest says it is HTML, in its header and its body.
  const htmlManifest = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: 'text/html', config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: img.configDigest, size: 2 }, layers: [] }))
  const htmlDigest = 'sha256:' + createHash('sha256').update(htmlManifest).digest('hex')
  const notManifest = Buffer.from('{"schemaVersion":2,"mediaType":"text/html","html":"<script>alert(1)</script>"}')
  const odd = http.createServer((req, res) => {
    req.resume()
    if (req.url === '/v2/') return res.writeHead(200, { 'content-type': 'application/json' }).end('{}')
    const pageDigest = 'sha256:' + createHash('sha256').update(notManifest).digest('hex')
    const body =
      req.url?.endsWith('/manifests/html') || req.url?.endsWith(`/manifests/${htmlDigest}`)
        ? htmlManifest
        : req.url?.endsWith('/manifests/page') || req.url?.endsWith(`/manifests/${pageDigest}`)
          ? notManifest
          : undefined
    if (!body) return res.writeHead(404, { 'content-type': 'text/html' }).end('<html>nope</html>')
    const digest = 'sha256:' + createHash('sha256').update(body).digest('hex')
    res.writeHead(200, { 'content-type': 'text/html', 'content-length': body.length, 'docker-content-digest': digest })
    res.end(req.method === 'HEAD' ? undefined : body)
  })
  const oddPort = await freePort()
  await new Promise<void>((r) => odd.listen(oddPort, '127.0.0.1', () => r()))
  t.teardown(() => new Promise<void>((r) => odd.close(() => r())))

  const rc = await startRegcache({ upstreams: { 'registry.test': { url: reg.url }, 'odd.test': { url: `http://127.0.0.1:${oddPort}` } } })
  t.teardown(rc.stop)
  const port = Number(new URL(rc.url).port)
  const client = createHttpClient()
  t.teardown(client.close)
  const get = (path: string, headers: Record<string, string> = {}) => client.get(rc.url + path, headers)
  const head = (path: string, headers: Record<string, string> = {}) => client.head(rc.url + path, headers)
  const nosniff = (res: HttpResponse, what: string) => t.equal(header(res, 'x-content-type-options'), 'nosniff', `${what}: nosniff`)
  const ociError = (res: HttpResponse, status: number, code: string, what: string) => {
    t.equal(res.status, status, `${what}: ${status}`)
    nosniff(res, what)
    if (res.body.length > 0) {
      t.equal(header(res, 'content-type'), 'application/json', `${what}: JSON`)
      t.equal(ociErrors(res)?.[0]?.code, code, `${what}: ${code}`)
    }
  }

  t.test('item 7: content types and nosniff', async (t) => {
    const m = await get('/v2/app/web/manifests/1', { accept: ALL_MANIFEST_TYPES })
    t.equal(m.status, 200)
    nosniff(m, 'manifest')
    t.equal(header(m, 'content-type'), MT.ociManifest)
    const b = await get(`/v2/app/web/blobs/${img.layerDigests[0]}`)
    t.equal(b.status, 200)
    nosniff(b, 'blob')
    const tags = await get('/v2/app/web/tags/list')
    t.equal(tags.status, 200)
    t.equal(header(tags, 'content-type'), 'application/json', 'tags/list is application/json')
    nosniff(tags, 'tags/list')
    for (const path of ['/', '/healthz', '/metrics', '/api/status', '/v2/']) nosniff(await get(path), path)

    const html = await get('/v2/app/x/manifests/html?ns=odd.test', { accept: ALL_MANIFEST_TYPES })
    t.equal(html.status, 200, 'a manifest labelled text/html is served')
    t.equal(header(html, 'content-type'), MT.ociManifest, 'as the manifest type its structure says, never text/html')
    t.equal(html.body.toString(), htmlManifest.toString(), 'byte for byte')
    const byDigest = await head(`/v2/app/x/manifests/${htmlDigest}?ns=odd.test`, { accept: ALL_MANIFEST_TYPES })
    t.equal(header(byDigest, 'content-type'), MT.ociManifest, 'by digest too')
    const page = await get('/v2/app/x/manifests/page?ns=odd.test', { accept: ALL_MANIFEST_TYPES })
    // An unusable upstream answer on a tag is treated like any upstream failure (stale or 503).
    t.ok(page.status === 502 || page.status === 503, `something that is no manifest at all is refused (${page.status})`)
    t.ok(['UPSTREAM_ERROR', 'UNAVAILABLE'].includes(String(ociErrors(page)?.[0]?.code)), 'as an OCI error')
    t.equal(header(page, 'content-type'), 'application/json')
    t.notMatch(page.body.toString(), /<script>/)
  })

  t.test('item 7: every error body is an OCI error', async (t) => {
    ociError(await get('/no/such/route'), 404, 'NOT_FOUND', 'unknown route')
    ociError(await client.request('POST', rc.url + '/nowhere'), 404, 'NOT_FOUND', 'unknown route, POST')
    ociError(await get('/v2/app/web/blobs/uploads/'), 405, 'UNSUPPORTED', 'upload')
    ociError(await get('/v2/app/web/manifests/%zz'), 400, 'REQUEST_INVALID', 'a URL that does not decode')
    const big = await rawRequest(port, `GET /v2/ HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(64 * 1024)}\r\n\r\n`)
    t.match(big, /^HTTP\/1\.1 431 /, 'oversized headers: 431')
    t.match(big, /content-type: application\/json/i)
    t.match(big, /x-content-type-options: nosniff/i)
    t.strictSame((rawBody(big) as { errors: { code: string }[] }).errors[0].code, 'HEADERS_TOO_LARGE')
    const broken = await rawRequest(port, 'THIS IS NOT HTTP\r\n\r\n')
    t.match(broken, /^HTTP\/1\.1 400 /, 'a broken request line: 400')
    t.strictSame((rawBody(broken) as { errors: { code: string }[] }).errors[0].code, 'REQUEST_INVALID')
  })

  t.test('item 9: /api/history with a repeated parameter is 400', async (t) => {
    const once = await get('/api/history?image=registry.test/app/web:1')
    t.equal(once.status, 200, 'once: answered')
    ociError(await get('/api/history?image=registry.test/app/web:1&image=registry.test/app/web:2'), 400, 'NAME_INVALID', 'image given twice')
    ociError(await get('/api/history'), 400, 'NAME_INVALID', 'image missing')
  })

  t.test('item 8: references, digests and ranges', async (t) => {
    for (const ref of ['.INVALID_MANIFEST_NAME', '-bad', 'a'.repeat(129), 'sp%20ace']) {
      ociError(await get(`/v2/app/web/manifests/${ref}`, { accept: ALL_MANIFEST_TYPES }), 404, 'MANIFEST_UNKNOWN', `GET reference ${ref.slice(0, 24)}`)
      ociError(await head(`/v2/app/web/manifests/${ref}`, { accept: ALL_MANIFEST_TYPES }), 404, 'MANIFEST_UNKNOWN', `HEAD reference ${ref.slice(0, 24)}`)
    }
    for (const d of ['sha256:nothex', 'sha256:' + 'A'.repeat(64), 'md5:' + 'a'.repeat(32)]) {
      ociError(await get(`/v2/app/web/manifests/${d}`), 400, 'DIGEST_INVALID', `manifest digest ${d.slice(0, 14)}`)
      ociError(await get(`/v2/app/web/blobs/${d}`), 400, 'DIGEST_INVALID', `blob digest ${d.slice(0, 14)}`)
    }
    const layer = img.layerDigests[0]
    const size = img.layerSizes[0]
    const invalid = await get(`/v2/app/web/blobs/${layer}`, { range: 'bytes=5-2' })
    t.equal(invalid.status, 200, 'bytes=5-2 is ignored: 200')
    t.equal(invalid.body.length, size, 'with the whole blob')
    t.equal(header(invalid, 'content-range'), undefined)
    const ok = await get(`/v2/app/web/blobs/${layer}`, { range: 'bytes=2-5' })
    t.equal(ok.status, 206, 'a valid range is still served')
    t.equal(ok.body.length, 4)
    ociError(await get(`/v2/app/web/blobs/${layer}`, { range: `bytes=${size}-` }), 416, 'SIZE_INVALID', 'a range past the end')
  })
})
