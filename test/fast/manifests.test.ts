// Manifests by tag and by digest through the HTTP routes: one HEAD to revalidate a tag, stale
// answers when upstream fails, authorization never answered from cache, 404, rollbacks and
// Accept-dependent answers. Upstream calls are counted at the fake registry.
import t from 'tap'
import { buildTestApp, type TestApp } from './app.js'
import { MT } from './fake-registry.js'

const OCI: string = MT.ociManifest
const ALL = [MT.ociManifest, MT.ociIndex, MT.dockerManifest, MT.dockerList].join(', ')

function get(a: TestApp, url: string, accept = OCI, method: 'GET' | 'HEAD' = 'GET') {
  return a.app.inject({ method, url, headers: { accept } })
}

t.test('first pull fetches; an unchanged tag is revalidated with one HEAD and no GET', async (t) => {
  const a = await buildTestApp(t)
  const img = a.registry.seedImage('app', '1')
  const first = await get(a, '/v2/app/manifests/1')
  t.equal(first.statusCode, 200)
  t.equal(first.headers['docker-content-digest'], img.digest)
  t.equal(first.headers['x-regcache-cache'], 'miss')
  t.ok(first.rawPayload.equals(img.manifests[0].bytes), 'the bytes upstream stored')
  t.equal(a.registry.count('GET', 'manifest'), 1)

  a.registry.resetCounts()
  a.store.resetCalls()
  a.meta.resetCalls()
  const again = await get(a, '/v2/app/manifests/1')
  t.equal(again.statusCode, 200)
  t.equal(again.headers['x-regcache-cache'], 'revalidated')
  t.equal(a.registry.count('HEAD', 'manifest'), 1, 'one HEAD')
  t.equal(a.registry.count('GET'), 0, 'no GET')
  t.equal(a.store.calls('put'), 0, 'nothing written')
  t.equal(a.meta.calls('putContent'), 0)

  a.registry.resetCounts()
  const byDigest = await get(a, `/v2/app/manifests/${img.digest}`)
  t.equal(byDigest.headers['x-regcache-cache'], 'hit')
  t.equal(a.registry.count(), 0, 'by digest: no upstream call at all')

  const head = await get(a, '/v2/app/manifests/1', OCI, 'HEAD')
  t.equal(head.statusCode, 200)
  t.equal(head.headers['content-length'], String(img.manifests[0].bytes.length))
  t.equal(head.rawPayload.length, 0)
})

t.test('a moved tag is fetched by its new digest', async (t) => {
  const a = await buildTestApp(t)
  a.registry.seedImage('app', '1')
  await get(a, '/v2/app/manifests/1')
  const next = a.registry.seedImage('app', '1')
  a.registry.resetCounts()
  const res = await get(a, '/v2/app/manifests/1')
  t.equal(res.headers['x-regcache-cache'], 'changed')
  t.equal(res.headers['docker-content-digest'], next.digest)
  t.equal(a.registry.count('HEAD', 'manifest'), 1)
  t.equal(a.registry.count('GET', 'manifest'), 1)
  t.match(a.registry.log, [/HEAD manifest \/v2\/app\/manifests\/1$/, new RegExp(`GET manifest /v2/app/manifests/${next.digest}$`)])
})

t.test('upstream failing: the cached manifest is served, marked stale', async (t) => {
  const cases: { name: string; reason: string; arrange: (a: TestApp) => Promise<void> | void }[] = [
    { name: 'refused', reason: 'refused', arrange: (a) => a.registry.refuse() },
    { name: 'reset', reason: 'reset', arrange: (a) => a.registry.fail({}, { reset: true }) },
    { name: '500', reason: 'server-error', arrange: (a) => a.registry.fail({}, { status: 500 }) },
    { name: '503', reason: 'server-error', arrange: (a) => a.registry.fail({}, { status: 503 }) },
    { name: '429', reason: 'rate-limited', arrange: (a) => a.registry.fail({}, { status: 429, headers: { 'retry-after': '30' } }) },
    { name: 'hang', reason: 'timeout', arrange: (a) => a.registry.fail({}, { hang: true }) },
  ]
  for (const c of cases) {
    await t.test(c.name, async (t) => {
      const a = await buildTestApp(t, { upstream: { revalidate: { timeout: '300ms' } } })
      const img = a.registry.seedImage('app', '1')
      t.equal((await get(a, '/v2/app/manifests/1')).statusCode, 200)
      await c.arrange(a)
      const res = await get(a, '/v2/app/manifests/1')
      t.equal(res.statusCode, 200)
      t.equal(res.headers['docker-content-digest'], img.digest)
      t.equal(res.headers['x-regcache-cache'], 'stale')
      t.match(String(res.headers['x-regcache-stale']), new RegExp(`reason=${c.reason}$`))
      if (c.reason === 'timeout') t.ok(a.upstreamDown(), 'one timeout marks the upstream down')
    })
  }
})

