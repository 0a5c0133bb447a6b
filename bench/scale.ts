// `npm run bench -- --scale`: what a large cache costs. The metadata is filled through the
// storage layer's own API (Metadata.putContent / setTag / addEvent in batched transactions) to
// 10,000 and then 1,000,000 blobs (a tenth as many tags, all in one repository: the worst case
// for a tag's history), and the same figures are taken at both sizes:
//
// - cold fills per second through a real `regcache serve` process with cache.maxSize set, from a
//   local node:http upstream holding many small blobs, and the server's event-loop delay
//   meanwhile (prom-client's monitorEventLoopDelay, read from /metrics before and after);
// - /metrics and /api/status latency, startup to the first answer;
// - `regcache history` of one tag (the query, as the command runs it, without process start);
// - recording a stored blob and flushing last-access times, at that size;
// - a maxAge eviction of half the rows (the evictor itself, in this process) with the longest
//   event-loop block seen meanwhile, then every table's row count and orphan links.
//
// BENCH_SCALE_BLOBS=200000 changes the large size (a quicker check of the harness).
// BENCH_SCALE_CACHE=DIR keeps each filled database in DIR (keyed by schema version and size) and
// copies it for every later run instead of filling again; BENCH_SCALE_ONLY=startup,fills,ops,
// history,record,flush,evict measures only those rows; BENCH_SCALE_SIZES=large skips the small
// size. With any of them the results file is left alone.

import { createHash, randomBytes } from 'node:crypto'
import { createServer, type Server as HttpServer } from 'node:http'
import { readFileSync } from 'node:fs'
import { copyFile, mkdir, open, readFile, rename, stat, writeFile } from 'node:fs/promises'
import type { AddressInfo } from 'node:net'
import os from 'node:os'
import { execSync } from 'node:child_process'
import { dirname, join } from 'node:path'
import { monitorEventLoopDelay } from 'node:perf_hooks'
import { fileURLToPath } from 'node:url'
import { pino } from 'pino'
import { Agent, request } from 'undici'
import { stringify } from 'yaml'
import { Evictor } from '../core/evictor.js'
import { readHistory } from '../core/history.js'
import { Metrics } from '../core/metrics.js'
import { acceptKey } from '../oci/media-types.js'
import { BlobStore } from '../storage/blob-store.js'
import { dbPath } from '../storage/layout.js'
import { ACCESS_FLUSH_SLICE, LOG_SETTLE_ROWS, Metadata, type TagKey } from '../storage/metadata.js'
import { SCHEMA_VERSION } from '../storage/metadata-schema.js'
import { freePort } from '../test/helpers/ports.js'
import { makeTempDir, removeTempDir, sleep, spawnDaemon, type Daemon } from '../test/helpers/proc.js'
import { cpuSeconds, fmt, log, markdownTable, median, now, percentile, textTable } from './lib.js'

const SMALL = 10_000
const LARGE = Number(process.env.BENCH_SCALE_BLOBS ?? 1_000_000)
const CACHE_DIR = process.env.BENCH_SCALE_CACHE || undefined
const ONLY = process.env.BENCH_SCALE_ONLY ? new Set(process.env.BENCH_SCALE_ONLY.split(',').map((x) => x.trim())) : undefined
const SIZES = process.env.BENCH_SCALE_SIZES ?? 'small,large'
/** Whether a row is measured in this run (BENCH_SCALE_ONLY). */
const wanted = (what: 'startup' | 'fills' | 'ops' | 'history' | 'record' | 'flush' | 'evict') => !ONLY || ONLY.has(what)
/** Whether this run may replace the results file: the whole bench, filled from scratch or not. */
const COMPLETE = process.env.BENCH_SCALE_BLOBS === undefined && ONLY === undefined && SIZES === 'small,large'
const TAGS_PER_BLOB = 0.1
const REPOS = 1000
const UPSTREAM = 'docker.io'
const TAG_REPO = 'scale/app'
export const FILL_REPO = 'scale/fill'
const BATCH = 5000
const FILL_BLOB_BYTES = 4096
const FILLS = 1500
const FILL_CLIENTS = 8
const DAY = 24 * 3600 * 1000
const REGCACHE_MAIN = fileURLToPath(new URL('../cli/main.js', import.meta.url))
const RESULTS_FILE = fileURLToPath(new URL('../../bench/RESULTS.md', import.meta.url))
const ACCEPT_KEY = acceptKey(['application/vnd.oci.image.index.v1+json', 'application/vnd.oci.image.manifest.v1+json'])

