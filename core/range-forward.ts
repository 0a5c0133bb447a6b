// Ranges of blobs not cached yet, answered straight from upstream.
//
// Lazy-pulling snapshotters (eStargz, SOCI, nydus) start a container before its layers are
// downloaded: they read a layer's table of contents at its end, then only the chunks the
// container touches. Making them wait for the whole layer to reach the cache defeats them, so a
// range the fill has not reached yet is requested upstream and relayed as it comes, while the
// fill goes on in the background. A range cannot be verified alone, so forwarded bytes are never
// stored; what is checked is that upstream answered exactly the range asked for (or the whole
// blob, which is cut to the slice).

import { EventEmitter } from 'node:events'
import { Readable } from 'node:stream'
import { resolveRange, type RangeSpec } from './byte-range.js'
import { RegistryError, errorForUpstreamStatus } from './errors.js'
import type { Fill } from './fill.js'
import type { Target } from './target.js'
import type { Metrics } from './metrics.js'
import type { Upstreams } from './upstreams.js'
import type { UpstreamResponse } from '../upstream/client.js'
import { headerValue } from '../upstream/headers.js'

export type RangeOnMiss = 'forward' | 'wait'

export interface ForwardedRange {
  kind: 'forwarded'
  digest: string
  size: number
  /** Bytes [start, end] inclusive. */
  start: number
  end: number
  outcome: 'range-forwarded'
  source: 'upstream'
  body: Readable
}

/** Where a forwarded range lies: bytes [start, end] of a blob of `size` bytes. */
interface Slice {
  size: number
  start: number
  end: number
}

/**
 * Identical ranges asked for at the same time share one upstream request when they are at most
 * this long: the shared bytes are kept in memory until the forward ends.
 */
const SHARE_LIMIT = 8 * 1024 * 1024

/**
 * Whether the fill should answer bytes [start, end] rather than upstream: it holds them, or its
 * next bytes are the range's first ones, which it delivers as fast as a second download would.
 */
export function servedByFill(fill: Fill, start: number, end: number): boolean {
  return fill.holds(start, end) || (fill.state === 'filling' && start <= fill.written)
}

export class RangeForwards {
  /** Shareable forwards in flight, by digest and range. */
  private readonly shared = new Map<string, SharedForward>()
  /** Upstream range requests in flight, by digest. */
  private readonly perBlob = new Map<string, number>()

  constructor(
    private readonly upstreams: Upstreams,
    private readonly metrics: Metrics,
    /** Concurrent upstream range requests allowed per blob. */
    private readonly limit: number,
  ) {}

  /** Upstream range requests in flight for `digest`. */
  inFlight(digest: string): number {
    return this.perBlob.get(digest) ?? 0
  }

  /**
   * Bytes [start, end] of a blob of `size` bytes, from upstream; undefined when the blob already
   * has `limit` forwards in flight (the caller then waits for the fill). Rejects with a
   * RegistryError, having served nothing, when upstream's answer is not that range.
   */
  forward(t: Target, digest: string, size: number, start: number, end: number): Promise<ForwardedRange | undefined> {
    const header = `bytes=${start}-${end}`
    return this.begin(t, digest, header, end - start + 1, Promise.resolve({ size, start, end }))
  }

  /**
   * A range asked for while the blob's size is still unknown (its fill is starting): sent upstream
   * at once, so the answer takes one round trip rather than two, and checked once `size` is known.
   * Undefined as for forward(), or when the range turns out not satisfiable for that size.
   */
  forwardEarly(t: Target, digest: string, spec: RangeSpec, size: Promise<number>): Promise<ForwardedRange | undefined> {
    const header = spec.kind === 'suffix' ? `bytes=-${spec.length}` : `bytes=${spec.start}-${spec.end ?? ''}`
    const longest = spec.kind === 'suffix' ? spec.length : spec.end !== undefined ? spec.end - spec.start + 1 : Infinity
    const slice = size.then((n): Slice | undefined => {
      const r = resolveRange(spec, n)
      return r.kind === 'partial' ? { size: n, start: r.start, end: r.end } : undefined
    })
    return this.begin(t, digest, header, longest, slice)
  }

