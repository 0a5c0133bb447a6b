// GET/HEAD /v2/<name>/blobs/<digest>: from the cache, or from the one fill shared by every client,
// with single byte ranges.

import type { FastifyReply, FastifyRequest } from 'fastify'
import type { Mirror } from '../../core/mirror.js'
import { RegistryError } from '../../core/errors.js'
import { isValidDigest } from '../../oci/reference.js'
import { parseRange } from '../range.js'
import { resolveTarget } from './target.js'

export async function serveBlob(mirror: Mirror, name: string, digest: string, req: FastifyRequest, reply: FastifyReply): Promise<FastifyReply> {
  const head = req.method === 'HEAD'
  const outcome: NonNullable<FastifyRequest['outcome']> = { kind: 'blob', digest }
  req.outcome = outcome
  const { target } = resolveTarget(mirror, name, req, reply)
  outcome.upstream = target.upstream.name
  outcome.repository = target.repository
  if (!isValidDigest(digest)) throw new RegistryError('DIGEST_INVALID', `invalid digest ${JSON.stringify(digest)}`)
  const blob = await mirror.blob(target, digest, head ? 'HEAD' : 'GET')
  outcome.cache = blob.outcome
  reply
    .header('content-type', 'application/octet-stream')
    .header('docker-content-digest', blob.digest)
    .header('etag', `"${blob.digest}"`)
    .header('accept-ranges', 'bytes')
    .header('x-regcache-cache', blob.outcome)
  const range = parseRange(req.headers.range, blob.size)
  if (range.kind === 'unsatisfiable') {
    throw new RegistryError('RANGE_INVALID', `range ${req.headers.range} not satisfiable for a blob of ${blob.size} bytes`, {
      headers: { 'content-range': `bytes */${blob.size}` },
    })
  }
  let start = 0
  let end = blob.size - 1
  if (range.kind === 'partial') {
    ;({ start, end } = range)
    reply.code(206).header('content-range', `bytes ${start}-${end}/${blob.size}`)
  }
  const length = Math.max(0, end - start + 1)
  reply.header('content-length', length)
  if (head) return reply.send()
  if (length === 0) return reply.send(Buffer.alloc(0))
  const stream = blob.open(start, end)
  let sent = 0
  stream.on('data', (c: Buffer) => (sent += c.length))
  stream.on('close', () => mirror.metrics.bytesServed.inc({ source: blob.source }, sent))
  return reply.send(stream)
}
