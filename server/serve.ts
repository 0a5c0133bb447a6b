// The process edge: opens the mirror, listens, and shuts down gracefully.

import { readFileSync } from 'node:fs'
import type { FastifyInstance } from 'fastify'
import type { Logger } from 'pino'
import type { Config } from '../config/config.js'
import { Mirror } from '../core/mirror.js'
import { buildApp } from './app.js'
import { openClientAuth } from './auth-hook.js'
import { loadSendfile, sendModeFromEnv } from './registry/blob-sendfile.js'

export interface Server {
  app: FastifyInstance
  mirror: Mirror
  /** The address actually bound (port 0 picks a free one). */
  url: string
  /** Stops accepting, lets requests and fills in flight finish within `graceMs`, closes the database. */
  close(graceMs?: number): Promise<void>
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms).unref())

/**
 * `env.REGCACHE_SENDFILE`: how blob bodies leave (server/registry/blob-sendfile.ts): `copy` (the
 * default) or `kernel` through the native addon, `off` through Node's streams (a way out should
 * the native path misbehave somewhere).
 */
export async function startServer(config: Config, log: Logger, env: NodeJS.ProcessEnv = process.env): Promise<Server> {
  const sendMode = sendModeFromEnv(env.REGCACHE_SENDFILE)
  const mirror = await Mirror.open({ config, log })
  let auth
  try {
    auth = await openClientAuth(config, log)
  } catch (err) {
    await mirror.close()
    throw err
  }
  const https = config.tls ? { cert: readFileSync(config.tls.certFile), key: readFileSync(config.tls.keyFile) } : undefined
  const sendfile = https || sendMode === 'off' ? undefined : loadSendfile(sendMode)
  if (sendfile && !sendfile.ok) log.info({ reason: sendfile.reason }, 'blob bodies are streamed through Node (the native sender is not available)')
  const app = buildApp({ mirror, log, https, auth, sendfile: sendfile?.ok ? sendfile.addon : undefined })
  try {
    await app.listen({ host: config.listen.host, port: config.listen.port })
  } catch (err) {
    auth?.close()
    await mirror.close()
    throw err
  }
  const addr = app.server.address()
  const port = typeof addr === 'object' && addr ? addr.port : config.listen.port
  const host = config.listen.host.includes(':') ? `[${config.listen.host}]` : config.listen.host
  const url = `${https ? 'https' : 'http'}://${host === '0.0.0.0' ? '127.0.0.1' : host === '[::]' ? '[::1]' : host}:${port}`
  let closing: Promise<void> | undefined
  return {
    app,
    mirror,
    url,
    close(graceMs = config.shutdownGraceMs) {
      closing ??= (async () => {
        // Clients keep connections open; each one is closed as soon as its response is done.
        const idle = setInterval(() => app.server.closeIdleConnections(), 100)
        const graceful = Promise.all([app.close(), mirror.drain()]).then(() => false)
        const timedOut = await Promise.race([graceful, sleep(graceMs).then(() => true)])
        clearInterval(idle)
        if (timedOut) {
          log.warn({ graceMs, fillsInFlight: mirror.fillsInFlight }, 'grace period over: closing connections and aborting downloads')
          app.server.closeAllConnections()
          await mirror.abortDownloads()
          await Promise.race([mirror.drain(), sleep(2000)])
        }
        auth?.close()
        await mirror.close()
      })()
      return closing
    },
  }
}
