// Every error leaves as an OCI error body (`{"errors":[{code,message,detail}]}`) with the status
// the registry in core/errors.ts gives its code.

import type { FastifyError, FastifyReply, FastifyRequest } from 'fastify'
import { RegistryError } from '../core/errors.js'
import { UpstreamUnreachableError } from '../upstream/errors.js'

export function toRegistryError(err: unknown): RegistryError {
  if (err instanceof RegistryError) return err
  if (err instanceof UpstreamUnreachableError) return new RegistryError('UNAVAILABLE', `upstream ${err.upstream} unavailable (${err.failure})`)
  const fe = err as FastifyError
  if (fe?.statusCode === 404) return new RegistryError('NOT_FOUND')
  if (fe?.statusCode !== undefined && fe.statusCode >= 400 && fe.statusCode < 500) {
    return new RegistryError('UNSUPPORTED', fe.message, undefined, {}, fe.statusCode)
  }
  return new RegistryError('UNAVAILABLE', 'internal error', undefined, {}, 500)
}

export function errorHandler(err: unknown, req: FastifyRequest, reply: FastifyReply): void {
  const e = toRegistryError(err)
  if (e.status >= 500) req.log.error({ err }, 'request failed')
  if (reply.sent || reply.raw.headersSent) {
    reply.raw.destroy(err as Error)
    return
  }
  // Headers set for a success (digest, length) must not leak into the error.
  for (const h of ['content-length', 'docker-content-digest', 'etag', 'content-range', 'accept-ranges']) reply.removeHeader(h)
  reply.code(e.status).headers(e.headers)
  const body = Buffer.from(JSON.stringify({ errors: [{ code: e.code === 'RANGE_INVALID' ? 'SIZE_INVALID' : e.code, message: e.message, detail: e.detail ?? null }] }))
  reply.header('content-type', 'application/json')
  if (e.status === 416 && e.headers['content-range']) reply.header('content-range', e.headers['content-range'])
  reply.send(req.method === 'HEAD' ? undefined : body)
}
