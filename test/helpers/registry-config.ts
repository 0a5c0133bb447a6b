// The configuration file of Debian's docker-registry (distribution 2.8) as the tests and the
// benchmark run it: filesystem storage in a temp dir, loopback address, nothing on a timer.

import { randomBytes } from 'node:crypto'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { stringify } from 'yaml'

export interface RegistryConfigOptions {
  /** `host:port` to listen on. */
  addr: string
  /** Root directory of the filesystem storage driver. */
  rootDir: string
  /**
   * Log every request to stdout (the access log the helpers parse), at info level. Off: warn
   * level and no access log, so a benchmark does not pay for a log line per request.
   */
  accessLog?: boolean
  /** The `auth:` mapping, e.g. `htpasswdAuth(file)` or `{ token: { realm, service, issuer, rootcertbundle } }`. */
  auth?: Record<string, unknown>
  /** Upstream of distribution's pull-through cache (`proxy: remoteurl:`). */
  proxyRemoteUrl?: string
  /** URL patterns a non-distributable (foreign) layer may name; by default none is accepted. */
  foreignLayerUrls?: string[]
}

/** The `auth:` mapping for basic auth against an htpasswd (bcrypt) file. */
export function htpasswdAuth(path: string): Record<string, unknown> {
  return { htpasswd: { realm: 'regcache-test', path } }
}

export function registryConfig(o: RegistryConfigOptions): string {
  const accessLog = o.accessLog ?? true
  const config: Record<string, unknown> = {
    version: '0.1',
    log: { level: accessLog ? 'info' : 'warn', accesslog: { disabled: !accessLog } },
    storage: {
      filesystem: { rootdirectory: o.rootDir },
      delete: { enabled: true },
      // Purging runs on a timer and deletes in-flight uploads; keep it out of tests.
      maintenance: { uploadpurging: { enabled: false } },
    },
    // A fixed secret silences the "No HTTP secret provided" warning.
    http: { addr: o.addr, secret: randomBytes(16).toString('hex') },
    health: { storagedriver: { enabled: false } },
  }
  if (o.auth) config.auth = o.auth
  if (o.proxyRemoteUrl) config.proxy = { remoteurl: o.proxyRemoteUrl }
  if (o.foreignLayerUrls) config.validation = { manifests: { urls: { allow: o.foreignLayerUrls } } }
  return stringify(config)
}

/** Writes `config.yml` into `dir`; returns its path. */
export async function writeRegistryConfig(dir: string, o: RegistryConfigOptions): Promise<string> {
  const path = join(dir, 'config.yml')
  await writeFile(path, registryConfig(o))
  return path
}
