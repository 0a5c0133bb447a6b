// Real OCI images built from scratch (no network, no base images) and pushed with skopeo, so tests
// and the benchmark exercise genuine manifests and blobs in both OCI and Docker schema2 form: small
// seeded images and indexes held in memory while built, and one big layer streamed to disk.
import { createCipheriv, createHash, randomBytes } from 'node:crypto'
import { createWriteStream } from 'node:fs'
import { chmod, cp, mkdir, readFile, rename, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { Readable, Transform } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { createGzip, gzipSync } from 'node:zlib'
import { makeTempDir, removeTempDir, run } from './proc.js'
import { HELPER_USER_AGENT, type BasicAuth } from './registry.js'

export const MT = {
  ociManifest: 'application/vnd.oci.image.manifest.v1+json',
  ociIndex: 'application/vnd.oci.image.index.v1+json',
  ociConfig: 'application/vnd.oci.image.config.v1+json',
  ociLayerGzip: 'application/vnd.oci.image.layer.v1.tar+gzip',
  dockerManifest: 'application/vnd.docker.distribution.manifest.v2+json',
  dockerManifestList: 'application/vnd.docker.distribution.manifest.list.v2+json',
} as const

/** Accept header that makes a registry return whatever it stores, unconverted. */
export const ALL_MANIFEST_TYPES = [MT.ociManifest, MT.ociIndex, MT.dockerManifest, MT.dockerManifestList].join(', ')

export interface Platform {
  os: string
  architecture: string
  variant?: string
}

export interface OciLayout {
  dir: string
  /** skopeo source reference, `oci:DIR:latest`. */
  ref: string
  manifestDigest: string
  manifestSize: number
  manifestBytes: Buffer
  configDigest: string
  layerDigests: string[]
  layerSizes: number[]
  /** sha256 of each uncompressed layer tar (rootfs.diff_ids). */
  diffIds: string[]
  platform: Platform
  label: string
  remove(): Promise<void>
}

export interface IndexChild {
  digest: string
  size: number
  platform: Platform
  image: OciLayout
}

export interface OciIndexLayout {
  dir: string
  ref: string
  indexDigest: string
  indexSize: number
  indexBytes: Buffer
  children: IndexChild[]
  remove(): Promise<void>
}

export interface BuildImageOptions {
  /** How many layers of `layerSize` bytes, or the size of each layer. */
  layers: number | number[]
  /** Random bytes per layer; random data so gzip cannot shrink it. Default 64 KiB. */
  layerSize?: number
  /**
   * 'seeded' (default): bytes derived from the seed, so builds are reproducible. 'random': fresh
   * random bytes in stored (level 0) gzip blocks, a new image every time but many times faster to
   * make, for layers of many MiB.
   */
  fill?: 'seeded' | 'random'
  arch?: string
  os?: string
  variant?: string
  /** Same seed + options => byte-identical image (same digests). */
  seed?: string
  /** Stored in config Labels; defaults to the seed or a random value so builds differ. */
  label?: string
}

const sha256 = (b: Buffer) => 'sha256:' + createHash('sha256').update(b).digest('hex')
const hex = (digest: string) => digest.slice('sha256:'.length)

/** Deterministic byte stream (sha256 in counter mode) so seeded builds are reproducible. */
function seededBytes(seed: string, n: number): Buffer {
  const out = Buffer.alloc(n)
  let off = 0
  for (let i = 0; off < n; i++) {
    const block = createHash('sha256').update(`${seed}\0${i}`).digest()
    off += block.copy(out, off)
  }
  return out
}

/**
 * ustar header of one regular file. Hand-rolled rather than shelling out to tar so output is
 * byte-stable (fixed mtime/owner) and needs no temp files.
 */
function tarHeader(name: string, size: number): Buffer {
  const header = Buffer.alloc(512)
  const put = (s: string, off: number, len: number) => header.write(s, off, len, 'ascii')
  const octal = (n: number, len: number) => n.toString(8).padStart(len - 1, '0') + '\0'
  put(name, 0, 100)
  put(octal(0o644, 8), 100, 8)
  put(octal(0, 8), 108, 8) // uid
  put(octal(0, 8), 116, 8) // gid
  put(octal(size, 12), 124, 12)
  put(octal(0, 12), 136, 12) // mtime: fixed for reproducibility
  put('        ', 148, 8) // checksum placeholder (spaces) while summing
  put('0', 156, 1) // regular file
  put('ustar\0', 257, 6)
  put('00', 263, 2)
  put('root', 265, 32)
  put('root', 297, 32)
  let sum = 0
  for (const b of header) sum += b
  put(sum.toString(8).padStart(6, '0') + '\0 ', 148, 8)
  return header
}

/** What follows a file of `size` bytes: padding to a block, then two zero blocks (end of archive). */
const tarTrailer = (size: number) => Buffer.alloc(((512 - (size % 512)) % 512) + 1024)

/** Single-file ustar archive. */
export function tarOneFile(name: string, content: Buffer): Buffer {
  return Buffer.concat([tarHeader(name, content.length), content, tarTrailer(content.length)])
}

async function writeBlob(dir: string, data: Buffer): Promise<string> {
  const digest = sha256(data)
  await writeFile(join(dir, 'blobs', 'sha256', hex(digest)), data)
  return digest
}

/** A fresh, empty OCI layout in a temp dir, removed again when `fill` fails. */
async function inNewLayout<T>(fill: (dir: string) => Promise<T>): Promise<T> {
  const dir = await makeTempDir()
  try {
    await mkdir(join(dir, 'blobs', 'sha256'), { recursive: true })
    await writeFile(join(dir, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }))
    return await fill(dir)
  } catch (e) {
    await removeTempDir(dir)
    throw e
  }
}

