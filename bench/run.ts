// regcache benchmark: regcache vs distribution's proxy mode vs nginx / the upstream itself, all
// real processes on 127.0.0.1. `npm run bench` (full, ~10 min on 2 cores, writes
// bench/RESULTS.md) or BENCH_QUICK=1 (small blob, one run of each: checks the harness).
// See bench/README.md for what each figure means.

import { CONTAINERD_ACCEPT } from '../oci/media-types.js'
import { spawnSync } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { readFile, writeFile } from 'node:fs/promises'
import os from 'node:os'
import { fileURLToPath } from 'node:url'
import { startContainerd, writeHostsToml, type Containerd } from '../test/helpers/containerd.js'
import { startForwarder, type Forwarder } from '../test/helpers/forwarder.js'
import { buildBigImage, buildImage, pushImage, type BigImage } from '../test/helpers/images.js'
import { makeTempDir, removeTempDir, run, sleep, waitUntil } from '../test/helpers/proc.js'
import { startRegistry, type Registry } from '../test/helpers/registry.js'
import { childrenOf, distributionBlobSize, startDistributionProxy, startNginx, startRegcacheProc, type Nginx, type Server } from './contestants.js'
import { startThrottle } from './throttle.js'
import { lazyLines, lazyTail, type TailTiming } from './lazy.js'
import { objectStore, type ObjectStoreResult } from './object-store.js'
import {
  BenchFailure,
  MB,
  checkBlob,
  cpuAccount,
  cpuSeconds,
  curlGet,
  fail,
  fmt,
  hashedGet,
  log,
  markdownTable,
  median,
  memoryOf,
  now,
  pollRss,
  textTable,
  timedGet,
  type RequestTiming,
} from './lib.js'
import { hasWrk, load, type LoadResult } from './load.js'

// ---------------------------------------------------------------------------------------------
// Settings

const QUICK = process.env.BENCH_QUICK === '1'
const CPU_PROF_DIR = process.env.BENCH_CPU_PROF || undefined
const S = QUICK
  ? { blobBytes: 64 * MB, warm1Runs: 2, warm8Runs: 1, revalRuns: 1, revalSeconds: 3, coldRuns: 1, linkRuns: 1, linkMBps: 50, pullRuns: 1, layerBytes: 1 * MB, hangTimeoutMs: 5_000 }
  : { blobBytes: 500 * MB, warm1Runs: 5, warm8Runs: 3, revalRuns: 3, revalSeconds: 10, coldRuns: 3, linkRuns: 2, linkMBps: 50, pullRuns: 3, layerBytes: 20 * MB, hangTimeoutMs: 30_000 }
const CONCURRENT = 8
const FANOUT = 10
const REVAL_CLIENTS = 20
const PULL_LAYERS = 5
/** The whole run is abandoned (and everything stopped) after this long. */
const WATCHDOG_MS = Number(process.env.BENCH_TIMEOUT_S ?? (QUICK ? 600 : 2400)) * 1000

const BIG_REPO = 'bench/big'
const TAG_REPO = 'bench/app'
const TAG = 'v1'
const PULL_REPO = 'bench/layers'
/** containerd falls back to `server` when a mirror fails: a dead port proves the mirror served. */
const DEAD = 'http://127.0.0.1:9'

/** BENCH_ONLY=1,3b,6: run only these measurements (profiling, debugging). */
const ONLY = process.env.BENCH_ONLY ? new Set(process.env.BENCH_ONLY.split(',').map((x) => x.trim())) : undefined
const wanted = (n: string) => !ONLY || ONLY.has(n)
const RESULTS_FILE = process.env.BENCH_RESULTS ?? (QUICK || ONLY ? undefined : fileURLToPath(new URL('../../bench/RESULTS.md', import.meta.url)))
const loadavg = () => os.loadavg().map((x) => x.toFixed(2)).join(', ')
const LOAD_AT_START = loadavg()

// ---------------------------------------------------------------------------------------------
// Results

type Who = 'regcache' | 'dist' | 'ref'
/** Row 1 also runs regcache sending bodies with sendfile(2) (REGCACHE_SENDFILE=kernel), for comparison. */
type WarmWho = Who | 'kernel'

interface ColdRun {
  ms: number
  gets: number
  heads: number
  hwm?: number
  /** The proxy's CPU seconds (user + system) during the fan-out. */
  cpu?: number
}

interface HangResult {
  warm: RequestTiming
  first: RequestTiming
  next: RequestTiming[]
  /** The next ten were sent together because one had already gone unanswered for the whole timeout. */
  concurrent: boolean
}

interface PullRuns {
  cold: number[]
  warm: number[]
  coldGets: number[]
  warmGets: number[]
  warmHeads: number[]
}

const R = {
  objectStore: undefined as ObjectStoreResult | undefined,
  warm1: { regcache: [] as number[], dist: [] as number[], ref: [] as number[], kernel: [] as number[] },
  warm8: { regcache: [] as number[], dist: [] as number[], ref: [] as number[], kernel: [] as number[] },
  warmHashed: {} as Partial<Record<WarmWho, number>>,
  /** Server CPU seconds (user + system, all its processes) per GB served during the curl runs. */
  warmCpuPerGB: {} as Partial<Record<WarmWho, number>>,
  warmUpstreamGets: {} as Partial<Record<Who, number>>,
  reval: { regcache: [] as LoadResult[], dist: [] as LoadResult[], ref: [] as LoadResult[] },
  revalUpstream: { regcache: [] as number[], dist: [] as number[] },
  cold: { regcache: [] as ColdRun[], dist: [] as ColdRun[], ref: [] as number[], ref10: [] as number[] },
  /** Cold fan-out behind a bandwidth-limited upstream link (bench/throttle.ts). */
  link: { regcache: [] as ColdRun[], dist: [] as ColdRun[], ref: [] as number[] },
  hang: {} as Partial<Record<'regcache' | 'dist', HangResult>>,
  rss: {
    /** VmRSS of the long-lived instances right after start, before any request. */
    idle: {} as Partial<Record<Who, number>>,
    m1: {} as Partial<Record<Who, number>>,
    m1Poll: {} as Partial<Record<Who, number>>,
    m3: { regcache: [] as number[], dist: [] as number[] },
  },
  pull: {} as Partial<Record<Who, PullRuns>>,
  /** 7. The tail of a cold blob over the limited link (bench/lazy.ts). */
  lazy: [] as TailTiming[],
}
/** 7. The last bytes of a layer a lazy-pulling snapshotter reads first (footer and table of contents). */
const LAZY_TAIL = 51_200

/** Measurements that could not be taken (wrong bytes, errors): printed, and the exit status is 1. */
const failures: { section: string; message: string }[] = []
/** Per measurement: wall seconds and CPU seconds used by processes outside the bench meanwhile. */
const foreign: { section: string; seconds: number; cpu: number }[] = []
const failedSections = new Set<string>()

