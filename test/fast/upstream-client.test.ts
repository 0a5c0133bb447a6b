// UpstreamClient and its TokenCache against the in-process registry: the token dance, token
// reuse and renewal, shared token requests, Basic auth, redirects, classified failures and
// rate-limit headers.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t, { type Test } from 'tap'
import { UpstreamClient, type UpstreamResponse } from '../../upstream/client.js'
import { UpstreamUnreachableError } from '../../upstream/errors.js'
import { testUpstreamConfig } from './app.js'
import { FakeRegistry, type FakeRegistryOptions } from './fake-registry.js'

async function setup(t: Test, opts: FakeRegistryOptions = {}, upstream: Record<string, unknown> = {}) {
  const registry = await FakeRegistry.start(opts)
  t.teardown(() => registry.close())
  const config = testUpstreamConfig(t, registry.url, upstream)
  const client = new UpstreamClient(config)
  t.teardown(() => client.destroy())
  return { registry, client }
}

async function text(res: UpstreamResponse): Promise<string> {
  const chunks: Buffer[] = []
  for await (const c of res.body) chunks.push(c as Buffer)
  return Buffer.concat(chunks).toString()
}

const blobGet = (digest: string) => ({ method: 'GET' as const, repository: 'app', path: `blobs/${digest}` })

t.test('bearer: one challenge, one token, then the token is reused for the same scope', async (t) => {
  const { registry, client } = await setup(t, { auth: 'bearer' })
  const blob = registry.randomBlob('app', 100)
  const first = await client.request(blobGet(blob.digest))
  t.equal(first.status, 200)
  await first.body.dump()
  t.equal(registry.count('GET', 'token'), 1, 'one token request')
  t.equal(registry.count('GET', 'blob'), 2, 'the challenged request and its retry')
  registry.resetCounts()
  for (let i = 0; i < 3; i++) await (await client.request(blobGet(blob.digest))).body.dump()
  t.equal(registry.count('GET', 'token'), 0, 'no new token')
  t.equal(registry.count('GET', 'blob'), 3, 'no challenge: the cached token is sent up front')
})

t.test('bearer: a new scope gets its own token without a first challenge', async (t) => {
  const { registry, client } = await setup(t, { auth: 'bearer' })
  const a = registry.randomBlob('a', 10)
  const b = registry.randomBlob('b', 10)
  await (await client.request({ ...blobGet(a.digest), repository: 'a' })).body.dump()
  registry.resetCounts()
  const res = await client.request({ ...blobGet(b.digest), repository: 'b' })
  t.equal(res.status, 200)
  await res.body.dump()
  t.equal(registry.count('GET', 'token'), 1)
  t.ok(registry.count('GET', 'blob') >= 1 && registry.count('GET', 'blob') <= 2)
})

t.test('bearer: concurrent requests share one token request', async (t) => {
  const { registry, client } = await setup(t, { auth: 'bearer' })
  const blob = registry.randomBlob('app', 10)
  const results = await Promise.all(Array.from({ length: 8 }, () => client.request(blobGet(blob.digest))))
  for (const r of results) {
    t.equal(r.status, 200)
    await r.body.dump()
  }
  t.equal(registry.count('GET', 'token'), 1)
})

t.test('bearer: an expired token is renewed', async (t) => {
  // A 1 s token is renewed a quarter of its life early: after 0.8 s it must not be sent.
  const { registry, client } = await setup(t, { auth: 'bearer', tokenSeconds: 1 })
  const blob = registry.randomBlob('app', 10)
  await (await client.request(blobGet(blob.digest))).body.dump()
  await new Promise((r) => setTimeout(r, 800))
  registry.resetCounts()
  const res = await client.request(blobGet(blob.digest))
  t.equal(res.status, 200)
  await res.body.dump()
  t.equal(registry.count('GET', 'token'), 1, 'a fresh token')
})