  private async begin(t: Target, digest: string, header: string, longest: number, slice: Promise<Slice | undefined>): Promise<ForwardedRange | undefined> {
    const key = `${digest}\n${header}`
    const joined = this.shared.get(key)
    if (joined) {
      this.metrics.rangeForwards.inc({ result: 'coalesced' })
      const s = await joined.slice
      return s && this.result(digest, s, joined.open())
    }
    if (this.inFlight(digest) >= this.limit) {
      // The slice's size comes from the fill start, whose failure the caller reports.
      slice.catch(() => {})
      this.metrics.rangeForwards.inc({ result: 'waited' })
      return undefined
    }
    this.perBlob.set(digest, this.inFlight(digest) + 1)
    let released = false
    const release = () => {
      if (released) return
      released = true
      const n = this.inFlight(digest) - 1
      if (n <= 0) this.perBlob.delete(digest)
      else this.perBlob.set(digest, n)
    }
    const ready = this.request(t, digest, header, slice)
    if (longest <= SHARE_LIMIT) {
      const fwd = new SharedForward(ready)
      this.shared.set(key, fwd)
      fwd.once('abandoned', () => {
        if (this.shared.get(key) === fwd) this.shared.delete(key)
      })
      fwd.once('finished', () => {
        if (this.shared.get(key) === fwd) this.shared.delete(key)
        release()
      })
      const s = await fwd.slice
      return s && this.result(digest, s, fwd.open())
    }
    let answer: Awaited<typeof ready>
    try {
      answer = await ready
    } catch (err) {
      release()
      throw err
    }
    if (!answer) {
      release()
      return undefined
    }
    answer.body.once('close', release)
    return this.result(digest, answer.slice, answer.body)
  }

  private result(digest: string, s: Slice, body: Readable): ForwardedRange {
    return { kind: 'forwarded', digest, size: s.size, start: s.start, end: s.end, outcome: 'range-forwarded', source: 'upstream', body }
  }

  /**
   * The upstream request, sent at once; its answer checked against `slice` once that is known.
   * Resolves to exactly the slice's bytes, or undefined (nothing to forward) when `slice` is.
   */
  private async request(t: Target, digest: string, header: string, slice: Promise<Slice | undefined>): Promise<{ slice: Slice; body: Readable } | undefined> {
    const sent = this.upstreams.call(t.upstream, { method: 'GET', repository: t.repository, path: `blobs/${digest}`, headers: { range: header } }).catch((err: unknown) => {
      this.metrics.rangeForwards.inc({ result: 'failed' })
      throw err
    })
    let res: UpstreamResponse
    let s: Slice | undefined
    try {
      ;[res, s] = await Promise.all([sent, slice])
    } catch (err) {
      sent.then((r) => r.body.dump().catch(() => {}), () => {})
      throw err
    }
    if (!s) {
      await res.body.dump().catch(() => {})
      return undefined
    }
    const problem = checkRangeAnswer(res, s.start, s.end, s.size)
    if (problem !== undefined) {
      await res.body.dump().catch(() => {})
      this.metrics.rangeForwards.inc({ result: 'rejected' })
      if (res.status !== 200 && res.status !== 206) {
        throw res.status === 416 ? new RegistryError('UPSTREAM_ERROR', problem) : errorForUpstreamStatus(res.status, 'BLOB_UNKNOWN', headerValue(res.headers['retry-after']))
      }
      throw new RegistryError('UPSTREAM_ERROR', problem)
    }
    this.metrics.rangeForwards.inc({ result: 'forwarded' })
    const bytes = this.metrics.rangeForwardedBytes
    return { slice: s, body: Readable.from(sliceOf(res, s.start, s.end, (n) => bytes.inc(n)), { objectMode: false }) }
  }
}

/**
 * Why upstream's answer to `Range: bytes=start-end` cannot be relayed, or undefined when it can:
 * a 206 whose Content-Range names exactly that range of a blob of `size` bytes, or a 200 with the
 * whole blob (an upstream that ignores Range).
 */
