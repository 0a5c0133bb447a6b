// Loads, validates and freezes the configuration. Every violation is reported at once, each
// naming the file, the key and what was expected; the CLI turns a ConfigError into exit status 2.

import { readFileSync } from 'node:fs'
import { isAbsolute, resolve, dirname } from 'node:path'
import { Ajv, type ErrorObject } from 'ajv'
import { parse as parseYaml } from 'yaml'
import { configSchema, type ConfigFile, type PrefetchFile, type UpstreamFile } from './schema.js'
import { isValidName, isValidTag, parseImageRef, repositoryFor } from '../oci/reference.js'
import { DEFAULT_ANONYMOUS, type AuthConfig, type CredentialMode, type AuthorizationWindows } from '../auth/config.js'
import { rulesProblems } from '../auth/rules.js'
import { parseDuration, parseSize } from './units.js'
import type { S3StoreSettings } from '../storage/s3-settings.js'

export type OnNotFound = 'passthrough' | 'serve'
export type OnRollback = 'follow' | 'refuse'

export interface UpstreamConfig {
  /** The registry host this upstream stands for (`docker.io`, `ghcr.io`): the `ns` value and path prefix that select it. */
  readonly name: string
  /** Base URL without a trailing slash. */
  readonly url: string
  readonly username?: string
  readonly password?: string
  readonly caFile?: string
  readonly insecureSkipVerify: boolean
  /** Host names besides the upstream's own that may receive its credentials as a token realm. */
  readonly tokenRealms: readonly string[]
  /** Redirects may lead into loopback, link-local and private address space. */
  readonly allowPrivateRedirects: boolean
  readonly revalidate: { readonly timeoutMs: number; readonly minIntervalMs: number }
  readonly stale: { readonly maxAgeMs: number; readonly onNotFound: OnNotFound }
  readonly onRollback: OnRollback
  readonly down: { readonly failures: number; readonly probeIntervalMs: number }
  readonly timeouts: { readonly connectMs: number; readonly headersMs: number; readonly bodyMs: number }
  /** Whose credentials go upstream: the ones configured here (`mirror`) or each client's own (`client`). */
  readonly credentials: CredentialMode
  /** For `credentials: client`: how long upstream's "yes" is trusted, normally and during an outage. */
  readonly authorization: AuthorizationWindows
}

export type SwitchPolicy = 'immediate' | 'when-cached'

/** One `prefetch` entry, resolved: which upstream and repository, and which of its tags. */
export interface PrefetchConfig {
  /** The entry as written (logs, the status page). */
  readonly image: string
  readonly upstream: string
  /** Repository as upstream names it (`library/` added for Docker Hub). */
  readonly repository: string
  /** One tag, or a pattern over the repository's tags/list. */
  readonly tag?: string
  readonly tags?: RegExp
  readonly platforms: readonly string[]
  readonly everyMs: number
  readonly switch: SwitchPolicy
  readonly maxLagMs: number
}

export interface Config {
  readonly listen: { readonly host: string; readonly port: number }
  readonly dataDir: string
  readonly logLevel: string
  readonly defaultUpstream: string
  readonly upstreams: Readonly<Record<string, UpstreamConfig>>
  /** scrubMs: every stored byte is re-hashed once per this long (0: never). */
  readonly cache: { readonly maxSizeBytes?: number; readonly maxAgeMs?: number; readonly scrubMs: number }
  /** Ranges of blobs not cached yet: `rangeOnMiss` forward them upstream (at most `rangeForwards` per blob at once) or wait for the fill. */
  readonly blobs: { readonly rangeForwards: number; readonly rangeOnMiss: 'forward' | 'wait' }
  /** Where content lives: files under dataDir (the default) or an S3 bucket shared by replicas. */
  readonly storage: StorageConfig
  readonly tls?: { readonly certFile: string; readonly keyFile: string }
  readonly shutdownGraceMs: number
  readonly prefetch: readonly PrefetchConfig[]
  /** Client authentication; absent: no client is asked for credentials. htpasswd is an absolute path. */
  readonly auth?: AuthConfig
}

export type StorageConfig =
  | { readonly type: 'filesystem' }
  | { readonly type: 's3'; readonly s3: Readonly<S3StoreSettings> & { readonly redirect: boolean; readonly redirectExpirySeconds: number; readonly leaseTtlMs: number } }

export class ConfigError extends Error {
  readonly code = 'REGCACHE_CONFIG_INVALID'
  constructor(
    readonly source: string,
    readonly problems: string[],
  ) {
    super(`invalid configuration in ${source}:\n${problems.map((p) => `  - ${p}`).join('\n')}`)
  }
}