/** Writes the image's top manifest (or index) and points index.json's `latest` at it. */
async function writeTop(dir: string, mediaType: string, bytes: Buffer): Promise<string> {
  const digest = await writeBlob(dir, bytes)
  // skopeo's `oci:DIR:latest` selects the descriptor by this annotation.
  const index = {
    schemaVersion: 2,
    mediaType: MT.ociIndex,
    manifests: [{ mediaType, digest, size: bytes.length, annotations: { 'org.opencontainers.image.ref.name': 'latest' } }],
  }
  await writeFile(join(dir, 'index.json'), JSON.stringify(index))
  return digest
}

/** A gzip layer already in the layout's blobs. */
interface WrittenLayer {
  digest: string
  size: number
  /** sha256 of the uncompressed tar. */
  diffId: string
}

/** Writes config, manifest and index.json over layers already in `dir`. */
async function finishImage(dir: string, layers: WrittenLayer[], platform: Platform, label: string): Promise<OciLayout> {
  const diffIds = layers.map((l) => l.diffId)
  const config = Buffer.from(
    JSON.stringify({
      created: '2000-01-01T00:00:00Z',
      ...platform,
      config: { Labels: { 'regcache.test.label': label }, Cmd: ['/bin/true'] },
      rootfs: { type: 'layers', diff_ids: diffIds },
      history: diffIds.map((_, i) => ({ created: '2000-01-01T00:00:00Z', created_by: `regcache-test layer ${i}` })),
    }),
  )
  const configDigest = await writeBlob(dir, config)
  const manifestBytes = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: MT.ociManifest,
      config: { mediaType: MT.ociConfig, digest: configDigest, size: config.length },
      layers: layers.map(({ digest, size }) => ({ mediaType: MT.ociLayerGzip, digest, size })),
    }),
  )
  const manifestDigest = await writeTop(dir, MT.ociManifest, manifestBytes)
  return {
    dir,
    ref: `oci:${dir}:latest`,
    manifestDigest,
    manifestSize: manifestBytes.length,
    manifestBytes,
    configDigest,
    layerDigests: layers.map((l) => l.digest),
    layerSizes: layers.map((l) => l.size),
    diffIds,
    platform,
    label,
    remove: () => removeTempDir(dir),
  }
}

export async function buildImage(opts: BuildImageOptions): Promise<OciLayout> {
  const seed = opts.seed ?? randomBytes(16).toString('hex')
  const sizes = typeof opts.layers === 'number' ? Array<number>(opts.layers).fill(opts.layerSize ?? 64 * 1024) : opts.layers
  const random = opts.fill === 'random'
  const platform: Platform = { os: opts.os ?? 'linux', architecture: opts.arch ?? 'amd64' }
  if (opts.variant) platform.variant = opts.variant
  return inNewLayout(async (dir) => {
    const layers: WrittenLayer[] = []
    for (const [i, size] of sizes.entries()) {
      const tar = tarOneFile(`layer-${i}.bin`, random ? randomBytes(size) : seededBytes(`${seed}/layer/${i}`, size))
      // The content is random either way, so compressing it only costs time; the fixed tar
      // header (mtime 0) keeps seeded builds deterministic.
      const gz = gzipSync(tar, { level: random ? 0 : 1 })
      layers.push({ digest: await writeBlob(dir, gz), size: gz.length, diffId: sha256(tar) })
    }
    return finishImage(dir, layers, platform, opts.label ?? seed)
  })
}

