// The status page at "/": one self-contained HTML document (no build step) that reads
// /api/status and /api/history. Everything shown comes from those two JSON endpoints.

export const STATUS_PAGE = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>regcache</title>
<style>
  body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5rem; color: #1b1f24; max-width: 72rem; }
  h1 { font-size: 1.4rem; margin: 0 0 1rem; } h2 { font-size: 1.05rem; margin: 1.5rem 0 .5rem; }
  table { border-collapse: collapse; width: 100%; } th, td { text-align: left; padding: .25rem .5rem; border-bottom: 1px solid #e3e6ea; vertical-align: top; }
  th { font-weight: 600; background: #f6f8fa; } code { font-size: 12px; }
  .up { color: #116329; font-weight: 600; } .down { color: #b42318; font-weight: 600; }
  .cards { display: flex; gap: 1rem; flex-wrap: wrap; } .card { border: 1px solid #e3e6ea; border-radius: 6px; padding: .75rem 1rem; min-width: 11rem; }
  .card b { display: block; font-size: 1.3rem; } .muted { color: #59636e; }
  .rollback, .rollback_refused { color: #b42318; } .stale_served, .upstream_not_found { color: #9a6700; }
  form { display: flex; gap: .5rem; } input[type=text] { flex: 1; padding: .35rem .5rem; font: inherit; }
</style>
</head>
<body>
<h1>regcache</h1>
<div class="cards">
  <div class="card"><span class="muted">Cache used</span><b id="cache-used">…</b><span id="cache-limit" class="muted"></span></div>
  <div class="card"><span class="muted">Hit ratio</span><b id="hit-ratio">…</b><span id="requests" class="muted"></span></div>
  <div class="card"><span class="muted">Blobs stored</span><b id="blobs">…</b><span id="fills" class="muted"></span></div>
</div>

<h2>Upstreams</h2>
<p id="auth" class="muted"></p>
<table id="upstreams"><thead><tr><th>Registry</th><th>URL</th><th>State</th><th>Credentials upstream</th><th>Last failure</th><th>Rate limit</th></tr></thead><tbody></tbody></table>

<h2>Recent digest changes</h2>
<table id="changes"><thead><tr><th>When</th><th>Image</th><th>Event</th><th>Digest</th><th>Was</th></tr></thead><tbody></tbody></table>

<h2>Rollbacks, stale serves and missing tags</h2>
<table id="problems"><thead><tr><th>When</th><th>Image</th><th>Event</th><th>Digest</th><th>Detail</th></tr></thead><tbody></tbody></table>

<h2>Digest history of an image</h2>
<form id="history-form"><input type="text" id="history-image" placeholder="docker.io/library/alpine:latest" aria-label="image reference"><button type="submit">Show history</button></form>
<p id="history-error" class="down"></p>
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
  tbody.innerHTML = items.length ? items.map((x) => '<tr>' + cells(x).map((c) => '<td>' + c + '</td>').join('') + '</tr>').join('') : '<tr><td colspan="6" class="muted">none</td></tr>'
}
async function refresh() {
  const s = await (await fetch('api/status')).json()
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
  rows($('changes').tBodies[0], s.recentChanges, (e) => [when(e.at), image(e), '<span class="' + e.type + '">' + e.type + '</span>', short(e.digest), short(e.previousDigest)])
  rows($('problems').tBodies[0], s.recentProblems, (e) => [when(e.lastAt), image(e), '<span class="' + e.type + '">' + e.type + (e.count > 1 ? ' ×' + e.count : '') + '</span>', short(e.digest), esc(e.detail)])
}
$('history-form').addEventListener('submit', async (ev) => {
  ev.preventDefault()
  $('history-error').textContent = ''
  const res = await fetch('api/history?image=' + encodeURIComponent($('history-image').value.trim()))
  const body = await res.json()
  if (!res.ok) { $('history-error').textContent = body.errors?.[0]?.message ?? res.statusText; rows($('history').tBodies[0], [], () => []); return }
  rows($('history').tBodies[0], body.events, (e) => [when(e.at), '<span class="' + e.type + '">' + e.type + '</span>', short(e.digest), short(e.previousDigest), e.count, esc(e.detail)])
})
refresh().catch((e) => console.error(e))
setInterval(() => refresh().catch(() => {}), 5000)
</script>
</body>
</html>
`