t.test('upstream failing with nothing cached: 503, or the 429 itself', async (t) => {
  for (const [status, expected] of [
    [500, 503],
    [429, 429],
  ] as const) {
    await t.test(String(status), async (t) => {
      const a = await buildTestApp(t)
      a.registry.seedImage('app', '1')
      a.registry.fail({}, { status })
      const res = await get(a, '/v2/app/manifests/1')
      t.equal(res.statusCode, expected)
      t.equal(res.json().errors[0].code, expected === 429 ? 'TOOMANYREQUESTS' : 'UNAVAILABLE')
    })
  }
})

t.test('401 and 403 are passed on, never answered from cache', async (t) => {
  for (const status of [401, 403]) {
    await t.test(String(status), async (t) => {
      const a = await buildTestApp(t)
      a.registry.seedImage('app', '1')
      await get(a, '/v2/app/manifests/1')
      a.registry.fail({ kind: 'manifest' }, { status })
      const res = await get(a, '/v2/app/manifests/1')
      t.equal(res.statusCode, status)
      t.equal(res.headers['x-regcache-cache'], undefined)
      t.equal(res.json().errors[0].code, status === 401 ? 'UNAUTHORIZED' : 'DENIED')
    })
  }
})

t.test('404: passed on, and a cached tag that upstream deleted is forgotten', async (t) => {
  const a = await buildTestApp(t)
  a.registry.seedImage('app', '1')
  const missing = await get(a, '/v2/app/manifests/nope')
  t.equal(missing.statusCode, 404)
  t.equal(missing.json().errors[0].code, 'MANIFEST_UNKNOWN')
  await get(a, '/v2/app/manifests/1')
  a.registry.deleteTag('app', '1')
  t.equal((await get(a, '/v2/app/manifests/1')).statusCode, 404)
  await a.registry.refuse()
  t.equal((await get(a, '/v2/app/manifests/1')).statusCode, 503, 'nothing left to serve stale')
})

t.test('onNotFound: serve answers a deleted tag from cache', async (t) => {
  const a = await buildTestApp(t, { upstream: { stale: { onNotFound: 'serve' } } })
  const img = a.registry.seedImage('app', '1')
  await get(a, '/v2/app/manifests/1')
  a.registry.deleteTag('app', '1')
  const res = await get(a, '/v2/app/manifests/1')
  t.equal(res.statusCode, 200)
  t.equal(res.headers['docker-content-digest'], img.digest)
  t.match(String(res.headers['x-regcache-stale']), /reason=not-found/)
})

t.test('rollback: followed by default, refused when configured', async (t) => {
  for (const onRollback of ['follow', 'refuse'] as const) {
    await t.test(onRollback, async (t) => {
      const a = await buildTestApp(t, { upstream: { onRollback } })
      const one = a.registry.seedImage('app', '1')
      await get(a, '/v2/app/manifests/1')
      const two = a.registry.seedImage('app', '1')
      await get(a, '/v2/app/manifests/1')
      a.registry.moveTag('app', '1', one.digest)
      a.registry.resetCounts()
      const res = await get(a, '/v2/app/manifests/1')
      t.equal(res.statusCode, 200)
      t.equal(res.headers['docker-content-digest'], onRollback === 'follow' ? one.digest : two.digest)
      t.equal(res.headers['x-regcache-cache'], onRollback === 'follow' ? 'changed' : 'revalidated')
      if (onRollback === 'refuse') t.equal(a.registry.count('GET', 'manifest'), 0, 'the refused digest is not fetched')
    })
  }
})

