// A Docker token-auth server (distribution `docs/content/spec/auth/token.md`) on 127.0.0.1, for a
// real docker-registry configured with `auth: token:`. It issues RS256 JWTs signed with the key of
// a self-signed certificate made by openssl (the registry's `rootcertbundle`), carrying the
// certificate in the `x5c` header, and records every token request.
//
// Default grants: anonymous → `pull` on repositories under `public/` only (other scopes get a token
// with no access, as Docker Hub does); a known user with the right password → every action asked
// for; a wrong password → 401.

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

export interface TokenServerOptions {
  /** JWT `iss`; the registry's `auth.token.issuer`. */
  issuer: string
  /** username → password. */
  users: Record<string, string>
  /** Overrides the default grant policy. */
  grant?: (user: string | undefined, requested: Access) => string[]
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
    const grant = opts.grant ?? defaultGrant
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
        if (Object.prototype.hasOwnProperty.call(opts.users, user) && opts.users[user] === password) authenticated = user
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
