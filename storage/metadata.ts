// The metadata database (better-sqlite3, WAL). Knows SQL, nothing of HTTP or files.
// Every statement is prepared once in the constructor; the schema is versioned in user_version.

import Database from 'better-sqlite3'
import { mkdirSync } from 'node:fs'
import { dirname } from 'node:path'

const SCHEMA_VERSION = 1

const SCHEMA = `
CREATE TABLE IF NOT EXISTS content (
  digest      TEXT PRIMARY KEY,
  size        INTEGER NOT NULL,
  media_type  TEXT,              -- set for manifests, NULL for layers and configs
  created_at  INTEGER NOT NULL,
  last_access INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS content_last_access ON content(last_access);

-- Which digests a manifest references, so a manifest's children become visible in its repository.
CREATE TABLE IF NOT EXISTS manifest_refs (
  manifest TEXT NOT NULL,
  child    TEXT NOT NULL,
  PRIMARY KEY (manifest, child)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS manifest_refs_child ON manifest_refs(child);

-- A digest is served for (upstream, repository) only once it was seen to belong there.
CREATE TABLE IF NOT EXISTS repo_content (
  upstream   TEXT NOT NULL,
  repository TEXT NOT NULL,
  digest     TEXT NOT NULL,
  PRIMARY KEY (upstream, repository, digest)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS tags (
  upstream   TEXT NOT NULL,
  repository TEXT NOT NULL,
  tag        TEXT NOT NULL,
  accept_key TEXT NOT NULL,
  digest     TEXT NOT NULL,
  checked_at INTEGER NOT NULL,   -- last time upstream confirmed this digest
  PRIMARY KEY (upstream, repository, tag, accept_key)
) WITHOUT ROWID;

-- Every digest a tag was seen to point at.
CREATE TABLE IF NOT EXISTS tag_digests (
  upstream   TEXT NOT NULL,
  repository TEXT NOT NULL,
  tag        TEXT NOT NULL,
  accept_key TEXT NOT NULL,
  digest     TEXT NOT NULL,
  first_seen INTEGER NOT NULL,
  last_seen  INTEGER NOT NULL,
  PRIMARY KEY (upstream, repository, tag, accept_key, digest)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS events (
  id              INTEGER PRIMARY KEY,
  at              INTEGER NOT NULL,
  last_at         INTEGER NOT NULL,
  upstream        TEXT NOT NULL,
  repository      TEXT NOT NULL,
  tag             TEXT NOT NULL,
  accept_key      TEXT NOT NULL,
  type            TEXT NOT NULL,
  digest          TEXT,
  previous_digest TEXT,
  detail          TEXT,
  count           INTEGER NOT NULL DEFAULT 1
);
CREATE INDEX IF NOT EXISTS events_tag ON events(upstream, repository, tag, id);
CREATE INDEX IF NOT EXISTS events_type ON events(type, id);
`

export interface ContentRow {
  digest: string
  size: number
  mediaType: string | null
}

export interface TagRow {
  digest: string
  checkedAt: number
}

export interface TagKey {
  upstream: string
  repository: string
  tag: string
  acceptKey: string
}

export type EventType =
  | 'first_seen'
  | 'changed'
  | 'rollback'
  | 'rollback_refused'
  | 'stale_served'
  | 'upstream_not_found'

export interface HistoryEvent {
  id: number
  at: number
  lastAt: number
  upstream: string
  repository: string
  tag: string
  acceptKey: string
  type: EventType
  digest: string | null
  previousDigest: string | null
  detail: string | null
  count: number
}

/** An events row as SQLite stores it. */
interface EventRow {
  id: number
  at: number
  last_at: number
  upstream: string
  repository: string
  tag: string
  accept_key: string
  type: EventType
  digest: string | null
  previous_digest: string | null
  detail: string | null
  count: number
}

export interface OpenOptions {
  /** Reads only (history, inspection): no schema changes, no writes. */
  readonly?: boolean
}

export interface TagDigestRow {
  tag: string
  acceptKey: string
  digest: string
  firstSeen: number
  lastSeen: number
}

export class Metadata {
  readonly db: Database.Database
  private readonly s
  private readonly pendingAccess = new Map<string, number>()

