// One upstream download of one blob, shared by every client that asks while it runs.
//
// Bytes go upstream → temporary file (hashed as written) → each client, read back from the file
// at the client's own pace, so memory stays flat whatever the blob size or client count, and a
// client that joins late reads what is already on disk, then the rest. The last byte is held back
// until the digest verifies: a client never receives a complete-looking wrong blob. A connection
// cut mid-body is resumed with a Range request from the received offset.

import { EventEmitter } from 'node:events'
import { open, type FileHandle } from 'node:fs/promises'
import { Readable } from 'node:stream'
import type { BlobWriter } from '../storage/blob-store.js'
import type { UpstreamResponse } from '../upstream/client.js'

export type FillState = 'filling' | 'done' | 'failed'

export interface FillOptions {
  digest: string
  size: number
  writer: BlobWriter
  /** The first upstream response (status 200), already received. */
  first: UpstreamResponse
  /** Re-requests the blob from `offset` (Range: bytes=offset-) after a cut. */
  resume: (offset: number) => Promise<UpstreamResponse>
  maxResumes?: number
  /** Stores the verified blob's metadata; runs before readers see the last byte. */
  onCommitted: () => void
}

const READ_CHUNK = 256 * 1024

export class Fill extends EventEmitter {
  state: FillState = 'filling'
  error?: Error
  resumes = 0
  readers = 0
  readonly digest: string
  readonly size: number
  readonly done: Promise<void>
  private readonly writer: BlobWriter

  constructor(private readonly opts: FillOptions) {
    super()
    this.setMaxListeners(0)
    this.digest = opts.digest
    this.size = opts.size
    this.writer = opts.writer
    this.done = this.run()
    // Failures are reported to readers through events; `done` must not be an unhandled rejection.
    this.done.catch(() => {})
  }

  get written(): number {
    return this.writer.written
  }

  private async run(): Promise<void> {
    let res: UpstreamResponse | undefined = this.opts.first
    const maxResumes = this.opts.maxResumes ?? 3
    try {
      while (this.writer.written < this.size) {
        if (!res) {
          this.resumes++
          res = await this.opts.resume(this.writer.written)
          if (res.status !== 206 || !contentRangeStartsAt(res.headers['content-range'], this.writer.written)) {
            await res.body.dump().catch(() => {})
            throw new Error(`upstream did not resume at byte ${this.writer.written} (status ${res.status})`)
          }
        }
        try {
          for await (const chunk of res.body) {
            const buf = chunk as Buffer
            if (this.writer.written + buf.length > this.size) throw new Error(`upstream sent more than the ${this.size} bytes it announced`)
            await this.writer.write(buf)
            this.emit('progress')
          }
        } catch (err) {
          if (isWriteError(err) || this.resumes >= maxResumes || (err as Error).message.startsWith('upstream sent more')) throw err
        }
        res = undefined
        if (this.writer.written < this.size && this.resumes >= maxResumes) {
          throw new Error(`upstream connection cut at byte ${this.writer.written} of ${this.size} (after ${this.resumes} resumes)`)
        }
      }
      await this.writer.commit()
      this.opts.onCommitted()
      this.state = 'done'
      this.emit('progress')
    } catch (err) {
      if (res) res.body.destroy()
      await this.writer.abort()
      this.state = 'failed'
      this.error = err as Error
      this.emit('progress')
      throw err
    }
  }

  /** The temporary file, or the blob itself once the fill renamed it into place. */
  async openFile(): Promise<FileHandle> {
    try {
      return await open(this.writer.tempPath, 'r')
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT' && this.state !== 'failed') return open(this.writer.finalPath, 'r')
      throw err
    }
  }

  /**
   * A stream of bytes [start, end] of the blob, following the fill. It errors (the client sees a
   * cut transfer) if the fill fails before the client's last byte was released.
   */
  createReadStream(start: number, end: number): Readable {
    let fh: FileHandle | undefined
    let pos = start
    let waiting = false
    const fill = this
    fill.readers++
    // Node calls read() again only after a push(); while waiting for bytes the fill's progress
    // events drive pump() instead.
    const onProgress = () => {
      if (waiting) {
        waiting = false
        void pump()
      }
    }
    const pump = async (): Promise<void> => {
      try {
        if (!fh) fh = await fill.openFile()
        if (fill.state === 'failed' && pos <= end) throw fill.error ?? new Error('fill failed')
        if (pos > end) {
          stream.push(null)
          return
        }
        // The blob's final byte waits for verification.
        const limit = fill.state === 'done' ? end + 1 : Math.min(end + 1, fill.written, fill.size - 1)
        if (pos < limit) {
          const buf = Buffer.allocUnsafe(Math.min(READ_CHUNK, limit - pos))
          const { bytesRead } = await fh.read(buf, 0, buf.length, pos)
          if (bytesRead === 0) throw new Error('cache file shrank while being read')
          pos += bytesRead
          stream.push(bytesRead === buf.length ? buf : buf.subarray(0, bytesRead))
          return
        }
        waiting = true
      } catch (err) {
        stream.destroy(err as Error)
      }
    }
    fill.on('progress', onProgress)
    const stream = new Readable({
      highWaterMark: READ_CHUNK,
      read() {
        void pump()
      },
      destroy(err, cb) {
        fill.off('progress', onProgress)
        fill.readers--
        const f = fh
        fh = undefined
        if (f) f.close().then(() => cb(err), () => cb(err))
        else cb(err)
      },
    })
    return stream
  }
}

function contentRangeStartsAt(header: string | string[] | undefined, offset: number): boolean {
  const m = /^bytes (\d+)-/.exec(String(header ?? ''))
  return m !== null && Number(m[1]) === offset
}

function isWriteError(err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException)?.code
  return code === 'ENOSPC' || code === 'EDQUOT' || code === 'EIO' || code === 'EROFS'
}
