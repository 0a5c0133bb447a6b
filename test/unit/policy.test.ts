// The revalidation policy against the behaviour contract (docs/behaviour.md#revalidation-contract):
// one table row per rule, each named by the rule it checks.
import t from 'tap'
import {
  decideTag,
  outcomeOfStatus,
  shouldRevalidate,
  type CachedTag,
  type DigestStanding,
  type PolicyConfig,
  type TagAction,
  type UpstreamOutcome,
} from '../../core/policy.js'
import type { TransportFailure } from '../../upstream/errors.js'

const A = `sha256:${'a'.repeat(64)}`
const B = `sha256:${'b'.repeat(64)}`

const NOW = 1_700_000_000_000
const SEC = 1000
const DAY = 86_400_000
const MAX_AGE = 7 * DAY

const base: PolicyConfig = { staleMaxAgeMs: MAX_AGE, onNotFound: 'passthrough', onRollback: 'follow' }

/** A cached tag upstream last confirmed `ageMs` ago. */
const cachedAged = (ageMs: number, digest = A): CachedTag => ({ digest, checkedAt: NOW - ageMs })
const fresh = cachedAged(60 * SEC)
const tooOld = cachedAged(MAX_AGE + 1)

interface Row {
  name: string
  cached: CachedTag | undefined
  outcome: UpstreamOutcome
  standing?: DigestStanding
  fallback?: CachedTag
  config?: Partial<PolicyConfig>
  expect: TagAction
}

