// The metadata database on a real SQLite file in a temporary directory.
import { createHash } from 'node:crypto'
import { existsSync, mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import Database from 'better-sqlite3'
import t from 'tap'
import { Metadata, type TagKey } from '../../storage/metadata.js'

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
  m.putContent({ digest: manifest, size: 456, mediaType: OM, references: [layer] })
  t.strictSame(m.getContent(manifest), { digest: manifest, size: 456, mediaType: OM })
  m.putContent({ digest: manifest, size: 456 })
  t.equal(m.getContent(manifest)?.mediaType, OM, 'a later put without media type keeps the known one')
  t.strictSame(m.totals(), { count: 2, bytes: 579 })
  t.strictSame(m.allContentDigests().sort(), [layer, manifest].sort())
  m.deleteContent(layer)
  t.equal(m.getContent(layer), undefined)
  t.strictSame(m.totals(), { count: 1, bytes: 456 })
})

t.test('links: linkWithChildren follows manifest references recursively; isLinked is per repository', async (t) => {
  const { open } = tempDb(t)
  const m = open()
  const [c1, l1, c2, l2, shared] = ['config1', 'layer1', 'config2', 'layer2', 'shared'].map(digest)
  const m1 = digest('manifest-amd64')
  const m2 = digest('manifest-arm64')
  const index = digest('index')
  const unrelated = digest('unrelated')
  for (const d of [c1, l1, c2, l2, shared, unrelated]) m.putContent({ digest: d, size: 10 })
  m.putContent({ digest: m1, size: 100, mediaType: OM, references: [c1, l1, shared] })
  m.putContent({ digest: m2, size: 100, mediaType: OM, references: [c2, l2, shared] })
  m.putContent({ digest: index, size: 200, mediaType: OI, references: [m1, m2] }, { upstream: 'docker.io', repository: 'library/alpine' })

  for (const d of [index, m1, m2, c1, l1, c2, l2, shared]) t.ok(m.isLinked('docker.io', 'library/alpine', d), `linked through the index: ${d.slice(7, 15)}`)
  t.notOk(m.isLinked('docker.io', 'library/alpine', unrelated), 'content not referenced is not linked')
  t.notOk(m.isLinked('docker.io', 'library/busybox', index), 'another repository: not linked')
  t.notOk(m.isLinked('docker.io', 'library/busybox', l1), 'another repository: children not linked')
  t.notOk(m.isLinked('ghcr.io', 'library/alpine', index), 'same repository on another upstream: not linked')

  m.linkWithChildren('ghcr.io', 'org/app', m1)
  t.ok(m.isLinked('ghcr.io', 'org/app', m1))
  t.ok(m.isLinked('ghcr.io', 'org/app', l1), "a manifest's layers come with it")
  t.notOk(m.isLinked('ghcr.io', 'org/app', m2), 'a sibling is not linked')
  t.notOk(m.isLinked('ghcr.io', 'org/app', l2))

  m.linkWithChildren('ghcr.io', 'org/app', m1)
  t.ok(m.isLinked('ghcr.io', 'org/app', m1), 'linking twice is harmless')
})

t.test('links: a child manifest stored after its index brings its own children', async (t) => {
  const { open } = tempDb(t)
  const m = open()
  const child = digest('child')
  const layer = digest('child-layer')
  const index = digest('index-first')
  const target = { upstream: 'docker.io', repository: 'library/nginx' }
  m.putContent({ digest: index, size: 200, mediaType: OI, references: [child] }, target)
  t.ok(m.isLinked(target.upstream, target.repository, child), 'the child digest is linked by the index already')
  t.notOk(m.isLinked(target.upstream, target.repository, layer), 'its layers are not known yet')
  m.putContent({ digest: child, size: 100, mediaType: OM, references: [layer] }, target)
  t.ok(m.isLinked(target.upstream, target.repository, layer), "the child's layer is linked once the child is stored")
})

