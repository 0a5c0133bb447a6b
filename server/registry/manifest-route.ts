// GET/HEAD /v2/<name>/manifests/<reference>: by tag (revalidated) or by digest (immutable).

import type { FastifyReply, FastifyRequest } from 'fastify'
import type { Mirror } from '../../core/mirror.js'
import { RegistryError } from '../../core/errors.js'
import { isValidDigest, isValidTag, looksLikeDigest } from '../../oci/reference.js'
import { MANIFEST_MEDIA_TYPES } from '../../oci/media-types.js'
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
    // Neither a tag nor a digest: no manifest can have this name (the conformance suite expects 404).
    if (!isValidTag(reference)) throw new RegistryError('MANIFEST_UNKNOWN', `no manifest can be named ${JSON.stringify(reference)}: neither a valid tag nor a digest`)
    result = await mirror.manifestByTag(target, reference, req.headers.accept)
  }
  outcome.cache = result.outcome
  outcome.digest = result.digest
  // Only a manifest type ever goes out as a manifest's Content-Type (one stored before upstream
  // types were checked could be anything).
  if (!MANIFEST_MEDIA_TYPES.has(result.mediaType)) {
    throw new RegistryError('UPSTREAM_ERROR', `the cached manifest ${result.digest} has media type ${JSON.stringify(result.mediaType)}, which is not a manifest type`)
  }
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
  // prefetch with switch: when-cached: the tag moved upstream, the previous digest is served until the new image is cached.
  if (result.pending) reply.header('x-regcache-prefetch', `pending; serving=${result.digest}`)
  if (!head) mirror.metrics.bytesServed.inc({ source: result.outcome === 'miss' || result.outcome === 'changed' ? 'upstream' : 'cache' }, result.size)
  return reply.send(head ? undefined : result.body)
}
