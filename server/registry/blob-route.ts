// GET/HEAD /v2/<name>/blobs/<digest>: from the cache, or from the one fill shared by every client,
// with single byte ranges; a range the fill has not reached yet comes from upstream at once.

import type { FastifyReply, FastifyRequest } from 'fastify'
import type { Mirror } from '../../core/mirror.js'
import { RegistryError } from '../../core/errors.js'
import { isValidDigest } from '../../oci/reference.js'
import { parseRange, parseRangeSpec } from '../range.js'
import { resolveTarget } from './target.js'
import { trySendfile, type SendfileAddon } from './blob-sendfile.js'

/** `sendfile`: the addon, when cached bodies may be sent with sendfile(2) (blob-sendfile.ts). */
export async function serveBlob(mirror: Mirror, name: string, digest: string, req: FastifyRequest, reply: FastifyReply, sendfile?: SendfileAddon): Promise<FastifyReply> {
  const head = req.method === 'HEAD'
  const outcome: NonNullable<FastifyRequest['outcome']> = { kind: 'blob', digest }
  req.outcome = outcome
  const { target } = resolveTarget(mirror, name, req, reply)
  outcome.upstream = target.upstream.name
  outcome.repository = target.repository
  if (!isValidDigest(digest)) throw new RegistryError('DIGEST_INVALID', `invalid digest ${JSON.stringify(digest)}`)
  const blob = await mirror.blob(target, digest, head ? 'HEAD' : 'GET', head ? undefined : parseRangeSpec(req.headers.range))
  outcome.cache = blob.outcome
  // Redirect mode: the store serves the bytes (and ranges) itself, from a URL that expires soon.
  if (blob.kind === 'blob' && blob.redirect !== undefined && !head) return reply.code(307).header('location', blob.redirect).header('cache-control', 'no-store').send()
  reply
    .header('content-type', 'application/octet-stream')
    .header('docker-content-digest', blob.digest)
    .header('etag', `"${blob.digest}"`)
    .header('accept-ranges', 'bytes')
    .header('x-regcache-cache', blob.outcome)
  if (blob.kind === 'forwarded') {
    // Lazy pulling: a range of a blob not cached yet, relayed from upstream (never stored).
    reply.code(206).header('content-range', `bytes ${blob.start}-${blob.end}/${blob.size}`).header('content-length', blob.end - blob.start + 1)
    let relayed = 0
    blob.body.on('data', (c: Buffer) => (relayed += c.length))
    blob.body.on('close', () => mirror.metrics.bytesServed.inc({ source: 'upstream' }, relayed))
    return reply.send(blob.body)
  }
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
  const countSent = (bytes: number) => mirror.metrics.bytesServed.inc({ source: blob.source }, bytes)
  if (sendfile && (await trySendfile(sendfile, blob, start, end, req, reply, countSent))) return reply
  const stream = blob.open(start, end)
  let sent = 0
  stream.on('data', (c: Buffer) => (sent += c.length))
  stream.on('close', () => countSent(sent))
  return reply.send(stream)
}
