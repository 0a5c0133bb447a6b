// Content-addressed files. Knows files and digests, nothing of HTTP or upstreams.
// A blob is written to tmp/, hashed as it is written, and renamed into blobs/ only when its
// digest verifies, so every file under blobs/ hashes to its name.

import { createHash, randomBytes, type Hash } from 'node:crypto'
import { close, fstat, open as openFd, read } from 'node:fs'
import type { Readable } from 'node:stream'
import { promisify } from 'node:util'
import { ChunkReader } from './chunk-reader.js'
import { mkdir, open, readdir, rename, rm, stat, type FileHandle, readFile } from 'node:fs/promises'
import { dirname, join } from 'node:path'
import { blobPath, blobsDir, tmpDir } from './layout.js'
import type { ContentStore, ContentWriter, ReadHandle } from './content-store.js'
import { digestAlgorithm } from '../oci/reference.js'

export class DigestMismatchError extends Error {
  readonly code = 'DIGEST_MISMATCH'
  constructor(
    readonly expected: string,
    readonly actual: string,
  ) {
    super(`content hashes to ${actual}, expected ${expected}`)
  }
}

const fsOpen = promisify(openFd)
const fsFstat = promisify(fstat)
const fsClose = promisify(close)
const fsRead = (fd: number, buf: Buffer, offset: number, length: number, position: number | null) =>
  new Promise<number>((resolve, reject) => read(fd, buf, offset, length, position, (err, n) => (err ? reject(err) : resolve(n))))

/** Largest read while re-hashing a blob. */
const VERIFY_CHUNK = 1024 * 1024

export class BlobStore implements ContentStore {
  private readonly chunks = new ChunkReader()

  constructor(readonly dataDir: string) {}

  /** Creates the directories and removes fills that a previous process left unfinished. */
  async init(): Promise<{ removedTemporary: number }> {
    await mkdir(blobsDir(this.dataDir), { recursive: true, mode: 0o700 })
    const tmp = tmpDir(this.dataDir)
    let removed = 0
    try {
      for (const name of await readdir(tmp)) {
        await rm(join(tmp, name), { force: true, recursive: true })
        removed++
      }
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err
    }
    await mkdir(tmp, { recursive: true, mode: 0o700 })
    return { removedTemporary: removed }
  }

  pathOf(digest: string): string {
    return blobPath(this.dataDir, digest)
  }

  /** Size of the stored blob, or undefined when it is not on disk. */
  async size(digest: string): Promise<number | undefined> {
    try {
      return (await stat(this.pathOf(digest))).size
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined
      throw err
    }
  }

  async read(digest: string): Promise<Buffer | undefined> {
    try {
      return await readFile(this.pathOf(digest))
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined
      throw err
    }
  }

  /** Streams bytes [start, end] (inclusive) of a stored blob; streams of one blob share their reads. */
  createReadStream(digest: string, start?: number, end?: number): Readable {
    return this.chunks.stream(digest, this.pathOf(digest), start, end)
  }

  /** The stored file: only verified, complete blobs are ever under blobs/ (see the header). */
  openFile(digest: string): Promise<FileHandle> {
    return open(this.pathOf(digest), 'r')
  }

  async remove(digest: string): Promise<void> {
    this.chunks.forget(digest)
    await rm(this.pathOf(digest), { force: true })
  }

  /** Stores a small complete buffer (a manifest), verifying it first. */
  async put(digest: string, bytes: Buffer): Promise<void> {
    const writer = await this.createWriter(digest)
    try {
      await writer.write(bytes)
      await writer.commit()
    } catch (err) {
      await writer.abort()
      throw err
    }
  }

  async createWriter(digest: string): Promise<BlobWriter> {
    const path = join(tmpDir(this.dataDir), `${randomBytes(8).toString('hex')}.partial`)
    const fh = await open(path, 'wx+', 0o600)
    return new BlobWriter(digest, path, this.pathOf(digest), fh)
  }