async function section(name: string, f: () => Promise<void>): Promise<void> {
  if (!wanted(name.split('.')[0]!)) return
  log(`== ${name}`)
  const t0 = now()
  const acct0 = await cpuAccount()
  try {
    await f()
  } catch (err) {
    const e = err as Error
    failures.push({ section: name, message: e instanceof BenchFailure ? e.message : (e.stack ?? String(e)) })
    failedSections.add(name)
    log(`!! ${name} FAILED: ${e.message}`)
  }
  const acct1 = await cpuAccount()
  const seconds = (now() - t0) / 1000
  const other = Math.max(0, acct1.machine - acct0.machine - (acct1.mine - acct0.mine))
  foreign.push({ section: name, seconds, cpu: other })
  log(`   ${name}: ${seconds.toFixed(1)} s; other processes on the machine used ${other.toFixed(1)} CPU s meanwhile`)
}

// ---------------------------------------------------------------------------------------------
// Cleanup: everything started is stopped, on success, failure, signal or watchdog.

const cleanups: { what: string; f: () => Promise<void> }[] = []
function defer(what: string, f: () => Promise<void>): () => Promise<void> {
  const entry = { what, f }
  cleanups.unshift(entry)
  let done = false
  return async () => {
    if (done) return
    done = true
    const i = cleanups.indexOf(entry)
    if (i >= 0) cleanups.splice(i, 1)
    await f()
  }
}
async function cleanupAll(): Promise<void> {
  while (cleanups.length) {
    const { what, f } = cleanups.shift()!
    try {
      await f()
    } catch (err) {
      log(`cleanup ${what}: ${(err as Error).message}`)
    }
  }
}

/** Starts a server and registers its stop; the returned stop() may be called earlier. */
async function managed<T extends { stop(): Promise<void> }>(what: string, start: Promise<T>): Promise<T & { stop(): Promise<void> }> {
  const s = await start
  const original = s.stop.bind(s)
  const stop = defer(what, original)
  return Object.assign(s, { stop })
}

const regcache = (upstreamUrl: string, label: string) => managed(`regcache ${label}`, startRegcacheProc({ upstreamUrl, cpuProfDir: CPU_PROF_DIR, label }))
const distribution = (upstreamUrl: string, label: string) => managed(`distribution-proxy ${label}`, startDistributionProxy(upstreamUrl))

// ---------------------------------------------------------------------------------------------
// Measurements

const blobUrl = (s: Server, digest: string) => `${s.url}/v2/${BIG_REPO}/blobs/${digest}`
const tagUrl = (base: string) => `${base}/v2/${TAG_REPO}/manifests/${TAG}`

function blobGets(up: Registry, digest: string): number {
  return up.count({ method: 'GET', pathIncludes: `/blobs/${digest}` })
}

async function waitDistributionCommitted(s: Server, big: BigImage): Promise<void> {
  await waitUntil('distribution-proxy to store the blob', async () => (await distributionBlobSize(s.dataDir, big.layerDigest)) === big.layerSize, {
    timeoutMs: 120_000,
    intervalMs: 200,
  })
}

/** 1. Warm blob throughput (and 5. regcache's peak RSS during it). */
async function warmBlob(up: Registry, big: BigImage, rc: Server, dist: Server, nginx: Nginx, kernel: Server): Promise<void> {
  const who: { id: WarmWho; url: string; server: Server }[] = [
    { id: 'regcache', url: blobUrl(rc, big.layerDigest), server: rc },
    { id: 'dist', url: blobUrl(dist, big.layerDigest), server: dist },
    { id: 'ref', url: nginx.fileUrl, server: nginx },
    { id: 'kernel', url: blobUrl(kernel, big.layerDigest), server: kernel },
  ]
  // Warm-up: the proxies fetch the blob upstream (and are checked byte for byte), nginx's file
  // enters the page cache.
  for (const c of who) {
    const d = await hashedGet(c.url)
    checkBlob(`${c.id} warm-up download`, d, big.layerDigest, big.layerSize)
  }
  await waitDistributionCommitted(dist, big)
  await up.settle()
  const getsBefore = blobGets(up, big.layerDigest)
  const polls = who.map((c) => pollRss(c.server.pid))

  // A verified (hashed) warm download per contestant; regcache must answer it from its cache.
  for (const c of who) {
    const d = await hashedGet(c.url)
    checkBlob(`${c.id} warm download`, d, big.layerDigest, big.layerSize)
    if ((c.id === 'regcache' || c.id === 'kernel') && d.cache !== 'hit') fail(`regcache answered the warm download with x-regcache-cache: ${d.cache}, expected hit`)
    R.warmHashed[c.id] = big.layerSize / MB / (d.ms / 1000)
    log(`   ${c.id}: hashed warm download ${fmt(R.warmHashed[c.id])} MB/s, sha256 ok`)
  }
  // Raw throughput with curl to /dev/null, contestants interleaved round by round. The servers'
  // CPU time is read around these runs: unlike MB/s it hardly depends on what else the machine does.
  const pids = await Promise.all(who.map(async (c) => [c.server.pid, ...(await childrenOf(c.server.pid))]))
  const cpu0 = await Promise.all(pids.map((p) => cpuSeconds(p)))
  let served = 0
  for (let i = 0; i < S.warm1Runs; i++) {
    for (const c of who) {
      const r = await curlGet(c.url)
      if (r.status !== 200 || r.bytes !== big.layerSize) fail(`${c.id}: curl got HTTP ${r.status}, ${r.bytes} bytes`)
      R.warm1[c.id].push(r.bytes / MB / r.seconds)
    }
    served += big.layerSize
  }
  log(`   1 client MB/s: ${JSON.stringify(R.warm1, (_k, v) => (typeof v === 'number' ? Math.round(v) : v))}`)
  for (let i = 0; i < S.warm8Runs; i++) {
    for (const c of who) {
      const t0 = now()
      const rs = await Promise.all(Array.from({ length: CONCURRENT }, () => curlGet(c.url)))
      const secs = (now() - t0) / 1000
      for (const r of rs) if (r.status !== 200 || r.bytes !== big.layerSize) fail(`${c.id}: curl got HTTP ${r.status}, ${r.bytes} bytes`)
      R.warm8[c.id].push((CONCURRENT * big.layerSize) / MB / secs)
    }
    served += CONCURRENT * big.layerSize
  }
  const cpu1 = await Promise.all(pids.map((p) => cpuSeconds(p)))
  who.forEach((c, i) => (R.warmCpuPerGB[c.id] = (cpu1[i]! - cpu0[i]!) / (served / 1e9)))
  log(`   server CPU s per GB: ${who.map((c) => `${c.id} ${fmt(R.warmCpuPerGB[c.id], 2)}`).join(', ')}`)
  log(`   ${CONCURRENT} clients MB/s: ${JSON.stringify(R.warm8, (_k, v) => (typeof v === 'number' ? Math.round(v) : v))}`)
  const peaks = await Promise.all(polls.map((p) => p.stop()))
  who.forEach((c, i) => {
    if (c.id !== 'kernel') R.rss.m1Poll[c.id] = peaks[i]
  })
  for (const c of who) if (c.id !== 'kernel') R.rss.m1[c.id] = (await memoryOf(c.server.pid)).hwm
  await up.settle()
  const extra = blobGets(up, big.layerDigest) - getsBefore
  if (extra !== 0) fail(`the proxies went upstream ${extra} time(s) for a blob they had already stored: not a warm measurement`)
}

