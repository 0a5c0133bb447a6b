// Closed-loop HTTP load: C connections, each sending its next request as soon as the previous
// answer arrived, for a fixed duration. Debian's wrk when installed (C, cheap on the CPU the
// servers need); otherwise a small undici generator with the same output.

import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { Pool } from 'undici'
import { makeTempDir, removeTempDir, run } from '../test/helpers/proc.js'
import { now, percentile } from './lib.js'

export interface LoadResult {
  tool: 'wrk' | 'node'
  requests: number
  seconds: number
  rps: number
  /** Latency percentiles, milliseconds. */
  p50: number
  p99: number
  max: number
  /** Responses by HTTP status. */
  statuses: Record<string, number>
  /** Transport errors and timeouts (no HTTP status). */
  errors: number
}

export interface LoadOptions {
  url: string
  connections: number
  durationS: number
  headers?: Record<string, string>
  threads?: number
  timeoutS?: number
}

const WRK_LUA = `
-- Per-thread status counts, aggregated in done() into one JSON line on stdout.
local threads = {}
function setup(thread)
  table.insert(threads, thread)
end
function init(args)
  statuses = {}
end
function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end
function done(summary, latency, requests)
  local agg = {}
  for _, t in ipairs(threads) do
    local s = t:get("statuses")
    if s then
      for k, v in pairs(s) do agg[k] = (agg[k] or 0) + v end
    end
  end
  local parts = {}
  for k, v in pairs(agg) do table.insert(parts, string.format('"%d":%d', k, v)) end
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%.0f,"durationUs":%.0f,"errors":%.0f,"p50":%.0f,"p99":%.0f,"max":%.0f,"statuses":{%s}}\\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(99), latency.max, table.concat(parts, ",")))
end
`

let wrkAvailable: boolean | undefined

export async function hasWrk(): Promise<boolean> {
  if (wrkAvailable === undefined) wrkAvailable = (await run('wrk', ['--version'], { timeoutMs: 5000 })).code !== -1
  return wrkAvailable
}

export async function load(opts: LoadOptions): Promise<LoadResult> {
  const useNode = process.env.BENCH_LOAD === 'node' || !(await hasWrk())
  return useNode ? loadNode(opts) : loadWrk(opts)
}

async function loadWrk(o: LoadOptions): Promise<LoadResult> {
  const dir = await makeTempDir()
  try {
    const script = join(dir, 'status.lua')
    await writeFile(script, WRK_LUA)
    const args = ['-t', String(o.threads ?? 2), '-c', String(o.connections), '-d', `${o.durationS}s`, '--timeout', `${o.timeoutS ?? 30}s`, '-s', script]
    for (const [k, v] of Object.entries(o.headers ?? {})) args.push('-H', `${k}: ${v}`)
    args.push(o.url)
    const r = await run('wrk', args, { timeoutMs: (o.durationS + (o.timeoutS ?? 30) + 30) * 1000 })
    const line = r.stdout.split('\n').find((l) => l.startsWith('WRKJSON '))
    if (r.code !== 0 || !line) throw new Error(`wrk ${args.join(' ')} exited ${r.code}:\n${r.stdout}\n${r.stderr}`)
    const j = JSON.parse(line.slice('WRKJSON '.length)) as {
      requests: number
      durationUs: number
      errors: number
      p50: number
      p99: number
      max: number
      statuses: Record<string, number>
    }
    const seconds = j.durationUs / 1e6
    return {
      tool: 'wrk',
      requests: j.requests,
      seconds,
      rps: j.requests / seconds,
      p50: j.p50 / 1000,
      p99: j.p99 / 1000,
      max: j.max / 1000,
      statuses: j.statuses,
      errors: j.errors,
    }
  } finally {
    await removeTempDir(dir)
  }
}

async function loadNode(o: LoadOptions): Promise<LoadResult> {
  const u = new URL(o.url)
  const pool = new Pool(u.origin, { connections: o.connections, pipelining: 1, keepAliveTimeout: 10_000 })
  const latencies: number[] = []
  const statuses: Record<string, number> = {}
  let errors = 0
  const t0 = now()
  const deadline = t0 + o.durationS * 1000
  const worker = async () => {
    while (now() < deadline) {
      const s = now()
      try {
        const res = await pool.request({
          method: 'GET',
          path: u.pathname + u.search,
          headers: { 'user-agent': 'regcache-bench-load', ...o.headers },
          headersTimeout: (o.timeoutS ?? 30) * 1000,
          bodyTimeout: (o.timeoutS ?? 30) * 1000,
        })
        await res.body.dump({ limit: Infinity })
        latencies.push(now() - s)
        statuses[res.statusCode] = (statuses[res.statusCode] ?? 0) + 1
      } catch {
        errors++
      }
    }
  }
  await Promise.all(Array.from({ length: o.connections }, worker))
  const seconds = (now() - t0) / 1000
  await pool.close()
  return {
    tool: 'node',
    requests: latencies.length,
    seconds,
    rps: latencies.length / seconds,
    p50: percentile(latencies, 50),
    p99: percentile(latencies, 99),
    max: Math.max(...latencies),
    statuses,
    errors,
  }
}
