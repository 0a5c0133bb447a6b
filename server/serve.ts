// The process edge: opens the proxy core, listens, and shuts down gracefully.

import { readFileSync } from 'node:fs'
import type { FastifyInstance } from 'fastify'
import type { Logger } from 'pino'
import type { Config } from '../config/config.js'
import { Proxy } from '../core/proxy.js'
import { buildApp } from './app.js'

export interface Server {
  app: FastifyInstance
  proxy: Proxy
  /** The address actually bound (port 0 picks a free one). */
  url: string
  /** Stops accepting, lets requests and fills in flight finish within `graceMs`, closes the database. */
  close(graceMs?: number): Promise<void>
}

export async function startServer(config: Config, log: Logger): Promise<Server> {
  const proxy = await Proxy.open({ config, log })
  const https = config.tls ? { cert: readFileSync(config.tls.certFile), key: readFileSync(config.tls.keyFile) } : undefined
  const app = buildApp({ proxy, log, https })
  try {
    await app.listen({ host: config.listen.host, port: config.listen.port })
  } catch (err) {
    await proxy.close()
    throw err
  }
  const addr = app.server.address()
  const port = typeof addr === 'object' && addr ? addr.port : config.listen.port
  const host = config.listen.host.includes(':') ? `[${config.listen.host}]` : config.listen.host
  const url = `${https ? 'https' : 'http'}://${host === '0.0.0.0' ? '127.0.0.1' : host === '[::]' ? '[::1]' : host}:${port}`
  let closing: Promise<void> | undefined
  return {
    app,
    proxy,
    url,
    close(graceMs = config.shutdownGraceMs) {
      closing ??= (async () => {
        const deadline = new Promise<void>((r) => setTimeout(r, graceMs).unref())
        await Promise.race([Promise.all([app.close(), proxy.blobs.drain()]), deadline])
        await proxy.close()
      })()
      return closing
    },
  }
}
