// A real upstream registry (Debian's docker-registry, i.e. distribution 2.8)
// on loopback, with a parsed request log so tests can assert exactly what
// traffic regcache sent upstream (e.g. "one HEAD per revalidation").
import { randomBytes } from 'node:crypto'
import { rm, writeFile, mkdir } from 'node:fs/promises'
import { join } from 'node:path'
import { freePort } from './ports.js'
import { htpasswdAuth, writeRegistryConfig } from './registry-config.js'
import { removeTempDir, runOk, spawnDaemon, startInTempDir, waitUntil } from './proc.js'

/**
 * User-Agent prefix of requests made by the helpers themselves (readiness
 * probes, settle() markers, digest look-ups after a push). They are kept out
 * of requests()/count() so assertions only see traffic from the code under
 * test; allRequests() still has them.
 */
export const HELPER_USER_AGENT = 'regcache-test-helper'

export interface BasicAuth {
  username: string
  password: string
}

export interface RegistryRequest {
  method: string
  /** Request path without the query string. */
  path: string
  /** Path plus query string, exactly as logged. */
  uri: string
  status: number
  /** Response body bytes written (0 when the log shows "-"). */
  bytes: number
  userAgent: string
}

export interface RequestFilter {
  method?: string
  /** Substring or pattern tested against `path` (not the query string). */
  pathIncludes?: string | RegExp
  status?: number
}

export interface Registry {
  url: string
  host: string
  port: number
  /** Storage root (filesystem driver). */
  dataDir: string
  auth?: BasicAuth
  /** `Authorization` header value when auth is on, else undefined. */
  authorization?: string
  /** Requests handled so far, excluding the helpers' own (see HELPER_USER_AGENT). */
  requests(filter?: RequestFilter): RegistryRequest[]
  allRequests(): RegistryRequest[]
  count(filter?: RequestFilter): number
  resetRequests(): void
  /**
   * Wait until every request whose response the caller has already received
   * is in the log. The access line is written after the response, so without
   * this a count() right after a client call can be one short.
   */
  settle(): Promise<void>
  /**
   * Delete only the tag link on disk, leaving the manifest fetchable by
   * digest. distribution 2.8 has no API to untag (DELETE by tag is
   * unsupported), and deleting by digest removes every tag pointing at it.
   */
  removeTag(repo: string, tag: string): Promise<void>
  stop(): Promise<void>
}

export interface RegistryOptions {
  /** htpasswd (bcrypt) basic auth. */
  auth?: BasicAuth
  /**
   * Any other `auth:` mapping, as the registry's config spells it, e.g. token auth
   * `{ token: { realm, service, issuer, rootcertbundle } }`. Not together with `auth`.
   */
  authConfig?: Record<string, unknown>
  /** Listen address; defaults to 127.0.0.1 on a free port. */
  addr?: string
  /** URL patterns foreign (non-distributable) layers may name (distribution's validation.manifests.urls.allow). */
  foreignLayerUrls?: string[]
}

// gorilla/handlers combined log format, which distribution writes to stdout
// for every request that reached its router, independent of log level:
//   127.0.0.1 - - [27/Nov/2026:18:34:17 +0000] "GET /v2/ HTTP/1.1" 200 2 "" "curl/7.88.1"
// The logrus "response completed" lines on stderr are not used: they come in
// two variants ("response completed" / "... with error") and are level-gated.
const ACCESS_LINE =
  /^\S+ \S+ \S+ \[[^\]]*\] "(\S+) (\S+) [^"]*" (\d{3}) (\d+|-) "(?:[^"\\]|\\.)*" "((?:[^"\\]|\\.)*)"$/

export function parseAccessLine(line: string): RegistryRequest | undefined {
  const m = ACCESS_LINE.exec(line)
  if (!m) return undefined
  const [, method, uri, status, bytes, ua] = m as unknown as [string, string, string, string, string, string]
  const q = uri.indexOf('?')
  return {
    method,
    uri,
    path: q === -1 ? uri : uri.slice(0, q),
    status: Number(status),
    bytes: bytes === '-' ? 0 : Number(bytes),
    userAgent: ua.replace(/\\(.)/g, '$1'),
  }
}

function matches(r: RegistryRequest, f: RequestFilter): boolean {
  if (f.method !== undefined && r.method !== f.method.toUpperCase()) return false
  if (f.status !== undefined && r.status !== f.status) return false
  if (f.pathIncludes !== undefined) {
    if (typeof f.pathIncludes === 'string' ? !r.path.includes(f.pathIncludes) : !f.pathIncludes.test(r.path)) {
      return false
    }
  }
  return true
}

