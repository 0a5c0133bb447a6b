// regcache itself, started in-process from a real YAML file (so config loading is exercised)
// with a real data directory and a real socket on 127.0.0.1.

import { readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { pino } from 'pino'
import { stringify } from 'yaml'
import { loadConfig } from '../../config/config.js'
import { startServer, type Server } from '../../server/serve.js'
import { BlobStore } from '../../storage/blob-store.js'
import { Metadata } from '../../storage/metadata.js'
import { dbPath } from '../../storage/layout.js'
import { makeTempDir, removeTempDir } from './proc.js'

export interface RegcacheOptions {
  /** name → upstream settings (url required), as in the config file. */
  upstreams: Record<string, Record<string, unknown>>
  defaultUpstream?: string
  /** Extra top-level keys (cache, tls, …). */
  extra?: Record<string, unknown>
  /** Reuse a data directory (restart tests). */
  dataDir?: string
  listen?: string
  /** pino level of the log file (default debug). */
  logLevel?: string
  /** Environment variables for the server beside the test's own (REGCACHE_SENDFILE). */
  env?: Record<string, string>
}

export interface Regcache {
  server: Server
  url: string
  /** host:port, for image references and hosts.toml. */
  host: string
  dataDir: string
  configFile: string
  /** Parsed JSON log lines written so far. */
  logs(): Promise<Record<string, any>[]>
  /** Value of one metric series from /metrics, summed over series matching the labels. */
  metric(name: string, labels?: Record<string, string>): Promise<number>
  /**
   * The data directory as the tests inspect (and damage) it: a second connection to the
   * database beside the server's own, and the content files.
   */
  storage: { meta: Metadata; store: BlobStore }
  stop(): Promise<void>
}

export async function startRegcache(opts: RegcacheOptions): Promise<Regcache> {
  const dir = await makeTempDir()
  const dataDir = opts.dataDir ?? join(dir, 'data')
  const configFile = join(dir, 'config.yaml')
  const doc = {
    listen: opts.listen ?? '127.0.0.1:0',
    dataDir,
    logLevel: opts.logLevel ?? 'debug',
    defaultUpstream: opts.defaultUpstream ?? Object.keys(opts.upstreams)[0],
    upstreams: opts.upstreams,
    ...opts.extra,
  }
  await writeFile(configFile, stringify(doc))
  const config = loadConfig({ file: configFile })
  const logFile = join(dir, 'regcache.log')
  const log = pino({ level: opts.logLevel ?? 'debug' }, pino.destination({ dest: logFile, sync: true }))
  const server = await startServer(config, log, { ...process.env, ...opts.env })
  const url = server.url
  let stopped = false
  let storage: { meta: Metadata; store: BlobStore } | undefined
  return {
    server,
    url,
    host: new URL(url).host,
    dataDir,
    configFile,
    async logs() {
      const text = await readFile(logFile, 'utf8').catch(() => '')
      return text
        .split('\n')
        .filter((l) => l.trim() !== '')
        .map((l) => JSON.parse(l))
    },
    async metric(name, labels = {}) {
      const text = await server.mirror.metrics.registry.getSingleMetricAsString(name)
      let sum = 0
      for (const line of text.split('\n')) {
        if (line.startsWith('#') || line.trim() === '') continue
        const m = /^([^{\s]+)(\{([^}]*)\})?\s+(\S+)/.exec(line)
        if (!m || m[1] !== name) continue
        const ls = Object.fromEntries([...(m[3] ?? '').matchAll(/(\w+)="([^"]*)"/g)].map((x) => [x[1], x[2]]))
        if (Object.entries(labels).every(([k, v]) => ls[k] === v)) sum += Number(m[4])
      }
      return sum
    },
    get storage() {
      storage ??= { meta: new Metadata(dbPath(dataDir), { totals: 'query' }), store: new BlobStore(dataDir) }
      return storage
    },
    async stop() {
      if (stopped) return
      stopped = true
      storage?.meta.close()
      await server.close(2000)
      if (!opts.dataDir) await removeTempDir(dir)
    },
  }
}
