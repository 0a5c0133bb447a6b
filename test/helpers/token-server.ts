// A Docker token-auth server (distribution `docs/content/spec/auth/token.md`) on 127.0.0.1, for a
// real docker-registry configured with `auth: token:`. It issues RS256 JWTs signed with the key of
// a self-signed certificate made by openssl (the registry's `rootcertbundle`), carrying the
// certificate in the `x5c` header, and records every token request.
//
// Default grants: anonymous → `pull` on repositories under `public/` only (other scopes get a token
// with no access, as Docker Hub does); a known user with the right password → every action asked
// for, or, when the user is given with rights, only what those rights cover (other scopes get a
// token with no access); a wrong password → 401. Users, passwords and rights can be changed while
// the server runs, e.g. to take a user's rights away: tokens issued before stay valid at the
// registry until they expire, as with a real token service.

import { X509Certificate, createPrivateKey, randomBytes, sign, type KeyObject } from 'node:crypto'
import { readFile } from 'node:fs/promises'
import http from 'node:http'
import { join } from 'node:path'
import { freePort } from './ports.js'
import { makeTempDir, removeTempDir, runOk } from './proc.js'

export interface Access {
  type: string
  name: string
  actions: string[]
}

export interface TokenRequestRecord {
  service?: string
  scopes: string[]
  /** An `Authorization: Basic` header came with the request. */
  basic: boolean
  /** The user named by Basic credentials (whether or not the password was right). */
  user?: string
  status: number
  /** The token issued (undefined on failure). */
  token?: string
  granted: Access[]
  userAgent?: string
}

/**
 * A user with rights on repository patterns. In a pattern `*` matches any run of characters, `/`
 * included (`team-a/*` covers `team-a/app` and `team-a/x/y`).
 */
export interface UserRights {
  password: string
  /** Patterns of repositories this user may pull. */
  pull?: string[]
  /** Patterns of repositories this user may push to (and pull). */
  push?: string[]
}

/** A password alone: every action on every repository (the behaviour the first tests were written for). */
export type UserSpec = string | UserRights

export interface TokenServerOptions {
  /** JWT `iss`; the registry's `auth.token.issuer`. */
  issuer: string
  /** username → password, or → password and rights. */
  users: Record<string, UserSpec>
  /** Patterns anonymous requests may pull; default `["public/*"]`. */
  anonymousPull?: string[]
  /** Overrides the default grant policy. */
  grant?: (user: string | undefined, requested: Access) => string[]
}

/**
 * Users with rights on team namespaces, for tests of per-client authorization: alice pulls
 * `team-a/*`, bob pulls `team-b/*`, and `seeder` pushes anything (to fill the upstream).
 * Anonymous requests pull `public/*` (the server's default). A fresh copy on each call.
 */
export function teamUsers(): Record<'alice' | 'bob' | 'seeder', UserRights> {
  return {
    alice: { password: 'alice-Pa55', pull: ['team-a/*'] },
    bob: { password: 'bob-Pa55', pull: ['team-b/*'] },
    seeder: { password: 'seeder-Pa55', push: ['*'] },
  }
}

export interface TokenServer {
  /** The realm, `http://127.0.0.1:<port>/token`. */
  realm: string
  port: number
  issuer: string
  /** PEM certificate (the registry's rootcertbundle). */
  certFile: string
  /** Every token request so far. */
  requests: TokenRequestRecord[]
  /** Every token issued so far. */
  tokens(): string[]
  /** `expires_in` of the next responses, in seconds. */
  expiresIn: number
  /** Which field carries the token in the next responses. */
  style: 'token' | 'access_token' | 'both'
  /** Adds or replaces a user (its password and rights) for the next token requests. */
  setUser(name: string, spec: UserSpec): void
  /** The user's next token requests fail with 401. */
  removeUser(name: string): void
  /** Changes the password, keeping the rights; the old one gets 401 from now on. */
  setPassword(name: string, password: string): void
  /** Changes what the user may do (e.g. `{ pull: [] }` to take every right away). */
  setRights(name: string, rights: { pull?: string[]; push?: string[] }): void
  stop(): Promise<void>
}

