// `Authorization: Basic` (RFC 7617), parsed strictly: anything that is not exactly one
// well-formed Basic credential is `invalid`, so a malformed header is answered with 401 and never
// mistaken for an anonymous request. Never throws.

import { isUtf8 } from 'node:buffer'

export interface BasicCredentials {
  readonly username: string
  readonly password: string
}

export type AuthorizationHeader =
  /** No Authorization header: an anonymous request. */
  | { readonly kind: 'none' }
  | { readonly kind: 'basic'; readonly credentials: BasicCredentials }
  /** Another scheme (e.g. Bearer): regcache does not issue tokens, so the caller answers 401. */
  | { readonly kind: 'other'; readonly scheme: string }
  | { readonly kind: 'invalid'; readonly reason: InvalidReason }

export type InvalidReason = 'repeated' | 'oversized' | 'malformed' | 'bad-base64' | 'not-utf8' | 'no-colon' | 'empty-username' | 'control-character'

/** Longest header value looked at; real credentials are far shorter, and bigger ones are not decoded. */
export const MAX_HEADER_LENGTH = 4096

const SCHEME = /^([A-Za-z0-9!#$%&'*+.^_`|~-]+)(?: +(.*))?$/s
// token68 restricted to standard base64 (RFC 4648 §4) with its padding only at the end.
const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/
// RFC 7617 §2: user-id and password exclude control characters (CTL).
// eslint-disable-next-line no-control-regex
const CONTROL = /[\u0000-\u001f\u007f]/

export function parseAuthorization(header: string | readonly string[] | undefined): AuthorizationHeader {
  if (header === undefined) return { kind: 'none' }
  if (typeof header !== 'string') {
    if (header.length === 0) return { kind: 'none' }
    if (header.length > 1) return { kind: 'invalid', reason: 'repeated' }
    header = header[0]
  }
  if (header.length > MAX_HEADER_LENGTH) return { kind: 'invalid', reason: 'oversized' }
  const value = header.trim()
  const m = SCHEME.exec(value)
  if (m === null) return { kind: 'invalid', reason: 'malformed' }
  const scheme = m[1]
  if (scheme.toLowerCase() !== 'basic') return { kind: 'other', scheme: scheme.toLowerCase() }
  const token = (m[2] ?? '').trim()
  if (token === '' || !BASE64.test(token)) return { kind: 'invalid', reason: 'bad-base64' }
  // isUtf8 + toString rather than a fatal TextDecoder: creating a decoder per request showed in
  // profiles of tag revalidation with client credentials.
  const bytes = Buffer.from(token, 'base64')
  if (!isUtf8(bytes)) return { kind: 'invalid', reason: 'not-utf8' }
  const decoded = bytes.toString('utf8')
  const colon = decoded.indexOf(':')
  if (colon === -1) return { kind: 'invalid', reason: 'no-colon' }
  const username = decoded.slice(0, colon)
  const password = decoded.slice(colon + 1)
  // containers/image (podman, skopeo) answers a Basic challenge with `Basic Og==` (":") when it
  // has no credentials for the host: that is an anonymous request, not a failed login.
  if (username === '' && password === '') return { kind: 'none' }
  if (username === '') return { kind: 'invalid', reason: 'empty-username' }
  if (CONTROL.test(username) || CONTROL.test(password)) return { kind: 'invalid', reason: 'control-character' }
  return { kind: 'basic', credentials: { username, password } }
}

/** The header value a client would send for these credentials. */
export function basicAuthorization(credentials: BasicCredentials): string {
  return `Basic ${Buffer.from(`${credentials.username}:${credentials.password}`, 'utf8').toString('base64')}`
}