export interface LoadOptions {
  /** Path of the YAML file; undefined means built-in defaults only. */
  file?: string
  env?: NodeJS.ProcessEnv
  /** Base for relative paths when there is no file. */
  cwd?: string
}

/** Docker Hub's token realm, trusted with credentials for its registry API host unless configured otherwise. */
const DOCKER_HUB_REALMS: Readonly<Record<string, readonly string[]>> = { 'registry-1.docker.io': ['auth.docker.io'] }

/** The longest delay a Node timer can hold. */
const MAX_TIMER_MS = 2 ** 31 - 1

const ajv = new Ajv({ allErrors: true, useDefaults: true, strict: true, allowUnionTypes: true, verbose: true })
const validate = ajv.compile(configSchema)

export function loadConfig(opts: LoadOptions = {}): Config {
  const env = opts.env ?? process.env
  const cwd = opts.cwd ?? process.cwd()
  const source = opts.file ?? '(built-in defaults)'
  let raw: unknown = {}
  if (opts.file !== undefined) {
    let text: string
    try {
      text = readFileSync(resolve(cwd, opts.file), 'utf8')
    } catch (err) {
      throw new ConfigError(source, [`cannot read the file: ${(err as Error).message}`])
    }
    try {
      raw = parseYaml(text) ?? {}
    } catch (err) {
      throw new ConfigError(source, [`not valid YAML: ${(err as Error).message}`])
    }
  }
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) {
    throw new ConfigError(source, ['the document must be a mapping of keys (listen, dataDir, upstreams, ...)'])
  }
  // `key:` with nothing after it (or only commented-out children) means "unset".
  const doc = dropNulls(structuredClone(raw)) as Record<string, unknown>
  if (env.REGCACHE_LISTEN) doc.listen = env.REGCACHE_LISTEN
  if (env.REGCACHE_DATA_DIR) doc.dataDir = env.REGCACHE_DATA_DIR
  if (!validate(doc)) {
    // A bad upstream name is reported once, by its propertyNames error, not again by the pattern inside it.
    const errors = (validate.errors ?? []).filter((e) => e.keyword === 'propertyNames' || (e as { propertyName?: string }).propertyName === undefined)
    throw new ConfigError(source, errors.map(describeError))
  }
  const base = opts.file !== undefined ? dirname(resolve(cwd, opts.file)) : cwd
  return resolveConfig(doc as ConfigFile, source, base, env)
}

