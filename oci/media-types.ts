// Manifest media types and content negotiation (docs/protocol.md#accept-negotiation-and-tag-keys).
// One tag can resolve to different digests for clients that accept different manifest types, so
// tags are cached per normalised set of accepted manifest types.

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
 * The key a tag's state is kept under for one kind of client: the manifest media types regcache
 * knows that the client accepts, lowercased, de-duplicated and sorted, joined with ','. A client
 * that accepts anything (`*\/*`, `application/*`) is "any"; one that sent no Accept is "none"; one
 * that accepts none of the known types is "other". Parameters, q-values and unknown types do not
 * count, so varying the header cannot create more than a bounded number of keys per tag. Node
 * joins repeated headers with ", ", and Docker sends one header per type: both shapes are read.
 */
export function acceptKey(accept: string | string[] | undefined): string {
  const values = Array.isArray(accept) ? accept : accept === undefined ? [] : [accept]
  const known = new Set<string>()
  let sawAny = false
  let sawSome = false
  for (const value of values) {
    for (const part of value.split(',')) {
      const type = part.split(';')[0].trim().toLowerCase()
      if (type === '') continue
      sawSome = true
      if (type === '*/*' || type === 'application/*') sawAny = true
      else if (MANIFEST_MEDIA_TYPES.has(type)) known.add(type)
    }
  }
  if (!sawSome) return 'none'
  if (sawAny) return 'any'
  return known.size === 0 ? 'other' : [...known].sort().join(',')
}

/** Whether a client whose key is `key` accepts a manifest of `mediaType`. */
export function keyAccepts(key: string, mediaType: string): boolean {
  if (key === 'any' || key === 'none') return true
  if (key === 'other') return false
  return key.split(',').includes(mediaType.toLowerCase())
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