type Defer = (what: string, f: () => Promise<void>) => () => Promise<void>

interface Figures {
  blobs: number
  tags: number
  fillSeconds: number
  /** The database was copied from BENCH_SCALE_CACHE, not filled in this run. */
  copied: boolean
  dbBytes: number
  startupMs: number
  coldFillsPerSec: number
  /** CPU time of the server process during the timed fills. */
  fillsCpuMs: number
  lagP99Ms: number
  lagMaxMs: number
  metricsMs: number[]
  statusMs: number[]
  historyMs: number[]
  recordMs: number[]
  /** The most CPU time one of those calls used (wall time includes waiting for a core). */
  recordCpuMaxMs: number
  flushSliceMaxMs: number
  flushSliceCpuMaxMs: number
  evicted: number
  evictSeconds: number
  evictBlockMaxMs: number
  evictBlockCpuMs: number
  startupCpuMs: number
  evictLagP99Ms: number
  rows: Record<string, number>
  orphans: number
  totalsRight: boolean | undefined
  /** Load average (1, 5, 15 min) as each group of rows started. */
  load: Partial<Record<'startup' | 'fills' | 'ops' | 'record' | 'flush' | 'evict', string>>
}

/**
 * CPU time of the event-loop thread alone, ms: Linux's per-thread schedstat (ns), so neither the
 * checkpoint thread nor the thread pool's file removals count; elsewhere the whole process's.
 */
const cpuMs = (() => {
  const schedstat = `/proc/self/task/${process.pid}/schedstat`
  try {
    readFileSync(schedstat)
    return () => Number(readFileSync(schedstat, 'latin1').split(' ')[0]) / 1e6
  } catch {
    return () => {
      const u = process.cpuUsage()
      return (u.user + u.system) / 1000
    }
  }
})()

const fakeDigest = (i: number) => `sha256:${createHash('sha256').update(`scale-blob-${i}`).digest('hex')}`
const repoOf = (i: number) => `scale/r${i % REPOS}`

/** Tag j points at manifest blob 10*j; every fifth tag moved once (a second digest and event). */
const tagDigest = (j: number) => fakeDigest(10 * j)
const tagsOf = (blobs: number) => Math.round(blobs * TAGS_PER_BLOB)

/**
 * The database of `blobs` blobs at `path`: filled there, or with BENCH_SCALE_CACHE copied from the
 * one filled by an earlier run (its last-use times are then those of that run: "two days ago"
 * stays older than maxAge, "now" stays younger for at least a day).
 */
async function preparedMetadata(path: string, blobs: number): Promise<{ seconds: number; copied: boolean }> {
  const t0 = now()
  if (!CACHE_DIR) {
    fillMetadata(path, blobs)
    return { seconds: (now() - t0) / 1000, copied: false }
  }
  const cached = join(CACHE_DIR, `scale-v${SCHEMA_VERSION}-${blobs}.db`)
  const exists = await stat(cached).then(
    (s) => s.isFile(),
    () => false,
  )
  if (!exists) {
    await mkdir(CACHE_DIR, { recursive: true })
    const partial = `${cached}.partial`
    fillMetadata(partial, blobs)
    await rename(partial, cached)
  }
  await mkdir(dirname(path), { recursive: true })
  await copyFile(cached, path)
  // Written to disk before anything is timed: the kernel's writeback of half a gigabyte of dirty
  // pages stalled the first writes measured after the copy by a quarter of a second.
  const copy = await open(path, 'r+')
  try {
    await copy.sync()
  } finally {
    await copy.close()
  }
  return { seconds: (now() - t0) / 1000, copied: exists }
}

