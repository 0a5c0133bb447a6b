// The rest of the /v2/ API through the routes: the base endpoint, tags/list passed through,
// pushes refused, unknown paths, invalid names.
import t from 'tap'
import { buildTestApp } from './app.js'

t.test('the base endpoint answers without asking upstream', async (t) => {
  const a = await buildTestApp(t)
  const res = await a.app.inject({ method: 'GET', url: '/v2/' })
  t.equal(res.statusCode, 200)
  t.equal(res.headers['docker-distribution-api-version'], 'registry/2.0')
  t.same(res.json(), {})
  t.equal(a.registry.count(), 0)
})

t.test('tags/list is passed through, every time', async (t) => {
  const a = await buildTestApp(t)
  a.registry.seedImage('app', '1')
  a.registry.seedImage('app', '2')
  for (let i = 0; i < 2; i++) {
    const res = await a.app.inject({ method: 'GET', url: '/v2/app/tags/list' })
    t.equal(res.statusCode, 200)
    t.same(res.json(), { name: 'app', tags: ['1', '2'] })
  }
  t.equal(a.registry.count('GET', 'tags'), 2)
})

t.test('tags/list failures are passed on as registry errors', async (t) => {
  for (const [status, expected, code] of [
    [404, 404, 'NAME_UNKNOWN'],
    [401, 401, 'UNAUTHORIZED'],
    [500, 503, 'UNAVAILABLE'],
  ] as const) {
    await t.test(String(status), async (t) => {
      const a = await buildTestApp(t)
      a.registry.seedImage('app', '1')
      a.registry.fail({ kind: 'tags' }, { status })
      const res = await a.app.inject({ method: 'GET', url: '/v2/app/tags/list' })
      t.equal(res.statusCode, expected)
      t.equal(res.json().errors[0].code, code)
    })
  }
})

t.test('requests refused before any upstream call', async (t) => {
  const a = await buildTestApp(t)
  const cases: { method: 'GET' | 'PUT' | 'POST' | 'DELETE'; url: string; status: number; code: string }[] = [
    { method: 'PUT', url: '/v2/app/manifests/1', status: 405, code: 'UNSUPPORTED' },
    { method: 'POST', url: '/v2/app/blobs/uploads/', status: 405, code: 'UNSUPPORTED' },
    { method: 'DELETE', url: '/v2/app/manifests/1', status: 405, code: 'UNSUPPORTED' },
    { method: 'GET', url: '/v2/app/blobs/uploads/abc', status: 405, code: 'UNSUPPORTED' },
    { method: 'GET', url: '/v2/App/manifests/1', status: 400, code: 'NAME_INVALID' },
    // Neither a valid tag nor a digest: unknown, as the distribution-spec conformance suite expects.
    { method: 'GET', url: '/v2/app/manifests/-bad-', status: 404, code: 'MANIFEST_UNKNOWN' },
    { method: 'GET', url: '/v2/app/nothing/here', status: 404, code: 'NOT_FOUND' },
  ]
  for (const c of cases) {
    const res = await a.app.inject({ method: c.method, url: c.url })
    t.equal(res.statusCode, c.status, `${c.method} ${c.url}`)
    t.equal(res.json().errors[0].code, c.code, `${c.method} ${c.url}`)
  }
  t.equal(a.registry.count(), 0)
})

t.test('bearer-protected upstream: the mirror fetches its token and pulls', async (t) => {
  const a = await buildTestApp(t, { registryOptions: { auth: 'bearer' } })
  const img = a.registry.seedImage('app', '1')
  const res = await a.app.inject({ method: 'GET', url: '/v2/app/manifests/1', headers: { accept: img.mediaType } })
  t.equal(res.statusCode, 200)
  const layer = img.manifests[0].layers[0]
  const b = await a.app.inject({ method: 'GET', url: `/v2/app/blobs/${layer.digest}` })
  t.ok(b.rawPayload.equals(layer.bytes))
  t.equal(a.registry.count('GET', 'token'), 1, 'one token for the repository')
})
