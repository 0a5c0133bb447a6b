// Failed authentication attempts per client address. After `maxFailures` failures within
// `windowMs`, the address is refused for `blockMs` (429 with Retry-After), whatever it sends:
// a password guesser learns nothing more until then. Memory is bounded: at most `maxAddresses`
// addresses are remembered, the least recently seen forgotten first.
//
// IPv6 clients usually hold a whole /64, so addresses are counted per /64; IPv4 per address
// (IPv4-mapped IPv6 addresses count as IPv4). A success does not reset the count, on purpose: one
// valid account must not let a client go on guessing the passwords of others.

import { isIPv4, isIPv6 } from 'node:net'
import { LRUCache } from 'lru-cache'

export interface ThrottleOptions {
  /** Failures within the window that lead to a block. */
  readonly maxFailures?: number
  readonly windowMs?: number
  readonly blockMs?: number
  readonly maxAddresses?: number
  readonly now?: () => number
}

export const DEFAULT_THROTTLE = Object.freeze({ maxFailures: 10, windowMs: 60_000, blockMs: 5 * 60_000, maxAddresses: 10_000 })

export type ThrottleState = { readonly allowed: true } | { readonly allowed: false; readonly retryAfterSeconds: number }

interface Entry {
  windowStart: number
  failures: number
  blockedUntil: number
}

export class FailureThrottle {
  private readonly entries: LRUCache<string, Entry>
  private readonly maxFailures: number
  private readonly windowMs: number
  private readonly blockMs: number
  private readonly now: () => number

  constructor(opts: ThrottleOptions = {}) {
    this.maxFailures = opts.maxFailures ?? DEFAULT_THROTTLE.maxFailures
    this.windowMs = opts.windowMs ?? DEFAULT_THROTTLE.windowMs
    this.blockMs = opts.blockMs ?? DEFAULT_THROTTLE.blockMs
    this.now = opts.now ?? Date.now
    if (!(this.maxFailures >= 1)) throw new RangeError('maxFailures must be at least 1')
    this.entries = new LRUCache({ max: opts.maxAddresses ?? DEFAULT_THROTTLE.maxAddresses })
  }

  /** Before looking at credentials: may this address try at all? */
  check(address: string): ThrottleState {
    const e = this.entries.get(addressKey(address))
    const now = this.now()
    if (e === undefined || e.blockedUntil <= now) return { allowed: true }
    return { allowed: false, retryAfterSeconds: Math.max(1, Math.ceil((e.blockedUntil - now) / 1000)) }
  }

  /** Records a failed attempt; returns the state after it (blocked once the limit is reached). */
  fail(address: string): ThrottleState {
    const key = addressKey(address)
    const now = this.now()
    let e = this.entries.get(key)
    if (e === undefined || now - e.windowStart >= this.windowMs || e.windowStart > now) {
      e = { windowStart: now, failures: 0, blockedUntil: e !== undefined && e.blockedUntil > now ? e.blockedUntil : 0 }
    }
    e.failures++
    if (e.failures >= this.maxFailures) {
      e.blockedUntil = Math.max(e.blockedUntil, now + this.blockMs)
      e.failures = 0
      e.windowStart = now
    }
    this.entries.set(key, e)
    return this.check(address)
  }

  /** Addresses currently remembered (for tests and the status page). */
  get size(): number {
    return this.entries.size
  }
}

/** The unit an address is counted in. */
export function addressKey(address: string): string {
  const a = address.trim()
  if (isIPv4(a)) return a
  const zoneless = a.split('%')[0]
  if (!isIPv6(zoneless)) return a
  const groups = expandIPv6(zoneless)
  // ::ffff:a.b.c.d is an IPv4 client seen through a dual-stack socket.
  if (groups.slice(0, 5).every((g) => g === 0) && groups[5] === 0xffff) {
    return `${groups[6] >> 8}.${groups[6] & 0xff}.${groups[7] >> 8}.${groups[7] & 0xff}`
  }
  return `${groups.slice(0, 4).map((g) => g.toString(16)).join(':')}::/64`
}

function expandIPv6(a: string): number[] {
  // The URL parser writes IPv6 hosts in their canonical form (RFC 5952), a dotted IPv4 tail included.
  const canonical = new URL(`http://[${a}]/`).hostname.slice(1, -1)
  const [head, rest] = canonical.includes('::') ? canonical.split('::') : [canonical, undefined]
  const parse = (s: string) => (s === '' ? [] : s.split(':').map((g) => parseInt(g, 16)))
  const h = parse(head)
  const r = rest === undefined ? [] : parse(rest)
  return [...h, ...new Array<number>(8 - h.length - r.length).fill(0), ...r]
}
