// What regcache needs to know about a manifest's bytes: its media type and the digests it
// references. The bytes themselves are never re-serialised (docs/protocol.md#manifest-responses).

import { MANIFEST_MEDIA_TYPES, isSchema1 } from './media-types.js'
import { isValidDigest } from './reference.js'

export const MAX_MANIFEST_BYTES = 4 * 1024 * 1024

export interface ManifestInfo {
  mediaType: string
  /** Config, layers, child manifests and subject: everything a client may fetch next by digest. */
  references: string[]
}

export class ManifestError extends Error {
  readonly code = 'MANIFEST_INVALID'
}

/**
 * Parses manifest bytes. `contentType` is upstream's header; when it is not a known manifest type
 * (some registries send text/plain or application/json) the body's `mediaType` decides if it is a
 * known one, else the structure (docs/protocol.md#generic-content-types).
 */
export function inspectManifest(bytes: Buffer, contentType: string | undefined): ManifestInfo {
  let parsed: unknown
  try {
    parsed = JSON.parse(bytes.toString('utf8'))
  } catch {
    throw new ManifestError('manifest is not valid JSON')
  }
  if (!isObject(parsed)) throw new ManifestError('manifest is not a JSON object')
  const doc = parsed
  const headerType = (contentType ?? '').split(';')[0].trim()
  // The type goes out as the Content-Type clients see, so only a known manifest type is ever
  // taken, from the header or the body; anything else (`text/html`) is inferred from the structure.
  const known = (v: unknown) => (typeof v === 'string' && MANIFEST_MEDIA_TYPES.has(v.toLowerCase()) ? v.toLowerCase() : '')
  let mediaType = known(headerType) || known(doc.mediaType)
  if (mediaType === '') {
    if (Array.isArray(doc.manifests)) mediaType = 'application/vnd.oci.image.index.v1+json'
    else if (doc.config !== undefined) mediaType = 'application/vnd.oci.image.manifest.v1+json'
    else if (doc.schemaVersion === 1) mediaType = 'application/vnd.docker.distribution.manifest.v1+prettyjws'
    else throw new ManifestError('not a known manifest media type, and the structure is not one either')
  }
  const references: string[] = []
  const add = (d: unknown) => {
    if (typeof d === 'string' && isValidDigest(d) && !references.includes(d)) references.push(d)
  }
  if (isSchema1(mediaType)) {
    for (const l of list(doc.fsLayers)) add(l.blobSum)
  } else {
    if (isObject(doc.config)) add(doc.config.digest)
    for (const l of list(doc.layers)) add(l.digest)
    for (const m of list(doc.manifests)) add(m.digest)
    for (const b of list(doc.blobs)) add(b.digest)
    if (isObject(doc.subject)) add(doc.subject.digest)
  }
  return { mediaType, references }
}

type JsonObject = Record<string, unknown>

function isObject(v: unknown): v is JsonObject {
  return typeof v === 'object' && v !== null && !Array.isArray(v)
}

/** The objects of a JSON array (other elements skipped); nothing when it is not an array. */
function list(v: unknown): JsonObject[] {
  return Array.isArray(v) ? v.filter(isObject) : []
}