/** 2. Tag revalidation under 20 concurrent clients. */
async function revalidation(up: Registry, rc: Server, dist: Server): Promise<void> {
  const headers = { accept: CONTAINERD_ACCEPT }
  const targets: { id: Who; url: string }[] = [
    { id: 'regcache', url: tagUrl(rc.url) },
    { id: 'dist', url: tagUrl(dist.url) },
    { id: 'ref', url: tagUrl(up.url) },
  ]
  for (const t of targets) {
    const r = await timedGet(t.url, headers, 10_000)
    if (r.status !== 200) fail(`${t.id}: warm-up GET of the tag answered ${r.status ?? r.error}`)
  }
  for (let i = 0; i < S.revalRuns; i++) {
    for (const t of targets) {
      await up.settle()
      const before = up.count({ pathIncludes: `/${TAG_REPO}/manifests/` })
      const r = await load({ url: t.url, connections: REVAL_CLIENTS, durationS: S.revalSeconds, headers })
      await up.settle()
      const upstreamRequests = up.count({ pathIncludes: `/${TAG_REPO}/manifests/` }) - before
      const bad = Object.entries(r.statuses).filter(([s]) => s !== '200')
      if (bad.length || r.errors || r.requests === 0) {
        fail(`${t.id}: ${r.requests} requests, statuses ${JSON.stringify(r.statuses)}, ${r.errors} transport errors (every answer must be 200)`)
      }
      R.reval[t.id].push(r)
      if (t.id !== 'ref') R.revalUpstream[t.id].push(upstreamRequests / r.requests)
      log(`   ${t.id}: ${fmt(r.rps)} req/s, p50 ${fmt(r.p50, 1)} ms, p99 ${fmt(r.p99, 1)} ms (${r.tool}); upstream manifest requests ${upstreamRequests}`)
    }
  }
}

/** 3. Cold fan-out (and 5. regcache's peak RSS during it). */
/** FANOUT concurrent hashed downloads of the big blob; wall time, every byte checked. */
async function fan(url: string, what: string, big: BigImage): Promise<number> {
  const t0 = now()
  const ds = await Promise.all(Array.from({ length: FANOUT }, () => hashedGet(url)))
  const ms = now() - t0
  ds.forEach((d, i) => checkBlob(`${what} client ${i + 1}/${FANOUT}`, d, big.layerDigest, big.layerSize))
  return ms
}

/** One cold fan-out through a fresh proxy (empty cache) whose upstream is upstreamUrl. */
async function coldRun(id: 'regcache' | 'dist', up: Registry, upstreamUrl: string, big: BigImage, label: string): Promise<ColdRun> {
  const s = id === 'regcache' ? await regcache(upstreamUrl, label) : await distribution(upstreamUrl, label)
  try {
    await up.settle()
    up.resetRequests()
    const cpu0 = await cpuSeconds([s.pid])
    const ms = await fan(blobUrl(s, big.layerDigest), id, big)
    const cpu = (await cpuSeconds([s.pid])) - cpu0
    await up.settle()
    return {
      ms,
      cpu,
      gets: blobGets(up, big.layerDigest),
      heads: up.count({ method: 'HEAD', pathIncludes: `/blobs/${big.layerDigest}` }),
      hwm: (await memoryOf(s.pid)).hwm,
    }
  } finally {
    await s.stop()
  }
}

async function coldFanout(up: Registry, big: BigImage): Promise<void> {
  const directUrl = `${up.url}/v2/${BIG_REPO}/blobs/${big.layerDigest}`
  for (let i = 0; i < S.coldRuns; i++) {
    // The reference: one client downloading straight from the upstream (hashed like the others).
    const d = await hashedGet(directUrl)
    checkBlob('direct download', d, big.layerDigest, big.layerSize)
    R.cold.ref.push(d.ms)
    // Context: ten clients straight from the upstream (the clients' own hashing cost on this machine).
    R.cold.ref10.push(await fan(directUrl, 'direct ×10', big))

    for (const id of ['regcache', 'dist'] as const) {
      const run = await coldRun(id, up, up.url, big, `cold-${i}`)
      R.cold[id].push(run)
      R.rss.m3[id].push(run.hwm!)
      log(`   ${id}: ${FANOUT} clients in ${fmt(run.ms / 1000, 2)} s, upstream GETs ${run.gets}, HEADs ${run.heads}, peak RSS ${fmt(run.hwm! / MB)} MB`)
    }
    log(`   direct: 1 client ${fmt(d.ms / 1000, 2)} s, ${FANOUT} clients ${fmt(R.cold.ref10.at(-1)! / 1000, 2)} s`)
  }
}

/** 3b. Cold fan-out when the upstream link, not loopback, is the bottleneck. */
async function coldFanoutLink(up: Registry, big: BigImage): Promise<void> {
  const link = await managed('throttle', startThrottle({ host: '127.0.0.1', port: up.port }, S.linkMBps * MB))
  try {
    for (let i = 0; i < S.linkRuns; i++) {
      const d = await hashedGet(`${link.url}/v2/${BIG_REPO}/blobs/${big.layerDigest}`)
      checkBlob('direct download over the limited link', d, big.layerDigest, big.layerSize)
      R.link.ref.push(d.ms)
      log(`   direct: 1 client ${fmt(d.ms / 1000, 2)} s`)
      // distribution fetches once per client over the shared link: once is enough to show it.
      for (const id of i === 0 ? (['regcache', 'dist'] as const) : (['regcache'] as const)) {
        const run = await coldRun(id, up, link.url, big, `link-${i}`)
        R.link[id].push(run)
        R.rss.m3[id].push(run.hwm!)
        log(`   ${id}: ${FANOUT} clients in ${fmt(run.ms / 1000, 2)} s, upstream GETs ${run.gets}`)
      }
    }
  } finally {
    await link.stop()
  }
}

