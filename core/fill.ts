// One upstream download of one blob, shared by every client that asks while it runs.
//
// Bytes go upstream → temporary file (hashed as written) → each client, read back from the file
// at the client's own pace, so memory stays flat whatever the blob size or client count, and a
// client that joins late reads what is already on disk, then the rest. The last byte is held back
// until the digest verifies: a client never receives a complete-looking wrong blob. A connection
// cut mid-body is resumed with a Range request from the received offset.
//
// When the disk fills up (ENOSPC) the download becomes a relay: the clients already attached
// read what reached the file, then receive the rest chunk by chunk, paced by the slowest of them
// (one chunk in memory), still verified; nothing is kept, and new clients start their own fill.

import { EventEmitter } from 'node:events'
import { Readable } from 'node:stream'
import type { ContentWriter, ReadHandle } from '../storage/content-store.js'
import { DigestMismatchError } from '../storage/blob-store.js'
import type { UpstreamResponse } from '../upstream/client.js'

export type FillState = 'filling' | 'relaying' | 'done' | 'relayed' | 'failed'

export interface FillOptions {
  digest: string
  size: number
  writer: ContentWriter
  /** The first upstream response (status 200), already received. */
  first: UpstreamResponse
  /** Re-requests the blob from `offset` (Range: bytes=offset-) after a cut. */
  resume: (offset: number) => Promise<UpstreamResponse>
  maxResumes?: number
  /** Stores the verified blob's metadata; runs before readers see the last byte. */
  onCommitted: () => void
}

const READ_CHUNK = 256 * 1024
/**
 * A file follower that keeps pace with the download is handed bytes in steps of at least this
 * many (or all that is left before the held-back last byte): each step is one sendfile transfer.
 */
const FOLLOW_STEP = 1024 * 1024
/**
 * ... or whatever arrived within this many milliseconds: a fast download still makes large
 * steps, a slow one (a slow upstream link) reaches its clients smoothly instead of in bursts.
 */
const FOLLOW_WAIT_MS = 5
/** Newest bytes kept in memory, so clients that keep up with the download do not read the file back. */
const RECENT_LIMIT = 8 * 1024 * 1024

interface Reader {
  pos: number
  end: number
}

/**
 * A client following the fill through its temporary file by descriptor: it moves the bytes
 * itself (sendfile), asking before each step how far it may go.
 */
export interface FileFollower {
  /** Read-only descriptor of the fill's file (the stored blob once committed). */
  readonly fd: number
  /**
   * Reports that bytes before `pos` were sent and resolves, once bytes from `pos` on may be sent,
   * to the end (exclusive) of those bytes; to 'stream' when the rest must come through
   * createReadStream() (the disk filled up and the fill became a relay). Rejects when the fill
   * failed: the client must then be cut off.
   */
  available(pos: number): Promise<number | 'stream'>
  /** Stops following; call once (more calls do nothing). */
  close(): Promise<void>
}

export class Fill extends EventEmitter {
  state: FillState = 'filling'
  error?: Error
  /** Why the fill turned into a relay (the disk error). */
  diskError?: Error
  resumes = 0
  readonly digest: string
  readonly size: number
  readonly done: Promise<void>
  private readonly writer: ContentWriter
  /** Errors that end the fill at once (no resume): the bytes themselves are wrong. */
  private readonly fatal = new WeakSet<Error>()
  /** Bytes received from upstream and hashed (on disk, or relayed once the disk failed). */
  private received = 0
  /** While relaying: the chunk being handed to readers. */
  private relay?: { offset: number; buf: Buffer }
  private readonly readerSet = new Set<Reader>()
  private recent: { offset: number; buf: Buffer }[] = []
  private recentBytes = 0

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

  /**
   * Whether a reader of bytes [start, end] would get them all now, without waiting for more of
   * the download (the blob's last byte counts only once the whole blob verified).
   */
  holds(start: number, end: number): boolean {
    if (this.state === 'done') return true
    if (this.state !== 'filling' || start > end) return false
    return end < Math.min(this.writer.written, this.size - 1)
  }

