// Operator endpoints beside the registry API, as a fastify plugin: the status page and its JSON,
// liveness, readiness, Prometheus metrics and tag history.

import { readFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import type { FastifyInstance } from 'fastify'
import type { Mirror } from '../core/mirror.js'
import { RegistryError } from '../core/errors.js'
import { STATUS_PAGE } from './status-page.js'

export interface OpsPluginOptions {
  mirror: Mirror
}

const json = (value: unknown) => Buffer.from(JSON.stringify(value))

export async function opsPlugin(app: FastifyInstance, { mirror }: OpsPluginOptions): Promise<void> {
  const page = Buffer.from(STATUS_PAGE)
  app.get('/', async (_req, reply) => reply.header('content-type', 'text/html; charset=utf-8').send(page))
  // The chart library, served from node_modules: the page needs nothing from the internet.
  const require = createRequire(import.meta.url)
  const uplotJs = readFileSync(require.resolve('uplot/dist/uPlot.iife.min.js'))
  const uplotCss = readFileSync(require.resolve('uplot/dist/uPlot.min.css'))
  app.get('/assets/uplot.js', async (_req, reply) => reply.header('content-type', 'text/javascript; charset=utf-8').header('cache-control', 'max-age=86400').send(uplotJs))
  app.get('/assets/uplot.css', async (_req, reply) => reply.header('content-type', 'text/css; charset=utf-8').header('cache-control', 'max-age=86400').send(uplotCss))
  app.get('/api/series', async (_req, reply) => reply.header('content-type', 'application/json').send(json(mirror.series())))
  app.get('/api/status', async (_req, reply) => reply.header('content-type', 'application/json').send(json(await mirror.status())))
  app.get('/healthz', async (_req, reply) => reply.header('content-type', 'text/plain').send('ok\n'))

  app.get('/readyz', async (_req, reply) => {
    const problems = await mirror.readinessProblems()
    reply.header('content-type', 'text/plain')
    if (problems.length > 0) return reply.code(503).send(`not ready\n${problems.join('\n')}\n`)
    return reply.send('ready\n')
  })

  app.get('/metrics', async (_req, reply) => {
    const { contentType, text } = await mirror.metricsText()
    return reply.header('content-type', contentType).send(text)
  })

  app.get<{ Querystring: { image?: string | string[] } }>('/api/history', async (req, reply) => {
    const image = req.query.image
    if (Array.isArray(image)) throw new RegistryError('NAME_INVALID', 'give the image query parameter once')
    if (!image) throw new RegistryError('NAME_INVALID', 'the image query parameter is required, e.g. ?image=docker.io/library/alpine:latest')
    return reply.header('content-type', 'application/json').send(json(mirror.history(image)))
  })
}