/** 4. Upstream hanging, after the tag was warmed. */
async function hang(up: Registry): Promise<void> {
  const headers = { accept: CONTAINERD_ACCEPT }
  for (const id of ['regcache', 'dist'] as const) {
    const fwd: Forwarder = await managed(`forwarder ${id}`, startForwarder({ host: '127.0.0.1', port: up.port }))
    const s = id === 'regcache' ? await regcache(fwd.url, 'hang') : await distribution(fwd.url, 'hang')
    try {
      const url = tagUrl(s.url)
      const warm = await timedGet(url, headers, 10_000)
      if (warm.status !== 200) fail(`${id}: warming the tag answered ${warm.status ?? warm.error}`)
      await fwd.setMode('hang', { dropExisting: true })
      const first = await timedGet(url, headers, S.hangTimeoutMs)
      const next: RequestTiming[] = []
      let concurrent = false
      for (let i = 0; i < 10; i++) {
        if (first.error === 'timeout' || next.some((n) => n.error === 'timeout')) {
          // Already unanswered for the whole timeout: send the rest together, not one timeout each.
          concurrent = true
          next.push(...(await Promise.all(Array.from({ length: 10 - i }, () => timedGet(url, headers, S.hangTimeoutMs)))))
          break
        }
        next.push(await timedGet(url, headers, S.hangTimeoutMs))
      }
      for (const r of [first, ...next]) {
        if (r.status !== undefined && r.status !== 200) log(`   ${id}: answered ${r.status} while upstream hangs`)
        if (r.error && r.error !== 'timeout') log(`   ${id}: ${r.error}`)
      }
      R.hang[id] = { warm, first, next, concurrent }
      log(`   ${id}: first ${describeTiming(first)}; next ${next.map((n) => describeTiming(n)).join(', ')}`)
    } finally {
      await s.stop()
      await fwd.stop()
    }
  }
}

/** 6. `ctr images pull` of a multi-layer image through each mirror, cold and warm. */
async function pulls(up: Registry, ctd: Containerd, pullDigest: string): Promise<void> {
  const ref = `docker.io/${PULL_REPO}:${TAG}`
  const hostsDir = await makeTempDir()
  const rmHosts = defer('hosts dir', () => removeTempDir(hostsDir))
  try {
    for (const id of ['regcache', 'dist', 'ref'] as const) {
      const runs: PullRuns = { cold: [], warm: [], coldGets: [], warmGets: [], warmHeads: [] }
      R.pull[id] = runs
      for (let i = 0; i < S.pullRuns; i++) {
        const s = id === 'regcache' ? await regcache(up.url, `pull-${i}`) : id === 'dist' ? await distribution(up.url, `pull-${i}`) : undefined
        try {
          await writeHostsToml(hostsDir, 'docker.io', s ? s.url : up.url, { server: DEAD })
          const pullOnce = async (phase: string) => {
            await ctd.removeAllContent()
            await up.settle()
            up.resetRequests()
            const t0 = now()
            const r = await ctd.pull(ref, { hostsDir, timeoutMs: 600_000 })
            const ms = now() - t0
            if (r.code !== 0) fail(`${id} ${phase} pull: ctr exited ${r.code}${r.timedOut ? ' (timed out)' : ''}: ${r.stderr.slice(-2000)}`)
            const got = await ctd.imageDigest(ref)
            if (got !== pullDigest) fail(`${id} ${phase} pull: image digest ${got}, expected ${pullDigest}`)
            await up.settle()
            return { ms, gets: up.count({ method: 'GET', pathIncludes: '/blobs/' }), heads: up.count({ method: 'HEAD', pathIncludes: '/manifests/' }) }
          }
          const cold = await pullOnce('cold')
          // distribution commits what it proxied after the response: let it finish first.
          await sleep(1000)
          const warm = await pullOnce('warm')
          runs.cold.push(cold.ms)
          runs.coldGets.push(cold.gets)
          runs.warm.push(warm.ms)
          runs.warmGets.push(warm.gets)
          runs.warmHeads.push(warm.heads)
          log(`   ${id}: cold ${fmt(cold.ms / 1000, 2)} s (${cold.gets} upstream blob GETs), warm ${fmt(warm.ms / 1000, 2)} s (${warm.gets} blob GETs)`)
        } finally {
          await ctd.removeAllContent().catch(() => {})
          await s?.stop()
        }
      }
    }
  } finally {
    await rmHosts()
  }
}

// ---------------------------------------------------------------------------------------------
// Report

function describeTiming(r: RequestTiming | undefined, timeoutMs = S.hangTimeoutMs): string {
  if (!r) return '—'
  if (r.error === 'timeout') return `no answer after ${timeoutMs / 1000} s`
  if (r.error) return `error (${r.error})`
  const t = r.ms >= 1000 ? `${fmt(r.ms / 1000, 2)} s` : `${fmt(r.ms, 1)} ms`
  return `${t} (${r.status}${r.cache ? ` ${r.cache}` : ''})`
}

const medianOf = (xs: number[]) => (xs.length ? median(xs) : undefined)
const ok = (b: boolean | undefined) => (b === undefined ? '' : b ? ' — MET' : ' — MISSED')
const ratio = (a: number | undefined, b: number | undefined, digits = 2) => (a === undefined || b === undefined || !b ? '—' : `${fmt(a / b, digits)}×`)
const FAILED = 'FAILED (see below)'

interface Row {
  cells: string[]
  met?: boolean
}

