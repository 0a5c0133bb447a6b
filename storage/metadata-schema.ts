// The metadata schema and its migrations. A fresh file gets the current schema; a file written
// by an older regcache is migrated in one transaction when it is opened for writing.
//
// Version 4 (this one): the number and bytes of stored content are kept in the one row of
// `content_totals` by triggers on `content`, so opening a database of a million entries reads one
// row instead of summing the table, and every connection (the server, a command beside it) sees
// the same figures; an index on `verified_at` lets the scrub read the next rows due for a check as
// a bounded index range instead of walking the whole table when none is due.
//
// Version 3: `series` keeps the status page's charts (requests and bytes from cache and
// upstream, upstream outages, disk used), one row per 10 s for the last hour and per minute for the
// last day, so a restart does not blank them; `image_pulls` counts pulls per image and day.
//
// Version 2: tag state no longer depends on who asked. tag_digests holds each digest
// a tag pointed at once (not per Accept set), with its media type; tags are keyed by the
// normalised set of known manifest types a client accepts; repositories are linked only to
// digests upstream served for them (manifest_refs is gone); content records when its bytes were
// last verified.

import type Database from 'better-sqlite3'
import { acceptKey } from '../oci/media-types.js'

export const SCHEMA_VERSION = 4

const SERIES = `
CREATE TABLE IF NOT EXISTS series (
  step           INTEGER NOT NULL,  -- seconds a row covers: 10 (kept an hour) or 60 (kept a day)
  at             INTEGER NOT NULL,  -- start of the row's interval (ms)
  from_cache     INTEGER NOT NULL,  -- manifest and blob requests answered from the cache
  from_upstream  INTEGER NOT NULL,  -- ... and fetched from upstream
  bytes_cache    INTEGER NOT NULL,  -- bytes sent to clients from the cache
  bytes_upstream INTEGER NOT NULL,  -- ... and as they came from upstream
  upstreams_down INTEGER NOT NULL,  -- upstreams marked down at the latest sample
  cache_bytes    INTEGER NOT NULL,  -- content stored at the latest sample
  PRIMARY KEY (step, at)
) WITHOUT ROWID;

-- Tag resolutions (a client's pull starts with one) per image and day, for "most pulled images".
CREATE TABLE IF NOT EXISTS image_pulls (
  day        INTEGER NOT NULL,  -- start of the UTC day (ms)
  upstream   TEXT NOT NULL,
  repository TEXT NOT NULL,
  tag        TEXT NOT NULL,
  pulls      INTEGER NOT NULL,
  PRIMARY KEY (day, upstream, repository, tag)
) WITHOUT ROWID;
`

const TOTALS = `
CREATE INDEX IF NOT EXISTS content_verified ON content(verified_at);

-- COUNT(*) and SUM(size) of content, kept by the triggers below (one row, id 0).
CREATE TABLE IF NOT EXISTS content_totals (
  id    INTEGER PRIMARY KEY CHECK (id = 0),
  count INTEGER NOT NULL,
  bytes INTEGER NOT NULL
);
CREATE TRIGGER IF NOT EXISTS content_totals_insert AFTER INSERT ON content BEGIN
  UPDATE content_totals SET count = count + 1, bytes = bytes + NEW.size WHERE id = 0;
END;
CREATE TRIGGER IF NOT EXISTS content_totals_delete AFTER DELETE ON content BEGIN
  UPDATE content_totals SET count = count - 1, bytes = bytes - OLD.size WHERE id = 0;
END;
CREATE TRIGGER IF NOT EXISTS content_totals_resize AFTER UPDATE OF size ON content WHEN NEW.size IS NOT OLD.size BEGIN
  UPDATE content_totals SET bytes = bytes + NEW.size - OLD.size WHERE id = 0;
END;
`

