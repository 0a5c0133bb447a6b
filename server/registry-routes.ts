// The OCI distribution pull API under /v2/ (PROTOCOL.md §1). Parses and validates the request,
// hands it to the proxy core, and writes the exact headers clients depend on.

import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import type { Proxy } from '../core/proxy.js'
import { RegistryError } from '../core/errors.js'
import { isValidDigest, isValidName, isValidTag, looksLikeDigest, parseApiPath } from '../core/reference.js'
import { parseRange, parseRangeSpec } from './range.js'
import { selectUpstream, type Selection } from './select-upstream.js'
import type { Target, ManifestResult } from '../core/manifests.js'
import type { Upstream } from '../core/upstreams.js'

declare module 'fastify' {
  interface FastifyRequest {
    /** Fields for the one log line per request. */
    outcome?: { kind: 'manifest' | 'blob' | 'other'; cache?: string; upstream?: string; repository?: string; digest?: string; stale?: string }
  }
}

export function registryRoutes(app: FastifyInstance, proxy: Proxy): void {
  const upstreamNames = new Set(proxy.upstreams.all().map((u) => u.name))

  const target = (req: FastifyRequest, name: string): { t: Target; sel: Selection } => {
    const query = req.query as Record<string, string | string[] | undefined>
    const ns = Array.isArray(query.ns) ? query.ns[0] : query.ns
    if (!isValidName(name)) throw new RegistryError('NAME_INVALID', `invalid repository name ${JSON.stringify(name)}`)
    const sel = selectUpstream(name, ns, upstreamNames, proxy.defaultUpstream)
    if (!isValidName(sel.repository)) throw new RegistryError('NAME_INVALID', `invalid repository name ${JSON.stringify(sel.repository)}`)
    const upstream = proxy.upstreams.get(sel.upstream) as Upstream
    return { t: { upstream, repository: sel.repository }, sel }
  }

  const handle = async (req: FastifyRequest, reply: FastifyReply) => {
    const path = (req.raw.url ?? '/').split('?')[0]
    const head = req.method === 'HEAD'
    const api = parseApiPath(path)
    switch (api.endpoint) {
      case 'base':
        return reply.header('content-type', 'application/json').send(head ? undefined : Buffer.from('{}'))
      case 'manifests': {
        req.outcome = { kind: 'manifest' }
        const { t, sel } = target(req, api.name)
        Object.assign(req.outcome, { upstream: t.upstream.name, repository: t.repository })
        if (sel.namespace !== undefined) reply.header('oci-namespace', sel.namespace)
        let result: ManifestResult
        if (looksLikeDigest(api.reference)) {
          if (!isValidDigest(api.reference)) throw new RegistryError('DIGEST_INVALID', `invalid digest ${JSON.stringify(api.reference)}`)
          result = await proxy.manifests.byDigest(t, api.reference, req.headers.accept)
        } else {
          if (!isValidTag(api.reference)) throw new RegistryError('TAG_INVALID', `invalid tag ${JSON.stringify(api.reference)}`)
          result = await proxy.manifests.byTag(t, api.reference, req.headers.accept)
        }
        Object.assign(req.outcome, { cache: result.outcome, digest: result.digest })
        reply
          .header('content-type', result.mediaType)
          .header('content-length', result.size)
          .header('docker-content-digest', result.digest)
          .header('etag', `"${result.digest}"`)
          .header('x-regcache-cache', result.outcome)
        if (result.stale) {
          const stale = `age=${Math.round(result.stale.ageMs / 1000)}, reason=${result.stale.reason}`
          req.outcome.stale = stale
          reply.header('x-regcache-stale', stale)
        }
        if (!head) proxy.metrics.bytesServed.inc({ source: result.outcome === 'miss' || result.outcome === 'changed' ? 'upstream' : 'cache' }, result.size)
        return reply.send(head ? undefined : result.body)
      }
      case 'blobs': {
        req.outcome = { kind: 'blob' }
        const { t, sel } = target(req, api.name)
        Object.assign(req.outcome, { upstream: t.upstream.name, repository: t.repository, digest: api.reference })
        if (!isValidDigest(api.reference)) throw new RegistryError('DIGEST_INVALID', `invalid digest ${JSON.stringify(api.reference)}`)
        if (sel.namespace !== undefined) reply.header('oci-namespace', sel.namespace)
        const blob = await proxy.blobs.get(t, api.reference, head ? 'HEAD' : 'GET', parseRangeSpec(req.headers.range))
        req.outcome.cache = blob.outcome
        reply
          .header('content-type', 'application/octet-stream')
          .header('docker-content-digest', blob.digest)
          .header('etag', `"${blob.digest}"`)
          .header('accept-ranges', 'bytes')
          .header('x-regcache-cache', blob.outcome)
        if (blob.kind === 'forwarded') {
          reply.code(206).header('content-range', `bytes ${blob.start}-${blob.end}/${blob.size}`).header('content-length', blob.end - blob.start + 1)
          let relayed = 0
          blob.body.on('data', (c: Buffer) => (relayed += c.length))
          blob.body.on('close', () => proxy.metrics.bytesServed.inc({ source: 'upstream' }, relayed))
          return reply.send(blob.body)
        }
        const range = parseRange(req.headers.range, blob.size)
        if (range.kind === 'unsatisfiable') {
          reply.header('content-range', `bytes */${blob.size}`)
          throw new RegistryError('RANGE_INVALID', `range ${req.headers.range} not satisfiable for a blob of ${blob.size} bytes`, undefined, {
            'content-range': `bytes */${blob.size}`,
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
        stream.on('close', () => proxy.metrics.bytesServed.inc({ source: blob.source }, sent))
        return reply.send(stream)
      }
      case 'tags':
      case 'referrers': {
        req.outcome = { kind: 'other' }
        const { t, sel } = target(req, api.name)
        if (api.endpoint === 'referrers' && !isValidDigest(api.reference)) {
          throw new RegistryError('DIGEST_INVALID', `invalid digest ${JSON.stringify(api.reference)}`)
        }
        Object.assign(req.outcome, { upstream: t.upstream.name, repository: t.repository })
        const query = (req.raw.url ?? '').includes('?') ? (req.raw.url as string).slice((req.raw.url as string).indexOf('?')) : ''
        const sub = api.endpoint === 'tags' ? 'tags/list' : `referrers/${api.reference}`
        const res = await proxy.passthrough(t, sub + stripNs(query), req.headers.accept, head ? 'HEAD' : 'GET')
        reply.code(res.status)
        for (const h of ['content-type', 'content-length', 'docker-content-digest', 'oci-filters-applied', 'retry-after']) {
          if (res.headers[h] !== undefined) reply.header(h, res.headers[h])
        }
        const link = res.headers.link
        if (link !== undefined) reply.header('link', rewriteLink(String(link), t, sel))
        if (sel.namespace !== undefined) reply.header('oci-namespace', sel.namespace)
        if (head) {
          res.body.dump().catch(() => {})
          return reply.send()
        }
        return reply.send(res.body)
      }
      case 'uploads':
        throw new RegistryError('UNSUPPORTED', 'regcache is a read-only mirror: pushing is not supported')
      default:
        throw new RegistryError('NOT_FOUND', `no such endpoint: ${path}`)
    }
  }

  app.route({ method: ['GET', 'HEAD'], url: '/v2', handler: handle })
  app.route({ method: ['GET', 'HEAD'], url: '/v2/', handler: handle })
  app.route({ method: ['GET', 'HEAD'], url: '/v2/*', handler: handle })
  app.route({
    method: ['POST', 'PUT', 'PATCH', 'DELETE'],
    url: '/v2/*',
    handler: async () => {
      throw new RegistryError('UNSUPPORTED', 'regcache is a read-only mirror: pushing and deleting are not supported')
    },
  })
}

function stripNs(query: string): string {
  if (query === '') return ''
  const params = new URLSearchParams(query.slice(1))
  params.delete('ns')
  const s = params.toString()
  return s === '' ? '' : `?${s}`
}

/**
 * Upstream's pagination Link names upstream's path; the client must follow it through the
 * mirror, under the name (and ns) it used.
 */
export function rewriteLink(link: string, t: Target, sel: Selection): string {
  return link.replace(/<([^>]*)>/g, (_m, url: string) => {
    let u: URL
    try {
      u = new URL(url, t.upstream.client.url(t.repository, ''))
    } catch {
      return `<${url}>`
    }
    const upstreamPrefix = t.upstream.client.url(t.repository, '').pathname
    let path = u.pathname
    if (path.startsWith(upstreamPrefix)) path = `/v2/${sel.clientName}/${path.slice(upstreamPrefix.length)}`
    if (sel.namespace !== undefined) u.searchParams.set('ns', sel.namespace)
    const q = u.searchParams.toString()
    return `<${path}${q ? `?${q}` : ''}>`
  })
}
