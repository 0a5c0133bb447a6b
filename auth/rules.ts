// Who may pull what through upstreams with `credentials: mirror`: a pure decision over the rules
// of the `auth:` section. First matching rule wins; no match is a refusal.
//
// Repository patterns: `*` matches any run of characters, `/` included, possibly empty; every
// other character stands for itself. So `team-a/*` matches `team-a/app` and `team-a/x/y` (a team
// owns its whole subtree) but not `team-a` nor `team-ab/app`; `*` matches every repository;
// `*/app` matches `team-a/app` and `a/b/app`; `library/*` covers Docker Hub's official images
// (`nginx` there is `library/nginx`). Patterns use only the characters of repository names plus
// `*`, so nothing looks like a glob class that is not one (see patternProblem).
//
// Users: a name matches that htpasswd user; `anonymous` matches requests without credentials;
// `*` matches any authenticated user but not anonymous requests, so that no rule written for
// "everyone who logged in" opens content to the network at large.

import type { Rule } from './config.js'

export type Identity = { readonly kind: 'anonymous' } | { readonly kind: 'user'; readonly name: string }

export const ANONYMOUS: Identity = Object.freeze({ kind: 'anonymous' })

export interface AccessRequest {
  readonly identity: Identity
  /** The upstream's configured name (`docker.io`). */
  readonly upstream: string
  /** The repository name as upstream knows it (`library/nginx`). */
  readonly repository: string
}

export type AccessDecision =
  | { readonly allowed: true; /** Index of the rule that allowed it. */ readonly rule: number }
  | { readonly allowed: false; /** Index of the rule that matched, if any (none today: rules only allow). */ readonly rule?: number }

export function matchesUser(users: readonly string[], identity: Identity): boolean {
  if (identity.kind === 'anonymous') return users.includes('anonymous')
  // "anonymous" in a rule never names a user (htpasswd refuses that name too).
  return users.includes('*') || (identity.name !== 'anonymous' && users.includes(identity.name))
}

export function matchesUpstream(upstreams: readonly string[], upstream: string): boolean {
  return upstreams.includes('*') || upstreams.includes(upstream)
}

/** Whether `repository` matches `pattern` (see the top of this file). Linear in the input, no regex built from config. */
export function matchesRepository(pattern: string, repository: string): boolean {
  const parts = pattern.split('*')
  if (parts.length === 1) return pattern === repository
  const first = parts[0]
  const last = parts[parts.length - 1]
  if (repository.length < first.length + last.length) return false
  if (!repository.startsWith(first) || !repository.endsWith(last)) return false
  // Middle literals, each found leftmost after the previous one: greedy-free and correct for `*`
  // that may span anything.
  let pos = first.length
  const end = repository.length - last.length
  for (let i = 1; i < parts.length - 1; i++) {
    const part = parts[i]
    if (part === '') continue
    const at = repository.indexOf(part, pos)
    if (at === -1 || at + part.length > end) return false
    pos = at + part.length
  }
  return true
}

export function decideAccess(rules: readonly Rule[], req: AccessRequest): AccessDecision {
  for (let i = 0; i < rules.length; i++) {
    const r = rules[i]
    if (!matchesUser(r.users, req.identity)) continue
    if (!matchesUpstream(r.upstreams, req.upstream)) continue
    if (r.repositories.some((p) => matchesRepository(p, req.repository))) return { allowed: true, rule: i }
  }
  return { allowed: false }
}

/**
 * What to answer when the decision is no: an anonymous request is asked for credentials (401
 * with the challenge, so a client that has some sends them), an authenticated one is refused (403).
 */
export function refusalFor(identity: Identity): 'unauthorized' | 'denied' {
  return identity.kind === 'anonymous' ? 'unauthorized' : 'denied'
}

const PATTERN = /^[a-z0-9._/*-]+$/

/** Why a repository pattern cannot be used, or undefined when it is fine. For the config loader. */
export function patternProblem(pattern: string): string | undefined {
  if (pattern === '') return 'an empty pattern matches nothing'
  if (!PATTERN.test(pattern)) return 'use only lowercase letters, digits, ".", "_", "-", "/" and "*" (repository names are lowercase; "*" is the only wildcard)'
  if (pattern.startsWith('/') || pattern.endsWith('/')) return 'a pattern neither starts nor ends with "/"'
  return undefined
}

/** Problems with the rules as a whole, each naming where; for the config loader. */
export function rulesProblems(rules: readonly Rule[], upstreamNames: readonly string[], where = 'auth.rules'): string[] {
  const out: string[] = []
  rules.forEach((r, i) => {
    const at = `${where}[${i}]`
    if (r.users.length === 0) out.push(`${at}.users: empty, the rule can never match`)
    if (r.upstreams.length === 0) out.push(`${at}.upstreams: empty, the rule can never match`)
    if (r.repositories.length === 0) out.push(`${at}.repositories: empty, the rule can never match`)
    for (const u of r.upstreams) if (u !== '*' && !upstreamNames.includes(u)) out.push(`${at}.upstreams: "${u}" is not a configured upstream`)
    r.repositories.forEach((p, j) => {
      const problem = patternProblem(p)
      if (problem !== undefined) out.push(`${at}.repositories[${j}]: "${p}": ${problem}`)
    })
  })
  return out
}
