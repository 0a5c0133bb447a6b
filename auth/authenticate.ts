// Who is asking: the Authorization header of one request turned into an identity, or into the
// refusal to send. Used for upstreams with `credentials: mirror`, where the htpasswd file is the
// judge; for `credentials: client` the credentials themselves are the identity and upstream
// judges them (see client-credentials.ts), so only parsing and throttling apply there.

import { parseAuthorization, type BasicCredentials, type InvalidReason } from './basic.js'
import { throttled, unauthorized, type AuthRefusal } from './challenge.js'
import { ANONYMOUS, type Identity } from './rules.js'
import type { FailureThrottle } from './throttle.js'

/** What checks a password: an Htpasswd, or a stand-in in tests. */
export interface PasswordCheck {
  verify(user: string, password: string): Promise<boolean>
}

export type FailureReason = 'throttled' | 'anonymous-off' | 'unsupported-scheme' | 'bad-credentials' | `invalid-${InvalidReason}`

export type Authentication =
  | { readonly ok: true; readonly identity: Identity; /** Present when the request carried credentials. */ readonly credentials?: BasicCredentials }
  | {
      readonly ok: false
      readonly refusal: AuthRefusal
      /** For the failure counter's label and the log line. */
      readonly reason: FailureReason
      /** The user name the request claimed, for the log line (never the password). */
      readonly user?: string
    }

export interface AuthenticatorOptions {
  /** Absent: no user can log in (every request is anonymous or refused). */
  readonly passwords?: PasswordCheck
  readonly anonymous: boolean
  readonly throttle: FailureThrottle
}

export class Authenticator {
  constructor(private readonly opts: AuthenticatorOptions) {}

  /** Checks the header against the htpasswd users (mode `mirror`). */
  async authenticate(authorization: string | readonly string[] | undefined, address: string): Promise<Authentication> {
    return this.run(authorization, address, async (c) => this.opts.passwords !== undefined && (await this.opts.passwords.verify(c.username, c.password)))
  }

  /**
   * Only parses and throttles (mode `client`): well-formed credentials are the identity, and
   * upstream decides whether they are any good. Report upstream's refusal with `failed()`.
   */
  async identify(authorization: string | readonly string[] | undefined, address: string): Promise<Authentication> {
    return this.run(authorization, address, async () => true)
  }

  /** Counts a failure found later (e.g. upstream's token service refused the credentials). */
  failed(address: string): void {
    this.opts.throttle.fail(address)
  }

  private async run(authorization: string | readonly string[] | undefined, address: string, accept: (c: BasicCredentials) => Promise<boolean>): Promise<Authentication> {
    const gate = this.opts.throttle.check(address)
    if (!gate.allowed) return { ok: false, refusal: throttled(gate.retryAfterSeconds), reason: 'throttled' }
    const parsed = parseAuthorization(authorization)
    switch (parsed.kind) {
      case 'none':
        if (this.opts.anonymous) return { ok: true, identity: ANONYMOUS }
        // Not a failed attempt: clients probe without credentials before they send them.
        return { ok: false, refusal: unauthorized(), reason: 'anonymous-off' }
      case 'other':
        return { ok: false, refusal: unauthorized('only Basic credentials are accepted'), reason: 'unsupported-scheme' }
      case 'invalid':
        return this.fail(address, `invalid-${parsed.reason}`)
      case 'basic': {
        const c = parsed.credentials
        if (await accept(c)) return { ok: true, identity: { kind: 'user', name: c.username }, credentials: c }
        return this.fail(address, 'bad-credentials', c.username)
      }
    }
  }

  private fail(address: string, reason: FailureReason, user?: string): Authentication {
    const after = this.opts.throttle.fail(address)
    const refusal = after.allowed ? unauthorized('invalid credentials') : throttled(after.retryAfterSeconds)
    return user === undefined ? { ok: false, refusal, reason } : { ok: false, refusal, reason, user }
  }
}
