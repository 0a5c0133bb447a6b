// The metadata database on a real SQLite file in a temporary directory.
import { createHash } from 'node:crypto'
import { existsSync, mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import Database from 'better-sqlite3'
import t from 'tap'
import { MAX_ACCEPT_SETS_PER_TAG, Metadata, type TagKey } from '../../storage/metadata.js'
import { SCHEMA_VERSION } from '../../storage/metadata-schema.js'

const digest = (s: string) => `sha256:${createHash('sha256').update(s).digest('hex')}`

const OM = 'application/vnd.oci.image.manifest.v1+json'
const OI = 'application/vnd.oci.image.index.v1+json'

function tempDb(t: { teardown: (fn: () => void) => void }): { dir: string; path: string; open: () => Metadata } {
  const dir = mkdtempSync(join(tmpdir(), 'regcache-meta-'))
  const opened: Metadata[] = []
  t.teardown(() => {
    for (const m of opened) {
      try {
        m.close()
      } catch {
        // already closed
      }
    }
    rmSync(dir, { recursive: true, force: true })
  })
  const path = join(dir, 'sub', 'regcache.db')
  return {
    dir,
    path,
    open: () => {
      const m = new Metadata(path)
      opened.push(m)
      return m
    },
  }
}

const key = (over: Partial<TagKey> = {}): TagKey => ({ upstream: 'docker.io', repository: 'library/alpine', tag: 'latest', acceptKey: 'none', ...over })

t.test('putContent / getContent', async (t) => {
  const { path, open } = tempDb(t)
  const m = open()
  t.ok(existsSync(path), 'creates the parent directory and the file')
  const layer = digest('layer')
  const manifest = digest('manifest')
  t.equal(m.getContent(layer), undefined)
  m.putContent({ digest: layer, size: 123 })
  t.strictSame(m.getContent(layer), { digest: layer, size: 123, mediaType: null }, 'a blob has no media type')
  m.putContent({ digest: manifest, size: 456, mediaType: OM })
  t.strictSame(m.getContent(manifest), { digest: manifest, size: 456, mediaType: OM })
  m.putContent({ digest: manifest, size: 456 })
  t.equal(m.getContent(manifest)?.mediaType, OM, 'a later put without media type keeps the known one')
  t.strictSame(m.totals(), { count: 2, bytes: 579 })
  t.strictSame(m.allContentDigests().sort(), [layer, manifest].sort())
  m.deleteContent(layer)
  t.equal(m.getContent(layer), undefined)
  t.strictSame(m.totals(), { count: 1, bytes: 456 })
})

t.test('links: only the digest itself is linked to the repository upstream served it for', async (t) => {
  const { open } = tempDb(t)
  const m = open()
  const [c1, l1, shared] = ['config1', 'layer1', 'shared'].map(digest)
  const m1 = digest('manifest-amd64')
  const index = digest('index')
  for (const d of [c1, l1, shared]) m.putContent({ digest: d, size: 10 })
  m.putContent({ digest: m1, size: 100, mediaType: OM })
  m.putContent({ digest: index, size: 200, mediaType: OI }, { upstream: 'docker.io', repository: 'library/alpine' })

  t.ok(m.isLinked('docker.io', 'library/alpine', index), 'the digest served for the repository is linked')
  for (const d of [m1, c1, l1, shared]) t.notOk(m.isLinked('docker.io', 'library/alpine', d), `what it references is not: ${d.slice(7, 15)}`)
  t.notOk(m.isLinked('docker.io', 'library/busybox', index), 'another repository: not linked')
  t.notOk(m.isLinked('ghcr.io', 'library/alpine', index), 'same repository on another upstream: not linked')

  m.link('ghcr.io', 'org/app', m1)
  t.ok(m.isLinked('ghcr.io', 'org/app', m1))
  t.notOk(m.isLinked('ghcr.io', 'org/app', l1), "a manifest's layers do not come with it")
  m.link('ghcr.io', 'org/app', m1)
  t.ok(m.isLinked('ghcr.io', 'org/app', m1), 'linking twice is harmless')

  m.deleteContent(m1)
  t.notOk(m.isLinked('ghcr.io', 'org/app', m1), 'deleting content removes its links (no orphan rows)')
  t.equal((m.db.prepare('SELECT COUNT(*) AS n FROM repo_content WHERE digest = ?').get(m1) as { n: number }).n, 0)
})

t.test('tags: setTag / getTag / confirmTag / digestStanding / observeDigest / tagDigests', async (t) => {
  const { open } = tempDb(t)
  const m = open()
  const A = digest('A')
  const B = digest('B')
  const C = digest('C')
  const k = key()
  t.equal(m.getTag(k), undefined)
  t.equal(m.digestStanding(k, A), 'new')

  m.setTag(k, A, OM, 1000)
  t.strictSame(m.getTag(k), { digest: A, checkedAt: 1000 })
  t.equal(m.digestStanding(k, A), 'current', 'the current digest')
  t.equal(m.digestStanding(k, B), 'new')

  m.confirmTag(k, A, 2000)
  t.strictSame(m.getTag(k), { digest: A, checkedAt: 2000 }, 'confirmTag refreshes checkedAt')

  m.setTag(k, B, OM, 3000)
  t.strictSame(m.getTag(k), { digest: B, checkedAt: 3000 })
  t.equal(m.digestStanding(k, A), 'held-before', 'A was held before')
  t.equal(m.digestStanding(k, B), 'current')

  m.observeDigest(k, C, 3500)
  t.strictSame(m.getTag(k), { digest: B, checkedAt: 3000 }, 'observeDigest does not move the tag')
  t.equal(m.digestStanding(k, C), 'held-before', 'but records the observation')

  m.setTag(k, A, OM, 4000)
  t.strictSame(
    m.tagDigests('docker.io', 'library/alpine', 'latest'),
    [
      { tag: 'latest', digest: A, mediaType: OM, firstSeen: 1000, lastSeen: 4000 },
      { tag: 'latest', digest: B, mediaType: OM, firstSeen: 3000, lastSeen: 3000 },
      { tag: 'latest', digest: C, mediaType: null, firstSeen: 3500, lastSeen: 3500 },
    ],
    'each digest once, with its media type and first/last seen',
  )

  // Tag state is the tag's, whoever asks: another Accept set sees the same history.
  t.equal(m.digestStanding(key({ acceptKey: OM }), B), 'held-before', 'another Accept set: held before all the same')
  t.equal(m.getTag(key({ acceptKey: OM })), undefined, 'but it has no entry of its own yet')
  t.equal(m.digestStanding(key({ tag: 'edge' }), A), 'new', 'another tag: not held')
  t.equal(m.digestStanding(key({ repository: 'library/busybox' }), A), 'new', 'another repository: not held')
  t.equal(m.digestStanding(key({ upstream: 'ghcr.io' }), A), 'new', 'another upstream: not held')

  m.setTag(key({ acceptKey: OM }), C, OM, 5000)
  t.equal(m.digestStanding(k, C), 'current', 'current for one Accept set is current for the tag')
  const entries = m.tagEntries('docker.io', 'library/alpine', 'latest')
  t.strictSame(
    entries.map((e) => [e.acceptKey, e.digest, e.checkedAt]),
    [
      [OM, C, 5000],
      ['none', A, 4000],
    ],
    'tagEntries: one per Accept set, most recently confirmed first',
  )
  t.equal(m.tagLastChecked(k), 5000, 'tagLastChecked: the latest check for any Accept set')
  t.equal(m.tagDigests('docker.io', 'library/alpine', undefined).length, 3, 'tagDigests without a tag: every tag of the repository')
})

t.test('tags: the entries kept per tag are bounded', async (t) => {
  const { open } = tempDb(t)
  const m = open()
  for (let i = 0; i < MAX_ACCEPT_SETS_PER_TAG + 10; i++) m.setTag(key({ acceptKey: `k${i}` }), digest('A'), OM, 1000 + i)
  const entries = m.tagEntries('docker.io', 'library/alpine', 'latest')
  t.equal(entries.length, MAX_ACCEPT_SETS_PER_TAG, 'no more than the bound')
  t.equal(entries[0].acceptKey, `k${MAX_ACCEPT_SETS_PER_TAG + 9}`, 'the most recent kept')
  t.equal(m.tagDigests('docker.io', 'library/alpine', 'latest').length, 1, 'one digest, recorded once')
})

t.test('deleteTag drops every Accept entry of that tag only; deleteTagEntry one; history kept', async (t) => {
  const { open } = tempDb(t)
  const m = open()
  const A = digest('A')
  const B = digest('B')
  m.setTag(key(), A, OM, 1000)
  m.setTag(key({ acceptKey: OM }), B, OM, 1000)
  m.setTag(key({ tag: '3.19' }), A, OM, 1000)
  m.setTag(key({ repository: 'library/busybox' }), A, OM, 1000)
  m.addEvent(key(), { type: 'first_seen', digest: A }, 1000)

  t.equal(m.deleteTagEntry(key({ acceptKey: OM })), 1, 'one Accept entry deleted')
  t.strictSame(m.getTag(key()), { digest: A, checkedAt: 1000 }, 'the other Accept entry stays')
  m.setTag(key({ acceptKey: OM }), B, OM, 1000)

  t.equal(m.deleteTag('docker.io', 'library/alpine', 'latest'), 2, 'both Accept entries deleted')
  t.equal(m.getTag(key()), undefined)
  t.equal(m.getTag(key({ acceptKey: OM })), undefined)
  t.strictSame(m.getTag(key({ tag: '3.19' })), { digest: A, checkedAt: 1000 }, 'other tags untouched')
  t.strictSame(m.getTag(key({ repository: 'library/busybox' })), { digest: A, checkedAt: 1000 }, 'other repositories untouched')
  t.equal(m.digestStanding(key(), A), 'held-before', 'the digest history survives, so a later rollback is still recognised')
  t.equal(m.events('docker.io', 'library/alpine', 'latest').length, 1, 'events survive')
  t.equal(m.deleteTag('docker.io', 'library/alpine', 'latest'), 0, 'deleting again deletes nothing')
})

t.test('events: newest first, filtered by tag, limited', async (t) => {
  const { open } = tempDb(t)
  const m = open()
  const A = digest('A')
  const B = digest('B')
  m.addEvent(key(), { type: 'first_seen', digest: A }, 1000)
  m.addEvent(key({ tag: 'edge' }), { type: 'first_seen', digest: B }, 1500)
  m.addEvent(key(), { type: 'changed', digest: B, previousDigest: A }, 2000)
  m.addEvent(key(), { type: 'rollback', digest: A, previousDigest: B, detail: 'moved back' }, 3000)
  m.addEvent(key({ repository: 'library/busybox' }), { type: 'first_seen', digest: A }, 3500)

  const ev = m.events('docker.io', 'library/alpine', 'latest')
  t.strictSame(
    ev.map((e) => e.type),
    ['rollback', 'changed', 'first_seen'],
    'newest first',
  )
  t.match(ev[0], {
    at: 3000,
    lastAt: 3000,
    upstream: 'docker.io',
    repository: 'library/alpine',
    tag: 'latest',
    acceptKey: 'none',
    type: 'rollback',
    digest: A,
    previousDigest: B,
    detail: 'moved back',
    count: 1,
  })
  t.equal(ev[2].previousDigest, null)
  t.equal(ev[2].detail, null)
  t.ok(ev[0].id > ev[1].id && ev[1].id > ev[2].id, 'ids increase with time')
  t.strictSame(
    m.events('docker.io', 'library/alpine', undefined).map((e) => [e.tag, e.type]),
    [
      ['latest', 'rollback'],
      ['latest', 'changed'],
      ['edge', 'first_seen'],
      ['latest', 'first_seen'],
    ],
    'no tag: every tag of the repository, newest first',
  )
  t.equal(m.events('docker.io', 'library/alpine', 'latest', 2).length, 2, 'limit')
  t.strictSame(m.events('docker.io', 'library/alpine', 'latest', 1)[0].type, 'rollback', 'limit keeps the newest')
  t.equal(m.recentEvents(10).length, 5)
  t.equal(m.recentEvents(10)[0].repository, 'library/busybox', 'recentEvents: newest first across repositories')
})

t.test('addEvent with coalesceSince: one event per outage, with a count', async (t) => {
  const { open } = tempDb(t)
  const m = open()
  const A = digest('A')
  const k = key()
  const stale = (coalesceSince: number | undefined, now: number, detail = 'refused') =>
    m.addEvent(k, { type: 'stale_served', digest: A, detail, coalesceSince }, now)
  const latest = () => m.events('docker.io', 'library/alpine', 'latest')

  stale(1000, 2000)
  t.equal(latest().length, 1)
  t.match(latest()[0], { type: 'stale_served', at: 2000, lastAt: 2000, count: 1 })

  stale(1000, 3000, 'timeout')
  t.equal(latest().length, 1, 'same outage: no new event')
  t.match(latest()[0], { at: 2000, lastAt: 3000, count: 2, detail: 'timeout' }, 'count bumped, lastAt and detail updated')

  stale(3000, 4000)
  t.equal(latest().length, 1, 'coalesceSince equal to the last event time: still the same outage')
  t.match(latest()[0], { lastAt: 4000, count: 3 })

  stale(4001, 5000)
  t.equal(latest().length, 2, 'the last event is older than coalesceSince (upstream answered since): a new event')
  t.match(latest()[0], { at: 5000, lastAt: 5000, count: 1 })
  t.match(latest()[1], { at: 2000, lastAt: 4000, count: 3 }, 'the previous outage keeps its count')

  stale(undefined, 6000)
  t.equal(latest().length, 3, 'without coalesceSince: always a new event')

  m.addEvent(k, { type: 'upstream_not_found', digest: A }, 7000)
  stale(0, 8000)
  t.equal(latest().length, 4, 'another type in between (another client kind\'s answer): still the same outage, bumped')
  t.strictSame(
    latest().map((e) => [e.type, e.count]),
    [
      ['upstream_not_found', 1],
      ['stale_served', 2],
      ['stale_served', 1],
      ['stale_served', 3],
    ],
  )

  m.addEvent(key({ acceptKey: OM }), { type: 'stale_served', digest: A, coalesceSince: 0 }, 9000)
  t.equal(latest().length, 4, 'another Accept set in the same outage: the same event, bumped (one story per tag)')
  t.match(latest()[1], { type: 'stale_served', acceptKey: 'none', count: 3 })
})

t.test('reopening the file keeps the data', async (t) => {
  const { open } = tempDb(t)
  const A = digest('A')
  const layer = digest('layer')
  const first = open()
  first.putContent({ digest: layer, size: 5 })
  first.putContent({ digest: A, size: 50, mediaType: OM }, { upstream: 'docker.io', repository: 'library/alpine' })
  first.setTag(key(), A, OM, 1234)
  first.addEvent(key(), { type: 'first_seen', digest: A }, 1234)
  first.close()

  const second = open()
  t.strictSame(second.getContent(A), { digest: A, size: 50, mediaType: OM })
  t.ok(second.isLinked('docker.io', 'library/alpine', A))
  t.strictSame(second.getTag(key()), { digest: A, checkedAt: 1234 })
  t.equal(second.digestStanding(key(), A), 'current')
  t.strictSame(
    second.events('docker.io', 'library/alpine', 'latest').map((e) => [e.type, e.digest, e.at]),
    [['first_seen', A, 1234]],
  )
  t.strictSame(second.totals(), { count: 2, bytes: 55 })
})

t.test('a database written by a newer schema is refused', async (t) => {
  const { path, open } = tempDb(t)
  open().close()
  const raw = new Database(path)
  const version = raw.pragma('user_version', { simple: true }) as number
  t.ok(version >= 1, 'the schema version is recorded in user_version')
  raw.pragma(`user_version = ${version + 1}`)
  raw.close()

  t.throws(() => new Metadata(path), /newer/, 'refused')
  const after = new Database(path, { readonly: true })
  t.equal(after.pragma('user_version', { simple: true }), version + 1, 'the newer version is left alone')
  after.close()
})

t.test('touch / flushAccess update last access in one batch', async (t) => {
  const { open } = tempDb(t)
  const m = open()
  const A = digest('A')
  m.putContent({ digest: A, size: 1 })
  const lastAccess = () => (m.db.prepare('SELECT last_access AS a FROM content WHERE digest = ?').get(A) as { a: number }).a
  const before = lastAccess()
  m.db.prepare('UPDATE content SET last_access = 0 WHERE digest = ?').run(A)
  m.touch(A)
  t.equal(lastAccess(), 0, 'touch alone writes nothing')
  m.flushAccess()
  t.ok(lastAccess() >= before, 'flushAccess writes it')
})

t.test('a version-1 database is migrated in place: tag history per tag, Accept keys normalised, references dropped', async (t) => {
  const { path, open } = tempDb(t)
  const { mkdirSync } = await import('node:fs')
  const { dirname } = await import('node:path')
  mkdirSync(dirname(path), { recursive: true })
  const A = digest('A')
  const B = digest('B')
  const layer = digest('layer')
  const raw = new Database(path)
  raw.exec(`
    CREATE TABLE content (digest TEXT PRIMARY KEY, size INTEGER NOT NULL, media_type TEXT, created_at INTEGER NOT NULL, last_access INTEGER NOT NULL);
    CREATE TABLE manifest_refs (manifest TEXT NOT NULL, child TEXT NOT NULL, PRIMARY KEY (manifest, child)) WITHOUT ROWID;
    CREATE TABLE repo_content (upstream TEXT NOT NULL, repository TEXT NOT NULL, digest TEXT NOT NULL, PRIMARY KEY (upstream, repository, digest)) WITHOUT ROWID;
    CREATE TABLE tags (upstream TEXT NOT NULL, repository TEXT NOT NULL, tag TEXT NOT NULL, accept_key TEXT NOT NULL, digest TEXT NOT NULL, checked_at INTEGER NOT NULL, PRIMARY KEY (upstream, repository, tag, accept_key)) WITHOUT ROWID;
    CREATE TABLE tag_digests (upstream TEXT NOT NULL, repository TEXT NOT NULL, tag TEXT NOT NULL, accept_key TEXT NOT NULL, digest TEXT NOT NULL, first_seen INTEGER NOT NULL, last_seen INTEGER NOT NULL, PRIMARY KEY (upstream, repository, tag, accept_key, digest)) WITHOUT ROWID;
    CREATE TABLE events (id INTEGER PRIMARY KEY, at INTEGER NOT NULL, last_at INTEGER NOT NULL, upstream TEXT NOT NULL, repository TEXT NOT NULL, tag TEXT NOT NULL, accept_key TEXT NOT NULL, type TEXT NOT NULL, digest TEXT, previous_digest TEXT, detail TEXT, count INTEGER NOT NULL DEFAULT 1);
  `)
  raw.prepare('INSERT INTO content VALUES (?, 10, ?, 1, 1)').run(A, OM)
  raw.prepare('INSERT INTO content VALUES (?, 5, NULL, 1, 1)').run(layer)
  raw.prepare("INSERT INTO manifest_refs VALUES (?, ?)").run(A, layer)
  raw.prepare("INSERT INTO repo_content VALUES ('docker.io', 'library/alpine', ?)").run(A)
  raw.prepare("INSERT INTO repo_content VALUES ('docker.io', 'library/alpine', ?)").run(digest('evicted'))
  // Two raw keys that are the same set of known types (one with an unknown extra type).
  raw.prepare("INSERT INTO tags VALUES ('docker.io', 'library/alpine', 'latest', ?, ?, 100)").run(OM, B)
  raw.prepare("INSERT INTO tags VALUES ('docker.io', 'library/alpine', 'latest', ?, ?, 200)").run(`application/x-foo,${OM}`, A)
  raw.prepare("INSERT INTO tag_digests VALUES ('docker.io', 'library/alpine', 'latest', 'none', ?, 10, 20)").run(A)
  raw.prepare("INSERT INTO tag_digests VALUES ('docker.io', 'library/alpine', 'latest', ?, ?, 5, 30)").run(OM, A)
  raw.pragma('user_version = 1')
  raw.close()

  const m = open()
  t.strictSame(m.tagEntries('docker.io', 'library/alpine', 'latest').map((e) => [e.acceptKey, e.digest, e.checkedAt]), [[OM, A, 200]], 'keys merged, latest check kept')
  t.strictSame(m.tagDigests('docker.io', 'library/alpine', 'latest'), [{ tag: 'latest', digest: A, mediaType: OM, firstSeen: 5, lastSeen: 30 }], 'one row per digest')
  t.notOk(m.isLinked('docker.io', 'library/alpine', digest('evicted')), 'orphan links dropped')
  t.ok(m.isLinked('docker.io', 'library/alpine', A))
  t.strictSame(m.totals(), { count: 2, bytes: 15 })
  t.equal(m.db.pragma('user_version', { simple: true }), SCHEMA_VERSION)
  t.notOk(m.db.prepare("SELECT name FROM sqlite_master WHERE name = 'manifest_refs'").get(), 'manifest_refs dropped')
})

t.test('a version-2 database is migrated in place: the series table is added, nothing else changes', async (t) => {
  const { path, open } = tempDb(t)
  const A = digest('A')
  const m2 = open()
  m2.putContent({ digest: A, size: 10, mediaType: OM }, { upstream: 'docker.io', repository: 'library/alpine' })
  m2.setTag(key(), A, OM)
  m2.close()
  // Back to what version 2 wrote: no series table, user_version 2.
  const raw = new Database(path)
  raw.exec('DROP TABLE series')
  raw.pragma('user_version = 2')
  raw.close()

  const m = open()
  t.equal(m.db.pragma('user_version', { simple: true }), SCHEMA_VERSION)
  t.equal(m.getTag(key())?.digest, A, 'tags kept')
  t.ok(m.isLinked('docker.io', 'library/alpine', A), 'links kept')
  t.same(m.series(10, 0), [], 'series empty')
  m.addSample(10, 3_600_000, { at: 1_000_005_000, fromCache: 1, fromUpstream: 2, bytesCache: 3, bytesUpstream: 4, upstreamsDown: 0, cacheBytes: 10 })
  t.equal(m.series(10, 0).length, 1, 'series written')
})

t.test('series: samples add up per row, gauges keep the latest, old rows are dropped', async (t) => {
  const { open } = tempDb(t)
  const m = open()
  const at = 1_700_000_040_000 // on a minute
  const sample = (dt: number, over: Partial<Parameters<Metadata['addSample']>[2]> = {}) => ({ at: at + dt, fromCache: 1, fromUpstream: 0, bytesCache: 100, bytesUpstream: 0, upstreamsDown: 0, cacheBytes: 1000 + dt, ...over })
  m.addSample(60, 86_400_000, sample(0))
  m.addSample(60, 86_400_000, sample(10_000, { upstreamsDown: 1, fromUpstream: 2 }))
  m.addSample(60, 86_400_000, sample(20_000))
  t.same(m.series(60, 0), [{ at, fromCache: 3, fromUpstream: 2, bytesCache: 300, bytesUpstream: 0, upstreamsDown: 1, cacheBytes: 21_000 }])
  m.addSample(60, 86_400_000, sample(86_400_000 + 60_000))
  t.same(m.series(60, 0).map((r) => r.at), [at + 86_400_000 + 60_000], 'a day later, the first row is gone')
})

t.test('totals are kept by the database and stay right across puts, re-puts, deletes, reopening and a second connection', async (t) => {
  const { path, open } = tempDb(t)
  const m = open()
  const sql = () => m.db.prepare('SELECT COUNT(*) AS count, COALESCE(SUM(size), 0) AS bytes FROM content').get()
  for (let i = 0; i < 50; i++) m.putContent({ digest: digest(`c${i}`), size: i + 1 })
  m.putContent({ digest: digest('c3'), size: 100 })
  m.putContent({ digest: digest('c4'), size: 5 }) // the same size again
  for (let i = 0; i < 50; i += 5) m.deleteContent(digest(`c${i}`))
  m.deleteContent(digest('never-stored'))
  t.strictSame(m.totals(), sql(), 'the kept totals match the table')
  // A command beside the server (invalidate, fsck --repair) writes through its own connection.
  const beside = new Metadata(path)
  beside.putContent({ digest: digest('beside'), size: 1000 })
  beside.deleteContent(digest('c1'))
  t.strictSame(m.totals(), sql(), 'writes of another connection are counted too')
  const counting = new Metadata(path, { totals: 'query' })
  t.strictSame(counting.totals(), m.totals(), 'counting the table says the same')
  counting.close()
  beside.close()
  const before = m.totals()
  m.close()
  t.strictSame(open().totals(), before, 'and are read back on open')
  const ro = new Metadata(path, { readonly: true })
  t.strictSame(ro.totals(), before, 'a read-only open reads them too')
  ro.close()
})

/** Takes a file written by this version back to what version 3 wrote: no kept totals, no verified_at index. */
function toVersion3(path: string): void {
  const raw = new Database(path)
  raw.exec(`
    DROP TRIGGER content_totals_insert;
    DROP TRIGGER content_totals_delete;
    DROP TRIGGER content_totals_resize;
    DROP TABLE content_totals;
    DROP INDEX content_verified;
  `)
  raw.pragma('user_version = 3')
  raw.close()
}

t.test('a version-3 database with content is migrated in place: totals counted once, then kept; the scrub index added', async (t) => {
  const { path, open } = tempDb(t)
  const m3 = open()
  m3.setTag(key(), digest('A'), OM)
  m3.close()
  toVersion3(path)
  // Rows written by version 3 (no triggers to count them).
  const raw = new Database(path)
  const put = raw.prepare('INSERT INTO content (digest, size, media_type, created_at, last_access, verified_at) VALUES (?, ?, NULL, 1, 1, ?)')
  for (let i = 0; i < 300; i++) put.run(digest(`v3-${i}`), 10 + i, i % 3 === 0 ? null : 1000 + i)
  raw.close()

  // Opened read-only (history, fsck without repair) it stays version 3 and counts.
  const ro = new Metadata(path, { readonly: true })
  const expected = { count: 300, bytes: 300 * 10 + (299 * 300) / 2 }
  t.strictSame(ro.totals(), expected, 'a read-only open of version 3 counts the table')
  t.equal(ro.dueForVerification(2000, 500).length, 300, 'and finds the rows due without the index')
  ro.close()
  t.equal(new Database(path, { readonly: true }).pragma('user_version', { simple: true }), 3, 'a read-only open migrates nothing')

  const m = open()
  t.equal(m.db.pragma('user_version', { simple: true }), SCHEMA_VERSION)
  t.strictSame(m.totals(), expected, 'the kept totals start from the table')
  t.equal(m.getTag(key())?.digest, digest('A'), 'tags kept')
  m.putContent({ digest: digest('new'), size: 7 })
  m.deleteContent(digest('v3-0'))
  t.strictSame(m.totals(), { count: 300, bytes: expected.bytes + 7 - 10 }, 'and kept from then on')
  t.ok(m.db.prepare("SELECT 1 FROM sqlite_master WHERE type = 'index' AND name = 'content_verified'").get(), 'the scrub index exists')
  m.close()
  t.strictSame(open().totals(), { count: 300, bytes: expected.bytes + 7 - 10 }, 'the same after reopening')
})

t.test('dueForVerification: never verified first, then the longest unverified, bounded index ranges', async (t) => {
  const { open } = tempDb(t)
  const m = open()
  for (let i = 0; i < 20; i++) m.putContent({ digest: digest(`d${i}`), size: 1 }, undefined, 1000 + i)
  m.db.prepare('UPDATE content SET verified_at = NULL WHERE digest IN (?, ?)').run(digest('d7'), digest('d3'))
  const due = m.dueForVerification(1010, 5).map((r) => r.digest)
  t.strictSame(new Set(due.slice(0, 2)), new Set([digest('d3'), digest('d7')]), 'never verified first')
  t.strictSame(due.slice(2), [digest('d0'), digest('d1'), digest('d2')], 'then oldest verification first')
  t.equal(m.dueForVerification(1010, 100).length, 2 + 8, 'only those verified before the cutoff (d3 and d7 excluded from the range)')
  m.markVerified(digest('d0'), 5000)
  t.notOk(m.dueForVerification(1010, 100).some((r) => r.digest === digest('d0')), 'a verified row is no longer due')
  t.equal(m.dueForVerification(0, 100).length, 2, 'nothing verified before 0: only the never verified')
  // The plan: index ranges only, never a walk of the table or of the primary key.
  for (const sql of ['SELECT digest FROM content WHERE verified_at IS NULL LIMIT 1', 'SELECT digest FROM content WHERE verified_at < 1 ORDER BY verified_at LIMIT 1']) {
    const plan = (m.db.prepare(`EXPLAIN QUERY PLAN ${sql}`).all() as { detail: string }[]).map((r) => r.detail).join('; ')
    t.match(plan, /SEARCH content USING INDEX content_verified/, `${sql}: ${plan}`)
    t.notMatch(plan, /SCAN|TEMP B-TREE/, 'no scan, no sort')
  }
})
