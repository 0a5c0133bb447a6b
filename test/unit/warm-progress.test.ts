// The rate behind the ETA, and the lines `regcache warm` draws.
import t from 'tap'
import { fit, newProgress, renderFinished, renderLive, renderSummary, shortName } from '../../cli/warm/progress.js'
import { RateMeter } from '../../cli/warm/rate.js'

const MiB = 1024 * 1024

t.test('RateMeter', async (t) => {
  const cases: [string, [number, number][], number, number][] = [
    ['no samples', [], 1000, 0],
    ['one sample', [[0, 0]], 1000, 0],
    ['steady 1 MiB/s', [[0, 0], [1000, MiB], [2000, 2 * MiB]], 2000, MiB],
    ['a stall lowers the rate as time passes', [[0, 0], [1000, MiB]], 4000, MiB / 4],
    ['only the last 5 s count', [[0, 0], [1000, 100 * MiB], [7000, 106 * MiB], [8000, 107 * MiB]], 8000, (7 * MiB * 1000) / 7000],
    ['same instant recorded twice keeps the latest', [[0, 0], [1000, MiB], [1000, 2 * MiB]], 1000, 2 * MiB],
  ]
  for (const [name, samples, at, want] of cases) {
    const m = new RateMeter(5000)
    for (const [when, bytes] of samples) m.record(when, bytes)
    t.equal(m.rate(at), want, name)
  }
})

t.test('fit', async (t) => {
  const cases: [string, number, string][] = [
    ['short', 10, 'short'],
    ['docker.io/library/nginx:1.27', 14, '.../nginx:1.27'],
    ['abcdef', 3, 'def'],
  ]
  for (const [text, width, want] of cases) {
    t.equal(fit(text, width), want, `${text} in ${width}`)
    t.ok(fit(text, width).length <= width)
  }
})

t.test('shortName', async (t) => {
  const hex = 'a1'.repeat(32)
  const cases: [string, string][] = [
    ['nginx:1.27', 'nginx:1.27'],
    [`nginx@sha256:${hex}`, 'nginx@sha256:a1a1a1a1a1a1'],
    [`nginx:1.27@sha256:${hex}`, 'nginx:1.27@sha256:a1a1a1a1a1a1'],
    ['nginx@sha256:short', 'nginx@sha256:short'],
  ]
  for (const [name, want] of cases) t.equal(shortName(name), want, name)
})

t.test('renderLive: the progress line', async (t) => {
  const p = newProgress('docker.io/library/app:1')
  t.equal(renderLive({ ...p, state: 'resolving' }, 0, 23, 100), '  docker.io/library/app:1  resolving')
  p.state = 'downloading'
  p.plan = { digest: 'sha256:x', manifests: 1, blobs: 3, totalBytes: 48 * MiB }
  p.meter.record(0, 0)
  p.bytes = 12 * MiB
  p.meter.record(4000, p.bytes)
  const line = renderLive(p, 4000, 23, 120)
  t.equal(line, '  docker.io/library/app:1  [=====>              ] 12.0 MiB / 48.0 MiB  3.00 MiB/s  ETA 12s')
  t.ok(renderLive(p, 4000, 23, 40).length <= 40, 'never wider than the terminal')
  p.bytes = 48 * MiB
  t.match(renderLive(p, 4000, 23, 120), /\[====================\] 48\.0 MiB \/ 48\.0 MiB/, 'a full bar')
})

t.test('finished lines and the summary', async (t) => {
  const ok = { ...newProgress('a:1'), state: 'ok' as const, startedAt: 0, finishedAt: 1500, bytes: 2048 }
  ok.result = { digest: 'sha256:aaa', manifests: 1, blobs: 2, totalBytes: 2048, bytes: 2048 }
  const bad = { ...newProgress('b:2'), state: 'failed' as const, error: 'manifest 2: HTTP 404 MANIFEST_UNKNOWN manifest unknown' }
  t.equal(renderFinished(ok), 'warmed a:1 (sha256:aaa): 1 manifest(s), 2 blobs, 2.00 KiB in 1.5s')
  t.equal(renderFinished(bad), 'failed b:2: manifest 2: HTTP 404 MANIFEST_UNKNOWN manifest unknown')
  t.equal(
    renderSummary([ok, bad], 2048, 2000),
    [
      'Summary: 2 image(s), 1 warmed, 1 failed; 2.00 KiB received in 2.0s',
      '  ok      a:1    2.00 KiB  2 blobs  sha256:aaa',
      '  FAILED  b:2  manifest 2: HTTP 404 MANIFEST_UNKNOWN manifest unknown',
      '',
    ].join('\n'),
  )
})
