// What a registry request is about once routing is done: which upstream, which repository (as
// upstream names it), and how the answer was obtained.

import type { Upstream } from './upstreams.js'

export interface Target {
  upstream: Upstream
  /** Repository name as upstream knows it (`library/` added for Docker Hub). */
  repository: string
}

/**
 * How a response was served, for the X-Regcache-Cache header, metrics and the request log:
 * hit (from cache, nothing asked), miss (fetched now), revalidated (upstream confirmed the cached
 * digest), changed (the tag moved; fetched now), stale (upstream unavailable; served from cache),
 * coalesced (joined a request already in flight).
 */
export type CacheOutcome = 'hit' | 'miss' | 'revalidated' | 'changed' | 'stale' | 'coalesced'
