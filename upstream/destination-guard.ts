// Where one upstream's requests and credentials may go (docs/protocol.md#where-requests-and-credentials-go).
// An upstream can name other hosts in two ways: a token realm in its 401 challenge, and a
// redirect (blob GETs to a CDN). Neither is trusted like the configured URL: credentials go only
// to hosts the configuration names, redirects only to http(s) and never into loopback, link-local
// or private address space unless the upstream itself lives there. Addresses are checked when the
// connection is made (the Agent's DNS lookup), so a name that resolves somewhere else than its
// text suggests cannot slip past.

import { BlockList, isIP, type LookupFunction } from 'node:net'
import { lookup as dnsLookup, type LookupAddress } from 'node:dns'
import type { UpstreamConfig } from '../config/config.js'
import { DestinationRefusedError } from './errors.js'

/** Address space an address belongs to; everything not listed is `public`. */
export type AddressClass = 'loopback' | 'link-local' | 'private' | 'unspecified' | 'public'

/** Built once per guard (no module-level state): BlockList instances are mutable. */
function addressLists(): Record<Exclude<AddressClass, 'public'>, BlockList> {
  const list = (v4: [string, number][], v6: [string, number][]) => {
    const b = new BlockList()
    for (const [a, p] of v4) b.addSubnet(a, p, 'ipv4')
    for (const [a, p] of v6) b.addSubnet(a, p, 'ipv6')
    return b
  }
  return {
    loopback: list([['127.0.0.0', 8]], [['::1', 128]]),
    'link-local': list([['169.254.0.0', 16]], [['fe80::', 10]]),
    private: list(
      // RFC 1918, carrier-grade NAT (RFC 6598), benchmarking (RFC 2544), multicast and reserved.
      [['10.0.0.0', 8], ['172.16.0.0', 12], ['192.168.0.0', 16], ['100.64.0.0', 10], ['198.18.0.0', 15], ['224.0.0.0', 4], ['240.0.0.0', 4]],
      // Unique local (RFC 4193), site-local (deprecated), multicast.
      [['fc00::', 7], ['fec0::', 10], ['ff00::', 8]],
    ),
    unspecified: list([['0.0.0.0', 8]], [['::', 128]]),
  }
}

/** The address class of an IP address (IPv4-mapped IPv6 addresses count as their IPv4 address). */
export function classifyAddress(address: string, lists = addressLists()): AddressClass {
  let ip = address
  let family = isIP(ip)
  const mapped = family === 6 ? /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(ip) : null
  if (mapped) {
    ip = mapped[1]
    family = 4
  }
  if (family === 0) return 'public'
  const type = family === 4 ? 'ipv4' : 'ipv6'
  for (const c of ['loopback', 'link-local', 'private', 'unspecified'] as const) if (lists[c].check(ip, type)) return c
  return 'public'
}

/** The class a URL host stands for by its text alone, when it says: an IP literal or `localhost`. */
export function classifyHostText(hostname: string, lists = addressLists()): AddressClass | undefined {
  const h = hostname.replace(/^\[|\]$/g, '').toLowerCase()
  if (isIP(h) !== 0) return classifyAddress(h, lists)
  if (h === 'localhost' || h.endsWith('.localhost')) return 'loopback'
  return undefined
}

/**
 * May a connection made for this upstream go to an address of class `target`? Public addresses
 * always; others only when the upstream itself is in the same class, or the configuration allows
 * private destinations. Unspecified addresses (0.0.0.0, ::) never: they mean "this host".
 */
export function addressAllowed(target: AddressClass, upstream: AddressClass | undefined, allowPrivate: boolean): boolean {
  if (target === 'public') return true
  if (target === 'unspecified') return false
  return allowPrivate || upstream === target
}

/** May a redirect from an upstream reached with `upstreamProtocol` go to a URL with `protocol`? */
export function schemeAllowed(protocol: string, upstreamProtocol: string): boolean {
  if (protocol === 'https:') return true
  return protocol === 'http:' && upstreamProtocol === 'http:'
}

export type CredentialDecision = { send: true } | { send: false; reason: string }

/**
 * May the upstream's credentials go to this token realm? Only over https (or http when the
 * upstream itself is plain http), and only to the upstream's own host name or a host listed in
 * its `tokenRealms`.
 */