function resolveConfig(doc: ConfigFile, source: string, base: string, env: NodeJS.ProcessEnv): Config {
  const problems: string[] = []
  /** A duration in ms; `timer` ones (timeouts, intervals) must fit a Node timer. */
  const ms = (key: string, value: string | number | undefined, timer = true): number => {
    const n = value === undefined ? undefined : parseDuration(value)
    if (n === undefined || !Number.isFinite(n)) {
      problems.push(`${key}: expected a duration like "2s", "5m" or "7d" (got ${JSON.stringify(value)})`)
      return 0
    }
    // Node's timers hold at most 2^31-1 ms (about 24.8 days); a longer one would fire at once.
    if (n > (timer ? MAX_TIMER_MS : Number.MAX_SAFE_INTEGER)) {
      problems.push(`${key}: expected a duration of at most ${timer ? '24d (the longest a timer can wait)' : '285000y'} (got ${JSON.stringify(value)})`)
      return 0
    }
    return n
  }
  const path = (p: string) => (isAbsolute(p) ? p : resolve(base, p))

  const upstreams: Record<string, UpstreamConfig> = {}
  for (const [name, u] of Object.entries<UpstreamFile>(doc.upstreams)) {
    const key = `upstreams.${name}`
    const url = new URL(u.url)
    if (url.username !== '' || url.password !== '') {
      problems.push(`${key}.url: credentials inside the URL are not accepted (they would end up in logs); use username with passwordFile or passwordEnv`)
    }
    let password: string | undefined
    if (u.passwordFile !== undefined) {
      try {
        password = readFileSync(path(u.passwordFile), 'utf8').replace(/\r?\n$/, '')
      } catch (err) {
        problems.push(`${key}.passwordFile: cannot read ${u.passwordFile}: ${(err as Error).message}`)
      }
    } else if (u.passwordEnv !== undefined) {
      password = env[u.passwordEnv]
      if (password === undefined) problems.push(`${key}.passwordEnv: environment variable ${u.passwordEnv} is not set`)
    }
    if (u.username !== undefined && u.passwordFile === undefined && u.passwordEnv === undefined) {
      problems.push(`${key}: username is set, so passwordFile or passwordEnv is expected too`)
    }
    if (u.username === undefined && (u.passwordFile !== undefined || u.passwordEnv !== undefined)) {
      problems.push(`${key}: a password is configured, so username is expected too`)
    }
    upstreams[name] = Object.freeze({
      name,
      url: String(u.url).replace(/\/+$/, ''),
      username: u.username,
      password,
      caFile: u.caFile !== undefined ? path(u.caFile) : undefined,
      insecureSkipVerify: u.insecureSkipVerify,
      tokenRealms: Object.freeze([...(u.tokenRealms ?? DOCKER_HUB_REALMS[url.hostname.toLowerCase()] ?? [])].map((h) => h.toLowerCase())),
      allowPrivateRedirects: u.allowPrivateRedirects,
      revalidate: Object.freeze({
        timeoutMs: ms(`${key}.revalidate.timeout`, u.revalidate.timeout),
        minIntervalMs: ms(`${key}.revalidate.minInterval`, u.revalidate.minInterval, false),
      }),
      stale: Object.freeze({ maxAgeMs: ms(`${key}.stale.maxAge`, u.stale.maxAge, false), onNotFound: u.stale.onNotFound }),
      onRollback: u.onRollback,
      down: Object.freeze({ failures: u.down.failures, probeIntervalMs: ms(`${key}.down.probeInterval`, u.down.probeInterval) }),
      timeouts: Object.freeze({
        connectMs: ms(`${key}.timeouts.connect`, u.timeouts.connect),
        headersMs: ms(`${key}.timeouts.headers`, u.timeouts.headers),
        bodyMs: ms(`${key}.timeouts.body`, u.timeouts.body),
      }),
      credentials: u.credentials,
      authorization: Object.freeze({
        recheckMs: ms(`${key}.authorization.recheck`, u.authorization.recheck),
        offlineMs: ms(`${key}.authorization.offline`, u.authorization.offline, false),
      }),
    })
    if (u.credentials === 'client' && (u.username !== undefined || u.passwordFile !== undefined || u.passwordEnv !== undefined)) {
      problems.push(`${key}: credentials is "client", so each client's own credentials go upstream; remove username/passwordFile/passwordEnv`)
    }
    if (u.credentials === 'client' && upstreams[name].authorization.recheckMs === 0) {
      problems.push(`${key}.authorization.recheck: expected a duration above 0 (0 would ask upstream before every request)`)
    }
    if (upstreams[name].revalidate.timeoutMs === 0) problems.push(`${key}.revalidate.timeout: expected a duration above 0`)
  }
  if (!(doc.defaultUpstream in upstreams)) {
    problems.push(
      `defaultUpstream: expected one of the configured upstreams (${Object.keys(upstreams).join(', ')}), got ${JSON.stringify(doc.defaultUpstream)}`,
    )
  }

  const listen = parseListen(doc.listen)
  if (listen.port > 65535) problems.push(`listen: expected a port from 0 to 65535 (got ${listen.port})`)

  let maxSizeBytes: number | undefined
  if (doc.cache.maxSize !== undefined) {
    maxSizeBytes = parseSize(doc.cache.maxSize)
    if (maxSizeBytes === undefined) problems.push(`cache.maxSize: expected a size like "50GiB" (got ${JSON.stringify(doc.cache.maxSize)})`)
  }
  const maxAgeMs = doc.cache.maxAge !== undefined ? ms('cache.maxAge', doc.cache.maxAge, false) : undefined

  let storage: StorageConfig = { type: 'filesystem' }
  if (doc.storage.type === 's3') {
    const s3 = doc.storage.s3
    if (s3 === undefined) {
      problems.push('storage.s3: expected the bucket settings (bucket, region, ...) since storage.type is s3')
    } else {
      if ((s3.accessKeyFile === undefined) !== (s3.secretKeyFile === undefined)) {
        problems.push('storage.s3: accessKeyFile and secretKeyFile go together (or neither, for the SDK\'s usual credentials)')
      }
      storage = {
        type: 's3',
        s3: Object.freeze({
          endpoint: s3.endpoint,
          region: s3.region,
          bucket: s3.bucket,
          prefix: s3.prefix,
          forcePathStyle: s3.forcePathStyle,
          accessKeyFile: s3.accessKeyFile !== undefined ? path(s3.accessKeyFile) : undefined,
          secretKeyFile: s3.secretKeyFile !== undefined ? path(s3.secretKeyFile) : undefined,
          redirect: s3.redirect,
          redirectExpirySeconds: Math.round(ms('storage.s3.redirectExpiry', s3.redirectExpiry) / 1000),
          leaseTtlMs: ms('storage.s3.leaseTtl', s3.leaseTtl),
        }),
      }
    }
    if (storage.type === 's3' && storage.s3.leaseTtlMs < 1000) problems.push('storage.s3.leaseTtl: expected at least 1s')
    // Presigned URLs live from one second to seven days (SigV4).
    if (storage.type === 's3' && (storage.s3.redirectExpirySeconds < 1 || storage.s3.redirectExpirySeconds > 604_800)) {
      problems.push('storage.s3.redirectExpiry: expected 1s to 7d')
    }
  } else if (doc.storage.s3 !== undefined) {
    problems.push('storage.s3: set storage.type to s3 to use it (it is filesystem now)')
  }
  let auth: AuthConfig | undefined
  if (doc.auth !== undefined) {
    const rules = doc.auth.rules?.map((r) => Object.freeze({ users: Object.freeze([...r.users]), upstreams: Object.freeze([...r.upstreams]), repositories: Object.freeze([...r.repositories]) }))
    if (rules !== undefined) problems.push(...rulesProblems(rules, Object.keys(upstreams)))
    auth = Object.freeze({
      htpasswd: doc.auth.htpasswd !== undefined ? path(doc.auth.htpasswd) : undefined,
      anonymous: doc.auth.anonymous ?? DEFAULT_ANONYMOUS,
      rules: rules !== undefined ? Object.freeze(rules) : undefined,
    })
  }

  const config: Config = {
    listen,
    dataDir: path(doc.dataDir),
    logLevel: doc.logLevel,
    defaultUpstream: doc.defaultUpstream,
    upstreams: Object.freeze(upstreams),
    cache: Object.freeze({ maxSizeBytes, maxAgeMs, scrubMs: ms('cache.scrub', doc.cache.scrub, false) }),
    blobs: Object.freeze({ rangeForwards: doc.blobs.rangeForwards, rangeOnMiss: doc.blobs.rangeOnMiss }),
    storage: Object.freeze(storage),
    tls: doc.tls ? Object.freeze({ certFile: path(doc.tls.certFile), keyFile: path(doc.tls.keyFile) }) : undefined,
    shutdownGraceMs: ms('shutdownGrace', doc.shutdownGrace),
    prefetch: Object.freeze(doc.prefetch.map((p, i) => resolvePrefetch(p, `prefetch[${i}]`, doc.defaultUpstream, upstreams, ms, problems))),
    auth,
  }
  if (problems.length > 0) throw new ConfigError(source, problems)
  return Object.freeze(config)
}

