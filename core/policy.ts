// The revalidation policy for a manifest request by tag: a pure function of the cached entry,
// what upstream answered, the time and the upstream's configuration. Each branch is one row of
// the behaviour contract in docs/behaviour.md#revalidation-contract; test/unit/policy.test.ts walks every row.

import type { OnNotFound, OnRollback } from '../config/config.js'
import type { TransportFailure } from '../upstream/errors.js'

export type UpstreamOutcome =
  /** Upstream named a digest for the tag (HEAD 200 with Docker-Content-Digest). */
  | { kind: 'found'; digest: string }
  | { kind: 'not-found' }
  | { kind: 'denied'; status: number }
  | { kind: 'rate-limited'; retryAfter?: string }
  | { kind: 'server-error'; status: number }
  | { kind: 'unreachable'; failure: TransportFailure }
  /** Some other answer (400, 405, …): passed on as it is. */
  | { kind: 'unexpected'; status: number }
  /** Not asked: the upstream is marked down. */
  | { kind: 'down' }

export interface CachedTag {
  digest: string
  /** When upstream last confirmed this digest. */
  checkedAt: number
}

export interface PolicyConfig {
  staleMaxAgeMs: number
  onNotFound: OnNotFound
  onRollback: OnRollback
}

export type StaleReason = TransportFailure | 'server-error' | 'rate-limited' | 'down' | 'not-found'

export type TagAction =
  /** Serve the cached manifest; nothing changed (or upstream's move is refused). */
  | { action: 'serve-cached'; reason: 'unchanged' | 'rollback-refused'; digest: string; refusedDigest?: string }
  /**
   * Fetch this digest by digest (unless held), verify, store, move the tag, serve. `same`: a
   * client kind new to the tag gets the digest others are served now (no event).
   */
  | { action: 'fetch'; digest: string; change: 'first-seen' | 'changed' | 'rollback' | 'same'; previousDigest?: string }
  /** onRollback: refuse, and this client kind has no digest of its own to keep serving: 503. */
  | { action: 'refuse'; refusedDigest: string }
  /** Upstream could not answer; serve the cached manifest and say it is stale. */
  | { action: 'serve-stale'; digest: string; reason: StaleReason; ageMs: number }
  /** Pass upstream's status on (401/403/404/429/other 4xx). `forget` drops the cached tag. */
  | { action: 'pass'; status: number; retryAfter?: string; forget?: boolean }
  /** 503 UNAVAILABLE: upstream failed and there is nothing fresh enough to serve. */
  | { action: 'unavailable'; reason: StaleReason; staleAgeMs?: number }

/**
 * For a `found` outcome, where the digest stands in the tag's history, whoever asked: the tag's
 * digest for some client now, a digest it pointed at before (a move back to it is a rollback), or
 * never seen.
 */
export type DigestStanding = 'current' | 'held-before' | 'new'

export interface PolicyInput {
  /** This client kind's (Accept set's) cached entry. */
  cached: CachedTag | undefined
  /** Another client kind's current entry whose media type this client accepts, if any. */
  fallback?: CachedTag
  outcome: UpstreamOutcome
  standing: DigestStanding
  now: number
  config: PolicyConfig
}

export function decideTag({ cached, fallback, outcome, standing, now, config }: PolicyInput): TagAction {
  switch (outcome.kind) {
    case 'found': {
      // docs/behaviour.md#r2-unchanged-digest: unchanged digest → cached manifest, no GET.
      if (cached && cached.digest === outcome.digest) return { action: 'serve-cached', reason: 'unchanged', digest: cached.digest }
      // docs/behaviour.md#r7-rollback: digest equality says "different", not "newer": a move back
      // to a digest the tag held before (and no client is served now) is a rollback (a registry
      // restored from backup), whichever client's request revealed it; it may be refused.
      if (standing === 'held-before') {
        const base = cached ?? fallback
        if (config.onRollback === 'refuse') {
          if (!base) return { action: 'refuse', refusedDigest: outcome.digest }
          return { action: 'serve-cached', reason: 'rollback-refused', digest: base.digest, refusedDigest: outcome.digest }
        }
        return { action: 'fetch', digest: outcome.digest, change: 'rollback', previousDigest: base?.digest }
      }
      if (!cached) return { action: 'fetch', digest: outcome.digest, change: standing === 'current' ? 'same' : 'first-seen' }
      // docs/behaviour.md#r3-changed-digest: changed → fetch by digest.
      return { action: 'fetch', digest: outcome.digest, change: 'changed', previousDigest: cached.digest }
    }
    // docs/behaviour.md#r5-authorization-is-never-answered-from-cache: authorization is never answered from cache.
    case 'denied':
      return { action: 'pass', status: outcome.status }
    case 'not-found':
      if (config.onNotFound === 'serve') return staleOr(cached, 'not-found', now, config, { action: 'pass', status: 404, forget: true })
      return { action: 'pass', status: 404, forget: true }
    case 'unexpected':
      return { action: 'pass', status: outcome.status }
    // docs/behaviour.md#r4-upstream-cannot-answer-stale-or-503: upstream unavailable → stale within the limit, else 503 (or the 429 itself).
    case 'rate-limited':
      return staleOr(cached, 'rate-limited', now, config, { action: 'pass', status: 429, retryAfter: outcome.retryAfter })
    case 'server-error':
      return staleOr(cached, 'server-error', now, config)
    case 'unreachable':
      return staleOr(cached, outcome.failure, now, config)
    case 'down':
      return staleOr(cached, 'down', now, config)
  }
}

function staleOr(cached: CachedTag | undefined, reason: StaleReason, now: number, config: PolicyConfig, otherwise?: TagAction): TagAction {
  if (cached) {
    const ageMs = Math.max(0, now - cached.checkedAt)
    if (config.staleMaxAgeMs > 0 && ageMs <= config.staleMaxAgeMs) return { action: 'serve-stale', digest: cached.digest, reason, ageMs }
    return otherwise ?? { action: 'unavailable', reason, staleAgeMs: ageMs }
  }
  return otherwise ?? { action: 'unavailable', reason }
}

/**
 * Whether to ask upstream at all: not when it is marked down and something is cached to serve
 * (with nothing cached an attempt costs nothing that a 503 would not), nor when the tag was
 * checked within `minInterval`.
 */
export function shouldRevalidate(cached: CachedTag | undefined, now: number, minIntervalMs: number, upstreamDown: boolean): 'ask' | 'fresh' | 'down' {
  if (upstreamDown) return cached ? 'down' : 'ask'
  if (cached && minIntervalMs > 0 && now - cached.checkedAt < minIntervalMs) return 'fresh'
  return 'ask'
}

/** Maps upstream's HTTP status for a tag HEAD to an outcome (the digest comes from the headers). */
export function outcomeOfStatus(status: number, digest: string | undefined, retryAfter?: string): UpstreamOutcome | undefined {
  if (status === 200) return digest ? { kind: 'found', digest } : undefined
  if (status === 401 || status === 403) return { kind: 'denied', status }
  if (status === 404) return { kind: 'not-found' }
  if (status === 429) return { kind: 'rate-limited', retryAfter }
  if (status >= 500) return { kind: 'server-error', status }
  return { kind: 'unexpected', status }
}