/** Fills a fresh database to `blobs` blobs through the Metadata API; half of them last used two days ago. */
function fillMetadata(path: string, blobs: number): void {
  const meta = new Metadata(path)
  const old = Date.now() - 2 * DAY
  const recent = Date.now()
  try {
    for (let b = 0; b < blobs; b += BATCH) {
      meta.db.transaction(() => {
        for (let i = b; i < Math.min(blobs, b + BATCH); i++) {
          // Every tenth blob is a manifest (a media type, as manifests are recorded).
          const mediaType = i % 10 === 0 ? 'application/vnd.oci.image.manifest.v1+json' : undefined
          meta.putContent({ digest: fakeDigest(i), size: 1000 + (i % 5000), mediaType }, { upstream: UPSTREAM, repository: repoOf(i) }, i % 2 === 0 ? old : recent)
        }
      })()
    }
    const tags = tagsOf(blobs)
    for (let b = 0; b < tags; b += BATCH) {
      meta.db.transaction(() => {
        for (let j = b; j < Math.min(tags, b + BATCH); j++) {
          const k: TagKey = { upstream: UPSTREAM, repository: TAG_REPO, tag: `v${j}`, acceptKey: ACCEPT_KEY }
          const t = old + j
          if (j % 5 === 0) {
            const before = fakeDigest(10 * j + 5)
            meta.setTag(k, before, 'application/vnd.oci.image.manifest.v1+json', t)
            meta.addEvent(k, { type: 'first_seen', digest: before }, t)
            meta.setTag(k, tagDigest(j), 'application/vnd.oci.image.manifest.v1+json', t + 1)
            meta.addEvent(k, { type: 'changed', digest: tagDigest(j), previousDigest: before }, t + 1)
          } else {
            meta.setTag(k, tagDigest(j), 'application/vnd.oci.image.manifest.v1+json', t)
            meta.addEvent(k, { type: 'first_seen', digest: tagDigest(j) }, t)
          }
        }
      })()
    }
  } finally {
    meta.close()
  }
}

/** Upstream holding `n` small random blobs under FILL_REPO (GET, HEAD, /v2/). */
export async function startUpstream(n: number, bytes = FILL_BLOB_BYTES): Promise<{ url: string; digests: string[]; gets: () => number; close(): Promise<void> }> {
  const blobs = new Map<string, Buffer>()
  const digests: string[] = []
  for (let i = 0; i < n; i++) {
    const b = randomBytes(bytes)
    const d = `sha256:${createHash('sha256').update(b).digest('hex')}`
    blobs.set(d, b)
    digests.push(d)
  }
  let gets = 0
  const server: HttpServer = createServer((req, res) => {
    const url = req.url ?? ''
    if (url === '/v2/' || url === '/v2') {
      res.writeHead(200, { 'content-type': 'application/json' }).end('{}')
      return
    }
    const m = /^\/v2\/(.+)\/blobs\/(sha256:[0-9a-f]{64})$/.exec(url)
    const body = m && m[1] === FILL_REPO ? blobs.get(m[2]!) : undefined
    if (!body) {
      res.writeHead(404, { 'content-type': 'application/json' }).end('{"errors":[{"code":"BLOB_UNKNOWN"}]}')
      return
    }
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': body.length, 'docker-content-digest': m![2] })
    if (req.method === 'HEAD') res.end()
    else {
      gets++
      res.end(body)
    }
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as AddressInfo
  return {
    url: `http://127.0.0.1:${port}`,
    digests,
    gets: () => gets,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections()
        server.close(() => resolve())
      }),
  }
}

export async function get(agent: Agent, url: string): Promise<{ status: number; bytes: number }> {
  const res = await request(url, { dispatcher: agent, headers: { 'user-agent': 'regcache-bench/scale' } })
  const body = Buffer.from(await res.body.arrayBuffer())
  return { status: res.statusCode, bytes: body.length }
}

async function timedGets(agent: Agent, url: string, n: number): Promise<number[]> {
  const out: number[] = []
  for (let i = 0; i < n; i++) {
    const t0 = now()
    const r = await get(agent, url)
    if (r.status !== 200) throw new Error(`${url}: status ${r.status}`)
    out.push(now() - t0)
  }
  return out
}

function metricValue(text: string, name: string): number {
  const m = new RegExp(`^${name}(?:\\{[^}]*\\})? ([0-9.eE+-]+)$`, 'm').exec(text)
  return m ? Number(m[1]) : NaN
}

