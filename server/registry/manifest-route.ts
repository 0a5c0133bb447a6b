// GET/HEAD /v2/<name>/manifests/<reference>: by tag (revalidated) or by digest (immutable).

import type { FastifyReply, FastifyRequest } from 'fastify'
import type { Mirror } from '../../core/mirror.js'
import { RegistryError } from '../../core/errors.js'
import { isValidDigest, isValidTag, looksLikeDigest } from '../../oci/reference.js'
import { resolveTarget } from './target.js'

export async function serveManifest(mirror: Mirror, name: string, reference: string, req: FastifyRequest, reply: FastifyReply): Promise<FastifyReply> {
  const head = req.method === 'HEAD'
  const outcome: NonNullable<FastifyRequest['outcome']> = { kind: 'manifest' }
  req.outcome = outcome
  const { target } = resolveTarget(mirror, name, req, reply)
  outcome.upstream = target.upstream.name
  outcome.repository = target.repository
  let result
  if (looksLikeDigest(reference)) {
    if (!isValidDigest(reference)) throw new RegistryError('DIGEST_INVALID', `invalid digest ${JSON.stringify(reference)}`)
    result = await mirror.manifestByDigest(target, reference, req.headers.accept)
  } else {
    if (!isValidTag(reference)) throw new RegistryError('TAG_INVALID', `invalid tag ${JSON.stringify(reference)}`)
    result = await mirror.manifestByTag(target, reference, req.headers.accept)
  }
  outcome.cache = result.outcome
  outcome.digest = result.digest
  reply
    .header('content-type', result.mediaType)
    .header('content-length', result.size)
    .header('docker-content-digest', result.digest)
    .header('etag', `"${result.digest}"`)
    .header('x-regcache-cache', result.outcome)
  if (result.stale) {
    const stale = `age=${Math.round(result.stale.ageMs / 1000)}, reason=${result.stale.reason}`
    outcome.stale = stale
    reply.header('x-regcache-stale', stale)
  }
  if (!head) mirror.metrics.bytesServed.inc({ source: result.outcome === 'miss' || result.outcome === 'changed' ? 'upstream' : 'cache' }, result.size)
  return reply.send(head ? undefined : result.body)
}