export function parseScope(scope: string): Access | undefined {
  // type:name:actions, where the name may itself contain ':' (a registry host with a port).
  const first = scope.indexOf(':')
  const last = scope.lastIndexOf(':')
  if (first <= 0 || last === first) return undefined
  return {
    type: scope.slice(0, first),
    name: scope.slice(first + 1, last),
    actions: scope.slice(last + 1).split(',').filter((a) => a !== ''),
  }
}

export function defaultGrant(user: string | undefined, requested: Access): string[] {
  if (user !== undefined) return requested.actions
  if (requested.type === 'repository' && requested.name.startsWith('public/')) return requested.actions.filter((a) => a === 'pull')
  return []
}

/** `*` matches any run of characters, `/` included; everything else is literal. */
export function matchesPattern(pattern: string, name: string): boolean {
  const escaped = pattern.split('*').map((p) => p.replace(/[.+?^${}()|[\]\\/-]/g, '\\$&'))
  return new RegExp(`^${escaped.join('.*')}$`, 's').test(name)
}

/** What a user with rights (or anonymous, with `anonymousPull`) gets for one requested scope. */
export function rightsGrant(rights: Pick<UserRights, 'pull' | 'push'> | undefined, anonymousPull: string[], requested: Access): string[] {
  if (requested.type !== 'repository') return []
  const matches = (patterns: string[] | undefined) => (patterns ?? []).some((p) => matchesPattern(p, requested.name))
  const canPush = rights !== undefined && matches(rights.push)
  const canPull = canPush || (rights !== undefined ? matches(rights.pull) : matches(anonymousPull))
  return requested.actions.filter((a) => (a === 'pull' && canPull) || (a === 'push' && canPush))
}

const b64url = (v: unknown) => Buffer.from(typeof v === 'string' ? v : JSON.stringify(v)).toString('base64url')

function jwt(key: KeyObject, certDer: Buffer, claims: Record<string, unknown>): string {
  const header = { typ: 'JWT', alg: 'RS256', x5c: [certDer.toString('base64')] }
  const input = `${b64url(header)}.${b64url(claims)}`
  const signature = sign('sha256', Buffer.from(input), key)
  return `${input}.${signature.toString('base64url')}`
}