/** A blob of a built image (a layer as pushed, the config, a manifest), from its layout on disk. */
export function readLayoutBlob(layout: OciLayout | OciIndexLayout, digest: string): Promise<Buffer> {
  return readFile(join(layout.dir, 'blobs', 'sha256', hex(digest)))
}

export interface BigImage extends OciLayout {
  layerDigest: string
  layerSize: number
  /** Directory and file name of the layer blob on disk, for a web server to serve it. */
  layerDir: string
  layerFile: string
}

/** The uncompressed tar: header, `size` pseudo-random bytes, padding, end-of-archive. */
function* bigTarChunks(size: number): Generator<Buffer> {
  yield tarHeader('payload.bin', size)
  const cipher = createCipheriv('aes-128-ctr', randomBytes(16), randomBytes(16))
  const CHUNK = 16 * 1024 * 1024
  const zeros = Buffer.alloc(CHUNK)
  for (let left = size; left > 0; left -= CHUNK) {
    const n = Math.min(CHUNK, left)
    yield cipher.update(n === CHUNK ? zeros : zeros.subarray(0, n))
  }
  yield tarTrailer(size)
}

/** Passes chunks through, feeding them to `seen` on the way. */
const tap = (seen: (chunk: Buffer) => void) =>
  new Transform({
    transform(chunk: Buffer, _enc, cb) {
      seen(chunk)
      cb(null, chunk)
    },
  })

/**
 * A big single-layer image, written to disk as a stream: the layer is a real tar.gz of one file
 * of incompressible AES-CTR keystream, in gzip "stored" blocks so writing it costs no compression
 * time, hashed as it is written. Readable by other users (a web server's workers may serve it).
 */
export async function buildBigImage(payloadBytes: number): Promise<BigImage> {
  return inNewLayout(async (dir) => {
    const blobs = join(dir, 'blobs', 'sha256')
    const diff = createHash('sha256')
    const gz = createHash('sha256')
    let layerSize = 0
    const tmp = join(blobs, 'layer.tmp')
    await pipeline(
      Readable.from(bigTarChunks(payloadBytes)),
      tap((c) => diff.update(c)),
      createGzip({ level: 0, chunkSize: 1024 * 1024 }),
      tap((c) => {
        gz.update(c)
        layerSize += c.length
      }),
      createWriteStream(tmp),
    )
    const layer: WrittenLayer = { digest: 'sha256:' + gz.digest('hex'), size: layerSize, diffId: 'sha256:' + diff.digest('hex') }
    const layerFile = hex(layer.digest)
    await rename(tmp, join(blobs, layerFile))
    const image = await finishImage(dir, [layer], { os: 'linux', architecture: 'amd64' }, randomBytes(16).toString('hex'))
    for (const d of [dir, join(dir, 'blobs'), blobs]) await chmod(d, 0o755)
    await chmod(join(blobs, layerFile), 0o644)
    return { ...image, layerDigest: layer.digest, layerSize, layerDir: blobs, layerFile }
  })
}

/** Multi-platform image: an OCI index over the given images (give them distinct platforms). */
export async function buildIndex(images: OciLayout[]): Promise<OciIndexLayout> {
  return inNewLayout(async (dir) => {
    for (const img of images) {
      await cp(join(img.dir, 'blobs'), join(dir, 'blobs'), { recursive: true, force: true })
    }
    const children: IndexChild[] = images.map((image) => ({
      digest: image.manifestDigest,
      size: image.manifestSize,
      platform: image.platform,
      image,
    }))
    const indexBytes = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: MT.ociIndex,
        manifests: children.map((c) => ({ mediaType: MT.ociManifest, digest: c.digest, size: c.size, platform: c.platform })),
      }),
    )
    const indexDigest = await writeTop(dir, MT.ociIndex, indexBytes)
    return {
      dir,
      ref: `oci:${dir}:latest`,
      indexDigest,
      indexSize: indexBytes.length,
      indexBytes,
      children,
      remove: () => removeTempDir(dir),
    }
  })
}

export interface RegistryClientOptions {
  auth?: BasicAuth
}

function helperHeaders(o: RegistryClientOptions, extra: Record<string, string> = {}): Record<string, string> {
  const h: Record<string, string> = { 'user-agent': `${HELPER_USER_AGENT}/images`, ...extra }
  if (o.auth) h.authorization = 'Basic ' + Buffer.from(`${o.auth.username}:${o.auth.password}`).toString('base64')
  return h
}

function baseUrl(registry: string): string {
  return /^https?:\/\//.test(registry) ? registry.replace(/\/+$/, '') : `http://${registry}`
}