const rows: Row[] = [
  // docs/behaviour.md#r2-unchanged-digest: digest unchanged.
  {
    name: 'unchanged digest → serve the cached manifest, no GET',
    cached: fresh,
    outcome: { kind: 'found', digest: A },
    expect: { action: 'serve-cached', reason: 'unchanged', digest: A },
  },
  {
    name: 'unchanged digest is unchanged even though the tag held it before (not a rollback)',
    cached: fresh,
    outcome: { kind: 'found', digest: A },
    standing: 'current',
    config: { onRollback: 'refuse' },
    expect: { action: 'serve-cached', reason: 'unchanged', digest: A },
  },
  {
    name: 'unchanged digest is served even when the cache is older than the stale limit (upstream just confirmed it)',
    cached: tooOld,
    outcome: { kind: 'found', digest: A },
    expect: { action: 'serve-cached', reason: 'unchanged', digest: A },
  },
  // docs/behaviour.md#r3-changed-digest: digest changed.
  {
    name: 'changed digest → fetch by digest, change=changed, previousDigest=cached digest',
    cached: fresh,
    outcome: { kind: 'found', digest: B },
    expect: { action: 'fetch', digest: B, change: 'changed', previousDigest: A },
  },
  {
    name: 'changed digest not held before is followed even with onRollback=refuse',
    cached: fresh,
    outcome: { kind: 'found', digest: B },
    config: { onRollback: 'refuse' },
    expect: { action: 'fetch', digest: B, change: 'changed', previousDigest: A },
  },
  {
    name: 'no cached entry → fetch, change=first-seen',
    cached: undefined,
    outcome: { kind: 'found', digest: B },
    expect: { action: 'fetch', digest: B, change: 'first-seen' },
  },
  // Tag state does not depend on who asks: a client kind new to the tag.
  {
    name: 'a client kind new to the tag gets the digest other clients are served now → fetch, change=same (no event)',
    cached: undefined,
    outcome: { kind: 'found', digest: B },
    standing: 'current',
    fallback: cachedAged(60 * SEC, B),
    expect: { action: 'fetch', digest: B, change: 'same' },
  },
  {
    name: 'a client kind new to the tag reveals a move back to an earlier digest → rollback (follow)',
    cached: undefined,
    outcome: { kind: 'found', digest: B },
    standing: 'held-before',
    fallback: fresh,
    config: { onRollback: 'follow' },
    expect: { action: 'fetch', digest: B, change: 'rollback', previousDigest: A },
  },
  {
    name: 'a client kind new to the tag reveals a rollback with onRollback=refuse → served what other clients get',
    cached: undefined,
    outcome: { kind: 'found', digest: B },
    standing: 'held-before',
    fallback: fresh,
    config: { onRollback: 'refuse' },
    expect: { action: 'serve-cached', reason: 'rollback-refused', digest: A, refusedDigest: B },
  },
  {
    name: 'a rollback refused for a client kind that accepts nothing cached → refuse (503)',
    cached: undefined,
    outcome: { kind: 'found', digest: B },
    standing: 'held-before',
    config: { onRollback: 'refuse' },
    expect: { action: 'refuse', refusedDigest: B },
  },
  {
    name: 'a digest current for another client kind is a change, not a rollback, for this one',
    cached: fresh,
    outcome: { kind: 'found', digest: B },
    standing: 'current',
    config: { onRollback: 'refuse' },
    expect: { action: 'fetch', digest: B, change: 'changed', previousDigest: A },
  },
  // Rollback: a move back to a digest the tag held before.
  {
    name: 'move back to a digest held before with onRollback=follow → fetch, change=rollback',
    cached: fresh,
    outcome: { kind: 'found', digest: B },
    standing: 'held-before',
    config: { onRollback: 'follow' },
    expect: { action: 'fetch', digest: B, change: 'rollback', previousDigest: A },
  },
  {
    name: 'move back to a digest held before with onRollback=refuse → keep serving the cached digest',
    cached: fresh,
    outcome: { kind: 'found', digest: B },
    standing: 'held-before',
    config: { onRollback: 'refuse' },
    expect: { action: 'serve-cached', reason: 'rollback-refused', digest: A, refusedDigest: B },
  },

  // docs/behaviour.md#r4-upstream-cannot-answer-stale-or-503: unreachable / timeout / 5xx / 429 → stale within the limit, else 503 (or 429).
  ...(['refused', 'reset', 'dns', 'timeout', 'tls', 'other'] as TransportFailure[]).flatMap((failure): Row[] => [
    {
      name: `transport failure "${failure}" with a cache within stale.maxAge → serve stale`,
      cached: fresh,
      outcome: { kind: 'unreachable', failure },
      expect: { action: 'serve-stale', digest: A, reason: failure, ageMs: 60 * SEC },
    },
    {
      name: `transport failure "${failure}" with a cache older than stale.maxAge → 503 unavailable`,
      cached: tooOld,
      outcome: { kind: 'unreachable', failure },
      expect: { action: 'unavailable', reason: failure, staleAgeMs: MAX_AGE + 1 },
    },
    {
      name: `transport failure "${failure}" with nothing cached → 503 unavailable`,
      cached: undefined,
      outcome: { kind: 'unreachable', failure },
      expect: { action: 'unavailable', reason: failure },
    },
  ]),
  ...[500, 502, 503, 504].flatMap((status): Row[] => [
    {
      name: `upstream ${status} with a cache within stale.maxAge → serve stale`,
      cached: fresh,
      outcome: { kind: 'server-error', status },
      expect: { action: 'serve-stale', digest: A, reason: 'server-error', ageMs: 60 * SEC },
    },
    {
      name: `upstream ${status} with a cache older than stale.maxAge → 503 unavailable`,
      cached: tooOld,
      outcome: { kind: 'server-error', status },
      expect: { action: 'unavailable', reason: 'server-error', staleAgeMs: MAX_AGE + 1 },
    },
    {
      name: `upstream ${status} with nothing cached → 503 unavailable`,
      cached: undefined,
      outcome: { kind: 'server-error', status },
      expect: { action: 'unavailable', reason: 'server-error' },
    },
  ]),
  {
    name: 'upstream 429 with a cache within stale.maxAge → serve stale',
    cached: fresh,
    outcome: { kind: 'rate-limited', retryAfter: '30' },
    expect: { action: 'serve-stale', digest: A, reason: 'rate-limited', ageMs: 60 * SEC },
  },
  {
    name: 'upstream 429 with a cache older than stale.maxAge → pass 429 on with Retry-After',
    cached: tooOld,
    outcome: { kind: 'rate-limited', retryAfter: '30' },
    expect: { action: 'pass', status: 429, retryAfter: '30' },
  },
  {
    name: 'upstream 429 with nothing cached → pass 429 on with Retry-After',
    cached: undefined,
    outcome: { kind: 'rate-limited', retryAfter: '120' },
    expect: { action: 'pass', status: 429, retryAfter: '120' },
  },
  {
    name: 'upstream 429 without Retry-After and nothing cached → pass 429 on',
    cached: undefined,
    outcome: { kind: 'rate-limited' },
    expect: { action: 'pass', status: 429, retryAfter: undefined },
  },
  // The staleness limit: age is now - checkedAt.
  {
    name: 'age is computed from checkedAt (now - checkedAt)',
    cached: { digest: A, checkedAt: NOW - 3 * DAY },
    outcome: { kind: 'unreachable', failure: 'refused' },
    expect: { action: 'serve-stale', digest: A, reason: 'refused', ageMs: 3 * DAY },
  },
  {
    name: 'a cache exactly stale.maxAge old is still within the limit',
    cached: cachedAged(MAX_AGE),
    outcome: { kind: 'unreachable', failure: 'timeout' },
    expect: { action: 'serve-stale', digest: A, reason: 'timeout', ageMs: MAX_AGE },
  },
  {
    name: 'a checkedAt in the future (clock skew) counts as age 0, not a negative age',
    cached: { digest: A, checkedAt: NOW + 5 * SEC },
    outcome: { kind: 'unreachable', failure: 'refused' },
    expect: { action: 'serve-stale', digest: A, reason: 'refused', ageMs: 0 },
  },
  {
    name: 'the limit is the configured one: 1h limit, 2h-old cache → 503',
    cached: cachedAged(2 * 3_600_000),
    outcome: { kind: 'server-error', status: 502 },
    config: { staleMaxAgeMs: 3_600_000 },
    expect: { action: 'unavailable', reason: 'server-error', staleAgeMs: 2 * 3_600_000 },
  },
  {
    name: 'stale.maxAge 0 → never stale, even for a cache confirmed this very moment (unreachable)',
    cached: cachedAged(0),
    outcome: { kind: 'unreachable', failure: 'refused' },
    config: { staleMaxAgeMs: 0 },
    expect: { action: 'unavailable', reason: 'refused', staleAgeMs: 0 },
  },
  {
    name: 'stale.maxAge 0 → never stale (5xx)',
    cached: cachedAged(SEC),
    outcome: { kind: 'server-error', status: 503 },
    config: { staleMaxAgeMs: 0 },
    expect: { action: 'unavailable', reason: 'server-error', staleAgeMs: SEC },
  },
  {
    name: 'stale.maxAge 0 → never stale (429 is passed on)',
    cached: cachedAged(SEC),
    outcome: { kind: 'rate-limited', retryAfter: '5' },
    config: { staleMaxAgeMs: 0 },
    expect: { action: 'pass', status: 429, retryAfter: '5' },
  },
  {
    name: 'stale.maxAge 0 → never stale (circuit open)',
    cached: cachedAged(SEC),
    outcome: { kind: 'down' },
    config: { staleMaxAgeMs: 0 },
    expect: { action: 'unavailable', reason: 'down', staleAgeMs: SEC },
  },

  // docs/behaviour.md#r5-authorization-is-never-answered-from-cache: authorization is never answered from cache.
  ...[401, 403].flatMap((status): Row[] => [
    {
      name: `upstream ${status} with a fresh cache → passed on, never served from cache`,
      cached: cachedAged(0),
      outcome: { kind: 'denied', status },
      expect: { action: 'pass', status },
    },
    {
      name: `upstream ${status} with nothing cached → passed on`,
      cached: undefined,
      outcome: { kind: 'denied', status },
      expect: { action: 'pass', status },
    },
    {
      name: `upstream ${status} is passed on even with onNotFound=serve`,
      cached: fresh,
      outcome: { kind: 'denied', status },
      config: { onNotFound: 'serve' },
      expect: { action: 'pass', status },
    },
  ]),
  // docs/behaviour.md#r6-tag-not-found: 404 configurable.
  {
    name: 'upstream 404 by default (passthrough) → pass 404 and forget the cached tag',
    cached: fresh,
    outcome: { kind: 'not-found' },
    expect: { action: 'pass', status: 404, forget: true },
  },
  {
    name: 'upstream 404 by default with nothing cached → pass 404',
    cached: undefined,
    outcome: { kind: 'not-found' },
    expect: { action: 'pass', status: 404, forget: true },
  },
  {
    name: 'upstream 404 with onNotFound=serve and a cache within stale.maxAge → serve stale, reason not-found',
    cached: fresh,
    outcome: { kind: 'not-found' },
    config: { onNotFound: 'serve' },
    expect: { action: 'serve-stale', digest: A, reason: 'not-found', ageMs: 60 * SEC },
  },
  {
    name: 'upstream 404 with onNotFound=serve and nothing cached → pass 404',
    cached: undefined,
    outcome: { kind: 'not-found' },
    config: { onNotFound: 'serve' },
    expect: { action: 'pass', status: 404, forget: true },
  },
  {
    name: 'upstream 404 with onNotFound=serve but stale.maxAge 0 → pass 404',
    cached: cachedAged(SEC),
    outcome: { kind: 'not-found' },
    config: { onNotFound: 'serve', staleMaxAgeMs: 0 },
    expect: { action: 'pass', status: 404, forget: true },
  },

  // docs/behaviour.md#r8-circuit-breaker: circuit open → answered from cache at once.
  {
    name: 'upstream down (circuit open) with a cache within stale.maxAge → serve stale, reason down',
    cached: fresh,
    outcome: { kind: 'down' },
    expect: { action: 'serve-stale', digest: A, reason: 'down', ageMs: 60 * SEC },
  },
  {
    name: 'upstream down (circuit open) with a cache older than stale.maxAge → 503 unavailable',
    cached: tooOld,
    outcome: { kind: 'down' },
    expect: { action: 'unavailable', reason: 'down', staleAgeMs: MAX_AGE + 1 },
  },
  {
    name: 'upstream down (circuit open) with nothing cached → 503 unavailable',
    cached: undefined,
    outcome: { kind: 'down' },
    expect: { action: 'unavailable', reason: 'down' },
  },

  // Anything else upstream says is passed on as it is.
  ...[400, 405, 410, 418].map(
    (status): Row => ({
      name: `unexpected upstream ${status} with a fresh cache → passed on`,
      cached: fresh,
      outcome: { kind: 'unexpected', status },
      expect: { action: 'pass', status },
    }),
  ),
]

