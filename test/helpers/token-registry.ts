// A real docker-registry (distribution 2.8) with an arbitrary `auth:` block, e.g. token auth
// against test/helpers/token-server.ts. A trimmed variant of registry.ts (which only knows htpasswd):
// same generated config, same access log parsing, same helper user agent convention.

import { randomBytes } from 'node:crypto'
import { mkdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { stringify } from 'yaml'
import type { OciIndexLayout, OciLayout } from './images.js'
import { freePort } from './ports.js'
import { makeTempDir, removeTempDir, run, spawnDaemon, waitUntil, type Daemon } from './proc.js'
import { HELPER_USER_AGENT, parseAccessLine, type RegistryRequest } from './registry.js'

export interface AuthRegistryOptions {
  /** The registry's `auth:` mapping, e.g. `{ token: { realm, service, issuer, rootcertbundle } }`. */
  auth: Record<string, unknown>
}

export interface AuthRegistry {
  url: string
  host: string
  port: number
  /** Requests handled so far, excluding the helpers' own. */
  requests(): RegistryRequest[]
  /** Wait until every request already answered is in the access log. */
  settle(): Promise<void>
  stop(): Promise<void>
}

export async function startAuthRegistry(opts: AuthRegistryOptions): Promise<AuthRegistry> {
  const dir = await makeTempDir()
  let daemon: Daemon | undefined
  try {
    const port = await freePort()
    const host = `127.0.0.1:${port}`
    const url = `http://${host}`
    const dataDir = join(dir, 'data')
    await mkdir(dataDir)
    const config = {
      version: '0.1',
      log: { level: 'info', accesslog: { disabled: false } },
      storage: {
        filesystem: { rootdirectory: dataDir },
        delete: { enabled: true },
        maintenance: { uploadpurging: { enabled: false } },
      },
      http: { addr: host, secret: randomBytes(16).toString('hex') },
      health: { storagedriver: { enabled: false } },
      auth: opts.auth,
    }
    const configPath = join(dir, 'config.yml')
    await writeFile(configPath, stringify(config))

    const log: RegistryRequest[] = []
    const markerWaiters = new Map<string, () => void>()
    daemon = spawnDaemon('docker-registry', ['serve', configPath], {
      cwd: dir,
      onLine(line, stream) {
        if (stream !== 'stdout') return
        const r = parseAccessLine(line)
        if (!r) return
        log.push(r)
        markerWaiters.get(r.userAgent)?.()
      },
    })
    // Unauthenticated: with token auth /v2/ answers 401 once the registry is up.
    const helperGet = (ua: string) =>
      fetch(`${url}/v2/`, { headers: { 'user-agent': ua }, signal: AbortSignal.timeout(2000) }).then(async (res) => {
        await res.arrayBuffer()
        return res.status
      })
    await waitUntil('docker-registry (auth)', async () => [200, 401].includes(await helperGet(`${HELPER_USER_AGENT}/ready`)), { daemon })

    let markerSeq = 0
    const d = daemon
    return {
      url,
      host,
      port,
      requests: () => log.filter((r) => !r.userAgent.startsWith(HELPER_USER_AGENT)),
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
      async stop() {
        await d.stop()
        await removeTempDir(dir)
      },
    }
  } catch (e) {
    await daemon?.stop()
    await removeTempDir(dir)
    throw e
  }
}

/**
 * Push with skopeo using credentials (skopeo does the token dance itself). Unlike
 * images.pushImage this does not look the digest up afterwards with Basic auth, which a
 * token-auth registry refuses; the layout is pushed unconverted, so its digest is the built one.
 */
export async function pushWithCreds(
  layout: OciLayout | OciIndexLayout,
  registryHost: string,
  repoAndTag: string,
  creds: { username: string; password: string },
): Promise<void> {
  const args = ['--insecure-policy', 'copy', '--dest-tls-verify=false', '--retry-times', '2']
  if ('indexDigest' in layout) args.push('--all')
  args.push('--dest-creds', `${creds.username}:${creds.password}`, layout.ref, `docker://${registryHost}/${repoAndTag}`)
  const r = await run('skopeo', args, { timeoutMs: 60_000 })
  if (r.code !== 0) throw new Error(`skopeo ${args.join(' ')} failed (${r.code}):\n${r.stderr}${r.stdout}`)
}
