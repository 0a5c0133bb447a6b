// From a request's name and `ns` to the upstream and repository it is for, with the name checks
// every registry endpoint shares.

import type { FastifyReply, FastifyRequest } from 'fastify'
import type { Mirror } from '../../core/mirror.js'
import { RegistryError } from '../../core/errors.js'
import type { Selection } from '../../core/select-upstream.js'
import type { Target } from '../../core/target.js'
import { isValidName } from '../../oci/reference.js'

export interface RegistryQuery {
  ns?: string | string[]
  [key: string]: string | string[] | undefined
}

export function resolveTarget(mirror: Mirror, name: string, req: FastifyRequest, reply: FastifyReply): { target: Target; selection: Selection } {
  const query = req.query as RegistryQuery
  if (!isValidName(name)) throw new RegistryError('NAME_INVALID', `invalid repository name ${JSON.stringify(name)}`)
  const ns = Array.isArray(query.ns) ? query.ns[0] : query.ns
  const resolved = mirror.select(name, ns)
  if (!isValidName(resolved.selection.repository)) {
    throw new RegistryError('NAME_INVALID', `invalid repository name ${JSON.stringify(resolved.selection.repository)}`)
  }
  // containerd expects the namespace it asked for echoed back.
  if (resolved.selection.namespace !== undefined) reply.header('oci-namespace', resolved.selection.namespace)
  // Client credentials: the target the auth hook obtained, which speaks upstream as this client.
  const bound = req.authorizedTarget
  if (bound !== null && bound !== undefined) {
    if (bound.upstream.name !== resolved.target.upstream.name || bound.repository !== resolved.target.repository) throw new RegistryError('UNKNOWN', 'authorized target does not match the request')
    return { target: bound, selection: resolved.selection }
  }
  return resolved
}
