// A big single-layer image written straight to an OCI layout on disk, streaming: the layer is a
// real tar.gz (one file of incompressible AES-CTR keystream, gzip "stored" blocks so writing it
// costs no compression time), hashed as it is written. Pushed with skopeo like the tests' images.

import { createCipheriv, createHash, randomBytes } from 'node:crypto'
import { createWriteStream } from 'node:fs'
import { chmod, mkdir, rename, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { pipeline } from 'node:stream/promises'
import { Readable, Transform } from 'node:stream'
import { createGzip } from 'node:zlib'
import { MT } from '../test/helpers/images.js'
import { makeTempDir, removeTempDir } from '../test/helpers/proc.js'

export interface BigImage {
  dir: string
  /** skopeo source reference. */
  ref: string
  layerDigest: string
  layerSize: number
  /** Directory and file name of the layer blob on disk (for nginx). */
  layerDir: string
  layerFile: string
  manifestDigest: string
  remove(): Promise<void>
}

function tarHeader(name: string, size: number): Buffer {
  const header = Buffer.alloc(512)
  const put = (s: string, off: number, len: number) => header.write(s, off, len, 'ascii')
  const octal = (n: number, len: number) => n.toString(8).padStart(len - 1, '0') + '\0'
  put(name, 0, 100)
  put(octal(0o644, 8), 100, 8)
  put(octal(0, 8), 108, 8)
  put(octal(0, 8), 116, 8)
  put(octal(size, 12), 124, 12)
  put(octal(0, 12), 136, 12)
  put('        ', 148, 8)
  put('0', 156, 1)
  put('ustar\0', 257, 6)
  put('00', 263, 2)
  put('root', 265, 32)
  put('root', 297, 32)
  let sum = 0
  for (const b of header) sum += b
  put(sum.toString(8).padStart(6, '0') + '\0 ', 148, 8)
  return header
}

/** The uncompressed tar: header, `size` pseudo-random bytes, padding, end-of-archive. */
function* tarChunks(size: number): Generator<Buffer> {
  yield tarHeader('payload.bin', size)
  const cipher = createCipheriv('aes-128-ctr', randomBytes(16), randomBytes(16))
  const CHUNK = 16 * 1024 * 1024
  const zeros = Buffer.alloc(CHUNK)
  for (let left = size; left > 0; left -= CHUNK) {
    const n = Math.min(CHUNK, left)
    yield cipher.update(n === CHUNK ? zeros : zeros.subarray(0, n))
  }
  yield Buffer.alloc((512 - (size % 512)) % 512)
  yield Buffer.alloc(1024)
}

const sha256 = (b: Buffer) => 'sha256:' + createHash('sha256').update(b).digest('hex')

export async function buildBigImage(payloadBytes: number): Promise<BigImage> {
  const dir = await makeTempDir()
  try {
    const blobs = join(dir, 'blobs', 'sha256')
    await mkdir(blobs, { recursive: true })
    await writeFile(join(dir, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }))

    const diff = createHash('sha256')
    const gz = createHash('sha256')
    let layerSize = 0
    const tmp = join(blobs, 'layer.tmp')
    await pipeline(
      Readable.from(tarChunks(payloadBytes)),
      new Transform({
        transform(chunk: Buffer, _enc, cb) {
          diff.update(chunk)
          cb(null, chunk)
        },
      }),
      createGzip({ level: 0, chunkSize: 1024 * 1024 }),
      new Transform({
        transform(chunk: Buffer, _enc, cb) {
          gz.update(chunk)
          layerSize += chunk.length
          cb(null, chunk)
        },
      }),
      createWriteStream(tmp),
    )
    const layerDigest = 'sha256:' + gz.digest('hex')
    const diffId = 'sha256:' + diff.digest('hex')
    const layerFile = layerDigest.slice('sha256:'.length)
    await rename(tmp, join(blobs, layerFile))

    const config = Buffer.from(
      JSON.stringify({
        created: '2000-01-01T00:00:00Z',
        os: 'linux',
        architecture: 'amd64',
        config: { Cmd: ['/bin/true'] },
        rootfs: { type: 'layers', diff_ids: [diffId] },
      }),
    )
    const configDigest = sha256(config)
    await writeFile(join(blobs, configDigest.slice(7)), config)
    const manifest = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: MT.ociManifest,
        config: { mediaType: MT.ociConfig, digest: configDigest, size: config.length },
        layers: [{ mediaType: MT.ociLayerGzip, digest: layerDigest, size: layerSize }],
      }),
    )
    const manifestDigest = sha256(manifest)
    await writeFile(join(blobs, manifestDigest.slice(7)), manifest)
    await writeFile(
      join(dir, 'index.json'),
      JSON.stringify({
        schemaVersion: 2,
        mediaType: MT.ociIndex,
        manifests: [
          { mediaType: MT.ociManifest, digest: manifestDigest, size: manifest.length, annotations: { 'org.opencontainers.image.ref.name': 'latest' } },
        ],
      }),
    )
    // nginx workers run as nobody: let them reach the layer file.
    for (const d of [dir, join(dir, 'blobs'), blobs]) await chmod(d, 0o755)
    await chmod(join(blobs, layerFile), 0o644)
    return {
      dir,
      ref: `oci:${dir}:latest`,
      layerDigest,
      layerSize,
      layerDir: blobs,
      layerFile,
      manifestDigest,
      remove: () => removeTempDir(dir),
    }
  } catch (e) {
    await removeTempDir(dir)
    throw e
  }
}