// Found here: following a tag back to a digest whose manifest is still cached GETs it again
// (Manifests.resolveTag fetches on every "fetch" decision without looking in the cache first).
t.test('a tag moving to a digest that is already cached needs no GET', async (t) => {
  const a = await buildTestApp(t)
  const one = a.registry.seedImage('app', '1')
  await get(a, '/v2/app/manifests/1')
  a.registry.seedImage('app', '1')
  await get(a, '/v2/app/manifests/1')
  a.registry.moveTag('app', '1', one.digest)
  a.registry.resetCounts()
  t.equal((await get(a, '/v2/app/manifests/1')).headers['docker-content-digest'], one.digest)
  t.equal(a.registry.count('GET', 'manifest'), 0)
})

t.test('Accept decides between an index and a platform manifest, cached apart', async (t) => {
  const a = await buildTestApp(t)
  const img = a.registry.seedImage('multi', 'latest', { platforms: ['linux/amd64', 'linux/arm64'] })
  const index = await get(a, '/v2/multi/manifests/latest', ALL)
  t.equal(index.headers['docker-content-digest'], img.digest)
  t.equal(index.headers['content-type'], MT.ociIndex)
  const single = await get(a, '/v2/multi/manifests/latest', OCI)
  t.equal(single.headers['docker-content-digest'], img.manifests[0].digest)
  t.equal(single.headers['content-type'], OCI)
  a.registry.resetCounts()
  t.equal((await get(a, '/v2/multi/manifests/latest', ALL)).headers['docker-content-digest'], img.digest)
  t.equal((await get(a, '/v2/multi/manifests/latest', OCI)).headers['docker-content-digest'], img.manifests[0].digest)
  t.equal(a.registry.count('GET'), 0)
  const child = await get(a, `/v2/multi/manifests/${img.manifests[1].digest}`, ALL)
  t.equal(child.statusCode, 200)
  t.equal(child.headers['x-regcache-cache'], 'miss', 'children of an index are fetched on demand')
})

t.test('a HEAD without Docker-Content-Digest falls back to GET', async (t) => {
  const a = await buildTestApp(t)
  const img = a.registry.seedImage('app', '1')
  a.registry.fail({ kind: 'manifest', method: 'HEAD' }, { noDigest: true })
  const res = await get(a, '/v2/app/manifests/1')
  t.equal(res.statusCode, 200)
  t.equal(res.headers['docker-content-digest'], img.digest)
  t.equal(a.registry.count('GET', 'manifest'), 1, 'the GET by tag is the content too')
})

t.test('a manifest that does not match its digest is refused and not cached', async (t) => {
  const a = await buildTestApp(t)
  const img = a.registry.seedImage('app', '1')
  a.registry.fail({ kind: 'manifest', method: 'GET', times: 1 }, { wrongBytes: true })
  const res = await get(a, `/v2/app/manifests/${img.digest}`)
  t.equal(res.statusCode, 502)
  t.equal(a.store.calls('put'), 0)
  const retry = await get(a, `/v2/app/manifests/${img.digest}`)
  t.equal(retry.statusCode, 200)
})

t.test('once upstream is marked down, tags are answered from cache without asking', async (t) => {
  const a = await buildTestApp(t, { upstream: { down: { failures: 1, probeInterval: '10s' } } })
  a.registry.seedImage('app', '1')
  await get(a, '/v2/app/manifests/1')
  a.registry.fail({}, { status: 500 })
  t.equal((await get(a, '/v2/app/manifests/1')).headers['x-regcache-cache'], 'stale')
  t.ok(a.upstreamDown())
  a.registry.resetCounts()
  const res = await get(a, '/v2/app/manifests/1')
  t.match(String(res.headers['x-regcache-stale']), /reason=down/)
  t.equal(a.registry.count(), 0)
})

t.test('concurrent requests for one tag share one revalidation', async (t) => {
  const a = await buildTestApp(t)
  a.registry.seedImage('app', '1')
  const all = await Promise.all(Array.from({ length: 6 }, () => get(a, '/v2/app/manifests/1')))
  for (const r of all) t.equal(r.statusCode, 200)
  t.equal(a.registry.count('HEAD', 'manifest'), 1)
  t.equal(a.registry.count('GET', 'manifest'), 1)
})

t.test('a manifest cached for one repository is not served to another without upstream', async (t) => {
  const a = await buildTestApp(t)
  const img = a.registry.seedImage('one', '1')
  await get(a, '/v2/one/manifests/1')
  a.registry.resetCounts()
  const other = await get(a, `/v2/two/manifests/${img.digest}`)
  t.equal(other.statusCode, 404, 'upstream has no such manifest in "two"')
  t.equal(a.registry.count('GET', 'manifest'), 1)
})