/** The server: spawned, timed until /v2/ first answers 200. */
export async function startServer(dir: string, dataDir: string, upstreamUrl: string): Promise<{ url: string; daemon: Daemon; startupMs: number; startupCpuMs: number }> {
  const port = await freePort()
  const configFile = join(dir, 'config.yaml')
  await writeFile(
    configFile,
    stringify({
      listen: `127.0.0.1:${port}`,
      dataDir,
      logLevel: 'warn',
      defaultUpstream: UPSTREAM,
      // Large enough never to evict here: what is measured is the cost of keeping the limit.
      cache: { maxSize: '10TB' },
      upstreams: { [UPSTREAM]: { url: upstreamUrl, revalidate: { timeout: '5s', minInterval: 0 } } },
    }),
  )
  const url = `http://127.0.0.1:${port}`
  const t0 = now()
  const daemon = spawnDaemon(process.execPath, [REGCACHE_MAIN, 'serve', '--config', configFile], { cwd: dir })
  const agent = new Agent({ connections: 1 })
  try {
    for (;;) {
      if (daemon.hasExited()) throw new Error(`regcache exited during startup:\n${daemon.tail()}`)
      try {
        if ((await get(agent, `${url}/v2/`)).status === 200) break
      } catch {
        // not listening yet
      }
      if (now() - t0 > 60_000) throw new Error(`regcache did not answer within 60 s:\n${daemon.tail()}`)
      await sleep(5)
    }
  } finally {
    await agent.close()
  }
  const startupMs = now() - t0
  return { url, daemon, startupMs, startupCpuMs: (await cpuSeconds([daemon.pid])) * 1000 }
}

/**
 * Longest gap between 2 ms ticks while `f` runs (wall time, which includes time the process
 * waited for a core on a busy machine), the most CPU time the event-loop thread used between two
 * ticks (what the longest block costs by itself), and the monitorEventLoopDelay p99.
 */
async function watchLoop<T>(f: () => Promise<T>): Promise<{ value: T; maxBlockMs: number; maxBlockCpuMs: number; p99Ms: number }> {
  const h = monitorEventLoopDelay({ resolution: 2 })
  h.enable()
  const cpu = cpuMs
  let last = now()
  let lastCpu = cpu()
  let maxGap = 0
  let maxCpu = 0
  const tick = setInterval(() => {
    const t = now()
    const c = cpu()
    maxGap = Math.max(maxGap, t - last)
    maxCpu = Math.max(maxCpu, c - lastCpu)
    last = t
    lastCpu = c
  }, 2)
  try {
    const value = await f()
    return { value, maxBlockMs: Math.max(maxGap, h.max / 1e6), maxBlockCpuMs: maxCpu, p99Ms: h.percentile(99) / 1e6 }
  } finally {
    clearInterval(tick)
    h.disable()
  }
}

