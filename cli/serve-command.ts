// regcache serve: the long-running mirror.

import { mkdirSync } from 'node:fs'
import { SERVE_USAGE } from './usage.js'
import { configOrExit, parse, usageFailure } from './common.js'
import { startServer } from '../server/serve.js'
import { sendModeFromEnv } from '../server/registry/blob-sendfile.js'
import { DataDirInUseError } from '../storage/data-lock.js'
import { createLogger } from './logger.js'
import { HtpasswdError } from '../auth/htpasswd.js'

export async function serveCommand(argv: string[]): Promise<number> {
  let values
  try {
    ;({ values } = parse(argv, { config: { type: 'string', short: 'c' } }))
  } catch (err) {
    return usageFailure(err, SERVE_USAGE)
  }
  if (values.help) {
    process.stdout.write(SERVE_USAGE)
    return 0
  }
  const config = configOrExit(values.config)
  if (!config) return 2
  try {
    sendModeFromEnv(process.env.REGCACHE_SENDFILE)
  } catch (err) {
    process.stderr.write(`regcache: ${(err as Error).message}\n`)
    return 2
  }
  // The cache holds what private upstreams served: only regcache's own user may read it
  // (directories 0700, files 0600), whatever the umask the process was started with.
  process.umask(0o077)
  try {
    mkdirSync(config.dataDir, { recursive: true, mode: 0o700 })
  } catch (err) {
    process.stderr.write(`regcache: cannot create the data directory ${config.dataDir}: ${describeSystemError(err)}\n`)
    return 1
  }
  const log = createLogger({ level: config.logLevel })
  let server
  try {
    server = await startServer(config, log)
  } catch (err) {
    // A configuration problem found while starting: said like the config loader's, exit 2.
    if (err instanceof HtpasswdError) {
      process.stderr.write(`regcache: auth.htpasswd: ${err.message}\n`)
      return 2
    }
    if (err instanceof DataDirInUseError) {
      process.stderr.write(`regcache: ${err.message}\n`)
      return 1
    }
    const e = err as NodeJS.ErrnoException
    if (e.syscall === 'listen' || e.code === 'EADDRINUSE' || e.code === 'EADDRNOTAVAIL') {
      process.stderr.write(`regcache: cannot listen on ${config.listen.host}:${config.listen.port}: ${describeSystemError(err)}\n`)
      return 1
    }
    if (typeof e.path === 'string' && e.path.startsWith(config.dataDir)) {
      process.stderr.write(`regcache: cannot use the data directory ${config.dataDir}: ${describeSystemError(err)} (${e.path})\n`)
      return 1
    }
    throw err
  }
  log.info(
    { url: server.url, dataDir: config.dataDir, upstreams: Object.values(config.upstreams).map((u) => `${u.name}=${u.url}`), defaultUpstream: config.defaultUpstream },
    'regcache listening',
  )
  return new Promise<number>((resolve) => {
    let signals = 0
    const onSignal = (signal: NodeJS.Signals) => {
      signals++
      if (signals > 1) {
        log.warn({ signal }, 'second signal: exiting now')
        process.exit(1)
      }
      log.info({ signal, graceSeconds: config.shutdownGraceMs / 1000 }, 'shutting down: finishing requests and downloads in flight')
      server.close().then(
        () => {
          log.info('stopped')
          resolve(0)
          // Nothing of regcache's is left running; do not wait on stray handles.
          setImmediate(() => process.exit(0))
        },
        (err) => {
          log.error({ err }, 'error while stopping')
          resolve(1)
          setImmediate(() => process.exit(1))
        },
      )
    }
    process.on('SIGTERM', onSignal)
    process.on('SIGINT', onSignal)
  })
}

/** A system error as one readable phrase: "address already in use (EADDRINUSE)". */
function describeSystemError(err: unknown): string {
  const e = err as NodeJS.ErrnoException
  const phrases: Record<string, string> = {
    EADDRINUSE: 'address already in use',
    EADDRNOTAVAIL: 'address not available on this machine',
    EACCES: 'permission denied',
    EPERM: 'operation not permitted',
    EROFS: 'read-only file system',
    ENOTDIR: 'a path component is not a directory',
    EEXIST: 'exists and is not a directory',
    ENOSPC: 'no space left on device',
  }
  const phrase = e?.code !== undefined ? phrases[e.code] : undefined
  return phrase !== undefined ? `${phrase} (${e.code})` : (e?.code ?? String((err as Error)?.message ?? err))
}
