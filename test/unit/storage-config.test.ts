// The storage section of the configuration (filesystem by default, or an S3 bucket), how a
// store that cannot be reached reaches clients (503) and /readyz (a short, briefly cached check).
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { ConfigError, loadConfig } from '../../config/config.js'
import { toRegistryError } from '../../core/errors.js'
import { Metrics } from '../../core/metrics.js'
import { STORE_CHECK_CACHE_MS, STORE_CHECK_TIMEOUT_MS, StoreReadiness } from '../../core/store-readiness.js'
import { StoreUnavailableError } from '../../storage/store-unavailable.js'

function load(t: { teardown: (fn: () => void) => void }, yaml: string) {
  const dir = mkdtempSync(join(tmpdir(), 'regcache-storage-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const file = join(dir, 'config.yaml')
  writeFileSync(file, yaml)
  return { dir, load: () => loadConfig({ file, env: {} }) }
}

function problems(fn: () => unknown): string[] {
  try {
    fn()
  } catch (err) {
    if (err instanceof ConfigError) return err.problems
    throw err
  }
  return []
}

t.test('filesystem by default', async (t) => {
  t.same(loadConfig({ env: {} }).storage, { type: 'filesystem' })
})

t.test('s3 with every key; key files resolved against the config file', async (t) => {
  const c = load(
    t,
    `storage:
  type: s3
  s3:
    endpoint: http://127.0.0.1:7480
    region: eu-west-1
    bucket: regcache-test
    prefix: prod/
    forcePathStyle: true
    accessKeyFile: keys/access
    secretKeyFile: keys/secret
    redirect: true
    redirectExpiry: 2m
    leaseTtl: 10s
`,
  )
  const s = c.load().storage
  t.equal(s.type, 's3')
  if (s.type !== 's3') return
  t.same(s.s3, {
    endpoint: 'http://127.0.0.1:7480',
    region: 'eu-west-1',
    bucket: 'regcache-test',
    prefix: 'prod/',
    forcePathStyle: true,
    accessKeyFile: join(c.dir, 'keys/access'),
    secretKeyFile: join(c.dir, 'keys/secret'),
    redirect: true,
    redirectExpirySeconds: 120,
    leaseTtlMs: 10_000,
  })
})

t.test('s3 defaults', async (t) => {
  const s = load(t, 'storage: {type: s3, s3: {bucket: regcache}}\n').load().storage
  if (s.type !== 's3') return t.fail('s3 expected')
  t.match(s.s3, { region: 'us-east-1', prefix: '', forcePathStyle: false, redirect: false, redirectExpirySeconds: 60, leaseTtlMs: 30_000 })
  t.equal(s.s3.accessKeyFile, undefined)
})

t.test('each mistake named by its key', async (t) => {
  const cases: Array<[string, RegExp]> = [
    ['storage: {type: s3}\n', /^storage\.s3: expected the bucket settings/],
    ['storage: {type: gcs}\n', /^storage\.type: expected one of "filesystem", "s3"/],
    ['storage: {s3: {bucket: regcache}}\n', /^storage\.s3: set storage\.type to s3/],
    ['storage: {type: s3, s3: {bucket: Bad_Bucket}}\n', /^storage\.s3\.bucket: expected an S3 bucket name/],
    ['storage: {type: s3, s3: {bucket: regcache, prefix: prod}}\n', /^storage\.s3\.prefix: expected a key prefix ending in "\/"/],
    ['storage: {type: s3, s3: {bucket: regcache, prefix: ../x/}}\n', /^storage\.s3\.prefix/],
    ['storage: {type: s3, s3: {bucket: regcache, endpoint: "s3.example"}}\n', /^storage\.s3\.endpoint: expected an http/],
    ['storage: {type: s3, s3: {bucket: regcache, accessKeyFile: /a}}\n', /^storage\.s3: accessKeyFile and secretKeyFile go together/],
    ['storage: {type: s3, s3: {bucket: regcache, redirectExpiry: 8d}}\n', /^storage\.s3\.redirectExpiry: expected 1s to 7d/],
    ['storage: {type: s3, s3: {bucket: regcache, leaseTtl: 100ms}}\n', /^storage\.s3\.leaseTtl: expected at least 1s/],
    ['storage: {type: s3, s3: {bucket: regcache, secret: x}}\n', /^storage\.s3\.secret: unknown key/],
  ]
  for (const [yaml, want] of cases) {
    const found = problems(load(t, yaml).load)
    t.ok(found.some((p) => want.test(p)), `${yaml.trim()} -> ${found.join(' | ')}`)
  }
})

t.test('a store that cannot be reached is 503 UNAVAILABLE with Retry-After', async (t) => {
  const e = toRegistryError(new StoreUnavailableError('object store: looking up content failed: ECONNREFUSED', undefined, 'ECONNREFUSED'))
  t.equal(e.status, 503)
  t.equal(e.code, 'UNAVAILABLE')
  t.match(e.message, /content store unavailable: .*ECONNREFUSED/)
  t.equal(e.headers['retry-after'], '5')
})

t.test('readiness: a short check, its answer reused briefly, a hang reported as one', async (t) => {
  // The check's own timer does not hold the process open (a server does): this one does.
  const keepAlive = setInterval(() => {}, 1000)
  t.teardown(() => clearInterval(keepAlive))
  const metrics = new Metrics()
  let calls = 0
  let behaviour: 'ok' | 'fail' | 'hang' = 'ok'
  const store = {
    checkReady: async () => {
      calls++
      if (behaviour === 'fail') throw new StoreUnavailableError('object store: reaching bucket b failed: ECONNREFUSED')
      if (behaviour === 'hang') await new Promise(() => {})
    },
  }
  const r = new StoreReadiness(store, metrics)
  t.equal(await r.problem(), undefined)
  t.equal(await r.problem(), undefined)
  t.equal(calls, 1, 'answer reused')
  behaviour = 'fail'
  r.forget()
  t.match(await r.problem(), /ECONNREFUSED/)
  t.equal((await metrics.storeUp.get()).values[0]?.value, 0, 'regcache_store_up 0')
  behaviour = 'hang'
  await new Promise((res) => setTimeout(res, STORE_CHECK_CACHE_MS + 50))
  t.match(await r.problem(), new RegExp(`no answer within ${STORE_CHECK_TIMEOUT_MS} ms`), 'a hanging store is reported, not waited on')
  behaviour = 'ok'
  r.forget()
  t.equal(await r.problem(), undefined)
  t.equal((await metrics.storeUp.get()).values[0]?.value, 1)
  t.equal(await new StoreReadiness(undefined, metrics).problem(), undefined, 'nothing to check for the filesystem store')
})
