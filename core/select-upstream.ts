// Which upstream a request is for (docs/protocol.md#upstream-selection): `?ns=<host>` (containerd), else a leading
// path component naming a configured upstream (podman, skopeo: /v2/ghcr.io/org/app/...), else
// the default. Only configured upstreams: an open `ns` would let anyone make the mirror fetch
// arbitrary hosts.

import { RegistryError } from './errors.js'
import { DOCKER_HUB_ALIASES, isRegistryHost, repositoryFor } from '../oci/reference.js'

export interface Selection {
  upstream: string
  /** The repository as upstream knows it. */
  repository: string
  /** The name as the client wrote it, for rewriting Link headers. */
  clientName: string
  /** Set when `ns` chose the upstream; echoed as OCI-Namespace. */
  namespace?: string
}

export function selectUpstream(name: string, ns: string | undefined, upstreams: ReadonlySet<string>, defaultUpstream: string): Selection {
  if (ns !== undefined) {
    const host = canonicalHost(ns, upstreams)
    if (!upstreams.has(host)) {
      throw new RegistryError('DENIED', `registry ${JSON.stringify(ns)} is not configured as an upstream of this mirror`, { detail: { ns } })
    }
    return { upstream: host, repository: repositoryFor(host, name), clientName: name, namespace: ns }
  }
  const slash = name.indexOf('/')
  if (slash > 0) {
    const first = name.slice(0, slash)
    const host = canonicalHost(first, upstreams)
    if (upstreams.has(host)) {
      return { upstream: host, repository: repositoryFor(host, name.slice(slash + 1)), clientName: name }
    }
    if (isRegistryHost(first)) {
      throw new RegistryError('DENIED', `registry ${JSON.stringify(first)} is not configured as an upstream of this mirror`, { detail: { prefix: first } })
    }
  }
  return { upstream: defaultUpstream, repository: repositoryFor(defaultUpstream, name), clientName: name }
}

function canonicalHost(host: string, upstreams: ReadonlySet<string>): string {
  const h = host.toLowerCase()
  if (upstreams.has(h)) return h
  if (DOCKER_HUB_ALIASES.has(h)) {
    for (const alias of DOCKER_HUB_ALIASES) if (upstreams.has(alias)) return alias
  }
  return h
}

