// The metadata database (better-sqlite3, WAL). Knows SQL, nothing of HTTP or files.
// Every statement is prepared once in the constructor; the schema is versioned in user_version
// and older versions are migrated in place (storage/metadata-schema.ts).

import Database from 'better-sqlite3'
import { mkdirSync } from 'node:fs'
import { dirname } from 'node:path'
import { SCHEMA_VERSION, migrate } from './metadata-schema.js'
import { Checkpointer } from './checkpointer.js'

export interface ContentRow {
  digest: string
  size: number
  mediaType: string | null
}

export interface TagRow {
  digest: string
  checkedAt: number
}

/** A tag as one client population sees it: `acceptKey` is the normalised set of manifest types it accepts. */
export interface TagKey extends TagRef {
  acceptKey: string
}

/** A tag, whoever asks. */
export interface TagRef {
  upstream: string
  repository: string
  tag: string
}

export type EventType =
  | 'first_seen'
  | 'changed'
  | 'rollback'
  | 'rollback_refused'
  | 'stale_served'
  | 'upstream_not_found'
  /** A listed tag's image was fetched before any client asked (prefetch). */
  | 'prefetched'
  /** switch: when-cached: clients moved to the new digest; `detail` says how long the previous one was still served. */
  | 'switched'

export interface HistoryEvent {
  id: number
  at: number
  lastAt: number
  upstream: string
  repository: string
  tag: string
  /** The Accept set of the request that revealed the event. */
  acceptKey: string
  type: EventType
  digest: string | null
  previousDigest: string | null
  detail: string | null
  count: number
}

/** Every digest a tag was seen to point at, once, with the media type it was served as. */
export interface TagDigestRow {
  tag: string
  digest: string
  mediaType: string | null
  firstSeen: number
  lastSeen: number
}

/** One row of the status page's series (storage/metadata-schema.ts describes the columns). */
export interface SeriesRow {
  at: number
  fromCache: number
  fromUpstream: number
  bytesCache: number
  bytesUpstream: number
  upstreamsDown: number
  cacheBytes: number
}

/** Where a digest upstream names for a tag stands in the tag's own history. */
export type DigestStanding = 'current' | 'held-before' | 'new'

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
  /**
   * Where totals() comes from: the row the database keeps up to date itself (default; a
   * read-only open of a database older than schema 4 counts instead), or counted from the table
   * every time (tests checking the kept row against the table).
   */
  totals?: 'kept' | 'query'
  /** Checkpoint the write-ahead log on a thread of its own (the server: no fsync on the event loop). */
  backgroundCheckpoints?: boolean
}

/**
 * Last-access times written per transaction by the server and the evictor, the event loop yielded
 * between them: at a million rows an update costs some 100 µs of CPU (three B-trees, each a
 * random page to write back).
 */
export const ACCESS_FLUSH_SLICE = 50

/**
 * Rows written by a long run of writes (eviction, last-access flushes) between two pauses for the
 * checkpoint thread to copy the log back whole (settleLog): a thousand random rows dirty some
 * 5,000 pages, so the log stays near 20 MB, far from the safety net of storage/checkpointer.ts.
 */
export const LOG_SETTLE_ROWS = 1000

/** Accept sets kept per tag; beyond it the least recently confirmed is dropped. */
export const MAX_ACCEPT_SETS_PER_TAG = 16

export class Metadata {
  readonly db: Database.Database
  private readonly s
  private readonly pendingAccess = new Map<string, number>()
  private readonly readonly: boolean
  /** Reads the totals: the kept row (schema 4), or COUNT/SUM over the table. */
  private readonly readTotals: () => { count: number; bytes: number } | undefined
  private readonly checkpointer?: Checkpointer

