// Object keys in the bucket. Content lives under its digest like the filesystem layout
// (storage/layout.ts), so a bucket can be listed and re-hashed the same way:
//
//   <prefix>blobs/sha256/ab/ab12…ef   content named by its digest (layers, configs, manifests)
//   <prefix>leases/sha256:ab12…ef     who is filling that digest right now, and until when
//   <prefix>leases/evictor            which replica runs eviction of the shared store now
//
// Keys are built only from digests that passed DIGEST_PATTERN, so no hostile name can reach
// outside the prefix.

export const DIGEST_PATTERN = /^(?:sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128})$/

export class InvalidDigestError extends Error {
  readonly code = 'INVALID_DIGEST'
  constructor(readonly digest: string) {
    super(`not a content digest: ${JSON.stringify(digest.slice(0, 200))}`)
  }
}

export function checkDigest(digest: string): void {
  if (!DIGEST_PATTERN.test(digest)) throw new InvalidDigestError(digest)
}

export function blobsPrefix(prefix: string): string {
  return `${prefix}blobs/`
}

export function blobKey(prefix: string, digest: string): string {
  checkDigest(digest)
  const [algorithm, encoded] = digest.split(':') as [string, string]
  return `${blobsPrefix(prefix)}${algorithm}/${encoded.slice(0, 2)}/${encoded}`
}

/** The digest a content key names, or undefined for anything else found under the prefix. */
export function digestOfKey(prefix: string, key: string): string | undefined {
  if (!key.startsWith(blobsPrefix(prefix))) return undefined
  const parts = key.slice(blobsPrefix(prefix).length).split('/')
  if (parts.length !== 3) return undefined
  const [algorithm, fanout, encoded] = parts as [string, string, string]
  const digest = `${algorithm}:${encoded}`
  if (!DIGEST_PATTERN.test(digest) || encoded.slice(0, 2) !== fanout) return undefined
  return digest
}

/** The one lease that is not a digest's: eviction runs on one replica at a time. */
export const EVICTOR_LEASE = 'evictor'

export function leaseKey(prefix: string, name: string): string {
  if (name !== EVICTOR_LEASE) checkDigest(name)
  return `${prefix}leases/${name}`
}

export function leasesPrefix(prefix: string): string {
  return `${prefix}leases/`
}
