// Small shared pieces of the benchmark: statistics, HTTP download clients (curl for raw
// throughput, undici + sha256 for verified downloads), /proc readers and table formatting.

import { createHash } from 'node:crypto'
import { readFile, readdir } from 'node:fs/promises'
import { Agent, request } from 'undici'
import { run } from '../test/helpers/proc.js'

export const MB = 1_000_000

export function median(xs: number[]): number {
  if (xs.length === 0) return NaN
  const s = [...xs].sort((a, b) => a - b)
  const m = Math.floor(s.length / 2)
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2
}

/** Nearest-rank percentile (p in 0..100) of unsorted samples. */
export function percentile(xs: number[], p: number): number {
  if (xs.length === 0) return NaN
  const s = [...xs].sort((a, b) => a - b)
  const rank = Math.min(s.length, Math.max(1, Math.ceil((p / 100) * s.length)))
  return s[rank - 1]!
}

export const now = () => performance.now()

export function log(...parts: unknown[]): void {
  const t = new Date().toISOString().slice(11, 19)
  process.stderr.write(`[bench ${t}] ${parts.map((p) => (typeof p === 'string' ? p : JSON.stringify(p))).join(' ')}\n`)
}

export class BenchFailure extends Error {
  override name = 'BenchFailure'
}

export function fail(msg: string): never {
  throw new BenchFailure(msg)
}

// One agent for every verified download: no connection limit per origin, so N concurrent
// downloads really are N connections; generous timeouts because a cold 500 MB blob through a
// slow proxy may pause between chunks while it is being fetched upstream.
const agent = new Agent({ connections: null, headersTimeout: 600_000, bodyTimeout: 600_000, keepAliveTimeout: 1000 })

export interface HashedDownload {
  status: number
  bytes: number
  digest: string
  ms: number
  cache: string | undefined
}

/** GET url, hashing every byte of the body with sha256. */
export async function hashedGet(url: string, opts: { timeoutMs?: number; headers?: Record<string, string> } = {}): Promise<HashedDownload> {
  const t0 = now()
  const res = await request(url, {
    dispatcher: agent,
    headers: { 'user-agent': 'regcache-bench', ...opts.headers },
    signal: opts.timeoutMs ? AbortSignal.timeout(opts.timeoutMs) : undefined,
  })
  const h = createHash('sha256')
  let bytes = 0
  for await (const chunk of res.body as AsyncIterable<Buffer>) {
    h.update(chunk)
    bytes += chunk.length
  }
  const cache = res.headers['x-regcache-cache']
  return {
    status: res.statusCode,
    bytes,
    digest: 'sha256:' + h.digest('hex'),
    ms: now() - t0,
    cache: Array.isArray(cache) ? cache[0] : cache,
  }
}

/** Throws unless the download is a 200 of exactly the expected bytes. */
export function checkBlob(what: string, d: HashedDownload, digest: string, size: number): void {
  if (d.status !== 200) fail(`${what}: HTTP ${d.status}, expected 200`)
  if (d.bytes !== size) fail(`${what}: received ${d.bytes} bytes, expected ${size}`)
  if (d.digest !== digest) fail(`${what}: content hashes to ${d.digest}, expected ${digest}`)
}

export interface Timed<T> {
  value: T
  ms: number
}

export async function timed<T>(f: () => Promise<T>): Promise<Timed<T>> {
  const t0 = now()
  const value = await f()
  return { value, ms: now() - t0 }
}

export interface RequestTiming {
  ms: number
  status?: number
  cache?: string
  stale?: string
  error?: string
}

/** One small GET (a manifest), timed; never throws (timeouts and errors are reported). */
export async function timedGet(url: string, headers: Record<string, string>, timeoutMs: number): Promise<RequestTiming> {
  const t0 = now()
  try {
    const res = await request(url, { dispatcher: agent, headers: { 'user-agent': 'regcache-bench', ...headers }, signal: AbortSignal.timeout(timeoutMs) })
    await res.body.arrayBuffer()
    const one = (v: string | string[] | undefined) => (Array.isArray(v) ? v[0] : v)
    return { ms: now() - t0, status: res.statusCode, cache: one(res.headers['x-regcache-cache']), stale: one(res.headers['x-regcache-stale']) }
  } catch (err) {
    const e = err as Error
    const timedOut = e.name === 'TimeoutError' || e.name === 'AbortError' || /abort|timeout/i.test(e.message)
    return { ms: now() - t0, error: timedOut ? 'timeout' : `${e.name}: ${e.message}` }
  }
}

export interface CurlResult {
  status: number
  bytes: number
  /** curl's own transfer time (connect to last byte), seconds. */
  seconds: number
}

