// One image pulled through the mirror as a node's containerd pulls it: the tag (or digest) with
// containerd's Accept header, the platform manifests, then the config and layer blobs. Every byte
// is counted and checked against its digest, so "warmed" means the mirror served the real thing.

import { createHash } from 'node:crypto'
import { request } from 'undici'
import type { LimitFunction } from 'p-limit'
import { CONTAINERD_ACCEPT, isIndexType } from '../../oci/media-types.js'
import { digestAlgorithm, isValidDigest } from '../../oci/reference.js'
import type { ImageRef } from './targets.js'

/** Why one image could not be warmed; the message is for the person running the command. */
export class WarmError extends Error {}

const MAX_MANIFEST_BYTES = 4 * 1024 * 1024
// Layers a registry may not serve (Windows base layers); nodes fetch them from their own URLs.
const NON_DISTRIBUTABLE = /(foreign|nondistributable)/

interface Descriptor {
  mediaType?: string
  digest: string
  size: number
  platform?: string
  urls: boolean
}

export interface Plan {
  /** The digest the reference resolved to. */
  digest: string
  manifests: number
  blobs: number
  /** Sum of the blob sizes the manifests declare. */
  totalBytes: number
}

export interface WarmResult extends Plan {
  /** Bytes of this image's blobs received (a blob fetched for another image of the run counts too). */
  bytes: number
}

export interface WarmImageOptions {
  mirror: string
  image: ImageRef
  platforms: string[]
  allPlatforms: boolean
  blobs: BlobDownloads
  onPlan(plan: Plan): void
  onBytes(n: number): void
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v)

function toDescriptor(v: unknown, where: string): Descriptor {
  if (!isObject(v) || typeof v.digest !== 'string' || !isValidDigest(v.digest) || typeof v.size !== 'number' || !Number.isSafeInteger(v.size) || v.size < 0) {
    throw new WarmError(`${where}: malformed descriptor`)
  }
  const p = v.platform
  const platform =
    isObject(p) && typeof p.os === 'string' && typeof p.architecture === 'string'
      ? `${p.os}/${p.architecture}${typeof p.variant === 'string' && p.variant !== '' ? `/${p.variant}` : ''}`
      : undefined
  return { mediaType: typeof v.mediaType === 'string' ? v.mediaType : undefined, digest: v.digest, size: v.size, platform, urls: Array.isArray(v.urls) && v.urls.length > 0 }
}

/** The mirror's error as a short line: status, then the registry error codes when it sent them. */
async function failure(what: string, status: number, body: { text(): Promise<string> }): Promise<WarmError> {
  const text = (await body.text().catch(() => '')).slice(0, 2000)
  let detail = ''
  try {
    const doc: unknown = JSON.parse(text)
    const errors = isObject(doc) && Array.isArray(doc.errors) ? doc.errors : []
    detail = errors
      .filter(isObject)
      .map((e) => [e.code, e.message].filter((x) => typeof x === 'string').join(' '))
      .join('; ')
  } catch {
    detail = text.replace(/\s+/g, ' ').trim().slice(0, 200)
  }
  return new WarmError(`${what}: HTTP ${status}${detail ? ` ${detail}` : ''}`)
}

function mirrorUnreachable(mirror: string, err: unknown): WarmError {
  const message = (err as Error).message
  const code = isObject(err) && typeof err.code === 'string' && !message.includes(err.code) ? ` (${err.code})` : ''
  return new WarmError(`cannot reach the mirror at ${mirror}: ${message}${code}`)
}

/**
 * Downloads each blob of a repository once per run, however many images (tags, digests,
 * platforms) of that repository share it, with at most `limit` downloads at a time. The same
 * blob in another repository is asked for again: the mirror links a blob to each repository
 * that asked for it, so a node's pull of that repository is served without asking upstream.
 */
export class BlobDownloads {
  private readonly started = new Map<string, Promise<void>>()
  /** Bytes that came over the wire: a blob shared within a repository counts once. */
  received = 0

  constructor(private readonly limit: LimitFunction) {}

  /** `base` is the repository's URL on the mirror, `ns` its ?ns= query naming the registry. */
  fetch(mirror: string, base: string, ns: string, d: Descriptor, onBytes: (n: number) => void): Promise<void> {
    const url = `${base}/blobs/${d.digest}${ns}`
    const key = `${base}${ns}@${d.digest}`
    const earlier = this.started.get(key)
    if (earlier) return earlier.then(() => onBytes(d.size))
    const count = (n: number) => {
      this.received += n
      onBytes(n)
    }
    const p = this.limit(() => download(mirror, url, d, count))
    this.started.set(key, p)
    return p
  }
}

async function download(mirror: string, url: string, d: Descriptor, onBytes: (n: number) => void): Promise<void> {
  let res
  try {
    res = await request(url)
  } catch (err) {
    throw mirrorUnreachable(mirror, err)
  }
  if (res.statusCode !== 200) throw await failure(`blob ${d.digest}`, res.statusCode, res.body)
  const hash = createHash(digestAlgorithm(d.digest))
  let received = 0
  try {
    for await (const chunk of res.body) {
      const b = chunk as Buffer
      received += b.length
      if (received > d.size) throw new WarmError(`blob ${d.digest}: the mirror sent more than the ${d.size} bytes the manifest declares`)
      hash.update(b)
      onBytes(b.length)
    }
  } catch (err) {
    res.body.destroy()
    if (err instanceof WarmError) throw err
    throw new WarmError(`blob ${d.digest}: download cut after ${received} bytes: ${(err as Error).message}`)
  }
  if (received !== d.size) throw new WarmError(`blob ${d.digest}: got ${received} bytes, the manifest declares ${d.size}`)
  const got = `${digestAlgorithm(d.digest)}:${hash.digest('hex')}`
  if (got !== d.digest) throw new WarmError(`blob ${d.digest}: the bytes hash to ${got}`)
}

