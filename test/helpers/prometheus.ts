// A real Prometheus (Debian's `prometheus` package) on loopback, scraping the targets it is
// given every second and loading alert rule files, so dashboard and rule expressions can be
// evaluated against what regcache really exports. Also: a parser for the text exposition
// format, so tests can read GET /metrics exactly as a scraper sees it.
import { mkdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { stringify } from 'yaml'
import { freePort } from './ports.js'
import { removeTempDir, run, spawnDaemon, startInTempDir, waitUntil, type Daemon, type RunResult } from './proc.js'

export interface PrometheusOptions {
  /** host:port targets of the one scrape job. */
  targets: string[]
  job?: string
  /** Absolute paths (Prometheus resolves relative ones against its config file). */
  ruleFiles?: string[]
  /** Default 1s. */
  scrapeInterval?: string
  /** Default 1s. */
  evaluationInterval?: string
}

export interface PromResponse<T = unknown> {
  status: 'success' | 'error'
  data?: T
  errorType?: string
  error?: string
  warnings?: string[]
}

export interface PromSample {
  metric: Record<string, string>
  value: [number, string]
}

export interface Prometheus {
  url: string
  dataDir: string
  configFile: string
  daemon: Daemon
  /** GET /api/v1/<path> with query parameters; the parsed JSON whatever the HTTP status. */
  api<T = unknown>(path: string, params?: Record<string, string>): Promise<PromResponse<T>>
  /** Instant query (GET /api/v1/query). */
  query(expr: string): Promise<PromResponse<{ resultType: string; result: PromSample[] }>>
  /** Metric names Prometheus has stored (GET /api/v1/label/__name__/values). */
  metricNames(): Promise<string[]>
  stop(): Promise<void>
}

export async function startPrometheus(opts: PrometheusOptions): Promise<Prometheus> {
  return startInTempDir(async (dir, track) => {
    const port = await freePort()
    const url = `http://127.0.0.1:${port}`
    const dataDir = join(dir, 'tsdb')
    await mkdir(dataDir)
    const configFile = join(dir, 'prometheus.yml')
    // Nothing here reaches beyond loopback: one static job, no alertmanagers, no remote
    // write/read, no service discovery.
    await writeFile(
      configFile,
      stringify({
        global: {
          scrape_interval: opts.scrapeInterval ?? '1s',
          scrape_timeout: '1s',
          evaluation_interval: opts.evaluationInterval ?? '1s',
        },
        rule_files: opts.ruleFiles ?? [],
        scrape_configs: [{ job_name: opts.job ?? 'regcache', static_configs: [{ targets: opts.targets }] }],
      }),
    )
    const daemon = track(
      spawnDaemon(
        'prometheus',
        [
          `--config.file=${configFile}`,
          `--storage.tsdb.path=${dataDir}`,
          `--web.listen-address=127.0.0.1:${port}`,
          `--web.external-url=${url}/`,
          '--storage.tsdb.retention.time=1h',
          // The packaged defaults point at /etc/prometheus and /usr/share; keep everything in the temp dir.
          `--web.console.templates=${join(dir, 'consoles')}`,
          `--web.console.libraries=${join(dir, 'console_libraries')}`,
          '--log.level=warn',
        ],
        { cwd: dir },
      ),
    )
    const api = async <T>(path: string, params: Record<string, string> = {}): Promise<PromResponse<T>> => {
      const qs = new URLSearchParams(params).toString()
      const res = await fetch(`${url}/api/v1/${path}${qs ? `?${qs}` : ''}`, { signal: AbortSignal.timeout(10_000) })
      const text = await res.text()
      try {
        return JSON.parse(text) as PromResponse<T>
      } catch {
        return { status: 'error', errorType: `http ${res.status}`, error: text }
      }
    }
    await waitUntil(
      'prometheus',
      async () => (await fetch(`${url}/-/ready`, { signal: AbortSignal.timeout(2000) })).status === 200,
      { daemon, timeoutMs: 30_000, intervalMs: 100 },
    )
    const d = daemon
    return {
      url,
      dataDir,
      configFile,
      daemon: d,
      api,
      query: (expr) => api('query', { query: expr }),
      async metricNames() {
        const r = await api<string[]>('label/__name__/values')
        if (r.status !== 'success' || !r.data) throw new Error(`label values: ${r.errorType}: ${r.error}`)
        return r.data
      },
      async stop() {
        await d.stop(5000)
        await removeTempDir(dir)
      },
    }
  })
}

export function promtool(args: string[], cwd?: string): Promise<RunResult> {
  return run('promtool', args, { cwd, timeoutMs: 60_000 })
}

// ---- Text exposition format ----------------------------------------------------------------

export interface Series {
  name: string
  labels: Record<string, string>
  value: number
}

export interface Exposition {
  series: Series[]
  /** Metric family name → type, from the `# TYPE` lines. */
  types: Map<string, string>
  /** Sum of the series of `name` whose labels include all of `labels`. */
  sum(name: string, labels?: Record<string, string>): number
  /** Whether any series of `name` (with those labels) is exported at all. */
  has(name: string, labels?: Record<string, string>): boolean
}

function parseLabels(s: string): Record<string, string> {
  const out: Record<string, string> = {}
  const re = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g
  for (const m of s.matchAll(re)) out[m[1]!] = m[2]!.replace(/\\n/g, '\n').replace(/\\(.)/g, '$1')
  return out
}

export function parseExposition(text: string): Exposition {
  const series: Series[] = []
  const types = new Map<string, string>()
  for (const line of text.split('\n')) {
    if (line.startsWith('# TYPE ')) {
      const [, , name, type] = line.split(/\s+/)
      if (name && type) types.set(name, type)
      continue
    }
    if (line.startsWith('#') || line.trim() === '') continue
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)/.exec(line)
    if (!m) continue
    series.push({ name: m[1]!, labels: parseLabels(m[2] ?? ''), value: Number(m[3]) })
  }
  const select = (name: string, labels: Record<string, string>) =>
    series.filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v))
  return {
    series,
    types,
    sum: (name, labels = {}) => select(name, labels).reduce((a, s) => a + s.value, 0),
    has: (name, labels = {}) => select(name, labels).length > 0,
  }
}

/** Metric family a sample name belongs to, given the declared types (histogram/summary suffixes). */
export function familyOf(name: string, types: Map<string, string>): string {
  if (types.has(name)) return name
  for (const suffix of ['_bucket', '_sum', '_count', '_created']) {
    if (name.endsWith(suffix)) {
      const base = name.slice(0, -suffix.length)
      const t = types.get(base)
      if (t === 'histogram' || t === 'summary') return base
    }
  }
  return name
}