  /** Every digest stored, for fsck. */
  async *list(): AsyncGenerator<string> {
    for (const algorithm of await readdirOrEmpty(blobsDir(this.dataDir))) {
      for (const prefix of await readdirOrEmpty(join(blobsDir(this.dataDir), algorithm))) {
        for (const encoded of await readdirOrEmpty(join(blobsDir(this.dataDir), algorithm, prefix))) {
          yield `${algorithm}:${encoded}`
        }
      }
    }
  }

  /** Re-hashes a stored blob. */
  async verify(digest: string): Promise<boolean> {
    const hash = createHash(digestAlgorithm(digest))
    // Straight from the file: what is checked is the disk, not bytes kept in memory. The buffer
    // is sized to the file (up to 1 MiB): fsck verifies millions of small blobs, and a 1 MiB
    // stream buffer for each of them was most of its cost.
    // Callback-style fs calls (promisified) rather than a FileHandle: per small file they cost a
    // fraction of the FileHandle's, which dominated the time of a million-blob check.
    const fd = await fsOpen(this.pathOf(digest), 'r')
    try {
      const { size } = await fsFstat(fd)
      const buf = Buffer.allocUnsafe(Math.max(1, Math.min(size, VERIFY_CHUNK)))
      for (;;) {
        const bytesRead = await fsRead(fd, buf, 0, buf.length, null)
        if (bytesRead === 0) break
        hash.update(bytesRead === buf.length ? buf : buf.subarray(0, bytesRead))
      }
    } finally {
      await fsClose(fd)
    }
    return `${digestAlgorithm(digest)}:${hash.digest('hex')}` === digest
  }
}

/**
 * A blob being written. Readers may read the temporary file up to `written` bytes while the
 * write goes on (see core/fill.ts); only commit() makes it visible under its digest.
 */
export class BlobWriter implements ContentWriter {
  written = 0
  private readonly hash: Hash
  private closed = false
  private committed = false

  constructor(
    readonly digest: string,
    readonly tempPath: string,
    readonly finalPath: string,
    private readonly fh: FileHandle,
  ) {
    this.hash = createHash(digestAlgorithm(digest))
  }

  /** Writes and hashes a chunk. On failure (ENOSPC) nothing of the chunk counts as written. */
  async write(chunk: Buffer): Promise<void> {
    let offset = 0
    while (offset < chunk.length) {
      const { bytesWritten } = await this.fh.write(chunk, offset, chunk.length - offset, this.written + offset)
      offset += bytesWritten
    }
    this.written += chunk.length
    this.hash.update(chunk)
  }

  /**
   * Hashes bytes that could not be written (the disk is full): the blob can still be verified
   * for the clients it is streamed to, though it will not be kept.
   */
  hashOnly(chunk: Buffer): void {
    this.hash.update(chunk)
  }

  /** The digest of everything written or hashed so far (call once, at the end). */
  actualDigest(): string {
    return `${digestAlgorithm(this.digest)}:${this.hash.digest('hex')}`
  }

  /** Verifies the digest, flushes and renames into place. Throws DigestMismatchError (and removes the file) on mismatch. */
  async commit(): Promise<void> {
    const actual = this.actualDigest()
    if (actual !== this.digest) {
      await this.abort()
      throw new DigestMismatchError(this.digest, actual)
    }
    await this.fh.sync()
    await this.fh.close()
    this.closed = true
    await mkdir(dirname(this.finalPath), { recursive: true, mode: 0o700 })
    // Set first: a reader that finds the temporary file gone must look for the final one.
    this.committed = true
    await rename(this.tempPath, this.finalPath)
  }

  /** The temporary file, or the blob itself once commit() renamed it into place. */
  async openRead(): Promise<ReadHandle> {
    try {
      return await open(this.tempPath, 'r')
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT' && this.committed) return open(this.finalPath, 'r')
      throw err
    }
  }

  async abort(): Promise<void> {
    if (!this.closed) {
      this.closed = true
      await this.fh.close().catch(() => {})
    }
    await rm(this.tempPath, { force: true })
  }
}

async function readdirOrEmpty(dir: string): Promise<string[]> {
  try {
    return await readdir(dir)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return []
    throw err
  }
}