async function measure(blobs: number): Promise<Figures> {
  const dir = await makeTempDir()
  const dataDir = join(dir, 'data')
  const path = dbPath(dataDir)
  const f: Figures = {
    blobs,
    tags: tagsOf(blobs),
    fillSeconds: NaN,
    copied: false,
    dbBytes: NaN,
    startupMs: NaN,
    startupCpuMs: NaN,
    coldFillsPerSec: NaN,
    fillsCpuMs: NaN,
    lagP99Ms: NaN,
    lagMaxMs: NaN,
    metricsMs: [],
    statusMs: [],
    historyMs: [],
    recordMs: [],
    recordCpuMaxMs: NaN,
    flushSliceMaxMs: NaN,
    flushSliceCpuMaxMs: NaN,
    evicted: NaN,
    evictSeconds: NaN,
    evictBlockMaxMs: NaN,
    evictBlockCpuMs: NaN,
    evictLagP99Ms: NaN,
    rows: {},
    orphans: NaN,
    totalsRight: undefined,
    load: {},
  }
  try {
    log(`-- ${fmt(blobs)} blobs: ${CACHE_DIR ? `the metadata from ${CACHE_DIR} (filled through the Metadata API if not there yet)` : 'filling the metadata through the Metadata API'}`)
    const prepared = await preparedMetadata(path, blobs)
    f.fillSeconds = prepared.seconds
    f.copied = prepared.copied
    f.dbBytes = (await stat(path)).size
    log(`   ${fmt(blobs)} blobs, ${fmt(f.tags)} tags ${prepared.copied ? 'copied' : 'filled'} in ${fmt(f.fillSeconds, 1)} s; database ${fmt(f.dbBytes / 1e6)} MB`)

    // The server: startup, cold fills with cache.maxSize set, the ops endpoints.
    if (wanted('startup') || wanted('fills') || wanted('ops')) {
      const up = await startUpstream(FILLS + 100)
      f.load.startup = loadavg()
      const srv = await startServer(dir, dataDir, up.url)
      f.startupMs = srv.startupMs
      f.startupCpuMs = srv.startupCpuMs
      log(`   startup to first answer ${fmt(srv.startupMs)} ms (CPU ${fmt(srv.startupCpuMs)} ms), load ${f.load.startup}`)
      const agent = new Agent({ connections: FILL_CLIENTS })
      try {
        if (wanted('fills')) {
          const blobUrl = (d: string) => `${srv.url}/v2/${FILL_REPO}/blobs/${d}`
          // Warm-up (JIT, connections), not counted.
          for (const d of up.digests.slice(FILLS, FILLS + 100)) {
            const r = await get(agent, blobUrl(d))
            if (r.status !== 200 || r.bytes !== FILL_BLOB_BYTES) throw new Error(`warm-up fill: status ${r.status}, ${r.bytes} bytes`)
          }
          await get(agent, `${srv.url}/metrics`) // resets the server's event-loop delay histogram
          const queue = up.digests.slice(0, FILLS)
          const gets0 = up.gets()
          f.load.fills = loadavg()
          const cpu0 = await cpuSeconds([srv.daemon.pid])
          const tf = now()
          await Promise.all(
            Array.from({ length: FILL_CLIENTS }, async () => {
              for (let d = queue.shift(); d; d = queue.shift()) {
                const r = await get(agent, blobUrl(d))
                if (r.status !== 200 || r.bytes !== FILL_BLOB_BYTES) throw new Error(`cold fill: status ${r.status}, ${r.bytes} bytes`)
              }
            }),
          )
          f.coldFillsPerSec = FILLS / ((now() - tf) / 1000)
          f.fillsCpuMs = ((await cpuSeconds([srv.daemon.pid])) - cpu0) * 1000
          // Each scrape reports the delays recorded since the previous one: this one, the fills'.
          const text = await (await request(`${srv.url}/metrics`, { dispatcher: agent })).body.text()
          f.lagP99Ms = metricValue(text, 'regcache_nodejs_eventloop_lag_p99_seconds') * 1000
          f.lagMaxMs = metricValue(text, 'regcache_nodejs_eventloop_lag_max_seconds') * 1000
          if (up.gets() - gets0 !== FILLS) throw new Error(`expected ${FILLS} upstream GETs, saw ${up.gets() - gets0}`)
          log(`   cold fills ${fmt(f.coldFillsPerSec)} req/s, server CPU ${fmt(f.fillsCpuMs / FILLS, 2)} ms per fill; event-loop delay p99 ${fmt(f.lagP99Ms, 1)} ms, max ${fmt(f.lagMaxMs, 1)} ms; load ${f.load.fills}`)
        }
        if (wanted('ops')) {
          f.load.ops = loadavg()
          f.metricsMs = await timedGets(agent, `${srv.url}/metrics`, 50)
          f.statusMs = await timedGets(agent, `${srv.url}/api/status`, 50)
          log(`   /metrics median ${fmt(median(f.metricsMs), 2)} ms, /api/status median ${fmt(median(f.statusMs), 2)} ms; load ${f.load.ops}`)
        }
      } finally {
        await agent.close()
        await srv.daemon.stop(10_000)
        await up.close()
      }
    }

    // In this process, as the server and `regcache history` use it.
    if (wanted('history')) {
      const ro = new Metadata(path, { readonly: true })
      const config = { defaultUpstream: UPSTREAM, upstreams: { [UPSTREAM]: {} } } as unknown as Parameters<typeof readHistory>[2]
      try {
        for (let i = 0; i < 50; i++) {
          const j = Math.floor((i / 50) * f.tags)
          const t = now()
          const h = readHistory(ro, `${UPSTREAM}/${TAG_REPO}:v${j}`, config)
          f.historyMs.push(now() - t)
          if (h.digests.length === 0 || h.digests.every((d) => d.digest !== tagDigest(j))) throw new Error(`history of v${j} lacks its digest`)
        }
      } finally {
        ro.close()
      }
    }

    const meta = new Metadata(path, { backgroundCheckpoints: true })
    try {
      if (wanted('record')) {
        // Recording a stored blob, each in its own transaction as a fill's commit does.
        f.load.record = loadavg()
        f.recordCpuMaxMs = 0
        for (let i = 0; i < 1000; i++) {
          const t = now()
          const c = cpuMs()
          meta.putContent({ digest: fakeDigest(blobs + i), size: 1234 }, { upstream: UPSTREAM, repository: FILL_REPO })
          f.recordMs.push(now() - t)
          f.recordCpuMaxMs = Math.max(f.recordCpuMaxMs, cpuMs() - c)
        }
        log(`   recording a blob: mean ${fmt(f.recordMs.reduce((a, b) => a + b, 0) / f.recordMs.length, 2)} ms, max ${fmt(Math.max(...f.recordMs), 1)} ms (CPU ${fmt(f.recordCpuMaxMs, 1)} ms); load ${f.load.record}`)
      }
      if (wanted('flush')) {
        // Last-access times of 10,000 blobs, written in the slices the server uses.
        // (Recently used ones: the eviction below is of the other half.)
        f.load.flush = loadavg()
        for (let i = 0; i < 10_000; i++) meta.touch(fakeDigest(2 * Math.floor((i / 10_000) * (blobs / 2)) + 1))
        f.flushSliceMaxMs = 0
        f.flushSliceCpuMaxMs = 0
        // As Metadata.flushAccessInSlices does it, each slice timed.
        let written = 0
        while (meta.pendingAccessCount > 0) {
          written += Math.min(ACCESS_FLUSH_SLICE, meta.pendingAccessCount)
          const t = now()
          const c = cpuMs()
          meta.flushAccess(ACCESS_FLUSH_SLICE)
          f.flushSliceMaxMs = Math.max(f.flushSliceMaxMs, now() - t)
          f.flushSliceCpuMaxMs = Math.max(f.flushSliceCpuMaxMs, cpuMs() - c)
          if (written >= LOG_SETTLE_ROWS) {
            written = 0
            await meta.settleLog()
          } else await new Promise<void>((r) => setImmediate(r))
        }
        log(`   flushing 10,000 last-access times: longest slice ${fmt(f.flushSliceMaxMs, 1)} ms (most CPU in one ${fmt(f.flushSliceCpuMaxMs, 1)} ms); load ${f.load.flush}`)
      }

      if (wanted('evict')) {
        const before = meta.totals()
        const evictor = new Evictor({
          meta,
          store: new BlobStore(dataDir),
          metrics: new Metrics(),
          log: pino({ level: 'silent' }),
          maxAgeMs: DAY,
          busy: () => new Set(),
        })
        f.load.evict = loadavg()
        const te = now()
        const ev = await watchLoop(() => evictor.runNow())
        f.evictSeconds = (now() - te) / 1000
        f.evicted = ev.value
        f.evictBlockMaxMs = ev.maxBlockMs
        f.evictBlockCpuMs = ev.maxBlockCpuMs
        f.evictLagP99Ms = ev.p99Ms
        log(`   maxAge eviction: ${fmt(ev.value)} rows in ${fmt(f.evictSeconds, 1)} s, longest event-loop block ${fmt(ev.maxBlockMs, 1)} ms (CPU ${fmt(ev.maxBlockCpuMs, 1)} ms), p99 ${fmt(ev.p99Ms, 1)} ms; load ${f.load.evict}`)
        const count = (table: string) => (meta.db.prepare(`SELECT COUNT(*) AS n FROM ${table}`).get() as { n: number }).n
        for (const t of ['content', 'repo_content', 'tags', 'tag_digests', 'events']) f.rows[t] = count(t)
        f.orphans = (meta.db.prepare('SELECT COUNT(*) AS n FROM repo_content r WHERE NOT EXISTS (SELECT 1 FROM content c WHERE c.digest = r.digest)').get() as { n: number }).n
        const actual = meta.db.prepare('SELECT COUNT(*) AS count, COALESCE(SUM(size), 0) AS bytes FROM content').get() as { count: number; bytes: number }
        const after = meta.totals()
        f.totalsRight = after.count === actual.count && after.bytes === actual.bytes && before.count - ev.value === after.count
      }
      return f
    } finally {
      meta.close()
    }
  } finally {
    await removeTempDir(dir)
  }
}

