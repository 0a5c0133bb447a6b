// The shape of the `auth:` section and of the per-upstream credential settings, as the rest of
// the code sees them once the YAML is validated (durations already in milliseconds, defaults
// filled in, everything frozen). The YAML side is described by RawAuthConfig/RawUpstreamAuth.

/**
 * One access rule: who (`users`) may pull what (`repositories`) through which upstreams.
 *
 * - `users`: names from the htpasswd file, `"anonymous"` (requests without credentials), or `"*"`
 *   (any authenticated user; it does not include anonymous: list both to mean everyone).
 * - `upstreams`: upstream names as configured (`docker.io`, `ghcr.io`), or `"*"`.
 * - `repositories`: patterns over the repository name as upstream knows it (Docker Hub's
 *   official images are `library/<name>`). See auth/rules.ts for what `*` matches.
 */
export interface Rule {
  readonly users: readonly string[]
  readonly upstreams: readonly string[]
  readonly repositories: readonly string[]
}

export interface AuthConfig {
  /** Path of an htpasswd file with bcrypt entries; absent: no user can authenticate. */
  readonly htpasswd?: string
  /** May requests without credentials go on to the rules? */
  readonly anonymous: boolean
  /** Evaluated in order, first match wins, no match: denied. Absent: see effectiveRules. */
  readonly rules?: readonly Rule[]
}

/** `mirror`: the upstream's configured username/password serve every allowed client. `client`: each client's own credentials go upstream. */
export type CredentialMode = 'mirror' | 'client'

export interface AuthorizationWindows {
  /** How long upstream's "yes" for (client credentials, repository) is trusted before asking again. */
  readonly recheckMs: number
  /** During an outage, how old that "yes" may be and still let cached content out. */
  readonly offlineMs: number
}

export interface UpstreamAuthConfig {
  readonly credentials: CredentialMode
  readonly authorization: AuthorizationWindows
}

export const DEFAULT_ANONYMOUS = true
export const DEFAULT_CREDENTIAL_MODE: CredentialMode = 'mirror'
export const DEFAULT_AUTHORIZATION: AuthorizationWindows = Object.freeze({ recheckMs: 5 * 60_000, offlineMs: 24 * 3_600_000 })

/** The YAML as written (durations as "5m"/"24h" strings or seconds), before defaults. */
export interface RawAuthConfig {
  htpasswd?: string
  anonymous?: boolean
  rules?: Rule[]
}

export interface RawUpstreamAuth {
  credentials?: CredentialMode
  authorization?: { recheck?: string | number; offline?: string | number }
}

/**
 * The rules in force. Without a `rules:` list the section only authenticates: every
 * authenticated user may pull everything, and anonymous requests too when `anonymous` is on.
 */
export function effectiveRules(auth: AuthConfig): readonly Rule[] {
  if (auth.rules !== undefined) return auth.rules
  return Object.freeze([Object.freeze({ users: Object.freeze(['*', 'anonymous']), upstreams: Object.freeze(['*']), repositories: Object.freeze(['*']) })])
}