  private async run(): Promise<void> {
    let res: UpstreamResponse | undefined = this.opts.first
    const maxResumes = this.opts.maxResumes ?? 3
    try {
      while (this.received < this.size) {
        if (!res) {
          this.resumes++
          res = await this.opts.resume(this.received)
          if (res.status !== 206 || !contentRangeStartsAt(res.headers['content-range'], this.received)) {
            await res.body.dump().catch(() => {})
            throw new Error(`upstream did not resume at byte ${this.received} (status ${res.status})`)
          }
        }
        try {
          for await (const chunk of res.body) await this.accept(chunk as Buffer)
        } catch (err) {
          if ((err instanceof Error && this.fatal.has(err)) || this.resumes >= maxResumes) throw err
        }
        res = undefined
        if (this.received < this.size && this.resumes >= maxResumes) {
          throw new Error(`upstream connection cut at byte ${this.received} of ${this.size} (after ${this.resumes} resumes)`)
        }
      }
      if (this.state === 'relaying') {
        await this.drainRelay()
        this.state = 'relayed'
        this.emit('progress')
        await this.writer.abort()
        throw this.diskError
      }
      await this.writer.commit()
      this.opts.onCommitted()
      this.state = 'done'
      this.emit('progress')
      this.forgetRecent()
    } catch (err) {
      if (res) res.body.destroy()
      await this.writer.abort()
      this.forgetRecent()
      if (this.state !== 'relayed') {
        this.state = 'failed'
        this.error = err as Error
      }
      this.emit('progress')
      throw err
    }
  }

  /** Takes one chunk from upstream: onto disk, or, once the disk failed, to the readers. */
  private async accept(buf: Buffer): Promise<void> {
    if (this.received + buf.length > this.size) throw this.fatalError(new Error(`upstream sent more than the ${this.size} bytes it announced`))
    if (this.state === 'filling') {
      try {
        await this.writer.write(buf)
        this.remember(this.received, buf)
        this.received += buf.length
        this.emit('progress')
        return
      } catch (err) {
        if (!isDiskError(err)) throw this.fatalError(err as Error)
        this.diskError = err as Error
        this.state = 'relaying'
        this.emit('relaying', err)
      }
    }
    this.writer.hashOnly(buf)
    if (this.received + buf.length === this.size) {
      // The final chunk is released only after the whole blob verified.
      const actual = this.writer.actualDigest()
      if (actual !== this.digest) throw this.fatalError(new DigestMismatchError(this.digest, actual))
    }
    await this.drainRelay()
    this.relay = { offset: this.received, buf }
    this.received += buf.length
    this.emit('progress')
    await this.drainRelay()
  }

  private remember(offset: number, buf: Buffer): void {
    this.recent.push({ offset, buf })
    this.recentBytes += buf.length
    while (this.recentBytes > RECENT_LIMIT && this.recent.length > 1) this.recentBytes -= (this.recent.shift() as { buf: Buffer }).buf.length
  }

  private forgetRecent(): void {
    this.recent = []
    this.recentBytes = 0
  }

  /** Bytes from `pos` up to `limit` (exclusive) still held in memory, without copying. */
  recentSlice(pos: number, limit: number): Buffer | undefined {
    for (let i = this.recent.length - 1; i >= 0; i--) {
      const c = this.recent[i]
      if (c.offset > pos) continue
      if (pos >= c.offset + c.buf.length) return undefined
      return c.buf.subarray(pos - c.offset, Math.min(c.buf.length, limit - c.offset))
    }
    return undefined
  }

  /** Waits until every reader has taken the relayed chunk (or needs nothing more of it). */
  private async drainRelay(): Promise<void> {
    for (;;) {
      if (this.readerSet.size === 0) {
        // Once every byte was received, readers that left took what they wanted.
        if (this.received >= this.size) return
        throw this.fatalError(this.diskError ?? new Error('no clients left to relay to'))
      }
      const limit = this.relay ? this.relay.offset + this.relay.buf.length : this.writer.written
      let pending = false
      for (const r of this.readerSet) if (r.pos < limit && r.pos <= r.end) pending = true
      if (!pending) return
      await new Promise<void>((resolve) => this.once('consumed', resolve))
    }
  }

  private fatalError(err: Error): Error {
    this.fatal.add(err)
    return err
  }