const ms = (x: number) => `${fmt(x, x < 10 ? 2 : 0)} ms`
const verdict = (ok: boolean, why: string) => (ok ? 'MET' : `MISSED (${why})`)

function report(small: Figures | undefined, large: Figures, seconds: number, loadStart: string): { text: string; md: string; missed: number } {
  const rows: string[][] = []
  let missed = 0
  const measured = (x: number | number[]) => (Array.isArray(x) ? x.length > 0 : !Number.isNaN(x))
  /** `probe` says whether the large size measured the row (BENCH_SCALE_ONLY). */
  const row = (what: string, f: (x: Figures) => string, target: string, probe: number | number[] | undefined, ok: boolean | undefined, why: string) => {
    const done = probe === undefined || measured(probe)
    if (done && ok === false) missed++
    const cell = (x: Figures | undefined) => (x === undefined ? 'not run' : f(x))
    rows.push([what, cell(small), cell(large), target, !done ? 'not measured' : ok === undefined ? 'info' : verdict(ok, why)])
  }
  const fillRatio = small ? large.coldFillsPerSec / small.coldFillsPerSec : NaN
  const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length
  row(
    'cold fills, 4 KiB blobs, 8 clients, cache.maxSize set: req/s (server CPU per fill)',
    (x) => `${fmt(x.coldFillsPerSec)} (${ms(x.fillsCpuMs / FILLS)})`,
    '≥ 0.8× the small cache',
    large.coldFillsPerSec,
    Number.isNaN(fillRatio) ? undefined : fillRatio >= 0.8,
    `${fmt(fillRatio, 2)}×`,
  )
  row('event-loop delay during the fills, p99 (max)', (x) => `${ms(x.lagP99Ms)} (${ms(x.lagMaxMs)})`, 'p99 < 50 ms', large.lagP99Ms, large.lagP99Ms < 50, `p99 ${ms(large.lagP99Ms)}`)
  row('GET /metrics, median (p99)', (x) => `${ms(median(x.metricsMs))} (${ms(percentile(x.metricsMs, 99))})`, '< 10 ms', large.metricsMs, median(large.metricsMs) < 10, `median ${ms(median(large.metricsMs))}`)
  row('GET /api/status, median (p99)', (x) => `${ms(median(x.statusMs))} (${ms(percentile(x.statusMs, 99))})`, '< 10 ms', large.statusMs, median(large.statusMs) < 10, `median ${ms(median(large.statusMs))}`)
  row('startup to first answer (warm page cache): wall (CPU)', (x) => `${ms(x.startupMs)} (${ms(x.startupCpuMs)})`, '< 2 s', large.startupMs, large.startupMs < 2000, ms(large.startupMs))
  row('history of one tag, median (max)', (x) => `${ms(median(x.historyMs))} (${ms(Math.max(...x.historyMs))})`, '< 5 ms', large.historyMs, median(large.historyMs) < 5, `median ${ms(median(large.historyMs))}`)
  row('recording a stored blob, mean (max; most CPU in one)', (x) => `${ms(mean(x.recordMs))} (${ms(Math.max(...x.recordMs))}; ${ms(x.recordCpuMaxMs)})`, 'max < 50 ms', large.recordMs, Math.max(...large.recordMs) < 50, `max ${ms(Math.max(...large.recordMs))}`)
  row('flushing 10,000 last-access times: longest slice (most CPU in one)', (x) => `${ms(x.flushSliceMaxMs)} (${ms(x.flushSliceCpuMaxMs)})`, '< 50 ms', large.flushSliceMaxMs, large.flushSliceMaxMs < 50, ms(large.flushSliceMaxMs))
  row('maxAge eviction of half: rows, seconds', (x) => `${fmt(x.evicted)} in ${fmt(x.evictSeconds, 1)} s`, 'half the blobs', large.evicted, large.evicted >= large.blobs / 2 - 10_000, `${fmt(large.evicted)} rows`)
  row(
    'maxAge eviction: longest event-loop block, wall (CPU in it); delay p99',
    (x) => `${ms(x.evictBlockMaxMs)} (${ms(x.evictBlockCpuMs)}); ${ms(x.evictLagP99Ms)}`,
    'no block > 50 ms',
    large.evictBlockMaxMs,
    large.evictBlockMaxMs <= 50,
    `longest ${ms(large.evictBlockMaxMs)}`,
  )
  const counts = (x: Figures) => Object.entries(x.rows).map(([k, v]) => `${k} ${fmt(v)}`).join(', ')
  row('rows after evicting half', counts, 'info', large.evicted, undefined, '')
  const clean = (x: Figures | undefined) => x === undefined || Number.isNaN(x.orphans) || (x.orphans === 0 && x.totalsRight === true)
  row(
    'repository links to evicted content (orphans); kept totals = table',
    (x) => `${fmt(x.orphans)}; ${x.totalsRight ? 'yes' : 'NO'}`,
    '0; yes',
    large.orphans,
    clean(small) && clean(large),
    'orphans or wrong totals',
  )
  row('filling the metadata through its API (s); database size', (x) => `${fmt(x.fillSeconds, 1)} s${x.copied ? ' (copied)' : ''}; ${fmt(x.dbBytes / 1e6)} MB`, 'info', undefined, undefined, '')
  const load = (x: Figures) =>
    Object.entries(x.load)
      .map(([k, v]) => `${k} ${v}`)
      .join('; ')
  row('load average (1, 5, 15 min) as each group started', load, 'info', undefined, undefined, '')
  const header = ['measurement', small ? `${fmt(small.blobs)} blobs, ${fmt(small.tags)} tags` : 'small size', `${fmt(large.blobs)} blobs, ${fmt(large.tags)} tags`, 'target', 'at the large size']
  const loadEnd = loadavg()
  const when = new Date().toISOString()
  const md = [
    '<!-- scale -->',
    '## Scale: `npm run bench -- --scale`',
    '',
    `Run ${when}, ${fmt(seconds)} s, node ${process.version}, ${os.cpus().length} CPUs (${os.cpus()[0]?.model ?? '?'}), regcache ${gitDescribe()}. ` +
      `Load average (1, 5, 15 min) at start / end: ${loadStart} / ${loadEnd} (the machine is shared; other work lowers and scatters the figures). ` +
      'What each row means: [README.md](README.md#scale-mode).',
    '',
    markdownTable(header, rows),
    '<!-- /scale -->',
  ].join('\n')
  return { text: textTable(header, rows), md, missed }
}