  constructor(path: string, opts: OpenOptions = {}) {
    if (path !== ':memory:' && !opts.readonly) mkdirSync(dirname(path), { recursive: true })
    this.db = new Database(path, { readonly: opts.readonly === true, fileMustExist: opts.readonly === true })
    const version = this.db.pragma('user_version', { simple: true }) as number
    if (version > SCHEMA_VERSION) {
      this.db.close()
      throw new Error(`${path} was written by a newer regcache (schema ${version}, this one knows ${SCHEMA_VERSION})`)
    }
    this.db.pragma('busy_timeout = 5000')
    if (!opts.readonly) {
      this.db.pragma('journal_mode = WAL')
      this.db.pragma('synchronous = NORMAL')
      this.db.exec(SCHEMA)
      this.db.pragma(`user_version = ${SCHEMA_VERSION}`)
    }
    const db = this.db
    this.s = {
      getContent: db.prepare<[string], ContentRow>('SELECT digest, size, media_type AS mediaType FROM content WHERE digest = ?'),
      putContent: db.prepare(
        `INSERT INTO content (digest, size, media_type, created_at, last_access) VALUES (@digest, @size, @mediaType, @now, @now)
         ON CONFLICT(digest) DO UPDATE SET size = excluded.size, media_type = COALESCE(excluded.media_type, content.media_type), last_access = excluded.last_access`,
      ),
      deleteContent: db.prepare('DELETE FROM content WHERE digest = ?'),
      touch: db.prepare('UPDATE content SET last_access = MAX(last_access, ?) WHERE digest = ?'),
      putRef: db.prepare('INSERT OR IGNORE INTO manifest_refs (manifest, child) VALUES (?, ?)'),
      refsOf: db.prepare<[string], { child: string }>('SELECT child FROM manifest_refs WHERE manifest = ?'),
      link: db.prepare('INSERT OR IGNORE INTO repo_content (upstream, repository, digest) VALUES (?, ?, ?)'),
      isLinked: db.prepare<[string, string, string], { one: number }>(
        'SELECT 1 AS one FROM repo_content WHERE upstream = ? AND repository = ? AND digest = ?',
      ),
      getTag: db.prepare<[string, string, string, string], TagRow>(
        'SELECT digest, checked_at AS checkedAt FROM tags WHERE upstream = ? AND repository = ? AND tag = ? AND accept_key = ?',
      ),
      tagEntries: db.prepare<[string, string, string], TagRow & { acceptKey: string; mediaType: string | null }>(
        `SELECT t.accept_key AS acceptKey, t.digest, t.checked_at AS checkedAt, c.media_type AS mediaType
         FROM tags t LEFT JOIN content c ON c.digest = t.digest
         WHERE t.upstream = ? AND t.repository = ? AND t.tag = ? ORDER BY t.checked_at DESC`,
      ),
      putTag: db.prepare(
        `INSERT INTO tags (upstream, repository, tag, accept_key, digest, checked_at) VALUES (@upstream, @repository, @tag, @acceptKey, @digest, @now)
         ON CONFLICT(upstream, repository, tag, accept_key) DO UPDATE SET digest = excluded.digest, checked_at = excluded.checked_at`,
      ),
      checkedTag: db.prepare(
        'UPDATE tags SET checked_at = @now WHERE upstream = @upstream AND repository = @repository AND tag = @tag AND accept_key = @acceptKey',
      ),
      deleteTags: db.prepare('DELETE FROM tags WHERE upstream = ? AND repository = ? AND tag = ?'),
      seenDigest: db.prepare(
        `INSERT INTO tag_digests (upstream, repository, tag, accept_key, digest, first_seen, last_seen) VALUES (@upstream, @repository, @tag, @acceptKey, @digest, @now, @now)
         ON CONFLICT DO UPDATE SET last_seen = excluded.last_seen`,
      ),
      heldBefore: db.prepare<[string, string, string, string, string], { one: number }>(
        'SELECT 1 AS one FROM tag_digests WHERE upstream = ? AND repository = ? AND tag = ? AND accept_key = ? AND digest = ?',
      ),
      addEvent: db.prepare(
        `INSERT INTO events (at, last_at, upstream, repository, tag, accept_key, type, digest, previous_digest, detail)
         VALUES (@now, @now, @upstream, @repository, @tag, @acceptKey, @type, @digest, @previousDigest, @detail)`,
      ),
      lastEvent: db.prepare<[string, string, string, string], { id: number; type: EventType; lastAt: number }>(
        'SELECT id, type, last_at AS lastAt FROM events WHERE upstream = ? AND repository = ? AND tag = ? AND accept_key = ? ORDER BY id DESC LIMIT 1',
      ),
      bumpEvent: db.prepare('UPDATE events SET count = count + 1, last_at = @now, detail = @detail WHERE id = @id'),
      eventsOf: db.prepare<[string, string, string, string, number], EventRow>(
        `SELECT * FROM events WHERE upstream = ? AND repository = ? AND (? = '' OR tag = ?) ORDER BY id DESC LIMIT ?`,
      ),
      digestsOf: db.prepare<[string, string, string, string], TagDigestRow>(
        `SELECT tag, accept_key AS acceptKey, digest, first_seen AS firstSeen, last_seen AS lastSeen FROM tag_digests
         WHERE upstream = ? AND repository = ? AND (? = '' OR tag = ?) ORDER BY first_seen`,
      ),
      recentEvents: db.prepare<[number], EventRow>('SELECT * FROM events ORDER BY id DESC LIMIT ?'),
      lru: db.prepare<[number], { digest: string; size: number; lastAccess: number; mediaType: string | null }>(
        'SELECT digest, size, last_access AS lastAccess, media_type AS mediaType FROM content ORDER BY last_access ASC LIMIT ?',
      ),
      unusedSince: db.prepare<[number], { digest: string; size: number; mediaType: string | null }>(
        'SELECT digest, size, media_type AS mediaType FROM content WHERE last_access < ?',
      ),
      allDigests: db.prepare<[], { digest: string }>('SELECT digest FROM content'),
      totals: db.prepare<[], { count: number; bytes: number }>('SELECT COUNT(*) AS count, COALESCE(SUM(size), 0) AS bytes FROM content'),
      ping: db.prepare<[], { one: number }>('SELECT 1 AS one'),
    }
  }