export function checkRangeAnswer(res: Pick<UpstreamResponse, 'status' | 'headers'>, start: number, end: number, size: number): string | undefined {
  const length = headerValue(res.headers['content-length'])
  if (res.status === 200) {
    if (length !== undefined && Number(length) !== size) return `upstream ignored the range and sent ${length} bytes of a ${size}-byte blob`
    return undefined
  }
  if (res.status !== 206) return `upstream answered a range request with status ${res.status}`
  const cr = headerValue(res.headers['content-range'])
  const m = /^\s*bytes\s+(\d+)-(\d+)\/(\d+)\s*$/i.exec(cr ?? '')
  if (!m || Number(m[1]) !== start || Number(m[2]) !== end || Number(m[3]) !== size) {
    return `upstream answered bytes=${start}-${end} of a ${size}-byte blob with Content-Range ${JSON.stringify(cr ?? null)}`
  }
  if (length !== undefined && Number(length) !== end - start + 1) return `upstream sent a ${length}-byte body for a ${end - start + 1}-byte range`
  return undefined
}

/**
 * Bytes [start, end] of a checked answer. From a 206 the last chunk is held back until upstream
 * ended the body with exactly the promised length, so a client never receives a complete-looking
 * answer that upstream overran or cut; from a 200 the slice is cut out and the rest not read.
 */
async function* sliceOf(res: UpstreamResponse, start: number, end: number, onBytes: (n: number) => void): AsyncGenerator<Buffer> {
  const length = end - start + 1
  const whole = res.status === 200
  let skip = whole ? start : 0
  let sent = 0
  let held: Buffer | undefined
  try {
    for await (const c of res.body) {
      let chunk = c as Buffer
      onBytes(chunk.length)
      if (skip > 0) {
        if (chunk.length <= skip) {
          skip -= chunk.length
          continue
        }
        chunk = chunk.subarray(skip)
        skip = 0
      }
      if (whole) {
        const room = length - sent
        sent += Math.min(room, chunk.length)
        yield chunk.length > room ? chunk.subarray(0, room) : chunk
        if (sent === length) return
        continue
      }
      if (sent + (held?.length ?? 0) + chunk.length > length) throw new RegistryError('UPSTREAM_ERROR', `upstream sent more than the ${length} bytes of the range`)
      if (held) {
        sent += held.length
        yield held
      }
      held = chunk
    }
    if (sent + (held?.length ?? 0) !== length) throw new RegistryError('UPSTREAM_ERROR', `upstream ended the range after ${sent + (held?.length ?? 0)} of ${length} bytes`)
    if (held) yield held
  } finally {
    // Not read to its end (a 200 cut to the slice, a client gone, an error): stop the transfer.
    if (!res.body.readableEnded) res.body.destroy()
  }
}

/**
 * One upstream range request shared by every client asking for the same range while it runs: the
 * bytes are kept (at most SHARE_LIMIT) so a client that joins late reads them from the start.
 * Emits 'finished' once upstream is done with, whatever the outcome, and 'abandoned' when every
 * client left before the end (it must not be joined any more).
 */
class SharedForward extends EventEmitter {
  /** The bytes' place in the blob, or undefined when there turned out to be nothing to forward. */
  readonly slice: Promise<Slice | undefined>
  private readonly chunks: Buffer[] = []
  private ended = false
  private error?: Error
  private readers = 0
  private source?: Readable

  constructor(answer: Promise<{ slice: Slice; body: Readable } | undefined>) {
    super()
    this.setMaxListeners(0)
    this.slice = answer.then((a) => {
      if (!a) {
        this.emit('finished')
        return undefined
      }
      this.source = a.body
      void this.pull(a.body)
      return a.slice
    })
    this.slice.catch(() => this.emit('finished'))
  }

  private async pull(body: Readable): Promise<void> {
    try {
      for await (const c of body) {
        this.chunks.push(c as Buffer)
        this.emit('progress')
      }
      this.ended = true
    } catch (err) {
      this.error = err as Error
    }
    this.emit('progress')
    this.emit('finished')
  }

  open(): Readable {
    this.readers++
    let next = 0
    let waiting = false
    const onProgress = () => {
      if (waiting) {
        waiting = false
        pump()
      }
    }
    const pump = () => {
      while (next < this.chunks.length) {
        if (!stream.push(this.chunks[next++])) return
      }
      if (this.error) stream.destroy(this.error)
      else if (this.ended) stream.push(null)
      else waiting = true
    }
    this.on('progress', onProgress)
    const stream = new Readable({
      read: pump,
      destroy: (err, cb) => {
        this.off('progress', onProgress)
        // The last client gone before upstream finished: nobody needs the rest.
        if (--this.readers === 0 && !this.ended && !this.error) {
          this.emit('abandoned')
          this.source?.destroy()
        }
        cb(err)
      },
    })
    return stream
  }
}