  constructor(path: string, opts: OpenOptions = {}) {
    this.readonly = opts.readonly === true
    if (path !== ':memory:' && !this.readonly) mkdirSync(dirname(path), { recursive: true, mode: 0o700 })
    this.db = new Database(path, { readonly: this.readonly, fileMustExist: this.readonly })
    const version = this.db.pragma('user_version', { simple: true }) as number
    if (version > SCHEMA_VERSION) {
      this.db.close()
      throw new Error(`${path} was written by a newer regcache (schema ${version}, this one knows ${SCHEMA_VERSION})`)
    }
    this.db.pragma('busy_timeout = 5000')
    // Page cache and memory map sized for caches of a million entries.
    this.db.pragma('cache_size = -65536')
    this.db.pragma('mmap_size = 268435456')
    if (!this.readonly) {
      this.db.pragma('journal_mode = WAL')
      this.db.pragma('synchronous = NORMAL')
      migrate(this.db, version)
    }
    const db = this.db
    // A read-only open of an older file has no kept totals and no index on verified_at.
    const current = !this.readonly || version === SCHEMA_VERSION
    this.s = {
      getContent: db.prepare<[string], ContentRow>('SELECT digest, size, media_type AS mediaType FROM content WHERE digest = ?'),
      putContent: db.prepare(
        `INSERT INTO content (digest, size, media_type, created_at, last_access, verified_at) VALUES (@digest, @size, @mediaType, @now, @now, @now)
         ON CONFLICT(digest) DO UPDATE SET size = excluded.size, media_type = COALESCE(excluded.media_type, content.media_type), last_access = excluded.last_access, verified_at = excluded.verified_at`,
      ),
      deleteContent: db.prepare('DELETE FROM content WHERE digest = ?'),
      unlinkAll: db.prepare('DELETE FROM repo_content WHERE digest = ?'),
      touch: db.prepare('UPDATE content SET last_access = MAX(last_access, ?) WHERE digest = ?'),
      verifiedAt: db.prepare<[string], { verifiedAt: number | null }>('SELECT verified_at AS verifiedAt FROM content WHERE digest = ?'),
      markVerified: db.prepare('UPDATE content SET verified_at = ? WHERE digest = ?'),
      // Two bounded ranges of content_verified (NULLs sort first; `verified_at < ?` skips them).
      neverVerified: db.prepare<[number], { digest: string; size: number; mediaType: string | null }>(
        'SELECT digest, size, media_type AS mediaType FROM content WHERE verified_at IS NULL LIMIT ?',
      ),
      verifiedBefore: db.prepare<[number, number], { digest: string; size: number; mediaType: string | null }>(
        'SELECT digest, size, media_type AS mediaType FROM content WHERE verified_at < ? ORDER BY verified_at LIMIT ?',
      ),
      link: db.prepare('INSERT OR IGNORE INTO repo_content (upstream, repository, digest) VALUES (?, ?, ?)'),
      isLinked: db.prepare<[string, string, string], { one: number }>('SELECT 1 AS one FROM repo_content WHERE upstream = ? AND repository = ? AND digest = ?'),
      getTag: db.prepare<[string, string, string, string], TagRow>(
        'SELECT digest, checked_at AS checkedAt FROM tags WHERE upstream = ? AND repository = ? AND tag = ? AND accept_key = ?',
      ),
      tagEntries: db.prepare<[string, string, string], TagRow & { acceptKey: string; mediaType: string | null }>(
        `SELECT t.accept_key AS acceptKey, t.digest, t.checked_at AS checkedAt, c.media_type AS mediaType
         FROM tags t LEFT JOIN content c ON c.digest = t.digest
         WHERE t.upstream = ? AND t.repository = ? AND t.tag = ? ORDER BY t.checked_at DESC`,
      ),
      lastChecked: db.prepare<[string, string, string], { at: number | null }>(
        'SELECT MAX(checked_at) AS at FROM tags WHERE upstream = ? AND repository = ? AND tag = ?',
      ),
      isCurrent: db.prepare<[string, string, string, string], { one: number }>(
        'SELECT 1 AS one FROM tags WHERE upstream = ? AND repository = ? AND tag = ? AND digest = ? LIMIT 1',
      ),
      putTag: db.prepare(
        `INSERT INTO tags (upstream, repository, tag, accept_key, digest, checked_at) VALUES (@upstream, @repository, @tag, @acceptKey, @digest, @now)
         ON CONFLICT(upstream, repository, tag, accept_key) DO UPDATE SET digest = excluded.digest, checked_at = excluded.checked_at`,
      ),
      pruneTag: db.prepare(
        `DELETE FROM tags WHERE upstream = @upstream AND repository = @repository AND tag = @tag AND accept_key NOT IN (
           SELECT accept_key FROM tags WHERE upstream = @upstream AND repository = @repository AND tag = @tag ORDER BY checked_at DESC LIMIT @keep)`,
      ),
      checkedTag: db.prepare(
        'UPDATE tags SET checked_at = @now WHERE upstream = @upstream AND repository = @repository AND tag = @tag AND accept_key = @acceptKey',
      ),
      deleteTags: db.prepare('DELETE FROM tags WHERE upstream = ? AND repository = ? AND tag = ?'),
      deleteTagEntry: db.prepare('DELETE FROM tags WHERE upstream = ? AND repository = ? AND tag = ? AND accept_key = ?'),
      seenDigest: db.prepare(
        `INSERT INTO tag_digests (upstream, repository, tag, digest, media_type, first_seen, last_seen) VALUES (@upstream, @repository, @tag, @digest, @mediaType, @now, @now)
         ON CONFLICT DO UPDATE SET last_seen = MAX(last_seen, excluded.last_seen), media_type = COALESCE(excluded.media_type, media_type)`,
      ),
      heldBefore: db.prepare<[string, string, string, string], { one: number }>(
        'SELECT 1 AS one FROM tag_digests WHERE upstream = ? AND repository = ? AND tag = ? AND digest = ?',
      ),
      addEvent: db.prepare(
        `INSERT INTO events (at, last_at, upstream, repository, tag, accept_key, type, digest, previous_digest, detail)
         VALUES (@now, @now, @upstream, @repository, @tag, @acceptKey, @type, @digest, @previousDigest, @detail)`,
      ),
      lastEventOfType: db.prepare<[string, string, string, string], { id: number; lastAt: number }>(
        'SELECT id, last_at AS lastAt FROM events WHERE upstream = ? AND repository = ? AND tag = ? AND type = ? ORDER BY id DESC LIMIT 1',
      ),
      bumpEvent: db.prepare('UPDATE events SET count = count + 1, last_at = @now, detail = @detail WHERE id = @id'),
      eventsOfTag: db.prepare<[string, string, string, number], EventRow>('SELECT * FROM events WHERE upstream = ? AND repository = ? AND tag = ? ORDER BY id DESC LIMIT ?'),
      eventsOfRepo: db.prepare<[string, string, number], EventRow>('SELECT * FROM events WHERE upstream = ? AND repository = ? ORDER BY id DESC LIMIT ?'),
      digestsOfTag: db.prepare<[string, string, string], TagDigestRow>(
        `SELECT tag, digest, media_type AS mediaType, first_seen AS firstSeen, last_seen AS lastSeen FROM tag_digests
         WHERE upstream = ? AND repository = ? AND tag = ? ORDER BY first_seen`,
      ),
      digestsOfRepo: db.prepare<[string, string], TagDigestRow>(
        `SELECT tag, digest, media_type AS mediaType, first_seen AS firstSeen, last_seen AS lastSeen FROM tag_digests
         WHERE upstream = ? AND repository = ? ORDER BY first_seen`,
      ),
      recentEvents: db.prepare<[number], EventRow>('SELECT * FROM events ORDER BY id DESC LIMIT ?'),
      lru: db.prepare<[number, number], { digest: string; size: number; lastAccess: number; mediaType: string | null }>(
        'SELECT digest, size, last_access AS lastAccess, media_type AS mediaType FROM content ORDER BY last_access ASC LIMIT ? OFFSET ?',
      ),
      unusedSince: db.prepare<[number, number, number], { digest: string; size: number; mediaType: string | null }>(
        'SELECT digest, size, media_type AS mediaType FROM content WHERE last_access < ? ORDER BY last_access LIMIT ? OFFSET ?',
      ),
      allDigests: db.prepare<[], { digest: string }>('SELECT digest FROM content'),
      countTotals: db.prepare<[], { count: number; bytes: number }>('SELECT COUNT(*) AS count, COALESCE(SUM(size), 0) AS bytes FROM content'),
      keptTotals: current ? db.prepare<[], { count: number; bytes: number }>('SELECT count, bytes FROM content_totals WHERE id = 0') : undefined,
      addSample: db.prepare(
        `INSERT INTO series (step, at, from_cache, from_upstream, bytes_cache, bytes_upstream, upstreams_down, cache_bytes)
         VALUES (@step, @at, @fromCache, @fromUpstream, @bytesCache, @bytesUpstream, @upstreamsDown, @cacheBytes)
         ON CONFLICT(step, at) DO UPDATE SET from_cache = from_cache + excluded.from_cache, from_upstream = from_upstream + excluded.from_upstream,
           bytes_cache = bytes_cache + excluded.bytes_cache, bytes_upstream = bytes_upstream + excluded.bytes_upstream,
           upstreams_down = MAX(upstreams_down, excluded.upstreams_down), cache_bytes = excluded.cache_bytes`,
      ),
      pruneSeries: db.prepare('DELETE FROM series WHERE step = ? AND at < ?'),
      addPulls: db.prepare(
        `INSERT INTO image_pulls (day, upstream, repository, tag, pulls) VALUES (?, ?, ?, ?, ?)
         ON CONFLICT(day, upstream, repository, tag) DO UPDATE SET pulls = pulls + excluded.pulls`,
      ),
      prunePulls: db.prepare('DELETE FROM image_pulls WHERE day < ?'),
      topPulls: db.prepare<[number, number], { upstream: string; repository: string; tag: string; pulls: number }>(
        `SELECT upstream, repository, tag, SUM(pulls) AS pulls FROM image_pulls WHERE day >= ?
         GROUP BY upstream, repository, tag ORDER BY pulls DESC, upstream, repository, tag LIMIT ?`,
      ),
      series: db.prepare<[number, number], SeriesRow>(
        `SELECT at, from_cache AS fromCache, from_upstream AS fromUpstream, bytes_cache AS bytesCache, bytes_upstream AS bytesUpstream,
           upstreams_down AS upstreamsDown, cache_bytes AS cacheBytes FROM series WHERE step = ? AND at >= ? ORDER BY at`,
      ),
      ping: db.prepare<[], { n: number }>('SELECT COUNT(*) AS n FROM (SELECT 1 FROM tags LIMIT 1)'),
    }
    const kept = this.s.keptTotals
    this.readTotals = kept && opts.totals !== 'query' ? () => kept.get() : () => this.s.countTotals.get()
    if (opts.backgroundCheckpoints && !this.readonly && path !== ':memory:') this.checkpointer = new Checkpointer(this.db, path)
  }

