// buildApp: the HTTP side, assembled from a Mirror. Never reads process.env or opens a socket;
// server/serve.ts is the process edge.

import Fastify, { LogController, type FastifyInstance } from 'fastify'
import type { Logger } from 'pino'
import type { Mirror } from '../core/mirror.js'
import { errorHandler } from './error-handler.js'
import { clientErrorHandler } from './client-error.js'
import { RegistryError } from '../core/errors.js'
import { registryPlugin } from './registry/plugin.js'
import { opsPlugin } from './ops-plugin.js'
import { installAuthHook, type ClientAuth } from './auth-hook.js'
import './request-outcome.js'
import type { SendfileAddon } from './registry/blob-sendfile.js'

export interface AppOptions {
  mirror: Mirror
  log: Logger
  https?: { cert: Buffer; key: Buffer }
  /** Client authentication (the `auth:` section); absent: every client may pull. */
  auth?: ClientAuth
  /** Sends blob bodies (cached and being downloaded) with sendfile(2) (server/registry/blob-sendfile.ts); absent: they are streamed. */
  sendfile?: SendfileAddon
}

export function buildApp({ mirror, log, https, auth, sendfile }: AppOptions): FastifyInstance {
  const app = Fastify({
    loggerInstance: log,
    // One line per request is written in onResponse, with the cache outcome in it.
    logController: new LogController({ disableRequestLogging: true }),
    exposeHeadRoutes: false,
    routerOptions: { maxParamLength: 1024 },
    // Registry clients keep connections open across many requests.
    keepAliveTimeout: 75_000,
    requestIdHeader: 'x-request-id',
    // Malformed requests get OCI error bodies too: those the HTTP parser refuses, and those
    // fastify's router refuses (a URL that does not decode).
    clientErrorHandler,
    frameworkErrors: (err, req, reply) => errorHandler(err, req, reply),
    ...(https ? { https } : {}),
  }) as unknown as FastifyInstance

  // Uploads are refused without reading them; any body is left unparsed.
  app.removeAllContentTypeParsers()
  app.addContentTypeParser('*', (_req, payload, done) => {
    payload.resume()
    done(null)
  })

  app.decorateRequest('outcome', null)
  app.decorateRequest('user', null)
  app.decorateRequest('authorizedTarget', null)

  app.addHook('onRequest', async (_req, reply) => {
    reply.header('docker-distribution-api-version', 'registry/2.0')
    // Nothing regcache serves is meant to be sniffed into something else (a manifest as HTML).
    reply.header('x-content-type-options', 'nosniff')
  })

  app.addHook('onResponse', async (req, reply) => {
    const o = req.outcome
    const kind = o?.kind ?? 'other'
    const seconds = reply.elapsedTime / 1000
    if (req.url.startsWith('/v2')) {
      mirror.metrics.requests.inc({ kind, method: req.method, status: String(reply.statusCode), outcome: o?.cache ?? 'none' })
      mirror.metrics.requestDuration.observe({ kind }, seconds)
    }
    req.log.info(
      {
        method: req.method,
        url: req.url,
        status: reply.statusCode,
        ms: Math.round(reply.elapsedTime * 10) / 10,
        kind,
        user: req.user ?? undefined,
        cache: o?.cache,
        upstream: o?.upstream,
        repository: o?.repository,
        digest: o?.digest,
        stale: o?.stale,
      },
      'request',
    )
  })

  if (auth !== undefined) installAuthHook(app, { auth, mirror, log })

  app.setErrorHandler(errorHandler)
  app.setNotFoundHandler((req, reply) => errorHandler(new RegistryError('NOT_FOUND', `no such endpoint: ${req.url.split('?')[0]}`), req, reply))

  // Plugins load when the app is readied (listen, inject or ready).
  app.register(registryPlugin, { mirror, sendfile })
  app.register(opsPlugin, { mirror })
  return app
}
