// buildApp: the HTTP side, assembled from a proxy core. Never reads process.env or opens a
// socket; server/serve.ts is the process edge.

import Fastify, { LogController, type FastifyInstance } from 'fastify'
import type { Logger } from 'pino'
import type { Proxy } from '../core/proxy.js'
import { errorHandler } from './error-handler.js'
import { registryRoutes } from './registry-routes.js'
import { opsRoutes } from './ops-routes.js'

export interface AppOptions {
  proxy: Proxy
  log: Logger
  https?: { cert: Buffer; key: Buffer }
}

export function buildApp({ proxy, log, https }: AppOptions): FastifyInstance {
  const app = Fastify({
    loggerInstance: log,
    // One line per request is written in onResponse, with the cache outcome in it.
    logController: new LogController({ disableRequestLogging: true }),
    exposeHeadRoutes: false,
    routerOptions: { maxParamLength: 1024 },
    // Registry clients keep connections open across many requests.
    keepAliveTimeout: 75_000,
    requestIdHeader: 'x-request-id',
    ...(https ? { https } : {}),
  }) as unknown as FastifyInstance

  // Uploads are refused without reading them; any body is left unparsed.
  app.removeAllContentTypeParsers()
  app.addContentTypeParser('*', (_req, payload, done) => {
    payload.resume()
    done(null)
  })

  app.addHook('onRequest', async (_req, reply) => {
    reply.header('docker-distribution-api-version', 'registry/2.0')
  })

  app.addHook('onResponse', async (req, reply) => {
    const o = req.outcome
    const kind = o?.kind ?? 'other'
    const seconds = reply.elapsedTime / 1000
    if (req.url.startsWith('/v2')) {
      proxy.metrics.requests.inc({ kind, method: req.method, status: String(reply.statusCode), outcome: o?.cache ?? 'none' })
      proxy.metrics.requestDuration.observe({ kind }, seconds)
    }
    req.log.info(
      {
        method: req.method,
        url: req.url,
        status: reply.statusCode,
        ms: Math.round(reply.elapsedTime * 10) / 10,
        kind,
        cache: o?.cache,
        upstream: o?.upstream,
        repository: o?.repository,
        digest: o?.digest,
        stale: o?.stale,
      },
      'request',
    )
  })

  app.setErrorHandler(errorHandler)
  app.setNotFoundHandler((req, reply) => errorHandler(Object.assign(new Error('not found'), { statusCode: 404 }), req, reply))

  registryRoutes(app, proxy)
  opsRoutes(app, proxy)
  return app
}