/**
 * bcrypt via the system crypt(3) (libxcrypt supports $2b$) through perl,
 * which is Essential on Debian: the Node standard library has no bcrypt and
 * distribution's htpasswd backend accepts nothing else.
 */
async function bcrypt(password: string): Promise<string> {
  const alphabet = './ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789'
  const raw = randomBytes(22)
  let salt = ''
  for (let i = 0; i < 21; i++) salt += alphabet[raw[i]! % 64]
  // The 22nd salt char only contributes 2 bits; keep its low bits zero so
  // strict implementations don't reject it.
  salt += '.Oeu'[raw[21]! % 4]
  const r = await runOk('perl', ['-e', 'print crypt($ARGV[0], $ARGV[1])', password, `$2b$05$${salt}`])
  if (!r.stdout.startsWith('$2b$')) throw new Error(`crypt(3) does not support bcrypt here: ${r.stdout}`)
  return r.stdout
}

export async function startRegistry(opts: RegistryOptions = {}): Promise<Registry> {
  return startInTempDir(async (dir, track) => {
    const addr = opts.addr ?? `127.0.0.1:${await freePort()}`
    const port = Number(addr.slice(addr.lastIndexOf(':') + 1))
    const host = `127.0.0.1:${port}`
    const url = `http://${host}`
    const dataDir = join(dir, 'data')
    await mkdir(dataDir)
    let auth = opts.authConfig
    if (opts.auth) {
      if (auth) throw new Error('startRegistry: give auth or authConfig, not both')
      const htpasswd = join(dir, 'htpasswd')
      await writeFile(htpasswd, `${opts.auth.username}:${await bcrypt(opts.auth.password)}\n`)
      auth = htpasswdAuth(htpasswd)
    }
    const configPath = await writeRegistryConfig(dir, { addr, rootDir: dataDir, auth, foreignLayerUrls: opts.foreignLayerUrls })
    const authorization = opts.auth
      ? 'Basic ' + Buffer.from(`${opts.auth.username}:${opts.auth.password}`).toString('base64')
      : undefined

    let log: RegistryRequest[] = []
    const markerWaiters = new Map<string, () => void>()
    const daemon = track(
      spawnDaemon('docker-registry', ['serve', configPath], {
        cwd: dir,
        onLine(line, stream) {
          if (stream !== 'stdout') return
          const r = parseAccessLine(line)
          if (!r) return
          log.push(r)
          markerWaiters.get(r.userAgent)?.()
        },
      }),
    )

    const helperGet = (ua: string) =>
      fetch(`${url}/v2/`, {
        headers: { 'user-agent': ua, ...(authorization ? { authorization } : {}) },
        signal: AbortSignal.timeout(2000),
      }).then(async (res) => {
        await res.arrayBuffer()
        return res.status
      })

    // With an auth scheme the helpers hold no credentials for, /v2/ answers 401 once it is up.
    const up = opts.authConfig ? [200, 401] : [200]
    await waitUntil('docker-registry', async () => up.includes(await helperGet(`${HELPER_USER_AGENT}/ready`)), { daemon })

    let markerSeq = 0
    const d = daemon
    const requests = (filter: RequestFilter = {}) =>
      log.filter((r) => !r.userAgent.startsWith(HELPER_USER_AGENT) && matches(r, filter))
    return {
      url,
      host,
      port,
      dataDir,
      auth: opts.auth,
      authorization,
      requests,
      allRequests: () => [...log],
      count: (filter = {}) => requests(filter).length,
      resetRequests() {
        log = []
      },
      async settle() {
        const ua = `${HELPER_USER_AGENT}/settle-${++markerSeq}`
        const seen = new Promise<void>((resolve) => markerWaiters.set(ua, resolve))
        await helperGet(ua)
        const timeout = new Promise<never>((_, reject) =>
          setTimeout(() => reject(new Error('registry.settle: marker request never logged')), 5000).unref(),
        )
        try {
          await Promise.race([seen, timeout])
        } finally {
          markerWaiters.delete(ua)
        }
      },
      async removeTag(repo, tag) {
        await rm(join(dataDir, 'docker/registry/v2/repositories', repo, '_manifests/tags', tag), {
          recursive: true,
        })
      },
      async stop() {
        await d.stop()
        await removeTempDir(dir)
      },
    }
  })
}