  getContent(digest: string): ContentRow | undefined {
    return this.s.getContent.get(digest)
  }

  /**
   * Records stored (verified) content and, when given, the one repository upstream served it
   * for. Digests a manifest merely references are not linked: only upstream's own answer for a
   * repository proves that it holds a digest.
   */
  putContent(row: { digest: string; size: number; mediaType?: string }, link?: { upstream: string; repository: string }, now = Date.now()): void {
    this.db.transaction(() => {
      this.s.putContent.run({ digest: row.digest, size: row.size, mediaType: row.mediaType ?? null, now })
      if (link) this.s.link.run(link.upstream, link.repository, row.digest)
    })()
  }

  /** Forgets content and every repository link to it. */
  deleteContent(digest: string): void {
    this.deleteContents([digest])
  }

  /** Forgets many digests in one transaction (eviction, repairs). */
  deleteContents(digests: readonly string[]): void {
    this.db.transaction(() => {
      for (const digest of digests) {
        this.s.deleteContent.run(digest)
        this.s.unlinkAll.run(digest)
      }
    })()
    for (const digest of digests) this.pendingAccess.delete(digest)
  }

  /** Marks content as used; written in batches by flushAccess() so reads stay off the write path. */
  touch(digest: string): void {
    this.pendingAccess.set(digest, Date.now())
  }