t.test('tags: setTag / getTag / confirmTag / tagHeld / observeDigest / tagDigests', async (t) => {
  const { open } = tempDb(t)
  const m = open()
  const A = digest('A')
  const B = digest('B')
  const C = digest('C')
  const k = key()
  t.equal(m.getTag(k), undefined)
  t.notOk(m.tagHeld(k, A))

  m.setTag(k, A, 1000)
  t.strictSame(m.getTag(k), { digest: A, checkedAt: 1000 })
  t.ok(m.tagHeld(k, A), 'the current digest is held')
  t.notOk(m.tagHeld(k, B))

  m.confirmTag(k, A, 2000)
  t.strictSame(m.getTag(k), { digest: A, checkedAt: 2000 }, 'confirmTag refreshes checkedAt')

  m.setTag(k, B, 3000)
  t.strictSame(m.getTag(k), { digest: B, checkedAt: 3000 })
  t.ok(m.tagHeld(k, A), 'A was held before')
  t.ok(m.tagHeld(k, B))

  m.observeDigest(k, C, 3500)
  t.strictSame(m.getTag(k), { digest: B, checkedAt: 3000 }, 'observeDigest does not move the tag')
  t.ok(m.tagHeld(k, C), 'but records the observation')

  m.setTag(k, A, 4000)
  t.strictSame(m.getTag(k), { digest: A, checkedAt: 4000 })

  t.strictSame(
    m.tagDigests('docker.io', 'library/alpine', 'latest'),
    [
      { tag: 'latest', acceptKey: 'none', digest: A, firstSeen: 1000, lastSeen: 4000 },
      { tag: 'latest', acceptKey: 'none', digest: B, firstSeen: 3000, lastSeen: 3000 },
      { tag: 'latest', acceptKey: 'none', digest: C, firstSeen: 3500, lastSeen: 3500 },
    ],
    'every digest the tag held, in the order first seen',
  )

  // Isolation: accept key, tag, repository and upstream are all part of the key.
  t.notOk(m.tagHeld(key({ acceptKey: OM }), A), 'another Accept set: not held')
  t.equal(m.getTag(key({ acceptKey: OM })), undefined)
  t.notOk(m.tagHeld(key({ tag: 'edge' }), A), 'another tag: not held')
  t.notOk(m.tagHeld(key({ repository: 'library/busybox' }), A), 'another repository: not held')
  t.notOk(m.tagHeld(key({ upstream: 'ghcr.io' }), A), 'another upstream: not held')

  m.setTag(key({ acceptKey: OM }), C, 5000)
  t.strictSame(m.getTag(k), { digest: A, checkedAt: 4000 }, 'another Accept set does not touch this entry')
  const entries = m.tagEntries('docker.io', 'library/alpine', 'latest')
  t.strictSame(
    entries.map((e) => [e.acceptKey, e.digest, e.checkedAt]),
    [
      [OM, C, 5000],
      ['none', A, 4000],
    ],
    'tagEntries: one per Accept set, most recently confirmed first',
  )
  t.equal(m.tagDigests('docker.io', 'library/alpine', undefined).length, 4, 'tagDigests without a tag: every tag of the repository')
})

t.test('deleteTag drops every Accept entry of that tag only, and keeps the history', async (t) => {
  const { open } = tempDb(t)
  const m = open()
  const A = digest('A')
  const B = digest('B')
  m.setTag(key(), A, 1000)
  m.setTag(key({ acceptKey: OM }), B, 1000)
  m.setTag(key({ tag: '3.19' }), A, 1000)
  m.setTag(key({ repository: 'library/busybox' }), A, 1000)
  m.addEvent(key(), { type: 'first_seen', digest: A }, 1000)

  t.equal(m.deleteTag('docker.io', 'library/alpine', 'latest'), 2, 'both Accept entries deleted')
  t.equal(m.getTag(key()), undefined)
  t.equal(m.getTag(key({ acceptKey: OM })), undefined)
  t.strictSame(m.getTag(key({ tag: '3.19' })), { digest: A, checkedAt: 1000 }, 'other tags untouched')
  t.strictSame(m.getTag(key({ repository: 'library/busybox' })), { digest: A, checkedAt: 1000 }, 'other repositories untouched')
  t.ok(m.tagHeld(key(), A), 'the digest history survives, so a later rollback is still recognised')
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
  t.equal(latest().length, 5, 'the tag\'s latest event is of another type: a new event')
  t.strictSame(
    latest().map((e) => [e.type, e.count]),
    [
      ['stale_served', 1],
      ['upstream_not_found', 1],
      ['stale_served', 1],
      ['stale_served', 1],
      ['stale_served', 3],
    ],
  )

  m.addEvent(key({ acceptKey: OM }), { type: 'stale_served', digest: A, coalesceSince: 0 }, 9000)
  t.equal(latest().length, 6, 'another Accept set: its own event, not a bump')
  t.match(latest()[0], { acceptKey: OM, count: 1 })
  t.match(latest()[1], { acceptKey: 'none', count: 1 })
})

t.test('reopening the file keeps the data', async (t) => {
  const { open } = tempDb(t)
  const A = digest('A')
  const layer = digest('layer')
  const first = open()
  first.putContent({ digest: layer, size: 5 })
  first.putContent({ digest: A, size: 50, mediaType: OM, references: [layer] }, { upstream: 'docker.io', repository: 'library/alpine' })
  first.setTag(key(), A, 1234)
  first.addEvent(key(), { type: 'first_seen', digest: A }, 1234)
  first.close()

  const second = open()
  t.strictSame(second.getContent(A), { digest: A, size: 50, mediaType: OM })
  t.ok(second.isLinked('docker.io', 'library/alpine', layer))
  t.strictSame(second.getTag(key()), { digest: A, checkedAt: 1234 })
  t.ok(second.tagHeld(key(), A))
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