export function credentialsAllowed(realm: URL, upstream: URL, tokenRealms: readonly string[]): CredentialDecision {
  if (!schemeAllowed(realm.protocol, upstream.protocol)) {
    return { send: false, reason: `the realm uses ${realm.protocol.replace(':', '')} while the upstream uses https` }
  }
  const host = normaliseHost(realm.hostname)
  if (host === normaliseHost(upstream.hostname) || tokenRealms.some((h) => normaliseHost(h) === host)) return { send: true }
  return { send: false, reason: `the realm host ${host} is neither the upstream's host nor listed in its tokenRealms` }
}

function normaliseHost(h: string): string {
  return h.replace(/^\[|\]$/g, '').replace(/\.$/, '').toLowerCase()
}

/** The guard of one upstream: checks URLs before requests, and addresses at connect time. */
export class DestinationGuard {
  private readonly lists = addressLists()
  private readonly upstreamUrl: URL
  /** Hosts the configuration names (the upstream's own, its token realms): not address-checked. */
  private readonly configured: ReadonlySet<string>
  /** The upstream's own address class: from its URL text, else from its first resolved address. */
  private upstreamClass: AddressClass | undefined

  constructor(private readonly config: Pick<UpstreamConfig, 'name' | 'url' | 'tokenRealms' | 'allowPrivateRedirects'>) {
    this.upstreamUrl = new URL(config.url)
    this.configured = new Set([normaliseHost(this.upstreamUrl.hostname), ...config.tokenRealms.map(normaliseHost)])
    this.upstreamClass = classifyHostText(this.upstreamUrl.hostname, this.lists)
  }

  credentialsFor(realm: URL): CredentialDecision {
    return credentialsAllowed(realm, this.upstreamUrl, this.config.tokenRealms)
  }

  /**
   * Throws DestinationRefusedError unless a request may go to `url`: http(s) only (for a
   * redirect, https only from an https upstream), and a host written as an address must be an allowed one. Names are
   * checked again when they are resolved (lookup below).
   */
  checkUrl(url: URL, purpose: 'redirect' | 'token realm'): void {
    // A realm asked without credentials leaks nothing over http; credentialsFor decides those.
    const schemeOk = purpose === 'token realm' ? url.protocol === 'https:' || url.protocol === 'http:' : schemeAllowed(url.protocol, this.upstreamUrl.protocol)
    if (!schemeOk) {
      throw new DestinationRefusedError(this.config.name, purpose, url, `scheme ${url.protocol.replace(':', '')} not allowed for a ${this.upstreamUrl.protocol.replace(':', '')} upstream`)
    }
    if (this.configured.has(normaliseHost(url.hostname))) return
    const cls = classifyHostText(url.hostname, this.lists)
    if (cls !== undefined && !addressAllowed(cls, this.upstreamClass, this.config.allowPrivateRedirects)) {
      throw new DestinationRefusedError(this.config.name, purpose, url, `${cls} address`)
    }
  }

  /** A `lookup` for the Agent's connect options: refuses names that resolve to a refused address. */
  readonly lookup: LookupFunction = (hostname, options, callback) => {
    dnsLookup(hostname, { ...options, all: true }, (err, addresses: LookupAddress[]) => {
      if (err) return callback(err, '', 0)
      const host = normaliseHost(hostname)
      if (host === normaliseHost(this.upstreamUrl.hostname) && this.upstreamClass === undefined && addresses.length > 0) {
        this.upstreamClass = classifyAddress(addresses[0].address, this.lists)
      }
      if (!this.configured.has(host)) {
        const refused = addresses.find((a) => !addressAllowed(classifyAddress(a.address, this.lists), this.upstreamClass, this.config.allowPrivateRedirects))
        if (refused !== undefined) {
          const cls = classifyAddress(refused.address, this.lists)
          return callback(new DestinationRefusedError(this.config.name, 'connection', new URL(`http://${hostname}`), `${hostname} resolves to a ${cls} address`), '', 0)
        }
      }
      if (options.all) return (callback as unknown as (e: null, a: LookupAddress[]) => void)(null, addresses)
      if (addresses.length === 0) return callback(Object.assign(new Error(`no address for ${hostname}`), { code: 'ENOTFOUND' }), '', 0)
      callback(null, addresses[0].address, addresses[0].family)
    })
  }
}
