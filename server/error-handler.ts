// Every error leaves as an OCI error body (`{"errors":[{code,message,detail}]}`) with the status
// core/errors.ts gives its code, fastify's own client errors (bad headers, bodies) included.

import type { FastifyError, FastifyReply, FastifyRequest } from 'fastify'
import { RegistryError, toRegistryError } from '../core/errors.js'

function isFastifyClientError(err: unknown): err is FastifyError & { statusCode: number } {
  const status = (err as FastifyError | undefined)?.statusCode
  return err instanceof Error && !(err instanceof RegistryError) && typeof status === 'number' && status >= 400 && status < 500
}

export function errorHandler(err: unknown, req: FastifyRequest, reply: FastifyReply): void {
  let e: RegistryError
  if (isFastifyClientError(err)) {
    e =
      err.statusCode === 404
        ? new RegistryError('NOT_FOUND')
        : err.statusCode === 400
          ? new RegistryError('REQUEST_INVALID', err.message)
          : new RegistryError('UNSUPPORTED', err.message, { status: err.statusCode })
  } else {
    e = toRegistryError(err)
  }
  if (e.status >= 500) req.log.error({ err }, 'request failed')
  if (reply.sent || reply.raw.headersSent) {
    reply.raw.destroy(err instanceof Error ? err : undefined)
    return
  }
  sendError(e, req, reply)
}

export function sendError(e: RegistryError, req: FastifyRequest, reply: FastifyReply): void {
  // Headers set for a success (digest, length) must not leak into the error.
  for (const h of ['content-length', 'docker-content-digest', 'etag', 'content-range', 'accept-ranges']) reply.removeHeader(h)
  reply.code(e.status).headers(e.headers)
  reply.header('content-type', 'application/json')
  // Also set here: errors fastify raises before the onRequest hooks (a URL that does not decode).
  reply.header('x-content-type-options', 'nosniff')
  reply.send(req.method === 'HEAD' ? undefined : ociErrorBody(e))
}

/** The OCI error body of one error. */
export function ociErrorBody(e: RegistryError): Buffer {
  return Buffer.from(JSON.stringify({ errors: [{ code: e.wireCode, message: e.message, detail: e.detail ?? null }] }))
}