/**
 * The digest the registry serves for a tag or digest, as stored (Accept of
 * all manifest types prevents any conversion). Undefined when it answers 404.
 */
export async function resolveDigest(
  registry: string,
  repo: string,
  reference: string,
  opts: RegistryClientOptions = {},
): Promise<string | undefined> {
  const res = await fetch(`${baseUrl(registry)}/v2/${repo}/manifests/${reference}`, {
    method: 'HEAD',
    headers: helperHeaders(opts, { accept: ALL_MANIFEST_TYPES }),
    signal: AbortSignal.timeout(10_000),
  })
  if (res.status === 404) return undefined
  const digest = res.headers.get('docker-content-digest')
  if (res.status !== 200 || !digest) throw new Error(`HEAD ${repo}:${reference} -> ${res.status}`)
  return digest
}

export interface PushOptions {
  /** 'v2s2' makes skopeo convert to Docker schema2 (the digest changes). Default: keep OCI. */
  format?: 'oci' | 'v2s2'
  /** Copy every platform of an index. Defaults to true for an index, false for a single image. */
  all?: boolean
  auth?: BasicAuth
  timeoutMs?: number
}

function splitRepoTag(repoAndTag: string): [string, string] {
  const colon = repoAndTag.lastIndexOf(':')
  if (colon > repoAndTag.lastIndexOf('/')) return [repoAndTag.slice(0, colon), repoAndTag.slice(colon + 1)]
  return [repoAndTag, 'latest']
}

/**
 * Copy into a registry with skopeo, which also does any token exchange itself. For a layout pushed
 * unconverted the digest is the built one; pushImage() asks the registry.
 */
export async function copyImage(
  layout: OciLayout | OciIndexLayout,
  registryHost: string,
  repoAndTag: string,
  opts: PushOptions = {},
): Promise<void> {
  const [repo, tag] = splitRepoTag(repoAndTag)
  const host = registryHost.replace(/^https?:\/\//, '')
  const all = opts.all ?? 'indexDigest' in layout
  // --insecure-policy: independent of /etc/containers/policy.json contents.
  const args = ['--insecure-policy', 'copy', '--dest-tls-verify=false', '--retry-times', '2']
  if (all) args.push('--all')
  if (opts.format === 'v2s2') args.push('--format', 'v2s2')
  if (opts.format === 'oci') args.push('--format', 'oci')
  if (opts.auth) args.push('--dest-creds', `${opts.auth.username}:${opts.auth.password}`)
  args.push(layout.ref, `docker://${host}/${repo}:${tag}`)
  const r = await run('skopeo', args, { timeoutMs: opts.timeoutMs ?? 60_000 })
  if (r.code !== 0) throw new Error(`skopeo ${args.join(' ')} failed (${r.code}):\n${r.stderr}${r.stdout}`)
}

/** Push with skopeo; returns the digest the registry now serves for the tag (asked with Basic auth). */
export async function pushImage(
  layout: OciLayout | OciIndexLayout,
  registryHost: string,
  repoAndTag: string,
  opts: PushOptions = {},
): Promise<{ digest: string }> {
  await copyImage(layout, registryHost, repoAndTag, opts)
  const [repo, tag] = splitRepoTag(repoAndTag)
  const digest = await resolveDigest(registryHost.replace(/^https?:\/\//, ''), repo, tag, { auth: opts.auth })
  if (!digest) throw new Error(`pushed ${repo}:${tag} but registry answers 404`)
  return { digest }
}

/** DELETE /v2/REPO/manifests/DIGEST (removes every tag pointing at it). Returns the HTTP status. */
export async function deleteManifest(
  registry: string,
  repo: string,
  digest: string,
  opts: RegistryClientOptions = {},
): Promise<number> {
  const res = await fetch(`${baseUrl(registry)}/v2/${repo}/manifests/${digest}`, {
    method: 'DELETE',
    headers: helperHeaders(opts),
    signal: AbortSignal.timeout(10_000),
  })
  await res.arrayBuffer()
  return res.status
}

/**
 * "Tag deleted upstream" through the API: distribution cannot untag, so this
 * resolves the tag and deletes its manifest. For an untag that leaves the
 * manifest reachable by digest use Registry.removeTag().
 */
export async function deleteTag(
  registry: string,
  repo: string,
  tag: string,
  opts: RegistryClientOptions = {},
): Promise<{ digest: string; status: number }> {
  const digest = await resolveDigest(registry, repo, tag, opts)
  if (!digest) throw new Error(`deleteTag: ${repo}:${tag} not found`)
  return { digest, status: await deleteManifest(registry, repo, digest, opts) }
}