t.test('bearer: the token endpoint refusing is passed on as the 401; failing is an outage', async (t) => {
  for (const [status, expect] of [
    [403, 'passed'],
    [500, 'unreachable'],
    [429, 'unreachable'],
  ] as const) {
    await t.test(`token endpoint ${status}`, async (t) => {
      const { registry, client } = await setup(t, { auth: 'bearer' })
      const blob = registry.randomBlob('app', 10)
      registry.fail({ kind: 'token' }, { status })
      if (expect === 'passed') {
        const res = await client.request(blobGet(blob.digest))
        t.equal(res.status, 401)
        await res.body.dump()
      } else {
        const err = await client.request(blobGet(blob.digest)).catch((e: unknown) => e)
        t.type(err, UpstreamUnreachableError)
      }
    })
  }
})

t.test('basic: credentials sent after the challenge; without them the 401 is passed on', async (t) => {
  const { registry, client } = await setup(t, { auth: 'basic', user: { username: 'u', password: 'p' } })
  const blob = registry.randomBlob('app', 10)
  const dir = mkdtempSync(join(tmpdir(), 'regcache-fast-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  writeFileSync(join(dir, 'password'), 'p\n')
  const authed = new UpstreamClient(testUpstreamConfig(t, registry.url, { username: 'u', passwordFile: join(dir, 'password') }))
  t.teardown(() => authed.destroy())
  const ok = await authed.request(blobGet(blob.digest))
  t.equal(ok.status, 200)
  await ok.body.dump()
  const anon = await client.request(blobGet(blob.digest))
  t.equal(anon.status, 401)
  await anon.body.dump()
})

t.test('redirects for blobs are followed', async (t) => {
  const { registry, client } = await setup(t)
  const blob = registry.randomBlob('app', 300)
  registry.fail({ kind: 'blob', method: 'GET' }, { redirect: true })
  const res = await client.request(blobGet(blob.digest))
  t.equal(res.status, 200)
  t.equal((await text(res)).length > 0, true)
  t.equal(registry.count('GET', 'redirected-blob'), 1)
})

t.test('transport failures are classified', async (t) => {
  const cases: { name: string; arrange: (r: FakeRegistry) => Promise<void> | void; failure: string }[] = [
    { name: 'refused', arrange: (r) => r.refuse(), failure: 'refused' },
    { name: 'reset', arrange: (r) => r.fail({}, { reset: true }), failure: 'reset' },
    { name: 'hang (no headers)', arrange: (r) => r.fail({}, { hang: true }), failure: 'timeout' },
  ]
  for (const c of cases) {
    await t.test(c.name, async (t) => {
      const { registry, client } = await setup(t, {}, { timeouts: { connect: '1s', headers: '300ms', body: '300ms' } })
      const blob = registry.randomBlob('app', 10)
      await c.arrange(registry)
      const err = await client.request(blobGet(blob.digest)).then(
        () => undefined,
        (e: unknown) => e,
      )
      t.type(err, UpstreamUnreachableError)
      t.equal((err as UpstreamUnreachableError).failure, c.failure)
    })
  }
})

t.test('an aborted signal is a timeout', async (t) => {
  const { registry, client } = await setup(t)
  const blob = registry.randomBlob('app', 10)
  registry.fail({}, { hang: true })
  const err = await client.request({ ...blobGet(blob.digest), signal: AbortSignal.timeout(100) }).catch((e: unknown) => e)
  t.type(err, UpstreamUnreachableError)
  t.equal((err as UpstreamUnreachableError).failure, 'timeout')
})

t.test('rate-limit headers are recorded', async (t) => {
  const { registry, client } = await setup(t)
  const blob = registry.randomBlob('app', 10)
  t.equal(client.rateLimit, undefined)
  registry.fail({ times: 1 }, { headers: { 'ratelimit-limit': '100;w=21600', 'ratelimit-remaining': '42;w=21600' } })
  await (await client.request(blobGet(blob.digest))).body.dump()
  t.equal(client.rateLimit?.limit, '100;w=21600')
  t.equal(client.rateLimit?.remaining, '42;w=21600')
})

t.test('a path prefix in the upstream URL prefixes repository names', async (t) => {
  const { registry } = await setup(t)
  const blob = registry.randomBlob('mirror/app', 10)
  const client = new UpstreamClient(testUpstreamConfig(t, `${registry.url}/mirror`))
  t.teardown(() => client.destroy())
  const res = await client.request(blobGet(blob.digest))
  t.equal(res.status, 200)
  await res.body.dump()
})
