// What `regcache warm` is asked to warm: image references from the command line, a file or a
// cluster, normalised so the same image named two ways is warmed once.

import { isValidDigest, isValidName, isValidTag, parseImageRef, repositoryFor } from '../../oci/reference.js'

export class InvalidReferenceError extends Error {}

export interface ImageRef {
  registry: string
  repository: string
  tag?: string
  digest?: string
  /** registry/repository[:tag][@digest], Docker Hub names with their library/ prefix. */
  canonical: string
  /** Equal for references that name the same content (the digest wins over the tag). */
  key: string
}

/** Parses and checks one reference; `defaultRegistry` is used when the reference names none. */
export function canonicalRef(ref: string, defaultRegistry: string): ImageRef {
  const text = ref.trim()
  if (text === '' || /\s/.test(text)) throw new InvalidReferenceError(`not an image reference: ${JSON.stringify(ref)}`)
  const r = parseImageRef(text, defaultRegistry)
  const repository = repositoryFor(r.registry, r.repository)
  if (!isValidName(repository)) throw new InvalidReferenceError(`${JSON.stringify(ref)}: invalid repository name ${JSON.stringify(r.repository)}`)
  if (r.tag !== undefined && !isValidTag(r.tag)) throw new InvalidReferenceError(`${JSON.stringify(ref)}: invalid tag ${JSON.stringify(r.tag)}`)
  if (r.digest !== undefined && !isValidDigest(r.digest)) throw new InvalidReferenceError(`${JSON.stringify(ref)}: invalid digest ${JSON.stringify(r.digest)}`)
  const name = `${r.registry}/${repository}`
  const canonical = `${name}${r.tag !== undefined ? `:${r.tag}` : ''}${r.digest !== undefined ? `@${r.digest}` : ''}`
  return { registry: r.registry, repository, tag: r.tag, digest: r.digest, canonical, key: r.digest !== undefined ? `${name}@${r.digest}` : canonical }
}

export interface WarmRequest {
  /** The reference as the user (or the cluster) wrote it. */
  ref: string
  /** Platforms asked for this image in particular (e.g. by a pod's nodeSelector). */
  platforms: string[]
  /** Whether the command's own platforms (--platform, default linux/amd64) apply too. */
  defaultPlatforms: boolean
}

export interface WarmTarget {
  /** What the display and the summary call it: the first way it was written. */
  name: string
  /** Undefined when the reference is not valid; `error` says why. */
  image?: ImageRef
  error?: string
  platforms: string[]
}

/**
 * One target per distinct image, in the order first seen, with the platforms every request for
 * it asked for. Invalid references become failed targets rather than stopping the others.
 */
export function planTargets(requests: WarmRequest[], defaultRegistry: string, defaultPlatforms: string[]): WarmTarget[] {
  const byKey = new Map<string, WarmTarget>()
  const out: WarmTarget[] = []
  for (const req of requests) {
    let image: ImageRef
    try {
      image = canonicalRef(req.ref, defaultRegistry)
    } catch (err) {
      if (!(err instanceof InvalidReferenceError)) throw err
      if (!byKey.has(`invalid:${req.ref}`)) {
        const t: WarmTarget = { name: req.ref, error: err.message, platforms: [] }
        byKey.set(`invalid:${req.ref}`, t)
        out.push(t)
      }
      continue
    }
    const wanted = [...(req.defaultPlatforms ? defaultPlatforms : []), ...req.platforms]
    const seen = byKey.get(image.key)
    if (seen) {
      for (const p of wanted) if (!seen.platforms.includes(p)) seen.platforms.push(p)
      continue
    }
    const t: WarmTarget = { name: req.ref.trim(), image, platforms: [...new Set(wanted)] }
    byKey.set(image.key, t)
    out.push(t)
  }
  return out
}

/** `--from-file`: one reference per line; blank lines and # comments (whole-line or trailing) are ignored. */
export function referencesFromText(text: string): string[] {
  const refs: string[] = []
  for (const raw of text.split(/\r?\n/)) {
    const hash = raw.indexOf('#')
    const line = (hash >= 0 ? raw.slice(0, hash) : raw).trim()
    if (line !== '') refs.push(line)
  }
  return refs
}