function buildRows(): Row[] {
  const rows: Row[] = []
  const sec = (n: string) => failedSections.has(n)
  const bad = (n: string, s: string) => (sec(n) ? FAILED : s)
  const mb = (n: number | undefined) => (n === undefined ? '—' : `${fmt(n)} MB/s`)

  // 1. Warm blob.
  for (const [label, data] of [
    ['1. warm blob, 1 client (MB/s)', R.warm1],
    [`1. warm blob, ${CONCURRENT} clients (MB/s, aggregate)`, R.warm8],
  ] as const) {
    const r = medianOf(data.regcache)
    const d = medianOf(data.dist)
    const n = medianOf(data.ref)
    // One client: at least distribution's rate and 0.9× nginx's; several: 0.9× nginx's aggregate.
    const one = data === R.warm1
    const met = r !== undefined && d !== undefined && n !== undefined ? r >= 0.9 * n && (!one || r >= d) : undefined
    rows.push({
      cells: [label, bad('1. warm blob', mb(r)), mb(d), `${mb(n)} (nginx)`, `${ratio(r, n)} nginx, ${ratio(r, d)} dist`, `${one ? '≥ 1.0× distribution and ' : ''}≥ 0.9× nginx${ok(met)}`],
      met,
    })
  }

  {
    const c = (id: Who) => fmt(R.warmCpuPerGB[id], 2)
    const r = R.warmCpuPerGB.regcache
    const n = R.warmCpuPerGB.ref
    const d = R.warmCpuPerGB.dist
    const met = r !== undefined && d !== undefined ? r <= d : undefined
    rows.push({
      cells: ['1. server CPU per GB served (s, user+sys)', bad('1. warm blob', c('regcache')), c('dist'), `${c('ref')} (nginx)`, `${ratio(r, n, 1)} nginx, ${ratio(r, d, 2)} dist`, `≤ distribution${ok(met)}`],
      met,
    })
  }

  {
    const k1 = medianOf(R.warm1.kernel)
    const k8 = medianOf(R.warm8.kernel)
    const r1 = medianOf(R.warm1.regcache)
    rows.push({
      cells: [
        `1. (context) regcache with REGCACHE_SENDFILE=kernel: 1 client / ${CONCURRENT} clients / CPU s per GB`,
        bad('1. warm blob', `${mb(k1)} / ${mb(k8)} / ${fmt(R.warmCpuPerGB.kernel, 2)}`),
        '',
        '',
        `${ratio(k1, r1)} copy (1 client)`,
        'info',
      ],
    })
  }

  // 2. Revalidation.
  {
    const m = (xs: LoadResult[], f: (l: LoadResult) => number) => medianOf(xs.map(f))
    const rr = m(R.reval.regcache, (l) => l.rps)
    const dr = m(R.reval.dist, (l) => l.rps)
    const ur = m(R.reval.ref, (l) => l.rps)
    const met = rr !== undefined && dr !== undefined ? rr >= 5 * dr : undefined
    const failed = sec('2. tag revalidation')
    rows.push({
      cells: [
        `2. tag revalidation, ${REVAL_CLIENTS} clients (req/s)`,
        failed ? FAILED : fmt(rr),
        fmt(dr),
        `${fmt(ur)} (upstream)`,
        `${ratio(rr, dr, 1)} dist`,
        `≥ 5× distribution${ok(met)}`,
      ],
      met,
    })
    const lat = (xs: LoadResult[]) => `${fmt(m(xs, (l) => l.p50), 1)} / ${fmt(m(xs, (l) => l.p99), 1)}`
    rows.push({ cells: ['2. tag revalidation latency p50 / p99 (ms)', failed ? FAILED : lat(R.reval.regcache), lat(R.reval.dist), `${lat(R.reval.ref)} (upstream)`, '', ''] })
    const per = (xs: number[]) => (xs.length ? fmt(median(xs), 3) : '—')
    rows.push({ cells: ['2. upstream manifest requests per client request', per(R.revalUpstream.regcache), per(R.revalUpstream.dist), '1 (is the upstream)', '', 'info'] })
  }

  // 3. Cold fan-out.
  {
    const failed = sec('3. cold fan-out')
    const gets = (xs: ColdRun[]) => (xs.length ? xs.map((x) => x.gets).join(', ') : '—')
    const rGetsMet = R.cold.regcache.length ? R.cold.regcache.every((x) => x.gets === 1) : undefined
    rows.push({
      cells: [`3. cold fan-out, ${FANOUT} clients: upstream GETs (per run)`, failed ? FAILED : gets(R.cold.regcache), gets(R.cold.dist), '1 (one direct download)', '', `1${ok(rGetsMet)}`],
      met: rGetsMet,
    })
    const rm = medianOf(R.cold.regcache.map((x) => x.ms))
    const dm = medianOf(R.cold.dist.map((x) => x.ms))
    const um = medianOf(R.cold.ref)
    const met = rm !== undefined && um !== undefined ? rm <= 1.2 * um : undefined
    const s = (n: number | undefined) => (n === undefined ? '—' : `${fmt(n / 1000, 2)} s`)
    rows.push({
      cells: [`3. cold fan-out, ${FANOUT} clients: wall time, all bytes hashed`, failed ? FAILED : s(rm), s(dm), `${s(um)} (1 direct download)`, `${ratio(rm, um)} direct`, `≤ 1.2× one direct download${ok(met)}`],
      met,
    })
    const rc = medianOf(R.cold.regcache.flatMap((x) => (x.cpu === undefined ? [] : [x.cpu])))
    const dc = medianOf(R.cold.dist.flatMap((x) => (x.cpu === undefined ? [] : [x.cpu])))
    const cmet = rc !== undefined && dc !== undefined ? rc <= 1.2 * dc : undefined
    const cpu = (n: number | undefined) => (n === undefined ? '—' : `${fmt(n, 1)} s`)
    rows.push({
      cells: [`3. cold fan-out, ${FANOUT} clients: proxy CPU (user+sys)`, failed ? FAILED : cpu(rc), cpu(dc), '', `${ratio(rc, dc, 2)} dist`, `≤ 1.2× distribution${ok(cmet)}`],
      met: cmet,
    })
    const u10 = medianOf(R.cold.ref10)
    rows.push({ cells: [`3. (context) ${FANOUT} clients straight from the upstream`, '', '', s(u10), `${ratio(rm, u10)} (regcache vs this)`, 'info'] })

    const lfailed = sec(`3b. cold fan-out, ${S.linkMBps} MB/s upstream link`)
    const lr = medianOf(R.link.regcache.map((x) => x.ms))
    const ld = medianOf(R.link.dist.map((x) => x.ms))
    const lu = medianOf(R.link.ref)
    const lmet = lr !== undefined && lu !== undefined ? lr <= 1.2 * lu && R.link.regcache.every((x) => x.gets === 1) : undefined
    rows.push({
      cells: [
        `3b. cold fan-out, ${FANOUT} clients, upstream link ${S.linkMBps} MB/s: wall time [upstream GETs]`,
        lfailed ? FAILED : `${s(lr)} [${gets(R.link.regcache)}]`,
        `${s(ld)} [${gets(R.link.dist)}]`,
        `${s(lu)} (1 direct download)`,
        `${ratio(lr, lu)} direct`,
        `1 GET, ≤ 1.2× one direct download${ok(lmet)}`,
      ],
      met: lmet,
    })
  }

  // 4. Hang.
  {
    const failed = sec('4. upstream hanging')
    const h = R.hang
    const firstMet = h.regcache ? h.regcache.first.status === 200 && h.regcache.first.ms <= 2500 : undefined
    rows.push({
      cells: ['4. upstream hangs: first tag request', failed ? FAILED : describeTiming(h.regcache?.first), describeTiming(h.dist?.first), '', '', `≤ 2.5 s${ok(firstMet)}`],
      met: firstMet,
    })
    const nextText = (x: HangResult | undefined) => {
      if (!x) return '—'
      const unanswered = x.next.filter((n) => n.status === undefined).length
      if (unanswered === x.next.length) return `no answer after ${S.hangTimeoutMs / 1000} s (${unanswered}/${x.next.length}${x.concurrent ? ', sent together' : ''})`
      const answered = x.next.filter((n) => n.status !== undefined).map((n) => n.ms)
      const slow = x.next.filter((n) => n.status === undefined || n.ms > 50).length
      return `max ${fmt(Math.max(...answered), 1)} ms, median ${fmt(median(answered), 1)} ms${slow ? `; ${slow}/${x.next.length} over 50 ms` : ''}${unanswered ? `; ${unanswered} unanswered` : ''}`
    }
    const nextMet = h.regcache ? h.regcache.next.every((n) => n.status === 200 && n.ms <= 50) : undefined
    rows.push({
      cells: ['4. upstream hangs: next ten (sequential)', failed ? FAILED : nextText(h.regcache), nextText(h.dist), '', '', `≤ 50 ms each${ok(nextMet)}`],
      met: nextMet,
    })
  }

  // 5. Peak RSS.
  {
    const m = (n: number | undefined) => (n === undefined ? '—' : `${fmt(n / MB)} MB`)
    const r1 = R.rss.m1.regcache
    const r3 = R.rss.m3.regcache.length ? Math.max(...R.rss.m3.regcache) : undefined
    const d3 = R.rss.m3.dist.length ? Math.max(...R.rss.m3.dist) : undefined
    const met1 = r1 !== undefined ? r1 < 200 * MB : undefined
    const met3 = r3 !== undefined ? r3 < 200 * MB : undefined
    rows.push({ cells: ['5. peak RSS during 1 (warm blob)', m(r1), m(R.rss.m1.dist), `${m(R.rss.m1.ref)} (nginx master)`, '', `< 200 MB${ok(met1)}`], met: met1 })
    rows.push({ cells: ['5. peak RSS during 3 and 3b (cold fan-out)', m(r3), m(d3), '', '', `< 200 MB${ok(met3)}`], met: met3 })
  }

  // 6. ctr pull.
  {
    const failed = sec('6. ctr images pull')
    const s = (p: PullRuns | undefined, k: 'cold' | 'warm') => (p && p[k].length ? `${fmt(median(p[k]) / 1000, 2)} s` : '—')
    const g = (p: PullRuns | undefined, k: 'coldGets' | 'warmGets') => (p && p[k].length ? ` [${p[k].join(', ')} GETs]` : '')
    const rp = R.pull.regcache
    const dp = R.pull.dist
    const up = R.pull.ref
    const r = (a?: PullRuns, b?: PullRuns, k: 'cold' | 'warm' = 'cold') => (a?.[k].length && b?.[k].length ? ratio(median(a[k]), median(b[k])) : '—')
    const label = `${PULL_LAYERS} × ${S.layerBytes / MB} MB`
    rows.push({
      cells: [`6. ctr images pull ${label}, cold mirror (s)`, failed ? FAILED : s(rp, 'cold') + g(rp, 'coldGets'), s(dp, 'cold') + g(dp, 'coldGets'), `${s(up, 'cold')} (direct)`, `${r(rp, dp)} dist`, 'info'],
    })
    rows.push({
      cells: [`6. ctr images pull ${label}, warm mirror (s)`, failed ? FAILED : s(rp, 'warm') + g(rp, 'warmGets'), s(dp, 'warm') + g(dp, 'warmGets'), `${s(up, 'warm')} (direct)`, `${r(rp, dp, 'warm')} dist`, 'info'],
    })
  }
  return rows
}

