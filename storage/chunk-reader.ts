// Streams of stored blobs that share what they read. Each blob is read in aligned chunks; a chunk
// that one client's stream has read (or is reading) is handed to every other stream that needs
// the same bytes, and the most recent chunks are kept for a while. A thousand clients of one
// blob then hold a few dozen chunks between them instead of a read buffer each (a 1 MiB buffer
// per stream took 1.1 GB for a thousand clients), and the file is read about once, not once per
// client. Stored blobs never change (content addressed); chunks are keyed by the file's identity
// too (inode, size, modification time), so a file damaged or replaced on disk is read afresh.

import { open, type FileHandle } from 'node:fs/promises'
import { Readable } from 'node:stream'
import { LRUCache } from 'lru-cache'

export const CHUNK = 1024 * 1024
/** Recent chunks kept (bytes), over every blob. */
const KEEP_BYTES = 64 * 1024 * 1024

export class ChunkReader {
  private readonly recent = new LRUCache<string, Buffer>({ maxSize: KEEP_BYTES, sizeCalculation: (b) => Math.max(1, b.length) })
  private readonly reading = new Map<string, Promise<Buffer>>()

  /** Drops what is kept of a blob (removed, or found damaged). */
  forget(digest: string): void {
    for (const key of this.recent.keys()) if (key.startsWith(`${digest}@`)) this.recent.delete(key)
  }

  /** Bytes [start, end] (inclusive) of the file at `path`, which holds the blob `digest`. */
  stream(digest: string, path: string, start = 0, end = Infinity): Readable {
    let fh: FileHandle | undefined
    let file = ''
    let pos = start
    const chunkAt = (index: number): Promise<Buffer> => {
      const key = `${digest}@${file}@${index}`
      const kept = this.recent.get(key)
      if (kept) return Promise.resolve(kept)
      let p = this.reading.get(key)
      if (!p) {
        p = readChunk(fh as FileHandle, index).then((chunk) => {
          this.recent.set(key, chunk)
          return chunk
        })
        p.finally(() => this.reading.delete(key)).catch(() => {})
        this.reading.set(key, p)
      }
      return p
    }
    return new Readable({
      // One chunk at a time per stream: the socket's own queue holds the one before it.
      highWaterMark: 1,
      read() {
        void (async () => {
          try {
            if (!fh) {
              fh = await open(path, 'r')
              const st = await fh.stat()
              file = `${st.ino}:${st.size}:${st.mtimeMs}`
            }
            if (pos > end) {
              this.push(null)
              return
            }
            const index = Math.floor(pos / CHUNK)
            let chunk: Buffer
            try {
              chunk = await chunkAt(index)
            } catch (err) {
              // The stream whose handle was reading it may have been closed (its client left):
              // read it with this one's own handle.
              if (!fh) throw err
              chunk = await readChunk(fh, index)
            }
            const from = pos - index * CHUNK
            if (from >= chunk.length) {
              // Past the end of the file.
              this.push(null)
              return
            }
            const to = Math.min(chunk.length, end + 1 - index * CHUNK)
            pos += to - from
            this.push(chunk.subarray(from, to))
          } catch (err) {
            this.destroy(err as Error)
          }
        })()
      },
      destroy(err, cb) {
        const f = fh
        fh = undefined
        if (f) f.close().then(() => cb(err), () => cb(err))
        else cb(err)
      },
    })
  }
}

async function readChunk(fh: FileHandle, index: number): Promise<Buffer> {
  const buf = Buffer.allocUnsafe(CHUNK)
  const { bytesRead } = await fh.read(buf, 0, CHUNK, index * CHUNK)
  return bytesRead === CHUNK ? buf : buf.subarray(0, bytesRead)
}