t.test('decideTag: the behaviour contract, one row per rule', async (t) => {
  const names = new Set<string>()
  for (const row of rows) {
    t.notOk(names.has(row.name), `row names are unique: ${row.name}`)
    names.add(row.name)
    const config = { ...base, ...row.config }
    const got = decideTag({ cached: row.cached, fallback: row.fallback, outcome: row.outcome, standing: row.standing ?? 'new', now: NOW, config })
    t.strictSame(got, row.expect, row.name)
  }
})

t.test('decideTag: 404 with onNotFound=serve and a cache older than stale.maxAge → pass 404', async (t) => {
  const got = decideTag({ cached: tooOld, outcome: { kind: 'not-found' }, standing: 'new', now: NOW, config: { ...base, onNotFound: 'serve' } })
  t.equal(got.action, 'pass')
  t.equal((got as { status?: number }).status, 404)
})

t.test('decideTag: the policy is pure (does not mutate its input)', async (t) => {
  const cached = { ...fresh }
  const config = { ...base }
  const outcome: UpstreamOutcome = { kind: 'found', digest: B }
  decideTag({ cached, outcome, standing: 'held-before', now: NOW, config })
  t.strictSame(cached, fresh)
  t.strictSame(config, base)
  t.strictSame(outcome, { kind: 'found', digest: B })
})

