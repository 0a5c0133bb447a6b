// The background scrub on a real SQLite file and real blob files: content due for a check is
// re-hashed, damaged or missing content is dropped with its links, busy content waits, and the
// totals stay equal to the table.
import { createHash, randomBytes } from 'node:crypto'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { pino } from 'pino'
import t from 'tap'
import { Metrics } from '../../core/metrics.js'
import { Scrubber } from '../../core/scrub.js'
import { BlobStore } from '../../storage/blob-store.js'
import { dbPath } from '../../storage/layout.js'
import { Metadata } from '../../storage/metadata.js'

const sha = (b: Buffer | string) => `sha256:${createHash('sha256').update(b).digest('hex')}`

async function waitFor(what: string, f: () => boolean, timeoutMs = 30_000): Promise<void> {
  const t0 = Date.now()
  while (!f()) {
    if (Date.now() - t0 > timeoutMs) throw new Error(`timed out waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 20))
  }
}

t.test('the scrub checks what is due, drops damaged and missing content, leaves busy content for later', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'regcache-scrub-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const meta = new Metadata(dbPath(dir))
  t.teardown(() => meta.close())
  const store = new BlobStore(dir)
  await store.init()
  const longAgo = Date.now() - 3_600_000
  const digests: string[] = []
  for (let i = 0; i < 250; i++) {
    const bytes = randomBytes(64)
    const d = sha(bytes)
    await store.put(d, bytes)
    // More than one page of rows due, some never verified at all.
    meta.putContent({ digest: d, size: 64 }, { upstream: 'docker.io', repository: 'team/app' }, longAgo)
    digests.push(d)
  }
  meta.db.prepare('UPDATE content SET verified_at = NULL WHERE rowid % 5 = 0').run()
  const [damaged, missing, busyOne] = [digests[10]!, digests[200]!, digests[0]!]
  writeFileSync(store.pathOf(damaged), randomBytes(64))
  rmSync(store.pathOf(missing))
  const busy = new Set([busyOne])
  const metrics = new Metrics()
  const dropped: string[] = []
  const scrub = new Scrubber({
    meta,
    store,
    metrics,
    log: pino({ level: 'silent' }),
    cycleMs: 200,
    busy: () => busy,
    onDropped: (d) => dropped.push(d),
  })
  const started = Date.now()
  scrub.start()
  t.teardown(() => scrub.stop())
  const verifiedSince = (d: string) => (meta.verifiedAt(d) ?? 0) >= started
  await waitFor('every idle row to be checked', () => digests.every((d) => d === busyOne || d === damaged || d === missing || verifiedSince(d)))
  await waitFor('both bad rows to be dropped', () => dropped.length === 2)
  t.strictSame(new Set(dropped), new Set([damaged, missing]), 'the damaged and the missing content are dropped')
  t.notOk(meta.getContent(damaged), 'the damaged row is gone')
  t.notOk(meta.isLinked('docker.io', 'team/app', damaged), 'with its link')
  t.equal(await store.size(damaged), undefined, 'and its file')
  t.notOk(verifiedSince(busyOne), 'busy content is not checked while busy')
  busy.clear()
  await waitFor('the formerly busy row to be checked', () => verifiedSince(busyOne))
  const counted = meta.db.prepare('SELECT COUNT(*) AS count, COALESCE(SUM(size), 0) AS bytes FROM content').get()
  t.strictSame(meta.totals(), counted, 'totals equal the table')
  t.equal(meta.totals().count, 248)
  const checked = await metrics.scrubbed.get()
  const of = (result: string) => checked.values.find((v) => v.labels.result === result)?.value ?? 0
  t.equal(of('corrupt'), 2, 'two counted as corrupt')
  t.ok(of('ok') >= 248, 'every good row counted as ok')
})