export async function startTokenServer(opts: TokenServerOptions): Promise<TokenServer> {
  const dir = await makeTempDir()
  try {
    const keyFile = join(dir, 'token.key')
    const certFile = join(dir, 'token.crt')
    await runOk('openssl', [
      'req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-sha256', '-days', '2',
      '-subj', '/CN=regcache-test-token-issuer', '-keyout', keyFile, '-out', certFile,
    ])
    const key = createPrivateKey(await readFile(keyFile))
    const certDer = new X509Certificate(await readFile(certFile)).raw
    const users = new Map<string, UserSpec>(Object.entries(opts.users))
    const anonymousPull = opts.anonymousPull ?? ['public/*']
    const passwordOf = (spec: UserSpec) => (typeof spec === 'string' ? spec : spec.password)
    const grant =
      opts.grant ??
      ((user: string | undefined, requested: Access): string[] => {
        if (user === undefined) return opts.anonymousPull === undefined ? defaultGrant(undefined, requested) : rightsGrant(undefined, anonymousPull, requested)
        const spec = users.get(user)
        if (spec === undefined) return []
        return typeof spec === 'string' ? defaultGrant(user, requested) : rightsGrant(spec, anonymousPull, requested)
      })
    const requests: TokenRequestRecord[] = []
    const port = await freePort()

    const state = { expiresIn: 300, style: 'token' as TokenServer['style'] }

    const server = http.createServer((req, res) => {
      const u = new URL(req.url ?? '/', 'http://token')
      const send = (status: number, body: unknown) => {
        const b = Buffer.from(JSON.stringify(body))
        res.writeHead(status, { 'content-type': 'application/json', 'content-length': b.length })
        res.end(b)
      }
      req.resume()
      const auth = req.headers.authorization
      let user: string | undefined
      let basic = false
      let authenticated: string | undefined
      if (auth !== undefined && /^basic /i.test(auth)) {
        basic = true
        const decoded = Buffer.from(auth.slice(6).trim(), 'base64').toString('utf8')
        const colon = decoded.indexOf(':')
        user = colon === -1 ? decoded : decoded.slice(0, colon)
        const password = colon === -1 ? '' : decoded.slice(colon + 1)
        const spec = users.get(user)
        if (spec !== undefined && passwordOf(spec) === password) authenticated = user
      }
      const record: TokenRequestRecord = {
        service: u.searchParams.get('service') ?? undefined,
        scopes: u.searchParams.getAll('scope').flatMap((s) => s.split(' ')).filter((s) => s !== ''),
        basic,
        user,
        status: 0,
        granted: [],
        userAgent: req.headers['user-agent'],
      }
      requests.push(record)
      if (req.method !== 'GET' || u.pathname !== '/token') {
        record.status = 404
        return send(404, { errors: [{ code: 'NOT_FOUND', message: 'not found' }] })
      }
      if (basic && authenticated === undefined) {
        record.status = 401
        res.setHeader('www-authenticate', 'Basic realm="regcache-test-token"')
        return send(401, { errors: [{ code: 'UNAUTHORIZED', message: 'bad credentials' }] })
      }
      const access: Access[] = []
      for (const s of record.scopes) {
        const a = parseScope(s)
        if (!a) continue
        const actions = grant(authenticated, a)
        if (actions.length > 0) access.push({ type: a.type, name: a.name, actions })
      }
      const now = Math.floor(Date.now() / 1000)
      const token = jwt(key, certDer, {
        iss: opts.issuer,
        sub: authenticated ?? '',
        aud: record.service ?? '',
        exp: now + state.expiresIn,
        nbf: now - 1,
        iat: now,
        jti: randomBytes(12).toString('hex'),
        access,
      })
      record.status = 200
      record.token = token
      record.granted = access
      const body: Record<string, unknown> = { expires_in: state.expiresIn, issued_at: new Date(now * 1000).toISOString() }
      if (state.style !== 'access_token') body.token = token
      if (state.style !== 'token') body.access_token = token
      send(200, body)
    })
    server.keepAliveTimeout = 5000
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject)
      server.listen(port, '127.0.0.1', () => resolve())
    })
    return {
      realm: `http://127.0.0.1:${port}/token`,
      port,
      issuer: opts.issuer,
      certFile,
      requests,
      tokens: () => requests.flatMap((r) => (r.token ? [r.token] : [])),
      get expiresIn() {
        return state.expiresIn
      },
      set expiresIn(v: number) {
        state.expiresIn = v
      },
      get style() {
        return state.style
      },
      set style(v: TokenServer['style']) {
        state.style = v
      },
      setUser(name, spec) {
        users.set(name, typeof spec === 'string' ? spec : { ...spec })
      },
      removeUser(name) {
        users.delete(name)
      },
      setPassword(name, password) {
        const spec = users.get(name)
        if (spec === undefined) throw new Error(`token server: no user ${name}`)
        users.set(name, typeof spec === 'string' ? password : { ...spec, password })
      },
      setRights(name, rights) {
        const spec = users.get(name)
        if (spec === undefined) throw new Error(`token server: no user ${name}`)
        users.set(name, { password: passwordOf(spec), pull: rights.pull, push: rights.push })
      },
      async stop() {
        await new Promise<void>((resolve) => {
          server.close(() => resolve())
          server.closeAllConnections()
        })
        await removeTempDir(dir)
      },
    }
  } catch (e) {
    await removeTempDir(dir)
    throw e
  }
}