const loadavg = () => os.loadavg().map((x) => x.toFixed(2)).join(', ')

function gitDescribe(): string {
  try {
    const head = execSync('git rev-parse --short HEAD', { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim()
    const dirty = execSync('git status --porcelain', { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim()
    return dirty ? `${head} with ${dirty.split('\n').length} modified file(s)` : head
  } catch {
    return 'unknown'
  }
}

/** Replaces the scale section of RESULTS.md (or appends it). */
async function writeResults(md: string): Promise<void> {
  let text = ''
  try {
    text = await readFile(RESULTS_FILE, 'utf8')
  } catch {
    text = '# regcache benchmark results\n'
  }
  const a = text.indexOf('<!-- scale -->')
  const b = text.indexOf('<!-- /scale -->')
  text = a >= 0 && b > a ? text.slice(0, a) + md + text.slice(b + '<!-- /scale -->'.length) : `${text.trimEnd()}\n\n${md}\n`
  await writeFile(RESULTS_FILE, text)
}

export async function runScale(_defer: Defer): Promise<number> {
  const loadStart = loadavg()
  const t0 = now()
  const small = SIZES.split(',').includes('small') ? await measure(SMALL) : undefined
  const large = await measure(LARGE)
  const r = report(small, large, (now() - t0) / 1000, loadStart)
  process.stdout.write(`\n${r.text}\n\n`)
  if (COMPLETE) {
    await writeResults(r.md)
    log(`wrote ${RESULTS_FILE}`)
  }
  log(`${r.missed} target(s) missed`)
  return 0
}