  /**
   * Follows the fill for bytes [start, end] by file descriptor (see FileFollower). Undefined when
   * the bytes are not in a local file, or the fill is no longer writing to one.
   */
  async openFollower(start: number, end: number): Promise<FileFollower | undefined> {
    if (this.state !== 'filling' && this.state !== 'done') return undefined
    const fh = await this.writer.openRead()
    if (typeof fh.fd !== 'number' || (this.state !== 'filling' && this.state !== 'done')) {
      await fh.close()
      return undefined
    }
    const reader: Reader = { pos: start, end }
    this.readerSet.add(reader)
    let closed = false
    return {
      fd: fh.fd,
      available: (pos) => {
        reader.pos = pos
        this.emit('consumed')
        return this.sendable(reader)
      },
      close: async () => {
        if (closed) return
        closed = true
        this.readerSet.delete(reader)
        this.emit('consumed')
        await fh.close()
      },
    }
  }

  /** Waits until the follower `reader` may send more (FileFollower.available). */
  private sendable(reader: Reader): Promise<number | 'stream'> {
    return new Promise((resolve, reject) => {
      const settle = (): boolean => {
        const { pos, end } = reader
        switch (this.state) {
          case 'done':
            resolve(end + 1)
            return true
          case 'failed':
            reject(this.error ?? new Error('fill failed'))
            return true
          case 'relaying':
          case 'relayed':
            // The disk filled up: the rest is in the relay, which only a stream reader gets.
            resolve('stream')
            return true
          case 'filling': {
            // The blob's last byte is released only once the whole blob verified.
            const last = Math.min(end + 1, this.size - 1)
            const limit = Math.min(last, this.written)
            if (limit <= pos || (limit - pos < FOLLOW_STEP && limit < last && !waitedLong)) return false
            resolve(limit)
            return true
          }
        }
      }
      // A slow download reaches the client within FOLLOW_WAIT_MS, whole step or not.
      let waitedLong = false
      if (settle()) return
      const stop = () => {
        clearTimeout(timer)
        this.off('progress', onEvent)
        this.off('relaying', onEvent)
      }
      const onEvent = () => {
        if (settle()) stop()
      }
      const timer = setTimeout(() => {
        waitedLong = true
        onEvent()
      }, FOLLOW_WAIT_MS)
      this.on('progress', onEvent)
      this.on('relaying', onEvent)
    })
  }

  /**
   * A stream of bytes [start, end] of the blob, following the fill. It errors (the client sees a
   * cut transfer) if the fill fails before the client's last byte was released.
   */
  createReadStream(start: number, end: number): Readable {
    const fill = this
    const reader: Reader = { pos: start, end }
    let fh: ReadHandle | undefined
    let opening: Promise<ReadHandle> | undefined
    let waiting = false
    fill.readerSet.add(reader)
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
        if (!fh) fh = await (opening ??= fill.writer.openRead())
        if (fill.state === 'failed' && reader.pos <= end) throw fill.error ?? new Error('fill failed')
        if (reader.pos > end) {
          stream.push(null)
          return
        }
        // From the file: everything once verified; while filling, all but the blob's last byte.
        const fileLimit =
          fill.state === 'done' ? end + 1 : fill.state === 'filling' ? Math.min(end + 1, fill.written, fill.size - 1) : Math.min(end + 1, fill.written)
        if (reader.pos < fileLimit) {
          const mem = fill.recentSlice(reader.pos, fileLimit)
          if (mem && mem.length > 0) {
            reader.pos += mem.length
            stream.push(mem)
            fill.emit('consumed')
            return
          }
          const buf = Buffer.allocUnsafe(Math.min(READ_CHUNK, fileLimit - reader.pos))
          const { bytesRead } = await fh.read(buf, 0, buf.length, reader.pos)
          if (bytesRead === 0) throw new Error('cache file shrank while being read')
          reader.pos += bytesRead
          stream.push(bytesRead === buf.length ? buf : buf.subarray(0, bytesRead))
          fill.emit('consumed')
          return
        }
        const relay = fill.relay
        if (relay && reader.pos >= relay.offset && reader.pos < relay.offset + relay.buf.length) {
          const from = reader.pos - relay.offset
          const to = Math.min(relay.buf.length, end + 1 - relay.offset)
          reader.pos += to - from
          stream.push(relay.buf.subarray(from, to))
          fill.emit('consumed')
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
        fill.readerSet.delete(reader)
        fill.emit('consumed')
        const f = fh
        fh = undefined
        if (f) f.close().then(() => cb(err), () => cb(err))
        else if (opening) opening.then((h) => h.close()).then(() => cb(err), () => cb(err))
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

export function isDiskError(err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException)?.code
  return code === 'ENOSPC' || code === 'EDQUOT' || code === 'EIO' || code === 'EROFS'
}