const SCHEMA = `
CREATE TABLE IF NOT EXISTS content (
  digest      TEXT PRIMARY KEY,
  size        INTEGER NOT NULL,
  media_type  TEXT,              -- set for manifests, NULL for layers and configs
  created_at  INTEGER NOT NULL,
  last_access INTEGER NOT NULL,
  verified_at INTEGER            -- last time the stored bytes hashed to the digest
);
CREATE INDEX IF NOT EXISTS content_last_access ON content(last_access);

-- A digest is served for (upstream, repository) only once upstream served or confirmed it there.
CREATE TABLE IF NOT EXISTS repo_content (
  upstream   TEXT NOT NULL,
  repository TEXT NOT NULL,
  digest     TEXT NOT NULL,
  PRIMARY KEY (upstream, repository, digest)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS repo_content_digest ON repo_content(digest);

-- The digest a tag resolves to for each normalised Accept set (clients of different kinds may
-- legitimately get an index and a single-platform manifest for the same tag).
CREATE TABLE IF NOT EXISTS tags (
  upstream   TEXT NOT NULL,
  repository TEXT NOT NULL,
  tag        TEXT NOT NULL,
  accept_key TEXT NOT NULL,
  digest     TEXT NOT NULL,
  checked_at INTEGER NOT NULL,   -- last time upstream confirmed this digest
  PRIMARY KEY (upstream, repository, tag, accept_key)
) WITHOUT ROWID;

-- Every digest a tag was seen to point at, whoever asked.
CREATE TABLE IF NOT EXISTS tag_digests (
  upstream   TEXT NOT NULL,
  repository TEXT NOT NULL,
  tag        TEXT NOT NULL,
  digest     TEXT NOT NULL,
  media_type TEXT,
  first_seen INTEGER NOT NULL,
  last_seen  INTEGER NOT NULL,
  PRIMARY KEY (upstream, repository, tag, digest)
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
${SERIES}
CREATE INDEX IF NOT EXISTS events_type ON events(type, id);
${TOTALS}
`

/** Brings a database at `version` (0: new) to SCHEMA_VERSION. */
export function migrate(db: Database.Database, version: number): void {
  if (version === SCHEMA_VERSION) return
  db.transaction(() => {
    if (version === 1) from1(db)
    if (version >= 1 && version <= 2) from2(db)
    db.exec(SCHEMA)
    // Counted once here (a new file: zero), kept by the triggers from now on.
    db.exec('INSERT OR IGNORE INTO content_totals (id, count, bytes) SELECT 0, COUNT(*), COALESCE(SUM(size), 0) FROM content')
    db.pragma(`user_version = ${SCHEMA_VERSION}`)
  })()
}

/** Version 3 adds the status page's series and pull counts; nothing else changes. */
function from2(db: Database.Database): void {
  db.exec(SERIES)
}

function from1(db: Database.Database): void {
  db.exec(`
    ALTER TABLE content ADD COLUMN verified_at INTEGER;
    DROP TABLE IF EXISTS manifest_refs;
    DELETE FROM repo_content WHERE digest NOT IN (SELECT digest FROM content);
    CREATE TABLE tag_digests_v2 (
      upstream TEXT NOT NULL, repository TEXT NOT NULL, tag TEXT NOT NULL, digest TEXT NOT NULL,
      media_type TEXT, first_seen INTEGER NOT NULL, last_seen INTEGER NOT NULL,
      PRIMARY KEY (upstream, repository, tag, digest)
    ) WITHOUT ROWID;
    INSERT INTO tag_digests_v2
      SELECT d.upstream, d.repository, d.tag, d.digest, (SELECT media_type FROM content c WHERE c.digest = d.digest), MIN(d.first_seen), MAX(d.last_seen)
      FROM tag_digests d GROUP BY d.upstream, d.repository, d.tag, d.digest;
    DROP TABLE tag_digests;
    ALTER TABLE tag_digests_v2 RENAME TO tag_digests;
  `)
  // Accept keys were the client's raw (normalised) types; now only known manifest types count.
  const rows = db.prepare('SELECT upstream, repository, tag, accept_key AS acceptKey, digest, checked_at AS checkedAt FROM tags').all() as {
    upstream: string
    repository: string
    tag: string
    acceptKey: string
    digest: string
    checkedAt: number
  }[]
  db.exec('DELETE FROM tags')
  const put = db.prepare(
    `INSERT INTO tags (upstream, repository, tag, accept_key, digest, checked_at) VALUES (?, ?, ?, ?, ?, ?)
     ON CONFLICT DO UPDATE SET digest = excluded.digest, checked_at = excluded.checked_at WHERE excluded.checked_at > tags.checked_at`,
  )
  for (const r of rows) {
    const key = r.acceptKey === 'none' ? 'none' : acceptKey(r.acceptKey.split(','))
    put.run(r.upstream, r.repository, r.tag, key, r.digest, r.checkedAt)
  }
}