function resolvePrefetch(
  p: PrefetchFile,
  key: string,
  defaultUpstream: string,
  upstreams: Record<string, UpstreamConfig>,
  ms: (key: string, value: string | number | undefined) => number,
  problems: string[],
): PrefetchConfig {
  const ref = parseImageRef(p.image, defaultUpstream)
  // parseImageRef reads a missing tag as "latest"; here a missing tag means "see `tags`".
  const lastSlash = p.image.lastIndexOf('/')
  const explicitTag = !p.image.includes('@') && p.image.lastIndexOf(':') > lastSlash
  let tags: RegExp | undefined
  if (ref.digest !== undefined) problems.push(`${key}.image: a digest never moves, so there is nothing to prefetch; name a tag (got ${JSON.stringify(p.image)})`)
  if (p.tags !== undefined) {
    if (explicitTag) problems.push(`${key}: give either a tag in image or a tags pattern, not both (got ${JSON.stringify(p.image)} and ${JSON.stringify(p.tags)})`)
    try {
      tags = new RegExp(p.tags)
    } catch (err) {
      problems.push(`${key}.tags: not a valid regular expression: ${(err as Error).message}`)
    }
  } else if (!explicitTag && ref.digest === undefined) {
    problems.push(`${key}.image: expected a tag (e.g. "docker.io/library/nginx:1.27") or a tags pattern beside the repository (got ${JSON.stringify(p.image)})`)
  }
  if (!(ref.registry in upstreams)) {
    problems.push(`${key}.image: registry ${ref.registry} is not a configured upstream (${Object.keys(upstreams).join(', ')})`)
  }
  if (!isValidName(ref.repository)) problems.push(`${key}.image: invalid repository name ${JSON.stringify(ref.repository)}`)
  if (explicitTag && ref.tag !== undefined && !isValidTag(ref.tag)) problems.push(`${key}.image: invalid tag ${JSON.stringify(ref.tag)}`)
  const everyMs = ms(`${key}.every`, p.every)
  if (everyMs < 1000) problems.push(`${key}.every: expected at least 1s (got ${JSON.stringify(p.every)})`)
  const maxLagMs = ms(`${key}.maxLag`, p.maxLag)
  return Object.freeze({
    image: p.image,
    upstream: ref.registry,
    repository: repositoryFor(ref.registry, ref.repository),
    tag: explicitTag ? ref.tag : undefined,
    tags,
    platforms: Object.freeze([...new Set(p.platforms)]),
    everyMs,
    switch: p.switch,
    maxLagMs,
  })
}