  getContent(digest: string): ContentRow | undefined {
    return this.s.getContent.get(digest)
  }

  /** Records stored content; a manifest's children and its repository come in the same transaction. */
  putContent(row: { digest: string; size: number; mediaType?: string; references?: string[] }, link?: { upstream: string; repository: string }): void {
    const now = Date.now()
    this.db.transaction(() => {
      this.s.putContent.run({ digest: row.digest, size: row.size, mediaType: row.mediaType ?? null, now })
      for (const child of row.references ?? []) this.s.putRef.run(row.digest, child)
      if (link) this.linkWithChildren(link.upstream, link.repository, row.digest)
    })()
  }

  deleteContent(digest: string): void {
    this.s.deleteContent.run(digest)
    this.pendingAccess.delete(digest)
  }

  /** Marks content as used; written in batches by flushAccess() so reads stay off the write path. */
  touch(digest: string): void {
    this.pendingAccess.set(digest, Date.now())
  }

  flushAccess(): void {
    if (this.pendingAccess.size === 0) return
    const entries = [...this.pendingAccess]
    this.pendingAccess.clear()
    this.db.transaction(() => {
      for (const [digest, at] of entries) this.s.touch.run(at, digest)
    })()
  }

  /** Links a digest, and everything a manifest references (recursively: an index's children), to a repository. */
  linkWithChildren(upstream: string, repository: string, digest: string): void {
    const queue = [digest]
    const seen = new Set<string>()
    while (queue.length > 0) {
      const d = queue.pop() as string
      if (seen.has(d)) continue
      seen.add(d)
      this.s.link.run(upstream, repository, d)
      for (const { child } of this.s.refsOf.all(d)) queue.push(child)
    }
  }

  isLinked(upstream: string, repository: string, digest: string): boolean {
    return this.s.isLinked.get(upstream, repository, digest) !== undefined
  }

  getTag(k: TagKey): TagRow | undefined {
    return this.s.getTag.get(k.upstream, k.repository, k.tag, k.acceptKey)
  }

