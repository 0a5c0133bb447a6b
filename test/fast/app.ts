// The one place the fast tier builds a mirror and its HTTP app: a temporary data directory, a
// YAML config pointing at a FakeRegistry, short timeouts, and call counters on the stores.
// Tests use only what TestApp exposes, so a change in how the core is wired is a change here.

import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { FastifyInstance } from 'fastify'
import { pino } from 'pino'
import { stringify } from 'yaml'
import { loadConfig, type Config, type UpstreamConfig } from '../../config/config.js'
import { Mirror } from '../../core/mirror.js'
import { buildApp } from '../../server/app.js'
import { BlobStore } from '../../storage/blob-store.js'
import { Metadata } from '../../storage/metadata.js'
import { dbPath } from '../../storage/layout.js'
import { countCalls, METADATA_READS, METADATA_WRITES, STORE_METHODS, type Counted } from './counting.js'
import { FakeRegistry, type FakeRegistryOptions } from './fake-registry.js'

/** The upstream's name in every fast test: `/v2/<repo>/…` goes to it by default. */
export const UPSTREAM = 'fake.test'

interface Teardown {
  teardown(fn: () => void | Promise<void>): void
}

export interface TestConfigOptions {
  /** Upstream settings merged over the fast defaults (as in the config file). */
  upstream?: Record<string, unknown>
  /** cache.maxSize, e.g. "40KiB". */
  maxSize?: string
}

/** Fast defaults: a hanging upstream costs a test well under a second. */
function upstreamDoc(url: string, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    url,
    revalidate: { timeout: '1s' },
    down: { failures: 3, probeInterval: '100ms' },
    timeouts: { connect: '1s', headers: '2s', body: '2s' },
    ...extra,
  }
}

/** A Config loaded from a YAML file through loadConfig, as the server loads it. */
export function testConfig(t: Teardown, url: string, opts: TestConfigOptions = {}): Config {
  const dir = mkdtempSync(join(tmpdir(), 'regcache-fast-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const doc: Record<string, unknown> = {
    dataDir: join(dir, 'data'),
    logLevel: 'silent',
    defaultUpstream: UPSTREAM,
    upstreams: { [UPSTREAM]: upstreamDoc(url, opts.upstream) },
  }
  if (opts.maxSize !== undefined) doc.cache = { maxSize: opts.maxSize }
  const file = join(dir, 'config.yaml')
  writeFileSync(file, stringify(doc))
  return loadConfig({ file, env: {} })
}

/** The resolved settings of one upstream, for testing the upstream client alone. */
export function testUpstreamConfig(t: Teardown, url: string, upstream: Record<string, unknown> = {}): UpstreamConfig {
  return testConfig(t, url, { upstream }).upstreams[UPSTREAM]
}

export interface TestAppOptions extends TestConfigOptions {
  /** An upstream to use; by default a new FakeRegistry is started (and stopped at teardown). */
  registry?: FakeRegistry
  registryOptions?: FakeRegistryOptions
}

export interface TestApp {
  app: FastifyInstance
  registry: FakeRegistry
  /** The metadata store, counting calls. */
  meta: Counted<Metadata>
  /** The blob store, counting calls. */
  store: Counted<BlobStore>
  /** Runs eviction once now; the number of blobs evicted. */
  evict(): Promise<number>
  /** Digests being filled or served right now. */
  busy(): ReadonlySet<string>
  /** Whether the upstream is marked down. */
  upstreamDown(): boolean
  /** Bytes and blobs recorded in the cache. */
  totals(): { count: number; bytes: number }
  /** Waits for every blob download in progress. */
  drain(): Promise<void>
  close(): Promise<void>
}

export async function buildTestApp(t: Teardown, opts: TestAppOptions = {}): Promise<TestApp> {
  const registry = opts.registry ?? (await FakeRegistry.start(opts.registryOptions))
  const config = testConfig(t, registry.url, opts)
  const log = pino({ level: 'silent' })
  // The mirror is given its stores wrapped in call counters, as distribution's proxy tests count remote calls.
  const meta = countCalls(new Metadata(dbPath(config.dataDir)), [...METADATA_READS, ...METADATA_WRITES])
  const store = countCalls(new BlobStore(config.dataDir), STORE_METHODS)
  const mirror = await Mirror.open({ config, log, stores: { meta, store } })
  const app = buildApp({ mirror, log })
  await app.ready()
  let closed = false
  const close = async () => {
    if (closed) return
    closed = true
    await app.close()
    await mirror.drain()
    await mirror.close()
    if (!opts.registry) await registry.close()
  }
  t.teardown(close)
  return {
    app,
    registry,
    meta,
    store,
    evict: () => mirror.evictNow(),
    busy: () => mirror.busyDigests(),
    upstreamDown: () => mirror.upstreamState(UPSTREAM) === 'down',
    totals: () => meta.totals(),
    drain: () => mirror.drain(),
    close,
  }
}
