// From a request's name and `ns` to the upstream and repository it is for, with the name checks
// every registry endpoint shares.

import type { FastifyReply } from 'fastify'
import type { Mirror } from '../../core/mirror.js'
import { RegistryError } from '../../core/errors.js'
import type { Selection } from '../../core/select-upstream.js'
import type { Target } from '../../core/target.js'
import { isValidName } from '../../oci/reference.js'

export interface RegistryQuery {
  ns?: string | string[]
  [key: string]: string | string[] | undefined
}

export function resolveTarget(mirror: Mirror, name: string, query: RegistryQuery, reply: FastifyReply): { target: Target; selection: Selection } {
  if (!isValidName(name)) throw new RegistryError('NAME_INVALID', `invalid repository name ${JSON.stringify(name)}`)
  const ns = Array.isArray(query.ns) ? query.ns[0] : query.ns
  const resolved = mirror.select(name, ns)
  if (!isValidName(resolved.selection.repository)) {
    throw new RegistryError('NAME_INVALID', `invalid repository name ${JSON.stringify(resolved.selection.repository)}`)
  }
  // containerd expects the namespace it asked for echoed back.
  if (resolved.selection.namespace !== undefined) reply.header('oci-namespace', resolved.selection.namespace)
  return resolved
}