const MEANING = `All processes run on this one machine and talk over 127.0.0.1; the clients compete with the servers for the same cores. MB = 10^6 bytes. Figures are medians over the runs listed under "Per-run figures". "MET"/"MISSED" compare regcache with the target.

- **1. warm blob**: every contestant already holds the ${fmt(S.blobBytes / MB)} MB blob (the proxies fetched it once, nginx's file is in the page cache). \`curl -o /dev/null\` downloads it: one client (${S.warm1Runs} runs; MB/s = bytes / curl's transfer time) and ${CONCURRENT} concurrent clients (${S.warm8Runs} runs; aggregate MB/s = ${CONCURRENT} × bytes / time until the last finished), contestants interleaved. One download per contestant is sha256-checked in the client; regcache must answer it from cache (\`x-regcache-cache: hit\`) and no proxy may go upstream meanwhile. *Server CPU per GB*: user + system CPU seconds of the server's processes (nginx: master and workers) during those curl runs, per 10^9 bytes served — less sensitive to other load than MB/s. regcache sends bodies with its default copy loop (\`REGCACHE_SENDFILE=copy\`); a second regcache with \`REGCACHE_SENDFILE=kernel\` (sendfile(2), as nginx) runs interleaved with the others, on the context row.
- **2. tag revalidation**: wrk, ${REVAL_CLIENTS} connections, ${S.revalSeconds} s per run, \`GET /v2/bench/app/manifests/v1\` with containerd's Accept header (4 manifest types + \`*/*\`); req/s and wrk's p50/p99 latency; every answer must be 200. regcache revalidates every request (\`minInterval: 0\`), sharing one upstream HEAD among concurrent requests; "upstream manifest requests per client request" is counted in the upstream's access log. The upstream column is the registry itself under the same load.
- **3. cold fan-out**: a fresh proxy (empty storage) and ${FANOUT} concurrent clients asking for the uncached blob, each hashing every byte (checked). Upstream GETs are counted in the upstream's access log; wall time runs until the last client is done. Reference: one hashed client straight from the upstream. The context row, ${FANOUT} hashed clients straight from the upstream, is what the clients themselves cost on this machine: on loopback the upstream is as fast as the mirror, so this target cannot be met here by any proxy.
- **3b.** the same, with the upstream behind a ${S.linkMBps} MB/s link shared by all connections (bench/throttle.ts), for the proxies and the direct download alike: the upstream link is the bottleneck, as over the internet. distribution runs once (it fetches once per client over the shared link).
- **4. upstream hanging**: a fresh proxy in front of a TCP forwarder; the tag is fetched once, then the forwarder accepts connections and never answers (and cuts pooled ones). Time to the first answer, then each of ten more requests sent one after the other; client timeout ${S.hangTimeoutMs / 1000} s; after a timeout the remaining requests are sent together ("sent together").
- **5. peak RSS**: VmHWM from /proc/PID/status: of the long-lived regcache after 1 (warm-up fill included), and the highest of the fresh instances of 3 and 3b.
- **6. ctr images pull**: a private containerd pulls bench/layers:v1 (${PULL_LAYERS} layers × ${fmt(S.layerBytes / MB)} MB) through the mirror named in hosts.toml (fallback: a dead port), unpacking included; per run a fresh mirror, a cold pull, content removed, a warm pull. [n GETs] = upstream blob GETs of each pull. "direct" pulls from the upstream itself.
- **CPU used by processes outside the bench**: machine-wide user + system CPU time minus that of the bench and everything it started, per measurement: other work on the machine, which lowers and scatters the figures.`

const HEADER = ['measurement', 'regcache', 'distribution-proxy', 'nginx/direct', 'ratio', 'target']

