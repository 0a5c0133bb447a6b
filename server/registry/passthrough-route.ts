// tags/list and referrers: not cached; passed through with the client's Accept, pagination Links
// rewritten so the client follows them through the mirror.

import type { FastifyReply, FastifyRequest } from 'fastify'
import type { Mirror } from '../../core/mirror.js'
import type { Selection } from '../../core/select-upstream.js'
import { resolveTarget, type RegistryQuery } from './target.js'

const PASSED_HEADERS = ['content-length', 'docker-content-digest', 'oci-filters-applied', 'retry-after']
/** What each answer is, whatever upstream labelled it (a browser must not render it as HTML). */
const CONTENT_TYPES = { tags: 'application/json', referrers: 'application/vnd.oci.image.index.v1+json' } as const

export async function servePassthrough(mirror: Mirror, name: string, sub: string, req: FastifyRequest, reply: FastifyReply): Promise<FastifyReply> {
  const head = req.method === 'HEAD'
  const outcome: NonNullable<FastifyRequest['outcome']> = { kind: 'other' }
  req.outcome = outcome
  const query = req.query as RegistryQuery
  const { target, selection } = resolveTarget(mirror, name, req, reply)
  outcome.upstream = target.upstream.name
  outcome.repository = target.repository
  const res = await mirror.passthrough(target, sub + queryWithoutNs(query), req.headers.accept, head ? 'HEAD' : 'GET')
  reply.code(res.status)
  for (const h of PASSED_HEADERS) if (res.headers[h] !== undefined) reply.header(h, res.headers[h])
  reply.header('content-type', sub.startsWith('referrers/') ? CONTENT_TYPES.referrers : CONTENT_TYPES.tags)
  const link = res.headers.link
  if (link !== undefined) reply.header('link', rewriteLink(String(link), mirror.upstreamUrl(target, ''), selection))
  if (head) {
    res.body.dump().catch(() => {})
    return reply.send()
  }
  return reply.send(res.body)
}

/** The client's query (n, last, artifactType, ...) without the `ns` that was meant for the mirror. */
function queryWithoutNs(query: RegistryQuery): string {
  const params = new URLSearchParams()
  for (const [k, v] of Object.entries(query)) {
    if (k === 'ns' || v === undefined) continue
    for (const value of Array.isArray(v) ? v : [v]) params.append(k, value)
  }
  const s = params.toString()
  return s === '' ? '' : `?${s}`
}

/**
 * Upstream's pagination Link names upstream's path (`base` is upstream's URL of the repository);
 * the client must follow it through the mirror, under the name (and ns) it used.
 */
export function rewriteLink(link: string, base: URL, sel: Selection): string {
  return link.replace(/<([^>]*)>/g, (_m, url: string) => {
    let u: URL
    try {
      u = new URL(url, base)
    } catch {
      return `<${url}>`
    }
    let path = u.pathname
    if (path.startsWith(base.pathname)) path = `/v2/${sel.clientName}/${path.slice(base.pathname.length)}`
    if (sel.namespace !== undefined) u.searchParams.set('ns', sel.namespace)
    const q = u.searchParams.toString()
    return `<${path}${q ? `?${q}` : ''}>`
  })
}
