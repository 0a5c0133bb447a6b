// The totals of stored content (kept by the database in one row) and the tables they summarise,
// through eviction (by age and by size), fsck repairs, restarts and the migration from schema 3,
// on a real SQLite file and real blob files: the totals always equal the table, and no repository
// link outlives its content.
import { createHash, randomBytes } from 'node:crypto'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import Database from 'better-sqlite3'
import { pino } from 'pino'
import t from 'tap'
import { Evictor } from '../../core/evictor.js'
import { fsck } from '../../core/fsck.js'
import { Metrics } from '../../core/metrics.js'
import { BlobStore } from '../../storage/blob-store.js'
import { dbPath } from '../../storage/layout.js'
import { Metadata } from '../../storage/metadata.js'
import { SCHEMA_VERSION } from '../../storage/metadata-schema.js'

const DAY = 24 * 3600 * 1000
const sha = (b: Buffer | string) => `sha256:${createHash('sha256').update(b).digest('hex')}`

function dataDir(t: { teardown: (fn: () => void) => void }): string {
  const dir = mkdtempSync(join(tmpdir(), 'regcache-totals-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  return dir
}

/** Totals and orphans as the tables say them (what the in-memory totals must equal). */
function tableState(meta: Metadata): { count: number; bytes: number; links: number; orphans: number } {
  const c = meta.db.prepare('SELECT COUNT(*) AS count, COALESCE(SUM(size), 0) AS bytes FROM content').get() as { count: number; bytes: number }
  const links = (meta.db.prepare('SELECT COUNT(*) AS n FROM repo_content').get() as { n: number }).n
  const orphans = (meta.db.prepare('SELECT COUNT(*) AS n FROM repo_content r WHERE NOT EXISTS (SELECT 1 FROM content c WHERE c.digest = r.digest)').get() as { n: number }).n
  return { ...c, links, orphans }
}

function evictor(meta: Metadata, store: BlobStore, opts: { maxAgeMs?: number; maxSizeBytes?: number; busy?: Set<string> }): Evictor {
  const busy = opts.busy ?? new Set<string>()
  return new Evictor({ meta, store, metrics: new Metrics(), log: pino({ level: 'silent' }), maxAgeMs: opts.maxAgeMs, maxSizeBytes: opts.maxSizeBytes, busy: () => busy })
}

/** Stores `n` real blobs of `size` bytes, each linked to two repositories, last used at `at`. */
async function storeBlobs(meta: Metadata, store: BlobStore, n: number, size: number, at: number, tag: string): Promise<string[]> {
  const digests: string[] = []
  for (let i = 0; i < n; i++) {
    const bytes = Buffer.concat([Buffer.from(`${tag}-${i}-`), randomBytes(size)]).subarray(0, size)
    const d = sha(bytes)
    await store.put(d, bytes)
    meta.putContent({ digest: d, size }, { upstream: 'docker.io', repository: `team/app${i % 7}` }, at)
    meta.link('docker.io', 'other/app', d)
    digests.push(d)
  }
  return digests
}

t.test('a maxAge eviction of thousands of rows: totals right, no orphan links, other work runs between its transactions', async (t) => {
  const dir = dataDir(t)
  const meta = new Metadata(dbPath(dir), { backgroundCheckpoints: true })
  t.teardown(() => meta.close())
  const store = new BlobStore(dir)
  await store.init()
  const old = await storeBlobs(meta, store, 40, 100, Date.now() - 3 * DAY, 'old')
  const fresh = await storeBlobs(meta, store, 20, 100, Date.now(), 'fresh')
  // Rows only (their files long gone, as after a crash): thousands, through the API in batches.
  const rowsOnly: string[] = []
  meta.db.transaction(() => {
    for (let i = 0; i < 3000; i++) {
      const d = sha(`rows-only-${i}`)
      meta.putContent({ digest: d, size: 10 + (i % 50) }, { upstream: 'docker.io', repository: 'bulk/app' }, Date.now() - 2 * DAY)
      rowsOnly.push(d)
    }
  })()
  const busy = new Set([old[0]!])
  t.strictSame(meta.totals(), { count: tableState(meta).count, bytes: tableState(meta).bytes }, 'totals equal the table after the fills')

  // Counts turns of the event loop while the eviction runs.
  let turns = 0
  let running = true
  const spin = () => {
    turns++
    if (running) setImmediate(spin)
  }
  setImmediate(spin)
  const evicted = await evictor(meta, store, { maxAgeMs: DAY, busy }).runNow()
  running = false

  t.equal(evicted, old.length - 1 + rowsOnly.length, 'every aged row went but the busy one')
  const s = tableState(meta)
  t.strictSame(meta.totals(), { count: s.count, bytes: s.bytes }, 'totals equal the table after the eviction')
  t.equal(s.count, fresh.length + 1, 'the fresh blobs and the busy one stay')
  t.equal(s.orphans, 0, 'no repository link outlives its content')
  t.equal(s.links, (fresh.length + 1) * 2, 'the kept blobs keep both their links')
  for (const d of old.slice(1)) t.equal(await store.size(d), undefined, 'evicted file removed')
  for (const d of fresh) t.equal(await store.size(d), 100, 'fresh file kept')
  t.equal(await store.size(old[0]!), 100, 'busy file kept')
  // 3,039 rows in slices of at most a few hundred: the loop must have turned many times.
  t.ok(turns >= 10, `other work ran between the eviction's transactions (${turns} turns)`)
})

t.test('a maxSize eviction: least recently used first, under the low watermark, totals and links right', async (t) => {
  const dir = dataDir(t)
  const meta = new Metadata(dbPath(dir))
  t.teardown(() => meta.close())
  const store = new BlobStore(dir)
  await store.init()
  const now = Date.now()
  const older = await storeBlobs(meta, store, 30, 1000, now - 60_000, 'older')
  const newer = await storeBlobs(meta, store, 30, 1000, now, 'newer')
  // A read of an older blob makes it recent (written by the evictor's flush before it chooses).
  meta.touch(older[29]!)
  const evicted = await evictor(meta, store, { maxSizeBytes: 40_000 }).runNow()
  const s = tableState(meta)
  t.strictSame(meta.totals(), { count: s.count, bytes: s.bytes }, 'totals equal the table')
  t.ok(s.bytes <= 40_000 * 0.9, `under the low watermark (${s.bytes} bytes)`)
  t.equal(evicted, 60 - s.count)
  t.equal(s.orphans, 0, 'no orphan links')
  t.ok(meta.getContent(older[29]!), 'the recently read older blob stays')
  for (const d of newer) t.ok(meta.getContent(d), 'newer blobs stay')
  t.notOk(meta.getContent(older[0]!), 'the least recently used goes')
})

t.test('fsck repairs keep the totals right and leave no orphan links', async (t) => {
  const dir = dataDir(t)
  const store = new BlobStore(dir)
  await store.init()
  {
    const meta = new Metadata(dbPath(dir))
    const ds = await storeBlobs(meta, store, 6, 500, Date.now(), 'fsck')
    // Damaged bytes, a lost file, a file nobody recorded.
    writeFileSync(store.pathOf(ds[0]!), randomBytes(500))
    rmSync(store.pathOf(ds[1]!))
    const stray = randomBytes(300)
    await store.put(sha(stray), stray)
    meta.close()
  }
  const meta = new Metadata(dbPath(dir))
  t.teardown(() => meta.close())
  const report = await fsck(store, meta, { repair: true, parallel: 3 })
  t.equal(report.corrupt.length, 1)
  t.equal(report.missing.length, 1)
  t.equal(report.orphaned.length, 1)
  const s = tableState(meta)
  t.strictSame(meta.totals(), { count: 4, bytes: 2000 }, 'four good blobs remain')
  t.strictSame({ count: s.count, bytes: s.bytes }, meta.totals(), 'totals equal the table')
  t.equal(s.orphans, 0, 'links of the dropped blobs are gone')
  const again = await fsck(store, meta, { repair: false })
  t.strictSame([again.corrupt.length, again.missing.length, again.orphaned.length, again.ok], [0, 0, 0, 4], 'a second fsck finds nothing')
})

t.test('totals survive restarts, with checkpoints on their own thread; read-only opens agree', async (t) => {
  const dir = dataDir(t)
  const store = new BlobStore(dir)
  await store.init()
  let expected: { count: number; bytes: number }
  {
    const meta = new Metadata(dbPath(dir), { backgroundCheckpoints: true })
    t.ok((meta.db.pragma('wal_autocheckpoint', { simple: true }) as number) > 1000, 'checkpoints inside a commit on the event loop only as a safety net')
    const ds = await storeBlobs(meta, store, 10, 200, Date.now(), 'restart')
    meta.putContent({ digest: ds[0]!, size: 200 }) // a re-put counts once
    meta.deleteContent(sha('never-stored')) // unknown digests change nothing
    expected = meta.totals()
    t.strictSame(expected, { count: 10, bytes: 2000 })
    // Give the checkpoint thread a turn, then close (it checkpoints a last time and exits).
    await new Promise((r) => setTimeout(r, 1500))
    meta.close()
  }
  const again = new Metadata(dbPath(dir), { backgroundCheckpoints: true })
  t.teardown(() => again.close())
  t.strictSame(again.totals(), expected, 'the same totals after a restart')
  const ro = new Metadata(dbPath(dir), { readonly: true })
  t.strictSame(ro.totals(), expected, 'a read-only open reads the same from the table')
  ro.close()
  const evicted = await evictor(again, store, { maxSizeBytes: 1000 }).runNow()
  t.ok(evicted > 0)
  const s = tableState(again)
  t.strictSame(again.totals(), { count: s.count, bytes: s.bytes }, 'and after an eviction following the restart')
})

t.test('a version-3 database with content: migrated on open, then totals right through fills, an eviction, fsck repairs and a restart', async (t) => {
  const dir = dataDir(t)
  const store = new BlobStore(dir)
  await store.init()
  let kept: string[]
  {
    const meta = new Metadata(dbPath(dir))
    kept = await storeBlobs(meta, store, 12, 300, Date.now(), 'v3-fresh')
    await storeBlobs(meta, store, 8, 200, Date.now() - 3 * DAY, 'v3-old')
    meta.close()
  }
  // Back to what version 3 wrote: no kept totals, no index on verified_at.
  const raw = new Database(dbPath(dir))
  raw.exec('DROP TRIGGER content_totals_insert; DROP TRIGGER content_totals_delete; DROP TRIGGER content_totals_resize; DROP TABLE content_totals; DROP INDEX content_verified')
  raw.pragma('user_version = 3')
  raw.close()

  const meta = new Metadata(dbPath(dir), { backgroundCheckpoints: true })
  t.teardown(() => meta.close())
  t.equal(meta.db.pragma('user_version', { simple: true }), SCHEMA_VERSION, 'migrated')
  t.strictSame(meta.totals(), { count: 20, bytes: 12 * 300 + 8 * 200 }, 'the totals counted during the migration')
  await storeBlobs(meta, store, 5, 100, Date.now(), 'v4-fill')
  t.strictSame(meta.totals(), { count: tableState(meta).count, bytes: tableState(meta).bytes }, 'right after fills')
  t.equal(await evictor(meta, store, { maxAgeMs: DAY }).runNow(), 8, 'the old ones evicted')
  let s = tableState(meta)
  t.strictSame(meta.totals(), { count: s.count, bytes: s.bytes }, 'right after the eviction')
  t.equal(s.orphans, 0, 'no orphan links')
  rmSync(store.pathOf(kept[0]!))
  writeFileSync(store.pathOf(kept[1]!), randomBytes(300))
  const report = await fsck(store, meta, { repair: true })
  t.strictSame([report.missing.length, report.corrupt.length], [1, 1])
  s = tableState(meta)
  t.strictSame(meta.totals(), { count: s.count, bytes: s.bytes }, 'right after fsck repairs')
  t.strictSame(meta.totals(), { count: 15, bytes: 10 * 300 + 5 * 100 })
  meta.close()
  const again = new Metadata(dbPath(dir))
  t.strictSame(again.totals(), { count: 15, bytes: 10 * 300 + 5 * 100 }, 'the same after a restart')
  again.close()
})

t.test('settleLog: after a long run of writes the log is copied back whole and starts over', async (t) => {
  const dir = dataDir(t)
  const meta = new Metadata(dbPath(dir), { backgroundCheckpoints: true })
  t.teardown(() => meta.close())
  // The thread's first checkpoint can take seconds to come on a loaded machine: wait for it.
  await meta.settleLog(30_000)
  for (let b = 0; b < 3000; b += 500) {
    meta.db.transaction(() => {
      for (let i = b; i < b + 500; i++) meta.putContent({ digest: sha(`settle-${i}`), size: 10 }, { upstream: 'docker.io', repository: 'bulk/app' })
    })()
  }
  await meta.settleLog(30_000)
  meta.putContent({ digest: sha('after'), size: 10 })
  const [r] = meta.db.pragma('wal_checkpoint(PASSIVE)') as { log: number }[]
  t.ok(r!.log < 100, `the next write started the log over (${r!.log} frames)`)
  t.strictSame(meta.totals(), { count: 3001, bytes: 30_010 })
  // Without the thread (a command beside the server) there is nothing to wait for.
  const plain = new Metadata(dbPath(dir))
  await plain.settleLog()
  plain.close()
})