function details(): string {
  const lines: string[] = []
  const cores = os.cpus().length
  lines.push(
    `- CPU used by processes outside the bench, per measurement (share of all ${cores} cores): ${foreign
      .map((f) => `${f.section.split('.')[0]} ${fmt(f.cpu, 1)} s of ${fmt(f.seconds)} s (${fmt((100 * f.cpu) / (f.seconds * cores))}%)`)
      .join('; ')}`,
  )
  const list = (xs: number[], f: (n: number) => string) => (xs.length ? xs.map(f).join(', ') : '—')
  const mbs = (n: number) => fmt(n)
  lines.push(`- 1 client MB/s per run: regcache ${list(R.warm1.regcache, mbs)}; distribution ${list(R.warm1.dist, mbs)}; nginx ${list(R.warm1.ref, mbs)}`)
  lines.push(`- ${CONCURRENT} clients MB/s per run: regcache ${list(R.warm8.regcache, mbs)}; distribution ${list(R.warm8.dist, mbs)}; nginx ${list(R.warm8.ref, mbs)}`)
  lines.push(`- regcache with REGCACHE_SENDFILE=kernel (sendfile(2)), MB/s per run: 1 client ${list(R.warm1.kernel, mbs)}; ${CONCURRENT} clients ${list(R.warm8.kernel, mbs)}`)
  lines.push(
    `- hashed (undici + sha256 in the client) warm download MB/s: regcache ${fmt(R.warmHashed.regcache)}, distribution ${fmt(R.warmHashed.dist)}, nginx ${fmt(R.warmHashed.ref)} (all sha256-verified)`,
  )
  const rl = (xs: LoadResult[]) => (xs.length ? xs.map((l) => `${fmt(l.rps)} (p50 ${fmt(l.p50, 1)}, p99 ${fmt(l.p99, 1)}, max ${fmt(l.max, 1)} ms)`).join('; ') : '—')
  lines.push(`- revalidation req/s per run: regcache ${rl(R.reval.regcache)}`)
  lines.push(`  distribution ${rl(R.reval.dist)}`)
  lines.push(`  upstream ${rl(R.reval.ref)}`)
  const cr = (xs: ColdRun[]) =>
    xs.length ? xs.map((x) => `${fmt(x.ms / 1000, 2)} s / ${x.gets} GET / ${x.heads} HEAD / ${fmt((x.hwm ?? NaN) / MB)} MB / ${fmt(x.cpu, 2)} CPU s`).join('; ') : '—'
  lines.push(`- cold fan-out per run (wall / upstream blob GETs / HEADs / peak RSS / proxy CPU): regcache ${cr(R.cold.regcache)}`)
  lines.push(`  distribution ${cr(R.cold.dist)}`)
  lines.push(`  direct 1 client ${list(R.cold.ref, (n) => `${fmt(n / 1000, 2)} s`)}; direct ${FANOUT} clients ${list(R.cold.ref10, (n) => `${fmt(n / 1000, 2)} s`)}`)
  lines.push(`- cold fan-out over the ${S.linkMBps} MB/s link, per run: regcache ${cr(R.link.regcache)}`)
  lines.push(`  distribution ${cr(R.link.dist)}`)
  lines.push(`  direct 1 client ${list(R.link.ref, (n) => `${fmt(n / 1000, 2)} s`)}`)
  for (const id of ['regcache', 'dist'] as const) {
    const h = R.hang[id]
    if (!h) continue
    lines.push(
      `- hang, ${id === 'dist' ? 'distribution' : id}: warm-up ${describeTiming(h.warm)}; first ${describeTiming(h.first)}; next ${h.next.map((n) => describeTiming(n)).join(', ')}${h.concurrent ? ' (sent together)' : ''}`,
    )
  }
  if (R.lazy.length) lines.push(...lazyLines(R.lazy, S.linkMBps, LAZY_TAIL))
  lines.push(`- RSS right after start, idle: regcache ${fmt((R.rss.idle.regcache ?? NaN) / MB)} MB, distribution ${fmt((R.rss.idle.dist ?? NaN) / MB)} MB`)
  lines.push(
    `- peak RSS during 1 by polling VmRSS: regcache ${fmt((R.rss.m1Poll.regcache ?? NaN) / MB)} MB, distribution ${fmt((R.rss.m1Poll.dist ?? NaN) / MB)} MB, nginx master ${fmt((R.rss.m1Poll.ref ?? NaN) / MB)} MB`,
  )
  for (const id of ['regcache', 'dist', 'ref'] as const) {
    const p = R.pull[id]
    if (!p) continue
    lines.push(
      `- ctr pull, ${id === 'dist' ? 'distribution' : id === 'ref' ? 'direct from upstream' : id}: cold ${list(p.cold, (n) => `${fmt(n / 1000, 2)} s`)} (upstream blob GETs ${p.coldGets.join(', ')}); warm ${list(p.warm, (n) => `${fmt(n / 1000, 2)} s`)} (upstream blob GETs ${p.warmGets.join(', ')}, manifest HEADs ${p.warmHeads.join(', ')})`,
    )
  }
  return lines.join('\n')
}

/** A command's output (stdout, else stderr: `nginx -v` prints there), for the machine description. */
function sh(cmd: string, args: string[]): string {
  const r = spawnSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: 10_000 })
  return (r.stdout || r.stderr || '').trim() || '?'
}

function machine(): Record<string, string> {
  const cpuinfo = readFileSync('/proc/cpuinfo', 'utf8')
  const meminfo = readFileSync('/proc/meminfo', 'utf8')
  const memKb = Number(/^MemTotal:\s+(\d+)/m.exec(meminfo)?.[1] ?? 0)
  return {
    date: new Date().toISOString(),
    nproc: sh('nproc', []),
    memory: `${(memKb / 1024 / 1024).toFixed(1)} GiB`,
    cpu: /^model name\s*:\s*(.*)$/m.exec(cpuinfo)?.[1] ?? '?',
    kernel: os.release(),
    node: process.version,
    'docker-registry': sh('docker-registry', ['--version']),
    nginx: sh('/usr/sbin/nginx', ['-v']).replace(/^nginx version: /, ''),
    containerd: sh('containerd', ['--version']),
    regcache: (() => {
      const root = process.cwd()
      const head = sh('git', ['-C', root, 'rev-parse', '--short', 'HEAD'])
      const dirty = sh('git', ['-C', root, 'status', '--porcelain', '--untracked-files=no']).split('\n').filter(Boolean).length
      return `working tree at ${head}${dirty ? ` with ${dirty} modified file(s)` : ''}`
    })(),
    'load generator': '',
    'load average (1, 5, 15 min) at start / end': `${LOAD_AT_START} / ${loadavg()}`,
  }
}

async function report(elapsedS: number): Promise<string> {
  const rows = buildRows().map((r) => r.cells)
  const m = machine()
  m['load generator'] = process.env.BENCH_LOAD === 'node' || !(await hasWrk()) ? 'undici (bench/load.ts)' : `wrk (${sh('sh', ['-c', 'wrk -v 2>&1 | head -1'])})`
  const out: string[] = []
  out.push(textTable(HEADER, rows))
  if (R.objectStore) out.push('', R.objectStore.skipped ?? R.objectStore.table)
  process.stdout.write('\n' + out.join('\n') + '\n\n' + details() + '\n')
  if (failures.length) {
    process.stdout.write('\nFAILURES:\n' + failures.map((f) => `- [${f.section}] ${f.message}`).join('\n') + '\n')
  }
  const md = [
    '# regcache benchmark results',
    '',
    `${QUICK ? 'Quick (BENCH_QUICK=1) run' : 'Full run'} of \`npm run bench\` (bench/run.ts), ${m.date}, ${fmt(elapsedS)} s. Blob: ${fmt(S.blobBytes / MB)} MB of random data (one tar.gz layer). How each figure is taken: [README.md](README.md).`,
    '',
    '## Machine',
    '',
    ...Object.entries(m).map(([k, v]) => `- ${k}: ${v}`),
    '',
    '## Results',
    '',
    markdownTable(HEADER, rows),
    '',
    ...(R.objectStore?.rows.length
      ? [
          markdownTable(
            ['object store (7)', 'MB/s', 'regcache CPU s/GB', 'store CPU s/GB'],
            R.objectStore.rows.map((r) => [r.variant, fmt(r.mbps), fmt(r.cpuPerGB, 2), fmt(r.storeCpuPerGB, 2)]),
          ),
          '',
        ]
      : []),
    '## What each figure means',
    '',
    MEANING,
    '',
    '## Per-run figures',
    '',
    details(),
    '',
    ...(failures.length ? ['## Failures', '', ...failures.map((f) => `- [${f.section}] ${f.message.replace(/\n/g, ' ')}`), ''] : []),
  ].join('\n')
  return md
}