function dropNulls(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(dropNulls)
  if (typeof value === 'object' && value !== null) {
    return Object.fromEntries(Object.entries(value).filter(([, v]) => v !== null).map(([k, v]) => [k, dropNulls(v)]))
  }
  return value
}

export function parseListen(value: string): { host: string; port: number } {
  const i = value.lastIndexOf(':')
  let host = value.slice(0, i)
  if (host.startsWith('[') && host.endsWith(']')) host = host.slice(1, -1)
  return { host: host === '' ? '0.0.0.0' : host, port: Number(value.slice(i + 1)) }
}

function describeError(e: ErrorObject): string {
  // Array positions read as in the YAML's reader's mind: prefetch[0].every.
  const key = e.instancePath
    .split('/')
    .slice(1)
    .map((s) => s.replace(/~1/g, '/').replace(/~0/g, '~'))
    .reduce((k, s) => (/^\d+$/.test(s) ? `${k}[${s}]` : k === '' ? s : `${k}.${s}`), '')
  const where = key === '' ? '(top level)' : key
  const params = e.params as Record<string, unknown>
  if (e.keyword === 'additionalProperties') {
    const prop = String(params.additionalProperty)
    return `${where === '(top level)' ? prop : `${where}.${prop}`}: unknown key (allowed: ${allowedKeys(e)})`
  }
  if (e.keyword === 'pattern') {
    if (key.endsWith('url')) return `${where}: expected an http:// or https:// URL (got ${JSON.stringify(e.data)})`
    if (key === 'listen') return `${where}: expected "host:port", e.g. "0.0.0.0:5000" (got ${JSON.stringify(e.data)})`
    if (key.endsWith('maxSize')) return `${where}: expected a size like "50GiB" or "500MB" (got ${JSON.stringify(e.data)})`
    if (/tokenRealms\[\d+\]$/.test(key)) return `${where}: expected a host name like "auth.docker.io" (got ${JSON.stringify(e.data)})`
    if (/\.platforms\[\d+\]$/.test(key)) return `${where}: expected a platform like "linux/amd64" or "linux/arm64/v8" (got ${JSON.stringify(e.data)})`
    if (key === 'storage.s3.endpoint') return `${where}: expected an http:// or https:// URL without a path (got ${JSON.stringify(e.data)})`
    if (key === 'storage.s3.bucket') return `${where}: expected an S3 bucket name (3-63 lowercase letters, digits, dots, hyphens; got ${JSON.stringify(e.data)})`
    if (key === 'storage.s3.prefix') return `${where}: expected a key prefix ending in "/", like "prod/" (got ${JSON.stringify(e.data)})`
    if (key.endsWith('passwordEnv')) return `${where}: expected an environment variable name (got ${JSON.stringify(e.data)})`
    return `${where}: expected a duration like "2s", "5m" or "7d" (got ${JSON.stringify(e.data)})`
  }
  if (e.keyword === 'propertyNames') return `${where}: upstream names must be registry hosts like "ghcr.io" (got ${JSON.stringify(params.propertyName)})`
  if (e.keyword === 'enum') return `${where}: expected one of ${(params.allowedValues as unknown[]).map((v) => JSON.stringify(v)).join(', ')} (got ${JSON.stringify(e.data)})`
  if (e.keyword === 'type') return `${where}: expected ${String(params.type)} (got ${JSON.stringify(e.data)})`
  return `${where}: ${e.message ?? 'invalid'}`
}

function allowedKeys(e: ErrorObject): string {
  const props = (e.parentSchema as { properties?: Record<string, unknown> } | undefined)?.properties
  return props ? Object.keys(props).join(', ') : '?'
}

