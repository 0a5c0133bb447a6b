// regcache serve: the long-running mirror.

import { SERVE_USAGE } from './usage.js'
import { configOrExit, parse, usageFailure } from './common.js'
import { startServer } from '../server/serve.js'
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