  /** Writes pending last-access times, at most `limit` per call (the rest stay pending). */
  flushAccess(limit = Infinity): void {
    if (this.pendingAccess.size === 0) return
    const entries: [string, number][] = []
    for (const e of this.pendingAccess) {
      if (entries.length >= limit) break
      entries.push(e)
    }
    for (const [d] of entries) this.pendingAccess.delete(d)
    this.db.transaction(() => {
      for (const [digest, at] of entries) this.s.touch.run(at, digest)
    })()
  }

  /**
   * Writes every pending last-access time in slices of ACCESS_FLUSH_SLICE, yielding to other work
   * between them and pausing for the log (settleLog) every LOG_SETTLE_ROWS rows.
   */
  async flushAccessInSlices(): Promise<void> {
    let written = 0
    while (this.pendingAccess.size > 0) {
      written += Math.min(ACCESS_FLUSH_SLICE, this.pendingAccess.size)
      this.flushAccess(ACCESS_FLUSH_SLICE)
      if (written >= LOG_SETTLE_ROWS) {
        written = 0
        await this.settleLog()
      } else await new Promise<void>((resolve) => setImmediate(resolve))
    }
  }

  /**
   * Waits, off the event loop, until the checkpoint thread has copied the write-ahead log back
   * whole, so the next write starts it over: long runs of writes (eviction, last-access flushes)
   * call it every few thousand rows, or the log grows without end and the main connection's
   * safety-net checkpoint (with its fsync) lands on the event loop. Immediate without the thread.
   */
  settleLog(timeoutMs?: number): Promise<void> {
    return this.checkpointer?.settle(timeoutMs) ?? Promise.resolve()
  }

