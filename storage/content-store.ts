// The seam between the mirror core and where content bytes live. The filesystem store
// (storage/blob-store.ts) is the default; an object store implements the same contract.
// Every implementation keeps one promise: nothing is visible under a digest until its bytes
// hashed to that digest.

import type { Readable } from 'node:stream'
import type { FileHandle } from 'node:fs/promises'

export interface ContentStore {
  /** Prepares the store; removes (or reports) leftovers of fills a previous process left unfinished. */
  init(): Promise<{ removedTemporary: number }>
  /** Size of the stored content, or undefined when it is not stored. */
  size(digest: string): Promise<number | undefined>
  /** Whole content (small: manifests), or undefined when it is not stored. */
  read(digest: string): Promise<Buffer | undefined>
  /** Bytes [start, end] (inclusive) of stored content. */
  createReadStream(digest: string, start?: number, end?: number): Readable
  /**
   * Stores that keep content in local files: the stored (verified, complete) file, opened for
   * reading, so its bytes can go to a socket without passing through JavaScript.
   */
  openFile?(digest: string): Promise<FileHandle>
  remove(digest: string): Promise<void>
  /** Stores a small complete buffer (a manifest) after verifying it. */
  put(digest: string, bytes: Buffer): Promise<void>
  /** Starts writing content that becomes visible only by a successful commit(). */
  createWriter(digest: string): Promise<ContentWriter>
  /** Every digest stored (fsck). */
  list(): AsyncGenerator<string>
  /** Re-hashes stored content against its name. */
  verify(digest: string): Promise<boolean>
}

/**
 * Content being written. Bytes written so far can be read back (by the clients following a fill)
 * through openRead() while the write goes on; only commit() makes them visible under the digest.
 */
export interface ContentWriter {
  readonly digest: string
  /** Bytes written so far. */
  readonly written: number
  /** Writes and hashes a chunk. On failure (ENOSPC) nothing of the chunk counts as written. */
  write(chunk: Buffer): Promise<void>
  /** Hashes bytes that could not be written (disk full): the relay to clients is still verified. */
  hashOnly(chunk: Buffer): void
  /** The digest of everything written or hashed so far (call once, at the end). */
  actualDigest(): string
  /** Verifies the digest and publishes the content; throws DigestMismatchError on mismatch. */
  commit(): Promise<void>
  /** Drops what was written; nothing becomes visible. */
  abort(): Promise<void>
  /** A handle to read the bytes written so far (and, after commit, the stored content). */
  openRead(): Promise<ReadHandle>
}

export interface ReadHandle {
  /** The descriptor, when the bytes are in a local file (they may then be sent with sendfile). */
  readonly fd?: number
  read(buffer: Buffer, offset: number, length: number, position: number): Promise<{ bytesRead: number }>
  close(): Promise<void>
}
