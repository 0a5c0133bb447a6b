// When a tag listed in `prefetch` with `switch: when-cached` moves upstream, whether clients keep
// getting the previous digest for now or are switched to the new one: a pure function of what is
// known about the move, so every case is one row of test/unit/switch-policy.test.ts.

/** What the prefetcher knows about one move of a tag to a new digest. */
export interface PendingMove {
  /** When regcache first saw upstream name the new digest for the tag. */
  since: number
  /** Every blob of the new image (for the listed platforms) is stored. */
  stored: boolean
  /** Clients were switched to the new digest already (one of the reasons below happened). */
  switched: boolean
}

export interface SwitchInput {
  /** The tag's entry's policy; undefined when the tag is not listed in `prefetch`. */
  policy: 'immediate' | 'when-cached' | undefined
  /** The prefetcher's record of this move (to the digest upstream names now), if it has one. */
  move: PendingMove | undefined
  /** The digest this client kind is served now can still be served (stored and linked). */
  previousServable: boolean
  maxLagMs: number
  now: number
}

export type SwitchReason = 'not-listed' | 'immediate' | 'switched' | 'stored' | 'max-lag' | 'previous-gone'

export type SwitchDecision = { action: 'hold' } | { action: 'switch'; reason: SwitchReason }

export function decideSwitch(i: SwitchInput): SwitchDecision {
  if (i.policy === undefined) return { action: 'switch', reason: 'not-listed' }
  if (i.policy === 'immediate') return { action: 'switch', reason: 'immediate' }
  // Once switched, every client kind follows: the tag does not go back to the old digest for some.
  if (i.move?.switched) return { action: 'switch', reason: 'switched' }
  // Holding back is only ever a favour: a client never waits for, nor gets refused, what cannot be served.
  if (!i.previousServable) return { action: 'switch', reason: 'previous-gone' }
  // A move the prefetcher has not started on yet is held from now (the caller records it as such).
  if (!i.move) return { action: 'hold' }
  if (i.move.stored) return { action: 'switch', reason: 'stored' }
  if (i.now - i.move.since >= i.maxLagMs) return { action: 'switch', reason: 'max-lag' }
  return { action: 'hold' }
}