  get pendingAccessCount(): number {
    return this.pendingAccess.size
  }

  /** Upstream served (or confirmed) `digest` for this repository. */
  link(upstream: string, repository: string, digest: string): void {
    this.s.link.run(upstream, repository, digest)
  }

  isLinked(upstream: string, repository: string, digest: string): boolean {
    return this.s.isLinked.get(upstream, repository, digest) !== undefined
  }

  /** When the content's bytes were last hashed (at its fill, or by the scrub); undefined if never. */
  verifiedAt(digest: string): number | undefined {
    return this.s.verifiedAt.get(digest)?.verifiedAt ?? undefined
  }

  markVerified(digest: string, at = Date.now()): void {
    this.s.markVerified.run(at, digest)
  }

  /**
   * Up to `limit` rows of content never verified or not since `before`, the never verified and
   * then the longest unverified first: two bounded index ranges, however large the table and
   * however few rows are due.
   */
  dueForVerification(before: number, limit: number): { digest: string; size: number; mediaType: string | null }[] {
    const rows = this.s.neverVerified.all(limit)
    return rows.length >= limit ? rows : rows.concat(this.s.verifiedBefore.all(before, limit - rows.length))
  }

  getTag(k: TagKey): TagRow | undefined {
    return this.s.getTag.get(k.upstream, k.repository, k.tag, k.acceptKey)
  }

  /** The tag's entries for every Accept set, most recently confirmed first. */
  tagEntries(upstream: string, repository: string, tag: string): (TagRow & { acceptKey: string; mediaType: string | null })[] {
    return this.s.tagEntries.all(upstream, repository, tag)
  }

  /** The last time upstream confirmed the tag for anyone (an outage starts after it). */
  tagLastChecked(r: TagRef): number | undefined {
    return this.s.lastChecked.get(r.upstream, r.repository, r.tag)?.at ?? undefined
  }

  /** Whether `digest` is the tag's digest for some client now, was before, or was never seen. */
  digestStanding(r: TagRef, digest: string): DigestStanding {
    if (this.s.isCurrent.get(r.upstream, r.repository, r.tag, digest)) return 'current'
    return this.s.heldBefore.get(r.upstream, r.repository, r.tag, digest) ? 'held-before' : 'new'
  }

  /** Upstream confirmed the cached digest: refresh checked_at and the digest's last-seen time. */
  confirmTag(k: TagKey, digest: string, now = Date.now()): void {
    this.db.transaction(() => {
      this.s.checkedTag.run({ ...k, now })
      this.s.seenDigest.run({ ...k, digest, mediaType: null, now })
    })()
  }

  /** Points a tag (for one Accept set) at a digest and records the observation. */
  setTag(k: TagKey, digest: string, mediaType: string | null = null, now = Date.now()): void {
    this.db.transaction(() => {
      this.s.putTag.run({ ...k, digest, now })
      this.s.seenDigest.run({ ...k, digest, mediaType, now })
      this.s.pruneTag.run({ upstream: k.upstream, repository: k.repository, tag: k.tag, keep: MAX_ACCEPT_SETS_PER_TAG })
    })()
  }

  /** Records that upstream now names `digest` without moving the tag (a refused rollback). */
  observeDigest(r: TagRef, digest: string, now = Date.now()): void {
    this.s.seenDigest.run({ upstream: r.upstream, repository: r.repository, tag: r.tag, digest, mediaType: null, now })
  }

  /** Forgets every Accept set's entry of a tag (by hand); its history is kept. */
  deleteTag(upstream: string, repository: string, tag: string): number {
    return this.s.deleteTags.run(upstream, repository, tag).changes
  }

  /** Forgets one Accept set's entry (upstream had no such manifest for it); the others stay. */
  deleteTagEntry(k: TagKey): number {
    return this.s.deleteTagEntry.run(k.upstream, k.repository, k.tag, k.acceptKey).changes
  }

