// Content negotiation keys (docs/protocol.md#accept-negotiation-and-tag-keys). One tag can resolve to different digests for
// clients that accept different manifest types, so tags are cached per normalised Accept set.

export const MEDIA_TYPES = {
  dockerManifest: 'application/vnd.docker.distribution.manifest.v2+json',
  dockerList: 'application/vnd.docker.distribution.manifest.list.v2+json',
  ociManifest: 'application/vnd.oci.image.manifest.v1+json',
  ociIndex: 'application/vnd.oci.image.index.v1+json',
  schema1: 'application/vnd.docker.distribution.manifest.v1+json',
  schema1Signed: 'application/vnd.docker.distribution.manifest.v1+prettyjws',
} as const

/** What containerd's resolver sends when it resolves a tag; `regcache warm` sends the same. */
export const CONTAINERD_ACCEPT = [
  MEDIA_TYPES.dockerManifest,
  MEDIA_TYPES.dockerList,
  MEDIA_TYPES.ociManifest,
  MEDIA_TYPES.ociIndex,
  '*/*',
].join(', ')

export const MANIFEST_MEDIA_TYPES: ReadonlySet<string> = new Set(Object.values(MEDIA_TYPES))
export const INDEX_MEDIA_TYPES: ReadonlySet<string> = new Set([MEDIA_TYPES.dockerList, MEDIA_TYPES.ociIndex])

/**
 * Normalises Accept header values: parameters and q-values stripped, lowercased,
 * de-duplicated, sorted, joined with ','. "none" when the client sent no Accept.
 * Node joins repeated headers with ", ", and Docker sends one header per type, so both
 * shapes are accepted.
 */
export function acceptKey(accept: string | string[] | undefined): string {
  const values = Array.isArray(accept) ? accept : accept === undefined ? [] : [accept]
  const types = new Set<string>()
  for (const value of values) {
    for (const part of value.split(',')) {
      const type = part.split(';')[0].trim().toLowerCase()
      if (type !== '') types.add(type)
    }
  }
  return types.size === 0 ? 'none' : [...types].sort().join(',')
}

/** The Accept header value to forward upstream: the client's, unchanged but joined into one line. */
export function acceptHeader(accept: string | string[] | undefined): string | undefined {
  if (accept === undefined) return undefined
  return Array.isArray(accept) ? accept.join(', ') : accept
}

export function isIndexType(mediaType: string): boolean {
  return INDEX_MEDIA_TYPES.has(mediaType)
}

export function isSchema1(mediaType: string): boolean {
  return mediaType === MEDIA_TYPES.schema1 || mediaType === MEDIA_TYPES.schema1Signed
}