/** Raw download to /dev/null with curl: the cheapest client, so the server is what is measured. */
export async function curlGet(url: string, timeoutMs = 600_000): Promise<CurlResult> {
  const r = await run('curl', ['-sS', '-o', '/dev/null', '-A', 'regcache-bench', '-w', '%{http_code} %{size_download} %{time_total}', url], { timeoutMs })
  if (r.code !== 0) fail(`curl ${url} exited ${r.code}: ${r.stderr}`)
  const [status, bytes, seconds] = r.stdout.trim().split(/\s+/).map(Number)
  return { status: status!, bytes: bytes!, seconds: seconds! }
}

/** Peak (VmHWM) and current (VmRSS) resident memory of a process, bytes. */
export async function memoryOf(pid: number): Promise<{ hwm: number; rss: number }> {
  const text = await readFile(`/proc/${pid}/status`, 'utf8')
  const kb = (key: string) => Number(new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(text)?.[1] ?? NaN) * 1024
  return { hwm: kb('VmHWM'), rss: kb('VmRSS') }
}

/** User + system CPU seconds used so far by these processes (dead ones count 0). */
export async function cpuSeconds(pids: number[]): Promise<number> {
  let ticks = 0
  for (const pid of pids) {
    const stat = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => '')
    if (!stat) continue
    // Fields after "(comm)": state is [0], utime [11], stime [12] (clock ticks, USER_HZ = 100).
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    ticks += Number(f[11]) + Number(f[12])
  }
  return ticks / 100
}

/**
 * CPU seconds (user + system) used on the whole machine, and by this process with all its
 * descendants (live ones, plus the children it has already reaped). The difference is what other
 * work on the machine took: the bench reports it per measurement, since it skews the figures.
 */
export async function cpuAccount(): Promise<{ machine: number; mine: number }> {
  const stat = await readFile('/proc/stat', 'utf8')
  const f = stat.split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number)
  // user nice system idle iowait irq softirq steal: interrupts are not attributed to processes
  // (loopback traffic is mostly softirq), so only process time is compared.
  const machine = (f[0]! + f[1]! + f[2]!) / 100
  const parent = new Map<number, number>()
  const times = new Map<number, number>()
  for (const name of await readdir('/proc').catch(() => [] as string[])) {
    if (!/^\d+$/.test(name)) continue
    const st = await readFile(`/proc/${name}/stat`, 'utf8').catch(() => '')
    if (!st) continue
    const x = st.slice(st.lastIndexOf(')') + 2).split(' ')
    parent.set(Number(name), Number(x[1]))
    // utime stime cutime cstime
    times.set(Number(name), Number(x[11]) + Number(x[12]) + Number(x[13]) + Number(x[14]))
  }
  let mine = 0
  for (const [pid, t] of times) {
    for (let p: number | undefined = pid, hops = 0; p !== undefined && p > 1 && hops < 64; p = parent.get(p), hops++) {
      if (p === process.pid) {
        mine += t
        break
      }
    }
  }
  return { machine, mine: mine / 100 }
}

/**
 * Polls VmRSS every intervalMs until stopped; returns the highest value seen. VmHWM is the exact
 * lifetime peak; this is the peak within one window, for processes that outlive the window.
 */
export function pollRss(pid: number, intervalMs = 100): { stop(): Promise<number> } {
  let peak = 0
  let stopped = false
  const tick = async () => {
    while (!stopped) {
      try {
        peak = Math.max(peak, (await memoryOf(pid)).rss)
      } catch {
        return
      }
      await new Promise((r) => setTimeout(r, intervalMs))
    }
  }
  const loop = tick()
  return {
    async stop() {
      stopped = true
      await loop
      try {
        peak = Math.max(peak, (await memoryOf(pid)).rss)
      } catch {
        /* exited */
      }
      return peak
    },
  }
}

export function fmt(n: number | undefined, digits = 0): string {
  if (n === undefined || Number.isNaN(n)) return '—'
  return n.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits })
}

export function markdownTable(header: string[], rows: string[][]): string {
  const esc = (s: string) => s.replace(/\|/g, '\\|')
  const lines = [`| ${header.map(esc).join(' | ')} |`, `| ${header.map(() => '---').join(' | ')} |`]
  for (const r of rows) lines.push(`| ${r.map(esc).join(' | ')} |`)
  return lines.join('\n')
}

/** Fixed-width rendering of the same table for the terminal. */
export function textTable(header: string[], rows: string[][]): string {
  const all = [header, ...rows]
  const widths = header.map((_, i) => Math.max(...all.map((r) => (r[i] ?? '').length)))
  const line = (r: string[]) => r.map((c, i) => (c ?? '').padEnd(widths[i]!)).join(' | ')
  return [line(header), widths.map((w) => '-'.repeat(w)).join('-+-'), ...rows.map(line)].join('\n')
}