  /**
   * Appends a history event. With `coalesceSince`, the tag's latest event of the same type, if it
   * was last bumped at or after that time, has its count bumped instead: one stale_served (or
   * rollback_refused, upstream_not_found) event per tag per outage (the outage starts after the
   * tag's last successful check), with a count, whichever clients asked and in whatever order
   * their answers interleave.
   */
  addEvent(
    k: TagKey,
    e: { type: EventType; digest?: string | null; previousDigest?: string | null; detail?: string | null; coalesceSince?: number },
    now = Date.now(),
  ): void {
    if (e.coalesceSince !== undefined) {
      const last = this.s.lastEventOfType.get(k.upstream, k.repository, k.tag, e.type)
      if (last && last.lastAt >= e.coalesceSince) {
        this.s.bumpEvent.run({ id: last.id, now, detail: e.detail ?? null })
        return
      }
    }
    this.s.addEvent.run({ ...k, now, type: e.type, digest: e.digest ?? null, previousDigest: e.previousDigest ?? null, detail: e.detail ?? null })
  }

  events(upstream: string, repository: string, tag: string | undefined, limit = 200): HistoryEvent[] {
    const rows = tag === undefined ? this.s.eventsOfRepo.all(upstream, repository, limit) : this.s.eventsOfTag.all(upstream, repository, tag, limit)
    return rows.map(toEvent)
  }

  tagDigests(upstream: string, repository: string, tag: string | undefined): TagDigestRow[] {
    return tag === undefined ? this.s.digestsOfRepo.all(upstream, repository) : this.s.digestsOfTag.all(upstream, repository, tag)
  }

  recentEvents(limit = 50): HistoryEvent[] {
    return this.s.recentEvents.all(limit).map(toEvent)
  }

  /** Least recently used content first (the index on last_access keeps this cheap). */
  leastRecentlyUsed(limit: number, offset = 0): { digest: string; size: number; lastAccess: number; mediaType: string | null }[] {
    return this.s.lru.all(limit, offset)
  }

  /** Content unused since `at`, oldest first, one page at a time. */
  unusedSince(at: number, limit = 1000, offset = 0): { digest: string; size: number; mediaType: string | null }[] {
    return this.s.unusedSince.all(at, limit, offset)
  }

  allContentDigests(): string[] {
    return this.s.allDigests.all().map((r) => r.digest)
  }

  /** Number and bytes of stored content: one row the database keeps, or counted (see OpenOptions.totals). */
  totals(): { count: number; bytes: number } {
    const t = this.readTotals()
    return { count: t?.count ?? 0, bytes: t?.bytes ?? 0 }
  }

  /**
   * Adds a sample to the row of `stepSeconds` it falls in (counts add up, gauges keep the latest,
   * outages the worst) and drops that resolution's rows older than `keepMs`.
   */
  addSample(stepSeconds: number, keepMs: number, sample: SeriesRow): void {
    const stepMs = stepSeconds * 1000
    this.s.addSample.run({ step: stepSeconds, ...sample, at: Math.floor(sample.at / stepMs) * stepMs })
    this.s.pruneSeries.run(stepSeconds, sample.at - keepMs)
  }

  /** Adds pull counts (image key "upstream\nrepository\ntag" → pulls) to `day`'s, and drops days before `keepSince`. */
  addPulls(day: number, counts: ReadonlyMap<string, number>, keepSince: number): void {
    this.db.transaction(() => {
      for (const [k, n] of counts) {
        const [upstream, repository, tag] = k.split('\n')
        this.s.addPulls.run(day, upstream, repository, tag, n)
      }
      this.s.prunePulls.run(keepSince)
    })()
  }

  /** The most pulled images since `since`. */
  topPulls(since: number, limit = 10): { upstream: string; repository: string; tag: string; pulls: number }[] {
    return this.s.topPulls.all(since, limit)
  }

  /** The rows of one resolution since `since`, oldest first. */
  series(stepSeconds: number, since: number): SeriesRow[] {
    return this.s.series.all(stepSeconds, since)
  }

  /** Throws when the database does not answer (readiness): reads a page of the file, not a constant. */
  ping(): void {
    this.s.ping.get()
  }

  close(): void {
    if (!this.readonly) this.flushAccess()
    this.checkpointer?.stop()
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