  /** The tag's entries for every Accept set, most recently confirmed first. */
  tagEntries(upstream: string, repository: string, tag: string): (TagRow & { acceptKey: string; mediaType: string | null })[] {
    return this.s.tagEntries.all(upstream, repository, tag)
  }

  /** Upstream confirmed the cached digest: refresh checked_at and the digest's last-seen time. */
  confirmTag(k: TagKey, digest: string, now = Date.now()): void {
    this.db.transaction(() => {
      this.s.checkedTag.run({ ...k, now })
      this.s.seenDigest.run({ ...k, digest, now })
    })()
  }

  /** Points a tag at a digest and records the observation. */
  setTag(k: TagKey, digest: string, now = Date.now()): void {
    this.db.transaction(() => {
      this.s.putTag.run({ ...k, digest, now })
      this.s.seenDigest.run({ ...k, digest, now })
    })()
  }

  /** Records that upstream now names `digest` without moving the tag (a refused rollback). */
  observeDigest(k: TagKey, digest: string, now = Date.now()): void {
    this.s.seenDigest.run({ ...k, digest, now })
  }

  /** Whether this tag pointed at `digest` at some earlier time. */
  tagHeld(k: TagKey, digest: string): boolean {
    return this.s.heldBefore.get(k.upstream, k.repository, k.tag, k.acceptKey, digest) !== undefined
  }

  deleteTag(upstream: string, repository: string, tag: string): number {
    return this.s.deleteTags.run(upstream, repository, tag).changes
  }

  /**
   * Appends a history event. With `coalesceSince`, a repeat of the tag's latest event of the same
   * type that was last bumped at or after that time bumps its count instead: one stale_served
   * event per outage (the outage starts after the tag's last successful check), with a count.
   */
  addEvent(
    k: TagKey,
    e: { type: EventType; digest?: string | null; previousDigest?: string | null; detail?: string | null; coalesceSince?: number },
    now = Date.now(),
  ): void {
    if (e.coalesceSince !== undefined) {
      const last = this.s.lastEvent.get(k.upstream, k.repository, k.tag, k.acceptKey)
      if (last && last.type === e.type && last.lastAt >= e.coalesceSince) {
        this.s.bumpEvent.run({ id: last.id, now, detail: e.detail ?? null })
        return
      }
    }
    this.s.addEvent.run({ ...k, now, type: e.type, digest: e.digest ?? null, previousDigest: e.previousDigest ?? null, detail: e.detail ?? null })
  }

  events(upstream: string, repository: string, tag: string | undefined, limit = 200): HistoryEvent[] {
    return this.s.eventsOf.all(upstream, repository, tag ?? '', tag ?? '', limit).map(toEvent)
  }

  tagDigests(upstream: string, repository: string, tag: string | undefined): TagDigestRow[] {
    return this.s.digestsOf.all(upstream, repository, tag ?? '', tag ?? '')
  }

  recentEvents(limit = 50): HistoryEvent[] {
    return this.s.recentEvents.all(limit).map(toEvent)
  }

  /** Least recently used content first (the index on last_access keeps this cheap). */
  leastRecentlyUsed(limit: number): { digest: string; size: number; lastAccess: number; mediaType: string | null }[] {
    return this.s.lru.all(limit)
  }

  unusedSince(at: number): { digest: string; size: number; mediaType: string | null }[] {
    return this.s.unusedSince.all(at)
  }

  allContentDigests(): string[] {
    return this.s.allDigests.all().map((r) => r.digest)
  }

  totals(): { count: number; bytes: number } {
    return this.s.totals.get() ?? { count: 0, bytes: 0 }
  }

  /** Throws when the database does not answer (readiness). */
  ping(): void {
    this.s.ping.get()
  }

  close(): void {
    this.flushAccess()
    this.db.close()
  }
}

function toEvent(r: EventRow): HistoryEvent {
  return {
    id: r.id,
    at: r.at,
    lastAt: r.last_at,
    upstream: r.upstream,
    repository: r.repository,
    tag: r.tag,
    acceptKey: r.accept_key,
    type: r.type,
    digest: r.digest,
    previousDigest: r.previous_digest,
    detail: r.detail,
    count: r.count,
  }
}