t.test('shouldRevalidate', async (t) => {
  const MIN = 5 * SEC
  const cases: { name: string; cached: CachedTag | undefined; minIntervalMs: number; down: boolean; expect: 'ask' | 'fresh' | 'down' }[] = [
    { name: 'upstream marked down → down (do not ask)', cached: cachedAged(60 * SEC), minIntervalMs: 0, down: true, expect: 'down' },
    { name: 'down wins over a tag checked within minInterval', cached: cachedAged(SEC), minIntervalMs: MIN, down: true, expect: 'down' },
    { name: 'down with nothing cached → ask anyway (nothing to serve, nothing to lose)', cached: undefined, minIntervalMs: MIN, down: true, expect: 'ask' },
    { name: 'checked within minInterval → fresh (answer from cache)', cached: cachedAged(SEC), minIntervalMs: MIN, down: false, expect: 'fresh' },
    { name: 'checked just now with minInterval → fresh', cached: cachedAged(0), minIntervalMs: MIN, down: false, expect: 'fresh' },
    { name: 'checked longer ago than minInterval → ask', cached: cachedAged(6 * SEC), minIntervalMs: MIN, down: false, expect: 'ask' },
    { name: 'minInterval 0 → always ask, even when checked just now', cached: cachedAged(0), minIntervalMs: 0, down: false, expect: 'ask' },
    { name: 'nothing cached → ask', cached: undefined, minIntervalMs: MIN, down: false, expect: 'ask' },
  ]
  for (const c of cases) t.equal(shouldRevalidate(c.cached, NOW, c.minIntervalMs, c.down), c.expect, c.name)
})

