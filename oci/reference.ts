// Repository names, tags and digests as the OCI distribution spec defines them (https://github.com/opencontainers/distribution-spec/blob/main/spec.md,
// "Pulling manifests"). Anything that reaches storage or upstream has passed these checks.

const NAME_COMPONENT = '[a-z0-9]+(?:(?:\\.|_|__|-+)[a-z0-9]+)*'
const NAME_RE = new RegExp(`^${NAME_COMPONENT}(?:/${NAME_COMPONENT})*$`)
const TAG_RE = /^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$/
const DIGEST_RE = /^(sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128})$/
/** Any algorithm:encoded shape; used to tell "malformed digest" apart from "a tag". */
const DIGEST_SHAPE_RE = /^[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$/

export const MAX_NAME_LENGTH = 255

export function isValidName(name: string): boolean {
  return name.length <= MAX_NAME_LENGTH && NAME_RE.test(name)
}

export function isValidTag(tag: string): boolean {
  return TAG_RE.test(tag)
}

export function isValidDigest(digest: string): boolean {
  return DIGEST_RE.test(digest)
}

/** A reference containing ':' is a digest (the distribution spec); it may still be malformed. */
export function looksLikeDigest(reference: string): boolean {
  return reference.includes(':') || DIGEST_SHAPE_RE.test(reference)
}

export function digestAlgorithm(digest: string): 'sha256' | 'sha512' {
  return digest.startsWith('sha512:') ? 'sha512' : 'sha256'
}

export type ApiPath =
  | { endpoint: 'base' }
  | { endpoint: 'manifests' | 'blobs' | 'referrers'; name: string; reference: string }
  | { endpoint: 'tags'; name: string }
  | { endpoint: 'uploads'; name: string }
  | { endpoint: 'unknown' }

/**
 * Splits a /v2/ path. Names contain '/', so the endpoint is matched from the right
 * (docs/protocol.md, "Paths"). The path must already be without its query string.
 */
export function parseApiPath(path: string): ApiPath {
  if (path === '/v2/' || path === '/v2') return { endpoint: 'base' }
  let m = /^\/v2\/(.+)\/(manifests|blobs|referrers)\/([^/]+)$/.exec(path)
  if (m) {
    if (m[2] === 'blobs' && m[3] === 'uploads') return { endpoint: 'uploads', name: m[1] }
    return { endpoint: m[2] as 'manifests' | 'blobs' | 'referrers', name: m[1], reference: m[3] }
  }
  m = /^\/v2\/(.+)\/tags\/list$/.exec(path)
  if (m) return { endpoint: 'tags', name: m[1] }
  m = /^\/v2\/(.+)\/blobs\/uploads(\/.*)?$/.exec(path)
  if (m) return { endpoint: 'uploads', name: m[1] }
  return { endpoint: 'unknown' }
}

/** Parses a user-facing image reference: `[registry/]repo[:tag][@digest]`, Docker's defaulting rules. */
export function parseImageRef(ref: string, defaultRegistry: string): { registry: string; repository: string; tag?: string; digest?: string } {
  let rest = ref
  let digest: string | undefined
  const at = rest.indexOf('@')
  if (at >= 0) {
    digest = rest.slice(at + 1)
    rest = rest.slice(0, at)
  }
  let tag: string | undefined
  const lastSlash = rest.lastIndexOf('/')
  const colon = rest.lastIndexOf(':')
  if (colon > lastSlash) {
    tag = rest.slice(colon + 1)
    rest = rest.slice(0, colon)
  }
  let registry = defaultRegistry
  const first = rest.split('/')[0]
  if (rest.includes('/') && isRegistryHost(first)) {
    registry = first
    rest = rest.slice(first.length + 1)
  }
  if (tag === undefined && digest === undefined) tag = 'latest'
  return { registry, repository: rest, tag, digest }
}

/** Hosts that mean Docker Hub in image references and `ns` values. */
export const DOCKER_HUB_ALIASES: ReadonlySet<string> = new Set(['docker.io', 'index.docker.io', 'registry-1.docker.io', 'registry.hub.docker.com'])

/** Where Docker Hub's registry API answers (`docker.io` itself is not an API host). */
export const DOCKER_HUB_API = 'https://registry-1.docker.io'

/**
 * Docker's rule for the first component of a name: with a dot, a port or `localhost` it is a
 * registry host, otherwise a Docker Hub namespace (`library`, `bitnami`, ...).
 */
export function isRegistryHost(component: string): boolean {
  return component.includes('.') || component.includes(':') || component === 'localhost'
}

/** Docker Hub's official images live under library/ (`alpine` is `library/alpine`). */
export function repositoryFor(upstream: string, name: string): string {
  return DOCKER_HUB_ALIASES.has(upstream) && !name.includes('/') ? `library/${name}` : name
}