// ---------------------------------------------------------------------------------------------
// Main

async function preflight(): Promise<void> {
  const missing: string[] = []
  for (const [cmd, args] of [
    ['docker-registry', ['--version']],
    ['skopeo', ['--version']],
    ['curl', ['--version']],
    ['/usr/sbin/nginx', ['-v']],
    ['containerd', ['--version']],
    ['ctr', ['--version']],
  ] as const) {
    if ((await run(cmd, [...args], { timeoutMs: 10_000 })).code === -1) missing.push(cmd)
  }
  if (missing.length) fail(`missing programs: ${missing.join(', ')} (as root: sh test/install-deps.sh --bench)`)
  if (!(await hasWrk())) log('wrk not installed: using the undici load generator')
}

async function main(): Promise<number> {
  const t0 = now()
  log(`${QUICK ? 'QUICK' : 'FULL'} run: blob ${S.blobBytes / MB} MB${CPU_PROF_DIR ? `, CPU profiles of regcache into ${CPU_PROF_DIR}` : ''}`)
  await preflight()
  if (os.loadavg()[0]! > 0.5) log(`warning: load average ${loadavg()} before starting: other work on this machine will skew the figures`)

  // Setup: upstream with three images, the two long-lived proxies, nginx, containerd.
  const up = await managed('upstream registry', startRegistry())
  log(`upstream registry at ${up.url}; generating the ${S.blobBytes / MB} MB image`)
  const big = await buildBigImage(S.blobBytes)
  defer('big image', () => big.remove())
  await pushImage(big, up.host, `${BIG_REPO}:${TAG}`, { timeoutMs: 600_000 })
  const small = await buildImage({ layers: 1, layerSize: 16 * 1024 })
  defer('small image', () => small.remove())
  await pushImage(small, up.host, `${TAG_REPO}:${TAG}`)
  const layered = await buildImage({ layers: PULL_LAYERS, layerSize: S.layerBytes })
  defer('layered image', () => layered.remove())
  const { digest: pullDigest } = await pushImage(layered, up.host, `${PULL_REPO}:${TAG}`, { timeoutMs: 300_000 })
  log(`images pushed (${fmt((now() - t0) / 1000, 1)} s); blob ${big.layerDigest.slice(0, 19)}… ${fmt(big.layerSize)} bytes`)

  const rc = await regcache(up.url, 'main')
  const dist = await distribution(up.url, 'main')
  R.rss.idle.regcache = (await memoryOf(rc.pid)).rss
  R.rss.idle.dist = (await memoryOf(dist.pid)).rss
  const nginx = await managed('nginx', startNginx(big.layerDir, big.layerFile))

  const kernel = await managed('regcache kernel', startRegcacheProc({ upstreamUrl: up.url, label: 'kernel', env: { REGCACHE_SENDFILE: 'kernel' } }))
  await section('1. warm blob', () => warmBlob(up, big, rc, dist, nginx, kernel))
  await nginx.stop()
  await kernel.stop()
  await section('2. tag revalidation', () => revalidation(up, rc, dist))
  await rc.stop()
  await dist.stop()
  await section('3. cold fan-out', () => coldFanout(up, big))
  await section(`3b. cold fan-out, ${S.linkMBps} MB/s upstream link`, () => coldFanoutLink(up, big))
  await section(`7. tail range of a cold blob, ${S.linkMBps} MB/s upstream link`, async () => {
    const link = await managed('throttle', startThrottle({ host: '127.0.0.1', port: up.port }, S.linkMBps * MB))
    try {
      const start = { regcache: (u: string) => regcache(u, 'lazy'), dist: (u: string) => distribution(u, 'lazy') }
      R.lazy = await lazyTail({ upstream: up, linkUrl: link.url, repo: BIG_REPO, digest: big.layerDigest, size: big.layerSize, tailBytes: LAZY_TAIL, start })
    } finally {
      await link.stop()
    }
  })
  await section('4. upstream hanging', () => hang(up))
  await section('6. ctr images pull', async () => {
    const ctd = await managed('containerd', startContainerd())
    try {
      await pulls(up, ctd, pullDigest)
    } finally {
      await ctd.stop()
    }
  })

  await section('7. object store', async () => {
    R.objectStore = await objectStore({ up, big, repo: BIG_REPO, runs: S.warm1Runs, clients: 3, defer })
  })

  const elapsed = (now() - t0) / 1000
  const md = await report(elapsed)
  if (RESULTS_FILE) {
    // The main run owns the part between its markers; the other modes' sections stay as they are.
    const body = `<!-- main -->\n${md.replace(/^# [^\n]*\n+/, '').trimEnd()}\n<!-- /main -->`
    const text = await readFile(RESULTS_FILE, 'utf8').catch(() => '')
    const a = text.indexOf('<!-- main -->')
    const b = text.indexOf('<!-- /main -->')
    await writeFile(
      RESULTS_FILE,
      a >= 0 && b > a ? text.slice(0, a) + body + text.slice(b + '<!-- /main -->'.length) : `# regcache benchmark results\n\n${body}\n\n${text.replace(/^# [^\n]*\n+/, '')}`,
    )
    log(`wrote ${RESULTS_FILE}`)
  }
  log(`done in ${fmt(elapsed)} s`)
  return failures.length ? 1 : 0
}

let exiting = false
async function shutdown(code: number): Promise<never> {
  if (!exiting) {
    exiting = true
    await cleanupAll()
  }
  process.exit(code)
}

for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  process.once(sig, () => {
    log(`${sig}: stopping everything`)
    void shutdown(130)
  })
}
const watchdog = setTimeout(() => {
  log(`watchdog: still running after ${WATCHDOG_MS / 1000} s, giving up`)
  void shutdown(1)
}, WATCHDOG_MS)
watchdog.unref()

// `npm run bench -- --scale`: the large-cache measurements instead (bench/scale.ts).
// `--memory`: 1,000 clients of one cached blob (bench/memory.ts).
// `--fsck`: `regcache fsck` over a million small blobs (bench/fsck.ts).
const mode = process.argv.includes('--scale')
  ? import('./scale.js').then((m) => m.runScale(defer))
  : process.argv.includes('--memory')
    ? import('./memory.js').then((m) => m.runMemory())
    : process.argv.includes('--fsck')
      ? import('./fsck.js').then((m) => m.runFsck())
      : main()
mode.then(
  (code) => shutdown(code),
  (err) => {
    log(`FAILED: ${(err as Error)?.stack ?? err}`)
    return shutdown(1)
  },
)
