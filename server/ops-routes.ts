// Operator endpoints beside the registry API: health, readiness, metrics and history.

import { access, constants } from 'node:fs/promises'
import type { FastifyInstance } from 'fastify'
import type { Proxy } from '../core/proxy.js'
import { RegistryError } from '../core/errors.js'
import { readHistory } from '../core/history.js'
import { statusOf } from '../core/status.js'
import { STATUS_PAGE } from './status-page.js'

export function opsRoutes(app: FastifyInstance, proxy: Proxy): void {
  const startedAt = Date.now()
  const page = Buffer.from(STATUS_PAGE)
  app.get('/', async (_req, reply) => reply.header('content-type', 'text/html; charset=utf-8').send(page))
  app.get('/api/status', async (_req, reply) => {
    const status = await statusOf(proxy, startedAt)
    return reply.header('content-type', 'application/json').send(Buffer.from(JSON.stringify(status)))
  })
  app.get('/healthz', async (_req, reply) => reply.header('content-type', 'text/plain').send('ok\n'))

  app.get('/readyz', async (_req, reply) => {
    const problems: string[] = []
    try {
      proxy.meta.db.prepare('SELECT 1').get()
    } catch (err) {
      problems.push(`database: ${(err as Error).message}`)
    }
    try {
      await access(proxy.config.dataDir, constants.W_OK)
    } catch (err) {
      problems.push(`data directory: ${(err as Error).message}`)
    }
    reply.header('content-type', 'text/plain')
    if (problems.length > 0) return reply.code(503).send(`not ready\n${problems.join('\n')}\n`)
    return reply.send('ready\n')
  })

  app.get('/metrics', async (_req, reply) => {
    proxy.refreshCacheGauges()
    const text = await proxy.metrics.registry.metrics()
    return reply.header('content-type', proxy.metrics.registry.contentType).send(text)
  })

  app.get('/api/history', async (req, reply) => {
    const image = (req.query as Record<string, string | undefined>).image
    if (!image) throw new RegistryError('NAME_INVALID', 'the image query parameter is required, e.g. ?image=docker.io/library/alpine:latest')
    const history = readHistory(proxy.meta, image, proxy.config)
    return reply.header('content-type', 'application/json').send(Buffer.from(JSON.stringify(history)))
  })
}
