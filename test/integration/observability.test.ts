// Observability with real parts: the metrics a scraper sees after a pull / tag move / outage
// scenario (containerd pulling through regcache via hosts.toml), a real Prometheus evaluating
// every Grafana panel and alert rule shipped in deploy/, the status page in a real Chromium,
// and the request log (fields present, upstream credentials absent).

import { existsSync } from 'node:fs'
import { mkdir, readFile, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import t from 'tap'
import { parse as parseYaml } from 'yaml'
import { haveChromium, launchChromium } from '../helpers/browser.js'
import { startContainerd, writeHostsToml } from '../helpers/containerd.js'
import { startForwarder } from '../helpers/forwarder.js'
import { startInterceptingFront } from '../helpers/http-front.js'
import { buildImage, pushImage, type OciLayout } from '../helpers/images.js'
import { makeTempDir, removeTempDir, run, sleep } from '../helpers/proc.js'
import { familyOf, parseExposition, promtool, startPrometheus, type Exposition } from '../helpers/prometheus.js'
import { startRegcache } from '../helpers/regcache.js'
import { startRegistry } from '../helpers/registry.js'

const ROOT = process.cwd()
const DASHBOARD = resolve(ROOT, 'deploy/grafana/regcache.json')
const RULES = resolve(ROOT, 'deploy/prometheus/regcache-rules.yaml')
const RULES_TEST = resolve(ROOT, 'deploy/prometheus/regcache-rules.test.yaml')
const ARTIFACTS = join(tmpdir(), 'regcache-test-artifacts')
const DEAD = 'http://127.0.0.1:9'
// containerd's Accept, so direct requests share the tag entries of its pulls.
const ACCEPT = [
  'application/vnd.docker.distribution.manifest.v2+json',
  'application/vnd.docker.distribution.manifest.list.v2+json',
  'application/vnd.oci.image.manifest.v1+json',
  'application/vnd.oci.image.index.v1+json',
  '*/*',
].join(', ')
// Docker Hub's header format; the ratio (5 %) is under RegcacheRateLimitLow's 10 %.
const RATELIMIT = { limit: '100;w=21600', remaining: '5;w=21600' }

/**
 * Metrics of client authentication and the object store. When regcache exports them they are
 * checked like every other; a regcache built without those parts does not, and then the panels
 * and rules that use them are only checked to evaluate.
 */
const PART_METRICS: ReadonlyMap<string, string> = new Map([
  ['regcache_auth_failures_total', 'client authentication'],
  ['regcache_store_up', 'the object store'],
  ['regcache_store_errors_total', 'the object store'],
])

/** The metrics the dashboard and the rules must cover, whatever else they show. */
const COVERED = [
  'regcache_prefetch_total',
  'regcache_prefetch_bytes_total',
  'regcache_prefetch_pending',
  'regcache_range_forwards_total',
  'regcache_range_forwarded_bytes_total',
  'regcache_scrub_checked_total',
  ...PART_METRICS.keys(),
]

/** As the status page writes sizes. */
function humanBytes(n: number): string {
  const u = ['B', 'KiB', 'MiB', 'GiB', 'TiB']
  let i = 0
  while (n >= 1024 && i < u.length - 1) {
    n /= 1024
    i++
  }
  return n.toFixed(i ? 1 : 0) + ' ' + u[i]
}

async function scrape(url: string): Promise<Exposition> {
  const res = await fetch(`${url}/metrics`)
  if (res.status !== 200) throw new Error(`GET /metrics -> ${res.status}`)
  return parseExposition(await res.text())
}

const status = async (url: string) => {
  const res = await fetch(url)
  await res.arrayBuffer()
  return res.status
}

// ---- Dashboard / rule expression plumbing --------------------------------------------------

interface PanelExpr {
  panel: string
  refId?: string
  expr: string
  /** After Grafana variables were replaced. */
  query: string
}

interface GrafanaVar {
  name: string
  type: string
}

/** Grafana's macros and template variables → something Prometheus evaluates. */
function grafanaToPromQL(expr: string, vars: GrafanaVar[]): string {
  let q = expr
  for (const macro of ['__rate_interval', '__interval', '__range', '__range_s', '__range_ms', '__interval_ms']) {
    const value = macro.endsWith('_s') ? '60' : macro.endsWith('_ms') ? '60000' : '1m'
    q = q.replaceAll(`\${${macro}}`, value).replace(new RegExp(`\\$${macro}\\b`, 'g'), value)
  }
  for (const v of vars) {
    if (v.type === 'datasource') continue
    const forms = [`\${${v.name}:regex}`, `\${${v.name}:pipe}`, `\${${v.name}}`, `[[${v.name}]]`, `$${v.name}`]
    for (const f of forms) {
      // Inside a matcher: any value. `=` becomes `=~` so ".*" means "all".
      q = q.replace(new RegExp(`(=~|!~|=|!=)\\s*"${escapeRe(f)}(?![A-Za-z0-9_])"`, 'g'), (_m, op: string) => `${op === '=' ? '=~' : op === '!=' ? '!~' : op}".*"`)
    }
  }
  return q
}

const escapeRe = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')

function dashboardExprs(dash: any): PanelExpr[] {
  const vars: GrafanaVar[] = (dash.templating?.list ?? []).map((v: any) => ({ name: v.name, type: v.type }))
  const out: PanelExpr[] = []
  const walk = (panels: any[]) => {
    for (const p of panels ?? []) {
      for (const target of p.targets ?? []) {
        if (typeof target.expr === 'string' && target.expr.trim() !== '') {
          out.push({ panel: p.title ?? `(panel id ${p.id})`, refId: target.refId, expr: target.expr, query: grafanaToPromQL(target.expr, vars) })
        }
      }
      if (Array.isArray(p.panels)) walk(p.panels)
    }
  }
  walk(dash.panels)
  return out
}

/** regcache_* identifiers in an expression (not inside label values or strings). */
function metricNamesIn(expr: string): string[] {
  const noStrings = expr.replace(/"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`/g, '""')
  return [...new Set(noStrings.match(/\bregcache_[a-z0-9_]+/g) ?? [])]
}

// --------------------------------------------------------------------------------------------

t.test('observability: metrics, Prometheus, status page, logs', async (t) => {
  const reg = await startRegistry()
  t.teardown(reg.stop)
  // regcache → TCP forwarder (outages) → HTTP front adding rate-limit headers → registry.
  const front = await startInterceptingFront({ host: '127.0.0.1', port: reg.port }, (_req, res) => {
    res.setHeader('ratelimit-limit', RATELIMIT.limit)
    res.setHeader('ratelimit-remaining', RATELIMIT.remaining)
    return false
  })
  t.teardown(front.stop)
  const fwd = await startForwarder({ host: '127.0.0.1', port: front.port })
  t.teardown(fwd.stop)

  const images: OciLayout[] = await Promise.all([
    buildImage({ layers: 2, layerSize: 16 * 1024 }),
    buildImage({ layers: 2, layerSize: 16 * 1024 }),
    buildImage({ layers: 1, layerSize: 1024 * 1024 }),
  ])
  for (const x of images) t.teardown(x.remove)
  const [imgV1, imgV2, imgBurst] = images as [OciLayout, OciLayout, OciLayout]

  const rc = await startRegcache({
    upstreams: {
      // probeInterval long: the upstream stays marked down for the rest of the test, so
      // Prometheus, the alert rules and the status page all see the outage.
      'docker.io': { url: fwd.url, revalidate: { timeout: '1s' }, down: { failures: 2, probeInterval: '10m' }, stale: { maxAge: '1h' } },
    },
    extra: { cache: { maxSize: '1GiB' } },
  })
  t.teardown(() => rc.stop())

  // Slow starters in parallel with the scenario.
  // A rule file Prometheus cannot load stops it from starting; then it is started without
  // the rules, so the dashboard is still checked and the rule error is reported on its own.
  let ruleLoadError: string | undefined
  const promStarted = startPrometheus({ targets: [rc.host], job: 'regcache', ruleFiles: [RULES] }).catch((err: Error) => {
    ruleLoadError = err.message
    return startPrometheus({ targets: [rc.host], job: 'regcache' })
  })
  promStarted.then((p) => t.teardown(p.stop), () => {})
  const ctd = await startContainerd()
  t.teardown(ctd.stop)
  const hostsDir = await makeTempDir()
  t.teardown(() => removeTempDir(hostsDir))
  await writeHostsToml(hostsDir, 'docker.io', rc.url, { server: DEAD })
  const pull = async (ref: string) => {
    await ctd.removeAllContent()
    return ctd.pull(ref, { hostsDir, timeoutMs: 30_000 })
  }
  const head = async (path: string) => {
    const res = await fetch(`${rc.url}${path}`, { method: 'HEAD', headers: { accept: ACCEPT } })
    return { status: res.status, cache: res.headers.get('x-regcache-cache'), stale: res.headers.get('x-regcache-stale') }
  }
  const outcomes = async () => {
    const m = await scrape(rc.url)
    const by: Record<string, number> = {}
    for (const s of m.series) if (s.name === 'regcache_requests_total') by[s.labels.outcome!] = (by[s.labels.outcome!] ?? 0) + s.value
    return by
  }
  const moved = (before: Record<string, number>, after: Record<string, number>, outcome: string) => (after[outcome] ?? 0) - (before[outcome] ?? 0)

  let v2Digest = ''

  await t.test('metrics move through pull, tag move and outage', async (t) => {
    await pushImage(imgV1, reg.host, 'library/web:v1')
    let before = await outcomes()
    let r = await pull('docker.io/library/web:v1')
    t.equal(r.code, 0, `first pull: ${r.stderr}`)
    let after = await outcomes()
    t.ok(moved(before, after, 'miss') >= 1, `first pull: miss moved (${JSON.stringify(after)})`)

    before = after
    r = await pull('docker.io/library/web:v1')
    t.equal(r.code, 0, `second pull: ${r.stderr}`)
    after = await outcomes()
    t.ok(moved(before, after, 'revalidated') >= 1, `unchanged tag: revalidated moved (${JSON.stringify(after)})`)
    t.ok(moved(before, after, 'hit') >= 1, 'blobs from cache: hit moved')

    v2Digest = (await pushImage(imgV2, reg.host, 'library/web:v1')).digest
    before = after
    r = await pull('docker.io/library/web:v1')
    t.equal(r.code, 0, `pull after the tag moved: ${r.stderr}`)
    t.equal(await ctd.imageDigest('docker.io/library/web:v1'), v2Digest, 'containerd got v2')
    after = await outcomes()
    t.ok(moved(before, after, 'changed') >= 1, `tag moved: changed moved (${JSON.stringify(after)})`)

    // Concurrent requests for the same tag and the same uncached blob share one upstream call.
    await pushImage(imgBurst, reg.host, 'library/burst:1')
    const tagAnswers = await Promise.all(
      Array.from({ length: 8 }, () => fetch(`${rc.url}/v2/library/burst/manifests/1`, { headers: { accept: ACCEPT } }).then(async (res) => (await res.arrayBuffer(), res.status))),
    )
    t.same(tagAnswers, Array(8).fill(200), 'burst of tag requests answered')
    const layer = imgBurst.layerDigests[0]!
    const blobAnswers = await Promise.all(
      Array.from({ length: 8 }, () => fetch(`${rc.url}/v2/library/burst/blobs/${layer}`).then(async (res) => (await res.arrayBuffer()).byteLength)),
    )
    t.same(blobAnswers, Array(8).fill(imgBurst.layerSizes[0]), 'burst of blob requests answered in full')

    // Upstream dies outright.
    await fwd.setMode('refuse', { dropExisting: true })
    before = await outcomes()
    r = await pull('docker.io/library/web:v1')
    t.equal(r.code, 0, `pull while upstream refuses: ${r.stderr}`)
    after = await outcomes()
    t.ok(moved(before, after, 'stale') >= 1, `outage: stale moved (${JSON.stringify(after)})`)
    // A second failure opens the circuit breaker (down.failures: 2).
    const h = await head('/v2/library/web/manifests/v1')
    t.equal(h.status, 200, 'still answered from cache')
    t.match(h.stale ?? '', /reason=(refused|down)/, `x-regcache-stale: ${h.stale}`)

    const m = await scrape(rc.url)
    t.equal(m.sum('regcache_upstream_up', { upstream: 'docker.io' }), 0, 'regcache_upstream_up{upstream="docker.io"} is 0 after 2 failures')
    const refusedSoFar = m.sum('regcache_upstream_requests_total', { upstream: 'docker.io', status: 'refused' })
    // While marked down no attempt is made; the answer is stale with reason=down.
    const d = await head('/v2/library/web/manifests/v1')
    t.equal(d.status, 200)
    t.match(d.stale ?? '', /reason=down/, `while down: ${d.stale}`)

    const final = await scrape(rc.url)
    t.equal(final.sum('regcache_upstream_requests_total', { upstream: 'docker.io', status: 'refused' }), refusedSoFar, 'no upstream attempt while marked down')
    for (const outcome of ['miss', 'hit', 'revalidated', 'changed', 'stale', 'coalesced']) {
      t.ok(final.sum('regcache_requests_total', { outcome }) >= 1, `regcache_requests_total{outcome="${outcome}"} > 0`)
    }
    t.ok(final.sum('regcache_requests_total', { kind: 'manifest' }) >= 1, 'manifest requests counted')
    t.ok(final.sum('regcache_requests_total', { kind: 'blob' }) >= 1, 'blob requests counted')
    t.ok(final.sum('regcache_revalidations_total', { result: 'changed' }) >= 1, 'revalidations{result="changed"} >= 1')
    t.ok(final.sum('regcache_revalidations_total', { result: 'unchanged' }) >= 1, 'revalidations{result="unchanged"} >= 1')
    t.ok(final.sum('regcache_revalidations_total', { result: 'skipped_down' }) >= 1, 'revalidations{result="skipped_down"} >= 1')
    t.ok(final.sum('regcache_stale_served_total', { upstream: 'docker.io' }) >= 1, 'stale_served_total{upstream="docker.io"} >= 1')
    t.ok(final.sum('regcache_stale_served_total', { upstream: 'docker.io', reason: 'refused' }) >= 1, 'stale_served_total{reason="refused"} >= 1')
    t.ok(final.sum('regcache_stale_served_total', { upstream: 'docker.io', reason: 'down' }) >= 1, 'stale_served_total{reason="down"} >= 1')
    t.ok(final.sum('regcache_upstream_requests_total', { upstream: 'docker.io', status: '2xx' }) >= 1, 'upstream_requests_total{status="2xx"} > 0')
    t.ok(refusedSoFar >= 1, 'upstream_requests_total{status="refused"} > 0')
    t.ok(final.sum('regcache_served_bytes_total', { source: 'cache' }) > 0, 'served_bytes_total{source="cache"} > 0')
    t.ok(final.sum('regcache_served_bytes_total', { source: 'upstream' }) > 0, 'served_bytes_total{source="upstream"} > 0')
    t.ok(final.sum('regcache_cache_bytes') > 0, 'cache_bytes > 0')
    t.ok(final.sum('regcache_cache_blobs') > 0, 'cache_blobs > 0')
    t.equal(final.sum('regcache_cache_limit_bytes'), 1024 ** 3, 'cache_limit_bytes = cache.maxSize')
    t.ok(final.sum('regcache_coalesced_total') >= 1, `coalesced_total > 0 (${JSON.stringify(final.series.filter((s) => s.name === 'regcache_coalesced_total'))})`)
    t.ok(final.sum('regcache_fills_total', { result: 'ok' }) >= 1, 'fills_total{result="ok"} > 0')
    t.equal(final.sum('regcache_upstream_ratelimit_limit', { upstream: 'docker.io' }), 100, 'ratelimit-limit header → gauge')
    t.equal(final.sum('regcache_upstream_ratelimit_remaining', { upstream: 'docker.io' }), 5, 'ratelimit-remaining header → gauge')
    t.ok(final.sum('regcache_request_duration_seconds_count', { kind: 'manifest' }) >= 1, 'request duration observed')
    t.ok(final.sum('regcache_upstream_request_duration_seconds_count', { upstream: 'docker.io' }) >= 1, 'upstream duration observed')
    t.ok(final.has('regcache_process_resident_memory_bytes'), 'default process metrics carry the regcache_ prefix')

    t.equal(await status(`${rc.url}/healthz`), 200, '/healthz 200')
    t.equal(await status(`${rc.url}/readyz`), 200, '/readyz 200')
    // As root, chmod does not stop writes; the immutable flag does (access(W_OK) → EPERM).
    const immutable = await run('chattr', ['+i', rc.dataDir], { timeoutMs: 5000 })
    if (immutable.code === 0) {
      try {
        t.equal(await status(`${rc.url}/readyz`), 503, '/readyz 503 while the data dir is not writable')
        t.equal(await status(`${rc.url}/healthz`), 200, '/healthz still 200 (liveness is not readiness)')
      } finally {
        await run('chattr', ['-i', rc.dataDir], { timeoutMs: 5000 })
      }
      t.equal(await status(`${rc.url}/readyz`), 200, '/readyz 200 again')
    } else {
      t.comment(`chattr +i not possible here (${immutable.stderr.trim()}); /readyz 503 not checked`)
    }
  })

  await t.test('a real Prometheus scrapes regcache and evaluates the dashboard and the alert rules', async (t) => {
    const p = await promStarted
    const promQuery = async (expr: string) => {
      const r = await p.query(expr)
      return r.status === 'success' ? (r.data?.result ?? []) : []
    }
    // Up, and scraped at least twice after the scenario so rate() sees the outage.
    const sinceScenario = Date.now() / 1000
    const deadline = Date.now() + 20_000
    while (Date.now() < deadline) {
      const up = await promQuery('up{job="regcache"} == 1')
      const ts = await promQuery('timestamp(up{job="regcache"})')
      if (up.length === 1 && ts.length === 1 && Number(ts[0]!.value[1]) > sinceScenario + 0.5) break
      await sleep(250)
    }
    t.equal((await promQuery('up{job="regcache"} == 1')).length, 1, 'up{job="regcache"} == 1')
    // One more stale serve after Prometheus has seen the counter, so its rate is above zero.
    await head('/v2/library/web/manifests/v1')
    const afterBump = Date.now() / 1000
    while (Date.now() < deadline + 10_000) {
      const ts = await promQuery('timestamp(up{job="regcache"})')
      if (ts.length === 1 && Number(ts[0]!.value[1]) > afterBump + 1.5) break
      await sleep(250)
    }

    const dump = await scrape(rc.url)
    const names = new Set(await p.metricNames())

    const dash = JSON.parse(await readFile(DASHBOARD, 'utf8'))
    const exprs = dashboardExprs(dash)
    t.ok(exprs.length > 0, `${exprs.length} dashboard exprs`)
    const exported = (name: string) => dump.types.has(familyOf(name, dump.types))
    /** Metrics of parts this regcache lacks (PART_METRICS) that an expression uses. */
    const absentParts = (expr: string) => metricNamesIn(expr).filter((n) => PART_METRICS.has(n) && !exported(n))
    for (const e of exprs) {
      const where = `deploy/grafana/regcache.json panel "${e.panel}"${e.refId ? ` ref ${e.refId}` : ''}: ${e.expr}`
      const r = await p.query(e.query)
      t.equal(r.status, 'success', `${where} evaluates${r.error ? ` (${r.errorType}: ${r.error})` : ''}`)
      const absent = absentParts(e.query)
      if (absent.length > 0) {
        t.comment(`${where}: ${absent.join(', ')} not exported (this regcache has no ${absent.map((n) => PART_METRICS.get(n)).join(', ')}); only evaluated`)
        continue
      }
      t.ok((r.data?.result ?? []).length > 0, `${where} has data`)
      for (const name of metricNamesIn(e.query)) {
        t.ok(dump.types.has(familyOf(name, dump.types)), `${where}: ${name} is exported by regcache (# TYPE ${familyOf(name, dump.types)})`)
        t.ok(names.has(name), `${where}: ${name} is in Prometheus (label/__name__/values)`)
      }
    }

    const rulesDoc = parseYaml(await readFile(RULES, 'utf8')) as { groups: { name: string; rules: { alert?: string; record?: string; expr: string }[] }[] }
    const ruleCount = rulesDoc.groups.reduce((a, g) => a + g.rules.length, 0)
    for (const g of rulesDoc.groups) {
      for (const rule of g.rules) {
        const where = `deploy/prometheus/regcache-rules.yaml ${rule.alert ?? rule.record}: ${rule.expr.trim()}`
        const r = await p.query(rule.expr)
        t.equal(r.status, 'success', `${where} evaluates${r.error ? ` (${r.errorType}: ${r.error})` : ''}`)
        for (const name of metricNamesIn(rule.expr)) {
          if (absentParts(name).length > 0) continue
          t.ok(dump.types.has(familyOf(name, dump.types)), `${where}: ${name} is exported by regcache`)
        }
      }
    }
    const inDashboard = new Set(exprs.flatMap((e) => metricNamesIn(e.query)))
    const inRules = new Set(rulesDoc.groups.flatMap((g) => g.rules.flatMap((r) => metricNamesIn(r.expr))))
    for (const name of COVERED) {
      t.ok(inDashboard.has(name), `the dashboard shows ${name}`)
      t.ok(inRules.has(name) || name.endsWith('_bytes_total'), `an alert rule watches ${name}`)
    }

    t.notOk(ruleLoadError, `Prometheus loads ${RULES}${ruleLoadError ? `: ${ruleLoadError}` : ''}`)
    const check = await promtool(['check', 'rules', RULES])
    t.equal(check.code, 0, `promtool check rules: ${check.stdout}${check.stderr}`)
    if (existsSync(RULES_TEST)) {
      const unit = await promtool(['test', 'rules', RULES_TEST], resolve(RULES_TEST, '..'))
      t.equal(unit.code, 0, `promtool test rules: ${unit.stdout}${unit.stderr}`)
    }
    if (ruleLoadError) return

    // The rule groups loaded and evaluated cleanly.
    type RuleInfo = { name: string; health: string; lastError?: string; state?: string; lastEvaluation: string; alerts?: { labels: Record<string, string>; state: string }[] }
    type Rules = { groups: { name: string; file: string; rules: RuleInfo[] }[] }
    let loaded: Rules['groups'] = []
    const evalDeadline = Date.now() + 10_000
    while (Date.now() < evalDeadline) {
      const r = await p.api<Rules>('rules')
      loaded = r.data?.groups ?? []
      const rules = loaded.flatMap((g) => g.rules)
      if (rules.length === ruleCount && rules.every((x) => Date.parse(x.lastEvaluation) / 1000 > afterBump)) break
      await sleep(250)
    }
    t.same(loaded.map((g) => g.name).sort(), rulesDoc.groups.map((g) => g.name).sort(), 'every rule group loaded')
    const loadedRules = loaded.flatMap((g) => g.rules)
    t.equal(loadedRules.length, ruleCount, `${ruleCount} rules loaded`)
    for (const rule of loadedRules) {
      t.equal(rule.health, 'ok', `rule ${rule.name}: health ok${rule.lastError ? ` (${rule.lastError})` : ''}`)
    }
    // With real data the outage alerts are pending (their `for:` is minutes long).
    const alert = (name: string) => loadedRules.find((r) => r.name === name)
    t.match(alert('RegcacheUpstreamDown'), { state: 'pending', alerts: [{ labels: { upstream: 'docker.io', job: 'regcache', instance: rc.host } }] }, 'RegcacheUpstreamDown pending for docker.io')
    t.match(alert('RegcacheRateLimitLow'), { state: 'pending', alerts: [{ labels: { upstream: 'docker.io' } }] }, 'RegcacheRateLimitLow pending (5 of 100 left)')
    t.match(alert('RegcacheServingStale'), { state: 'pending', alerts: [{ labels: { upstream: 'docker.io' } }] }, 'RegcacheServingStale pending')
    t.equal(alert('RegcacheDown')?.state, 'inactive', 'RegcacheDown inactive (it is scraped)')
  })

  await t.test('the status page in Chromium', { skip: haveChromium() ? false : 'no /usr/bin/chromium (apt-get install chromium)' }, async (t) => {
    const b = await launchChromium()
    t.teardown(() => b.close())
    const page = await b.browser.newPage({ viewport: { width: 1280, height: 1400 } })
    const problems: string[] = []
    page.on('pageerror', (e) => problems.push(`pageerror: ${e.message}`))
    page.on('console', (m) => {
      // Failed loads are reported by URL through 'response' below.
      if (m.type() === 'error' && !m.text().startsWith('Failed to load resource')) problems.push(`console.error: ${m.text()}`)
    })
    page.on('response', (r) => {
      const u = new URL(r.url())
      // The browser's own favicon probe, and the deliberately bad history query below.
      if (u.pathname === '/favicon.ico') return
      if (u.pathname === '/api/history' && u.searchParams.get('image')?.startsWith('nowhere.example/')) return
      if (r.status() >= 400) problems.push(`${r.status()} for ${r.request().method()} ${u.pathname}${u.search}`)
    })
    page.on('requestfailed', (r) => problems.push(`request failed: ${r.url()} ${r.failure()?.errorText}`))
    const res = await page.goto(`${rc.url}/`, { waitUntil: 'load' })
    t.equal(res?.status(), 200, 'GET / 200')
    t.equal(await page.title(), 'regcache')
    // Filled by the first refresh().
    await page.waitForFunction(() => document.getElementById('cache-used')?.textContent !== '…', null, { timeout: 10_000 })

    // The charts: drawn by uPlot (served by regcache itself) from the sampled series, which by now
    // hold the pulls and the outage (a sample is taken every 10 s).
    await page.waitForFunction(() => Number(document.body.dataset.chartPoints ?? 0) > 0, null, { timeout: 40_000 })
    for (const id of ['chart-requests', 'chart-bytes', 'chart-health', 'chart-disk']) {
      t.equal(await page.locator(`#${id} .uplot canvas`).count(), 1, `${id} drawn`)
    }
    const series = (await (await fetch(`${rc.url}/api/series`)).json()) as { hour: { fromCache: number; bytesCache: number; upstreamsDown: number; cacheBytes: number }[]; day: unknown[] }
    t.ok(series.hour.some((r) => r.fromCache > 0 && r.bytesCache > 0), 'the hour series holds requests and bytes from the cache')
    t.ok(series.hour.some((r) => r.upstreamsDown > 0), 'and the outage')
    t.ok(series.hour.some((r) => r.cacheBytes > 0), 'and the disk used')
    t.ok(series.day.length > 0, 'the day series too')
    // The headline figures are the counters /metrics shows.
    await page.reload({ waitUntil: 'load' })
    await page.waitForFunction(() => document.getElementById('saved-bytes')?.textContent !== '…', null, { timeout: 10_000 })
    const m = await scrape(rc.url)
    const savedBytes = m.series.filter((x) => x.name === 'regcache_served_bytes_total' && x.labels.source === 'cache').reduce((a, x) => a + x.value, 0)
    const savedRequests = m.series
      .filter((x) => x.name === 'regcache_requests_total' && /^(manifest|blob)$/.test(x.labels.kind ?? '') && /^(hit|revalidated|coalesced|stale)$/.test(x.labels.outcome ?? ''))
      .reduce((a, x) => a + x.value, 0)
    t.ok(savedBytes > 0 && savedRequests > 0, 'the scenario was served from the cache')
    t.equal((await page.locator('#saved-requests').innerText()).trim(), String(savedRequests), 'pulls avoided match /metrics')
    t.equal((await page.locator('#saved-bytes').innerText()).trim(), humanBytes(savedBytes), 'bytes saved match /metrics')
    t.match(await page.locator('#hub-headroom').innerText(), /^5 pulls$/, 'Docker Hub headroom from its rate-limit headers')

    const top = await page.locator('#top-pulls tbody tr').allInnerTexts()
    const counts = top.map((r) => /^(\S+)\s+(\d+)/.exec(r)).map((m) => [m?.[1], Number(m?.[2])] as const)
    t.ok(counts.some(([image, n]) => image === 'docker.io/library/web:v1' && n > 0), `the most pulled images list web:v1 (${JSON.stringify(top)})`)
    t.same(counts.map(([, n]) => n), counts.map(([, n]) => n).sort((a, b) => b - a), 'most pulled first')

    const upstreams = await page.locator('#upstreams tbody tr').allInnerTexts()
    const docker = upstreams.find((r) => r.includes('docker.io'))
    t.ok(docker, `upstream row for docker.io (${JSON.stringify(upstreams)})`)
    t.match(docker ?? '', /\bdown\b/, 'docker.io shown as down')
    t.match(docker ?? '', /refused/, 'with the last failure reason')
    t.match(docker ?? '', /\b5\b\S* \/ 100\b/, 'and the rate limit (remaining / limit)')
    t.equal(await page.locator('#upstreams tbody tr:has-text("docker.io") span.down').count(), 1, 'state styled as down')

    const used = (await page.locator('#cache-used').innerText()).trim()
    t.match(used, /^[0-9.]+ (B|KiB|MiB|GiB|TiB)$/, `cache used: ${used}`)
    t.notMatch(used, /^0(\.0)? /, 'cache used is not zero')
    t.match(await page.locator('#cache-limit').innerText(), /of 1\.0 GiB/, 'cache limit shown')
    const ratio = (await page.locator('#hit-ratio').innerText()).trim()
    t.match(ratio, /^\d+(\.\d)? %$/, `hit ratio: ${ratio}`)
    const api = (await (await fetch(`${rc.url}/api/status`)).json()) as { requests: { hitRatio: number } }
    t.ok(Math.abs(parseFloat(ratio) - 100 * api.requests.hitRatio) < 5, `hit ratio matches /api/status (${api.requests.hitRatio})`)
    t.match(await page.locator('#requests').innerText(), /^\d+ of \d+ requests from cache$/)
    t.match((await page.locator('#blobs').innerText()).trim(), /^[1-9]\d*$/, 'blobs stored')

    const changes = await page.locator('#changes tbody tr').allInnerTexts()
    t.ok(
      changes.some((r) => r.includes('docker.io/library/web:v1') && /\bchanged\b/.test(r)),
      `recent digest changes list docker.io/library/web:v1 changed (${JSON.stringify(changes)})`,
    )
    const problemsTable = await page.locator('#problems tbody tr').allInnerTexts()
    t.ok(problemsTable.some((r) => r.includes('docker.io/library/web:v1') && r.includes('stale_served')), `stale serves listed (${JSON.stringify(problemsTable)})`)

    await page.fill('#history-image', 'docker.io/library/web:v1')
    await page.click('#history-form button[type=submit]')
    await page.waitForFunction(() => (document.querySelector('#history tbody')?.textContent ?? '').includes('changed'), null, { timeout: 10_000 })
    const history = await page.locator('#history tbody tr').allInnerTexts()
    for (const type of ['first_seen', 'changed', 'stale_served']) {
      t.ok(history.some((r) => new RegExp(`\\b${type}\\b`).test(r)), `history lists ${type} (${JSON.stringify(history)})`)
    }
    t.equal((await page.locator('#history-error').innerText()).trim(), '', 'no history error')
    // The digest timeline: one bar per digest the tag pointed at, the current one marked.
    t.ok((await page.locator('#timeline tbody tr .track .bar').count()) >= 2, 'a bar per digest in the timeline')
    t.equal(await page.locator(`#timeline tbody tr:has(code[title="${v2Digest}"]) .bar.current`).count(), 1, 'v2 is the current digest')
    // The digest column carries the full digest in its title.
    t.equal(await page.locator(`#history tbody code[title="${v2Digest}"]`).count() > 0, true, 'v2 digest in the history table')

    // A bad reference shows the server's message instead of a table.
    await page.fill('#history-image', 'nowhere.example/x:1')
    await page.click('#history-form button[type=submit]')
    await page.waitForFunction(() => (document.getElementById('history-error')?.textContent ?? '') !== '', null, { timeout: 10_000 })
    t.match(await page.locator('#history-error').innerText(), /not a configured upstream/, 'error shown for an unknown registry')

    await mkdir(ARTIFACTS, { recursive: true })
    const shot = join(ARTIFACTS, 'status-page.png')
    await page.fill('#history-image', 'docker.io/library/web:v1')
    await page.click('#history-form button[type=submit]')
    await page.waitForFunction(() => (document.querySelector('#history tbody')?.textContent ?? '').includes('changed'), null, { timeout: 10_000 })
    await page.screenshot({ path: shot, fullPage: true })
    t.comment(`screenshot: ${shot}`)
    t.same(problems, [], 'no page errors, console errors or failed requests')
  })

  await t.test('request log lines carry the cache outcome and request id', async (t) => {
    const lines = (await rc.logs()).filter((l) => l.msg === 'request')
    t.ok(lines.length > 0, `${lines.length} request lines`)
    const manifestLines = lines.filter((l) => l.kind === 'manifest' && typeof l.url === 'string' && l.url.startsWith('/v2/library/web/manifests/'))
    t.ok(manifestLines.length > 0, 'manifest request lines')
    for (const l of [...manifestLines, ...lines.filter((x) => x.kind === 'blob')].slice(0, 50)) {
      t.match(
        l,
        { method: /^(GET|HEAD)$/, url: String, status: Number, ms: Number, kind: /^(manifest|blob)$/, cache: String, upstream: 'docker.io', repository: /^library\//, digest: /^sha256:[a-f0-9]{64}$/, reqId: /./ },
        `fields of ${l.method} ${l.url} (${JSON.stringify(l)})`,
      )
    }
    // containerd adds ?ns=docker.io to every request through a mirror.
    const tagLines = manifestLines.filter((l) => String(l.url).split('?')[0] === '/v2/library/web/manifests/v1')
    t.ok(tagLines.some((l) => l.cache === 'changed' && l.digest === v2Digest), 'the tag move is logged as changed with the new digest')
    const stale = tagLines.filter((l) => l.cache === 'stale')
    t.ok(stale.length >= 1 && stale.every((l) => /reason=/.test(String(l.stale))), `stale serves log the reason (${JSON.stringify(stale.map((l) => l.stale))})`)
    const ids = new Set(lines.map((l) => String(l.reqId)))
    t.equal(ids.size, lines.length, 'one request id per request line')
  })
})

t.test('upstream credentials never reach the log', async (t) => {
  const auth = { username: 'puller', password: 's3cr3t-value-for-test' }
  const wrong = 'wr0ng-s3cr3t-for-test'
  const basic = (pw: string) => Buffer.from(`${auth.username}:${pw}`).toString('base64')
  const reg = await startRegistry({ auth })
  t.teardown(reg.stop)
  const img = await buildImage({ layers: 2, layerSize: 8 * 1024 })
  t.teardown(img.remove)
  await pushImage(img, reg.host, 'private/app:1', { auth })
  const dir = await makeTempDir()
  t.teardown(() => removeTempDir(dir))
  await writeFile(join(dir, 'right'), `${auth.password}\n`)
  await writeFile(join(dir, 'wrong'), `${wrong}\n`)
  const rc = await startRegcache({
    upstreams: {
      'ghcr.io': { url: reg.url, username: auth.username, passwordFile: join(dir, 'right') },
      // The same registry with a password it refuses: the 401 path must not leak either.
      'quay.io': { url: reg.url, username: auth.username, passwordFile: join(dir, 'wrong') },
    },
  })
  t.teardown(() => rc.stop())

  const get = async (path: string, accept?: string) => {
    const res = await fetch(`${rc.url}${path}`, { headers: accept ? { accept } : {} })
    return { status: res.status, body: Buffer.from(await res.arrayBuffer()) }
  }
  const m = await get('/v2/private/app/manifests/1?ns=ghcr.io', ACCEPT)
  t.equal(m.status, 200, 'manifest pulled with credentials')
  const manifest = JSON.parse(m.body.toString()) as { config: { digest: string }; layers: { digest: string }[] }
  for (const d of [manifest.config.digest, ...manifest.layers.map((l) => l.digest)]) {
    t.equal((await get(`/v2/private/app/blobs/${d}?ns=ghcr.io`)).status, 200, `blob ${d.slice(0, 19)}`)
  }
  t.equal((await get('/v2/private/app/manifests/missing?ns=ghcr.io', ACCEPT)).status, 404, 'unknown tag: 404')
  t.equal((await get('/v2/private/app/manifests/1?ns=quay.io', ACCEPT)).status, 401, 'wrong password: 401 passed on')
  t.equal((await get('/v2/private/app/tags/list?ns=ghcr.io')).status, 200, 'tags/list with credentials')

  const logs = await rc.logs()
  t.ok(logs.some((l) => l.msg === 'request' && l.cache === 'miss' && l.upstream === 'ghcr.io'), 'the pull is logged')
  const text = JSON.stringify(logs)
  for (const [what, secret] of [
    ['password', auth.password],
    ['Basic credentials (base64)', basic(auth.password)],
    ['wrong password', wrong],
    ['wrong Basic credentials (base64)', basic(wrong)],
  ] as const) {
    t.notOk(text.includes(secret), `${what} never in the log`)
  }
  t.notOk(/authorization/i.test(text) && /Basic [A-Za-z0-9+/=]{8,}/.test(text), 'no Authorization header value in the log')
  // Nor in what an operator may paste into a ticket.
  for (const path of ['/metrics', '/api/status']) {
    const body = await (await fetch(`${rc.url}${path}`)).text()
    t.notOk(body.includes(auth.password) || body.includes(basic(auth.password)), `${path} has no credentials`)
  }
})