interface FetchedManifest {
  mediaType: string
  digest: string
  doc: Record<string, unknown>
}

async function fetchManifest(mirror: string, base: string, ns: string, reference: string, accept: string): Promise<FetchedManifest> {
  let res
  try {
    res = await request(`${base}/manifests/${reference}${ns}`, { headers: { accept } })
  } catch (err) {
    throw mirrorUnreachable(mirror, err)
  }
  if (res.statusCode !== 200) throw await failure(`manifest ${reference}`, res.statusCode, res.body)
  const chunks: Buffer[] = []
  let size = 0
  for await (const chunk of res.body) {
    size += (chunk as Buffer).length
    if (size > MAX_MANIFEST_BYTES) {
      res.body.destroy()
      throw new WarmError(`manifest ${reference}: larger than ${MAX_MANIFEST_BYTES} bytes`)
    }
    chunks.push(chunk as Buffer)
  }
  const bytes = Buffer.concat(chunks)
  const header = res.headers['docker-content-digest']
  const expected = reference.includes(':') ? reference : typeof header === 'string' && isValidDigest(header) ? header : undefined
  const algorithm = expected !== undefined ? digestAlgorithm(expected) : 'sha256'
  const digest = `${algorithm}:${createHash(algorithm).update(bytes).digest('hex')}`
  if (expected !== undefined && digest !== expected) throw new WarmError(`manifest ${reference}: the bytes hash to ${digest}, not ${expected}`)
  let doc: unknown
  try {
    doc = JSON.parse(bytes.toString('utf8'))
  } catch {
    throw new WarmError(`manifest ${reference}: not JSON`)
  }
  if (!isObject(doc)) throw new WarmError(`manifest ${reference}: not a JSON object`)
  const mediaType = String(res.headers['content-type'] ?? (typeof doc.mediaType === 'string' ? doc.mediaType : '')).split(';')[0].trim()
  return { mediaType, digest, doc }
}

function blobsOf(m: FetchedManifest, reference: string): Descriptor[] {
  const where = `manifest ${reference}`
  if (!Array.isArray(m.doc.layers) || m.doc.config === undefined) {
    throw new WarmError(`${where}: unsupported manifest type ${JSON.stringify(m.mediaType)} (no config and layers)`)
  }
  const out = [toDescriptor(m.doc.config, `${where} config`)]
  m.doc.layers.forEach((l, i) => {
    const d = toDescriptor(l, `${where} layer ${i}`)
    if (d.urls || NON_DISTRIBUTABLE.test(d.mediaType ?? '')) return
    out.push(d)
  })
  return out
}

const platformMatches = (p: string | undefined, wanted: string[]) => p !== undefined && wanted.some((w) => p === w || p.startsWith(`${w}/`))

export async function warmImage(o: WarmImageOptions): Promise<WarmResult> {
  const base = `${o.mirror}/v2/${o.image.repository}`
  const ns = `?ns=${encodeURIComponent(o.image.registry)}`
  const reference = o.image.digest ?? (o.image.tag as string)
  const top = await fetchManifest(o.mirror, base, ns, reference, CONTAINERD_ACCEPT)
  const manifests: Array<{ m: FetchedManifest; ref: string }> = []
  if (isIndexType(top.mediaType)) {
    const children = Array.isArray(top.doc.manifests) ? top.doc.manifests.map((c, i) => toDescriptor(c, `index ${reference} entry ${i}`)) : []
    const chosen = children.filter((c) => (o.allPlatforms ? c.platform !== undefined && c.platform !== 'unknown/unknown' : platformMatches(c.platform, o.platforms)))
    if (chosen.length === 0) {
      const offered = [...new Set(children.map((c) => c.platform).filter((p) => p !== undefined && p !== 'unknown/unknown'))]
      throw new WarmError(`no image for ${o.platforms.join(', ')} (the index has ${offered.join(', ') || 'no platforms'})`)
    }
    for (const c of chosen) {
      manifests.push({ m: await fetchManifest(o.mirror, base, ns, c.digest, `${c.mediaType ? `${c.mediaType}, ` : ''}${CONTAINERD_ACCEPT}`), ref: c.digest })
    }
  } else {
    manifests.push({ m: top, ref: reference })
  }
  const blobs = new Map<string, Descriptor>()
  for (const { m, ref } of manifests) for (const d of blobsOf(m, ref)) blobs.set(d.digest, d)
  const plan: Plan = { digest: top.digest, manifests: manifests.length, blobs: blobs.size, totalBytes: [...blobs.values()].reduce((n, d) => n + d.size, 0) }
  o.onPlan(plan)
  let bytes = 0
  const onBytes = (n: number) => {
    bytes += n
    o.onBytes(n)
  }
  const results = await Promise.allSettled([...blobs.values()].map((d) => o.blobs.fetch(o.mirror, base, ns, d, onBytes)))
  const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected')
  if (failed) throw failed.reason
  return { ...plan, bytes }
}