t.test('outcomeOfStatus', async (t) => {
  const cases: { name: string; status: number; digest?: string; retryAfter?: string; expect: UpstreamOutcome | undefined }[] = [
    { name: '200 with Docker-Content-Digest → found', status: 200, digest: A, expect: { kind: 'found', digest: A } },
    { name: '200 without Docker-Content-Digest → no outcome (caller must GET)', status: 200, expect: undefined },
    { name: '401 → denied', status: 401, expect: { kind: 'denied', status: 401 } },
    { name: '403 → denied', status: 403, expect: { kind: 'denied', status: 403 } },
    { name: '404 → not-found', status: 404, expect: { kind: 'not-found' } },
    { name: '429 → rate-limited with Retry-After', status: 429, retryAfter: '60', expect: { kind: 'rate-limited', retryAfter: '60' } },
    { name: '429 without Retry-After → rate-limited', status: 429, expect: { kind: 'rate-limited', retryAfter: undefined } },
    { name: '500 → server-error', status: 500, expect: { kind: 'server-error', status: 500 } },
    { name: '502 → server-error', status: 502, expect: { kind: 'server-error', status: 502 } },
    { name: '503 → server-error', status: 503, expect: { kind: 'server-error', status: 503 } },
    { name: '504 → server-error', status: 504, expect: { kind: 'server-error', status: 504 } },
    { name: '400 → unexpected', status: 400, expect: { kind: 'unexpected', status: 400 } },
    { name: '405 → unexpected', status: 405, expect: { kind: 'unexpected', status: 405 } },
    { name: '410 → unexpected', status: 410, expect: { kind: 'unexpected', status: 410 } },
  ]
  for (const c of cases) t.strictSame(outcomeOfStatus(c.status, c.digest, c.retryAfter), c.expect, c.name)
})

t.test('outcomeOfStatus feeds decideTag: the contract from the HTTP status', async (t) => {
  const decide = (status: number, cached: CachedTag | undefined, config: Partial<PolicyConfig> = {}) => {
    const outcome = outcomeOfStatus(status, status === 200 ? B : undefined, status === 429 ? '10' : undefined)
    if (!outcome) throw new Error(`no outcome for ${status}`)
    return decideTag({ cached, outcome, standing: 'new', now: NOW, config: { ...base, ...config } }).action
  }
  t.equal(decide(200, fresh), 'fetch', '200 naming a new digest → fetch')
  t.equal(decide(401, fresh), 'pass', '401 → pass, even with a fresh cache')
  t.equal(decide(403, fresh), 'pass', '403 → pass, even with a fresh cache')
  t.equal(decide(404, fresh), 'pass', '404 → pass by default')
  t.equal(decide(404, fresh, { onNotFound: 'serve' }), 'serve-stale', '404 with onNotFound=serve → serve-stale')
  t.equal(decide(429, fresh), 'serve-stale', '429 with a fresh cache → serve-stale')
  t.equal(decide(429, undefined), 'pass', '429 without a cache → pass')
  t.equal(decide(503, fresh), 'serve-stale', '503 with a fresh cache → serve-stale')
  t.equal(decide(503, undefined), 'unavailable', '503 without a cache → unavailable')
  t.equal(decide(400, fresh), 'pass', '400 → pass')
})
