// The status page at "/": one self-contained HTML document (no build step) that reads
// /api/status, /api/series and /api/history, and draws its charts with uPlot, which regcache
// serves itself (/assets/uplot.js): nothing is loaded from elsewhere.

export const STATUS_PAGE = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>regcache</title>
<link rel="stylesheet" href="assets/uplot.css">
<script src="assets/uplot.js"></script>
<style>
  .charts { display: grid; grid-template-columns: repeat(auto-fill, minmax(34rem, 1fr)); gap: 1rem; }
  .chart h3 { font-size: .95rem; margin: .5rem 0; } .range button.on { font-weight: 700; }
  .bar { background: #0969da; height: .7rem; border-radius: 2px; min-width: 2px; } .bar.current { background: #116329; }
  .timeline td:last-child { width: 55%; } .track { position: relative; height: .7rem; background: #f6f8fa; } .track .bar { position: absolute; top: 0; }
  .headline { font-size: 1.1rem; margin: .5rem 0 1rem; } .headline b { font-size: 1.5rem; }
  body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5rem; color: #1b1f24; max-width: 72rem; }
  h1 { font-size: 1.4rem; margin: 0 0 1rem; } h2 { font-size: 1.05rem; margin: 1.5rem 0 .5rem; }
  table { border-collapse: collapse; width: 100%; } th, td { text-align: left; padding: .25rem .5rem; border-bottom: 1px solid #e3e6ea; vertical-align: top; }
  th { font-weight: 600; background: #f6f8fa; } code { font-size: 12px; }
  .up { color: #116329; font-weight: 600; } .down { color: #b42318; font-weight: 600; }
  .cards { display: flex; gap: 1rem; flex-wrap: wrap; } .card { border: 1px solid #e3e6ea; border-radius: 6px; padding: .75rem 1rem; min-width: 11rem; }
  .card b { display: block; font-size: 1.3rem; } .muted { color: #59636e; }
  .rollback, .rollback_refused, .failed { color: #b42318; } .pending, .fetching { color: #9a6700; } .ready, .prefetched, .switched { color: #116329; } .stale_served, .upstream_not_found { color: #9a6700; }
  form { display: flex; gap: .5rem; } input[type=text] { flex: 1; padding: .35rem .5rem; font: inherit; }
</style>
</head>
<body>
<h1>regcache</h1>
<p class="headline" id="headline">…</p>
<div class="cards">
  <div class="card"><span class="muted">Upstream bytes saved</span><b id="saved-bytes">…</b><span class="muted">sent from the cache</span></div>
  <div class="card"><span class="muted">Upstream pulls avoided</span><b id="saved-requests">…</b><span class="muted">manifests and blobs from the cache</span></div>
  <div class="card"><span class="muted">Docker Hub rate limit left</span><b id="hub-headroom">…</b><span id="hub-limit" class="muted"></span></div>
  <div class="card"><span class="muted">Cache used</span><b id="cache-used">…</b><span id="cache-limit" class="muted"></span></div>
  <div class="card"><span class="muted">Hit ratio</span><b id="hit-ratio">…</b><span id="requests" class="muted"></span></div>
  <div class="card"><span class="muted">Blobs stored</span><b id="blobs">…</b><span id="fills" class="muted"></span></div>
</div>

<h2>Over the last <span class="range"><button type="button" id="range-hour" class="on">hour</button> <button type="button" id="range-day">day</button></span></h2>
<div class="charts">
  <div class="chart"><h3>Requests: from cache vs upstream</h3><div id="chart-requests"></div></div>
  <div class="chart"><h3>Bytes sent from cache (saved) and from upstream</h3><div id="chart-bytes"></div></div>
  <div class="chart"><h3>Upstream health (outages shaded)</h3><div id="chart-health"></div></div>
  <div class="chart"><h3>Disk used against cache.maxSize</h3><div id="chart-disk"></div></div>
</div>

<h2>Upstreams</h2>
<p id="auth" class="muted"></p>
<table id="upstreams"><thead><tr><th>Registry</th><th>URL</th><th>State</th><th>Credentials upstream</th><th>Last failure</th><th>Rate limit</th></tr></thead><tbody></tbody></table>

<h2>Most pulled images (7 days)</h2>
<table id="top-pulls"><thead><tr><th>Image</th><th>Pulls</th><th></th></tr></thead><tbody></tbody></table>

<h2>Prefetch</h2>
<table id="prefetch"><thead><tr><th>Image</th><th>Tag</th><th>State</th><th>Upstream digest</th><th>Serving</th><th>Last check</th><th>Policy</th></tr></thead><tbody></tbody></table>

<h2>Recent digest changes</h2>
<table id="changes"><thead><tr><th>When</th><th>Image</th><th>Event</th><th>Digest</th><th>Was</th></tr></thead><tbody></tbody></table>

<h2>Rollbacks, stale serves and missing tags</h2>
<table id="problems"><thead><tr><th>When</th><th>Image</th><th>Event</th><th>Digest</th><th>Detail</th></tr></thead><tbody></tbody></table>

<h2>Digest history of an image</h2>
<form id="history-form"><input type="text" id="history-image" placeholder="docker.io/library/alpine:latest" aria-label="image reference"><button type="submit">Show history</button></form>
<p id="history-error" class="down"></p>
<table id="timeline" class="timeline"><thead><tr><th>Digest</th><th>Tag</th><th>From</th><th>Until</th><th>Timeline</th></tr></thead><tbody></tbody></table>
<table id="history"><thead><tr><th>When</th><th>Event</th><th>Digest</th><th>Was</th><th>Count</th><th>Detail</th></tr></thead><tbody></tbody></table>

<script>
const $ = (id) => document.getElementById(id)
const esc = (s) => String(s ?? '').replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c])
const when = (ms) => new Date(ms).toISOString().replace('T', ' ').replace(/\\.\\d+Z$/, 'Z')
const short = (d) => d ? '<code title="' + esc(d) + '">' + esc(d.slice(0, 19)) + '…</code>' : ''
const bytes = (n) => { const u = ['B', 'KiB', 'MiB', 'GiB', 'TiB']; let i = 0; while (n >= 1024 && i < u.length - 1) { n /= 1024; i++ } return n.toFixed(i ? 1 : 0) + ' ' + u[i] }
// ratelimit headers look like "5;w=21600": the number, then the window in seconds.
const rate = (r) => { const n = (v) => String(v ?? '').split(';')[0]; const w = /w=(\\d+)/.exec(String(r.limit ?? '')); return esc(n(r.remaining)) + ' / ' + esc(n(r.limit)) + (w ? ' per ' + Math.round(w[1] / 3600) + ' h' : '') }
const image = (e) => esc(e.upstream + '/' + e.repository + ':' + e.tag)
function rows(tbody, items, cells) {
  tbody.innerHTML = items.length ? items.map((x) => '<tr>' + cells(x).map((c) => '<td>' + c + '</td>').join('') + '</tr>').join('') : '<tr><td colspan="7" class="muted">none</td></tr>'
}
let lastStatus
async function refresh() {
  const s = await (await fetch('api/status')).json()
  lastStatus = s
  $('saved-bytes').textContent = bytes(s.saved.bytes)
  $('saved-requests').textContent = String(s.saved.requests)
  const hub = s.upstreams.find((u) => u.name === 'docker.io' && u.rateLimit)
  const num = (v) => Number(String(v ?? '').split(';')[0])
  $('hub-headroom').textContent = hub ? num(hub.rateLimit.remaining) + ' pulls' : '–'
  $('hub-limit').textContent = hub ? 'of ' + num(hub.rateLimit.limit) + ' (' + Math.round(100 * num(hub.rateLimit.remaining) / num(hub.rateLimit.limit)) + '%)' : 'no Docker Hub limit reported'
  $('headline').innerHTML = 'regcache has sent <b>' + esc(bytes(s.saved.bytes)) + '</b> from its cache instead of upstream, and answered <b>' + esc(String(s.saved.requests)) + '</b> manifest and blob requests without a download.'
  $('cache-used').textContent = bytes(s.cache.bytes)
  $('cache-limit').textContent = s.cache.limitBytes ? 'of ' + bytes(s.cache.limitBytes) + ' (' + Math.round(100 * s.cache.bytes / s.cache.limitBytes) + '%)' : 'no size limit'
  $('hit-ratio').textContent = s.requests.hitRatio === null ? '–' : (100 * s.requests.hitRatio).toFixed(1) + ' %'
  $('requests').textContent = s.requests.fromCache + ' of ' + s.requests.total + ' requests from cache'
  $('blobs').textContent = s.cache.blobs
  $('fills').textContent = s.cache.fillsInFlight + ' downloads in progress'
  $('auth').textContent = s.auth.enabled ? 'Client authentication is on.' : 'Client authentication is off: every client may pull.'
  rows($('upstreams').tBodies[0], s.upstreams, (u) => [esc(u.name), '<code>' + esc(u.url) + '</code>', '<span class="' + u.state + '">' + u.state + '</span>',
    u.credentials === 'client' ? "each client's own" : "regcache's",
    u.lastFailure ? esc(u.lastFailure.reason) + ' at ' + when(u.lastFailure.at) : '', u.rateLimit ? rate(u.rateLimit) : ''])
  const most = (s.topPulls ?? [])[0]?.pulls ?? 1
  rows($('top-pulls').tBodies[0], s.topPulls ?? [], (p) => [esc(p.image), String(p.pulls), '<div class="bar" style="width:' + Math.round(100 * p.pulls / most) + '%"></div>'])
  // One row per listed tag (an entry with a tags pattern has one per matching tag), or the entry itself before its first check.
  const prefetch = (s.prefetch ?? []).flatMap((p) => (p.tags.length ? p.tags : [{ tag: '', state: 'waiting' }]).map((t) => ({ p, t })))
  rows($('prefetch').tBodies[0], prefetch, ({ p, t }) => [esc(p.image), esc(t.tag), '<span class="' + esc(t.state) + '">' + esc(t.state) + '</span>' + (t.lastError ? ' <span class="muted">' + esc(t.lastError) + '</span>' : ''),
    short(t.digest), t.serving ? short(t.serving) + ' <span class="muted">since ' + when(t.pendingSince) + '</span>' : '', t.lastCheckAt ? when(t.lastCheckAt) : '',
    esc('every ' + p.every + ', ' + p.platforms.join(' ') + ', switch ' + p.switch + (p.switch === 'when-cached' ? ' (maxLag ' + p.maxLag + ')' : ''))])
  rows($('changes').tBodies[0], s.recentChanges, (e) => [when(e.at), image(e), '<span class="' + e.type + '">' + e.type + '</span>', short(e.digest), short(e.previousDigest)])
  rows($('problems').tBodies[0], s.recentProblems, (e) => [when(e.lastAt), image(e), '<span class="' + e.type + '">' + e.type + (e.count > 1 ? ' ×' + e.count : '') + '</span>', short(e.digest), esc(e.detail)])
}
// ---- charts ----
let range = 'hour'
const charts = {}
const width = (id) => Math.max(300, $(id).parentElement.clientWidth - 8)
// Shades every interval in which an upstream was marked down, on every chart.
let outages = []
const shadeOutages = { hooks: { drawClear: [(u) => {
  const ctx = u.ctx; ctx.save(); ctx.fillStyle = 'rgba(180, 35, 24, 0.15)'
  for (const [a, b] of outages) {
    const x0 = u.valToPos(a, 'x', true), x1 = u.valToPos(b, 'x', true)
    if (x1 >= u.bbox.left && x0 <= u.bbox.left + u.bbox.width) ctx.fillRect(Math.max(x0, u.bbox.left), u.bbox.top, Math.min(x1, u.bbox.left + u.bbox.width) - Math.max(x0, u.bbox.left), u.bbox.height)
  }
  ctx.restore()
}] } }
const axisBytes = (u, vals) => vals.map((v) => v == null ? '' : bytes(v))
function draw(id, series, data, axes) {
  if (typeof uPlot === 'undefined') return
  if (charts[id] && charts[id].series.length === series.length + 1) { charts[id].setData(data); return }
  if (charts[id]) charts[id].destroy()
  $(id).innerHTML = ''
  charts[id] = new uPlot({ width: width(id), height: 200, series: [{}, ...series], axes: [{}, ...(axes ?? [{}])], plugins: [shadeOutages], legend: { live: false } }, data, $(id))
}
async function refreshCharts() {
  const all = await (await fetch('api/series')).json()
  const rows = all[range]
  const step = range === 'hour' ? 10 : 60
  const x = rows.map((r) => r.at / 1000)
  outages = rows.filter((r) => r.upstreamsDown > 0).map((r) => [r.at / 1000, r.at / 1000 + step])
  draw('chart-requests', [
    { label: 'from cache', stroke: '#116329', fill: 'rgba(17, 99, 41, 0.15)' },
    { label: 'from upstream', stroke: '#0969da', fill: 'rgba(9, 105, 218, 0.1)' },
  ], [x, rows.map((r) => r.fromCache), rows.map((r) => r.fromUpstream)])
  draw('chart-bytes', [
    { label: 'from cache (saved)', stroke: '#116329', fill: 'rgba(17, 99, 41, 0.15)', value: (u, v) => v == null ? '' : bytes(v) },
    { label: 'from upstream', stroke: '#0969da', value: (u, v) => v == null ? '' : bytes(v) },
  ], [x, rows.map((r) => r.bytesCache), rows.map((r) => r.bytesUpstream)], [{ values: axisBytes, size: 90 }])
  draw('chart-health', [
    { label: 'upstreams down', stroke: '#b42318', fill: 'rgba(180, 35, 24, 0.3)', paths: uPlot.paths.stepped({ align: 1 }) },
  ], [x, rows.map((r) => r.upstreamsDown)], [{ values: (u, vals) => vals.map((v) => Number.isInteger(v) ? v : '') }])
  const limit = lastStatus && lastStatus.cache.limitBytes
  draw('chart-disk', [
    { label: 'disk used', stroke: '#8250df', fill: 'rgba(130, 80, 223, 0.15)', value: (u, v) => v == null ? '' : bytes(v) },
    { label: 'cache.maxSize', stroke: '#59636e', dash: [6, 4], value: (u, v) => v == null ? '' : bytes(v) },
  ], [x, rows.map((r) => r.cacheBytes), rows.map(() => limit || null)], [{ values: axisBytes, size: 90 }])
  document.body.dataset.chartPoints = String(x.length)
}
for (const r of ['hour', 'day']) $('range-' + r).addEventListener('click', () => {
  range = r; $('range-hour').classList.toggle('on', r === 'hour'); $('range-day').classList.toggle('on', r === 'day')
  refreshCharts().catch((e) => console.error(e))
})

$('history-form').addEventListener('submit', async (ev) => {
  ev.preventDefault()
  $('history-error').textContent = ''
  const res = await fetch('api/history?image=' + encodeURIComponent($('history-image').value.trim()))
  const body = await res.json()
  if (!res.ok) { $('history-error').textContent = body.errors?.[0]?.message ?? res.statusText; rows($('history').tBodies[0], [], () => []); rows($('timeline').tBodies[0], [], () => []); return }
  // Each digest the tag pointed at, as a bar from when it was first seen to when it was last served (now, if it still is).
  const now = Date.now()
  const start = Math.min(now - 60000, ...body.digests.map((d) => d.firstSeen))
  const pos = (ms) => (100 * (ms - start) / (now - start)).toFixed(2) + '%'
  rows($('timeline').tBodies[0], body.digests, (d) => { const end = d.current ? now : d.lastSeen; return [short(d.digest), esc(d.tag), when(d.firstSeen), d.current ? '<b>now</b>' : when(d.lastSeen),
    '<div class="track"><div class="bar' + (d.current ? ' current' : '') + '" style="left:' + pos(d.firstSeen) + ';width:calc(' + pos(end) + ' - ' + pos(d.firstSeen) + ')"></div></div>'] })
  rows($('history').tBodies[0], body.events, (e) => [when(e.at), '<span class="' + e.type + '">' + e.type + '</span>', short(e.digest), short(e.previousDigest), e.count, esc(e.detail)])
})
refresh().then(refreshCharts).catch((e) => console.error(e))
setInterval(() => refresh().then(refreshCharts).catch(() => {}), 10000)
</script>
</body>
</html>
`
