// Blobs by digest: immutable, so a cached blob is served without asking upstream (once it is
// known to belong to the repository); a miss starts one Fill that every client shares. A range
// the fill has not reached yet is forwarded upstream meanwhile (range-forward.ts).

import type { Readable } from 'node:stream'
import type { FileHandle } from 'node:fs/promises'
import type { Logger } from 'pino'
import { RegistryError, errorForUpstreamStatus } from './errors.js'
import { Fill, isDiskError, type FileFollower } from './fill.js'
import { SingleFlight } from './single-flight.js'
import type { CacheOutcome, Target } from './target.js'
import { headerValue } from '../upstream/headers.js'
import type { UpstreamResponse } from '../upstream/client.js'
import type { Metrics } from './metrics.js'
import type { Upstreams } from './upstreams.js'
import type { ContentStore } from '../storage/content-store.js'
import { verifyingStream } from './verify-stream.js'
import { resolveRange, type RangeSpec } from './byte-range.js'
import { RangeForwards, servedByFill, type ForwardedRange, type RangeOnMiss } from './range-forward.js'
import { DigestMismatchError } from '../storage/blob-store.js'
import type { Metadata } from '../storage/metadata.js'
import type { ClusterFill } from './cluster-fill.js'

export interface BlobResult {
  kind: 'blob'
  digest: string
  size: number
  outcome: CacheOutcome
  source: 'cache' | 'upstream'
  /** Bytes [start, end] inclusive. */
  open(start: number, end: number): Readable
  /** Redirect mode: a short-lived URL where the client GETs the bytes (and ranges) from the store. */
  redirect?: string
  /**
   * Blobs of a local file store: the stored file (or the file of the fill under way), for sending
   * bytes [start, end] straight from it. Resolves to undefined when those bytes must go through
   * open() instead (they are due to be re-hashed as they are served, the file is not as recorded,
   * or the fill no longer writes to a file).
   */
  file?(start: number, end: number): Promise<BlobFile | undefined>
}

/**
 * A blob file, held against eviction until closed: a stored, verified one, or the file of a fill
 * still under way (then with available()).
 */
export interface BlobFile {
  /** Read-only descriptor of the file. */
  readonly fd: number
  /** A fill's file: how far the sender may go (FileFollower.available). Absent: the whole range at once. */
  available?: FileFollower['available']
  /** Closes the file once the bytes are sent (or abandoned); more calls do nothing. */
  close(): Promise<void>
}

export interface BlobsOptions {
  upstreams: Upstreams
  meta: Metadata
  store: ContentStore
  metrics: Metrics
  log: Logger
  onFillEnded?: () => void
  /** A damaged blob was dropped. */
  onDropped?: (digest: string) => void
  /** Whole blobs not verified within this long are re-hashed while served (0: never). */
  scrubMs?: number
  /** Ranges of blobs not cached yet (blobs.rangeForwards, blobs.rangeOnMiss). */
  ranges?: { rangeForwards: number; rangeOnMiss: RangeOnMiss }
  /** Shared object store: content other replicas stored, one filler per digest across replicas. */
  cluster?: ClusterFill
  /** Redirect mode: a presigned URL for stored content. */
  presign?: (digest: string) => Promise<string>
}

export class Blobs {
  private readonly fills = new Map<string, Fill>()
  private readonly starting = new SingleFlight<Fill | { kind: 'stored'; size: number }>()
  /** Open reads of cached blobs, by digest: eviction leaves these alone. */
  private readonly serving = new Map<string, number>()
  private readonly upstreams: Upstreams
  private readonly meta: Metadata
  private readonly store: ContentStore
  private readonly metrics: Metrics
  private readonly log: Logger
  /** Called after each fill ends (eviction may be due). */
  private readonly onFillEnded: () => void
  private readonly onDropped: (digest: string) => void
  private readonly scrubMs: number
  private readonly rangeOnMiss: RangeOnMiss
  private readonly forwards: RangeForwards
  private readonly cluster?: ClusterFill
  private readonly presign?: (digest: string) => Promise<string>

  constructor(deps: BlobsOptions) {
    ;({ upstreams: this.upstreams, meta: this.meta, store: this.store, metrics: this.metrics, log: this.log } = deps)
    this.onFillEnded = deps.onFillEnded ?? (() => {})
    this.onDropped = deps.onDropped ?? (() => {})
    this.scrubMs = deps.scrubMs ?? 0
    this.rangeOnMiss = deps.ranges?.rangeOnMiss ?? 'forward'
    this.forwards = new RangeForwards(deps.upstreams, deps.metrics, deps.ranges?.rangeForwards ?? 8)
    this.cluster = deps.cluster
    this.presign = deps.presign
  }

  /** Digests being filled or served now: eviction must leave them alone. */
  busy(): ReadonlySet<string> {
    return new Set([...this.fills.keys(), ...this.serving.keys()])
  }

  get fillCount(): number {
    return this.fills.size
  }

  /** Waits for every fill in progress (graceful shutdown). */
  async drain(): Promise<void> {
    await Promise.allSettled([...this.fills.values()].map((f) => f.done))
  }

  /**
   * A blob for a GET or HEAD. `range` is the GET's single Range: when the blob is not cached and
   * its fill has not reached that range, the range is answered from upstream (a ForwardedRange).
   */
  async get(t: Target, digest: string, method: 'GET' | 'HEAD', range?: RangeSpec): Promise<BlobResult | ForwardedRange> {
    const linked = this.meta.isLinked(t.upstream.name, t.repository, digest)
    const fill = this.fills.get(digest)
    if (fill && (linked || (await this.confirmUpstream(t, digest)))) {
      const forwarded = method === 'GET' ? await this.forwardRange(t, fill, range) : undefined
      if (forwarded) return forwarded
      this.metrics.coalesced.inc({ kind: 'blob' })
      return this.fromFill(fill, 'coalesced')
    }
    const row = this.meta.getContent(digest)
    if (row) {
      const size = await this.store.size(digest)
      if (size === undefined) {
        // Recorded but gone (evicted, or lost in a crash): a miss, fetched again.
        this.meta.deleteContent(digest)
      } else if (size !== row.size) {
        // Truncated or grown on disk: damaged, never served; fetched again.
        this.log.error({ digest, size, recorded: row.size }, 'stored blob is damaged (size differs); dropped, fetched again')
        await this.drop(digest)
      } else if (linked || (await this.confirmUpstream(t, digest))) {
        this.meta.touch(digest)
        return this.cached(digest, size, method, 'hit')
      }
    } else if (this.cluster) {
      // Another replica may have stored it: the bucket is content, the link is still upstream's word.
      const size = await this.cluster.storedSize(digest)
      if (size !== undefined && (linked || (await this.confirmUpstream(t, digest)))) {
        this.meta.putContent({ digest, size })
        return this.cached(digest, size, method, 'hit')
      }
    }
    if (method === 'HEAD') return this.headUpstream(t, digest)
    const flight = this.starting.run(`${t.upstream.name}\n${t.repository}\n${digest}`, () => this.startFill(t, digest))
    // The range goes upstream alongside the fill's first request; the fill's 200 then confirms
    // the blob and gives the size its answer is checked against.
    const early = this.forwardEarly(t, digest, range, flight.promise)
    const [started, forwarded] = await Promise.all([flight.promise, early])
    if (forwarded) return forwarded
    if (!(started instanceof Fill)) {
      // Another replica downloaded it while this one waited.
      if (!linked) await this.confirmUpstream(t, digest)
      this.meta.putContent({ digest, size: started.size })
      return this.cached(digest, started.size, method, 'coalesced')
    }
    return this.fromFill(started, flight.joined ? 'coalesced' : 'miss')
  }

  private async cached(digest: string, size: number, method: 'GET' | 'HEAD', outcome: CacheOutcome): Promise<BlobResult> {
    const redirect = method === 'GET' && this.presign ? await this.presign(digest) : undefined
    const openFile = this.store.openFile?.bind(this.store)
    const file = openFile && ((s: number, e: number) => this.openCachedFile(openFile, digest, size, s, e))
    return { kind: 'blob', digest, size, outcome, source: 'cache', open: (s, e) => this.openCached(digest, size, s, e), redirect, file }
  }

  /** A range on a miss, before the fill has a byte: one from the start is the fill's to serve. */
  private forwardEarly(t: Target, digest: string, range: RangeSpec | undefined, fill: Promise<{ size: number }>): Promise<ForwardedRange | undefined> | undefined {
    if (range === undefined || this.rangeOnMiss !== 'forward' || (range.kind === 'from' && range.start === 0)) return undefined
    return this.forwards.forwardEarly(t, digest, range, fill.then((f) => f.size))
  }

  /** The range from upstream when the fill does not have it yet and a forward may start now. */
  private async forwardRange(t: Target, fill: Fill, range: RangeSpec | undefined): Promise<ForwardedRange | undefined> {
    if (range === undefined || this.rangeOnMiss !== 'forward') return undefined
    const r = resolveRange(range, fill.size)
    if (r.kind !== 'partial' || servedByFill(fill, r.start, r.end)) return undefined
    return this.forwards.forward(t, fill.digest, fill.size, r.start, r.end)
  }

  /**
   * A whole blob not verified within the scrub cycle is re-hashed as it goes out: damage is
   * caught before the last byte, and the file dropped, so it is never served twice.
   */
  private rehashWhileServing(digest: string, size: number, start: number, end: number): boolean {
    if (this.scrubMs <= 0 || start !== 0 || end !== size - 1) return false
    return Date.now() - (this.meta.verifiedAt(digest) ?? 0) >= this.scrubMs
  }

  private openCached(digest: string, size: number, start: number, end: number): Readable {
    const stream = this.store.createReadStream(digest, start, end)
    if (!this.rehashWhileServing(digest, size, start, end)) return this.track(digest, stream)
    const check = verifyingStream(digest, (ok) => {
      this.metrics.scrubbed.inc({ result: ok ? 'ok' : 'corrupt' })
      if (ok) this.meta.markVerified(digest)
      else {
        this.log.error({ digest }, 'stored blob does not hash to its digest (damaged on disk); transfer cut, dropped, fetched again next time')
        void this.drop(digest)
      }
    })
    stream.on('error', (err) => check.destroy(err))
    check.on('close', () => stream.destroy())
    return this.track(digest, stream.pipe(check))
  }

  private async drop(digest: string): Promise<void> {
    this.meta.deleteContent(digest)
    await this.store.remove(digest).catch((err) => this.log.error({ err, digest }, 'removing a damaged blob failed'))
    this.onDropped(digest)
  }

  private async openCachedFile(openFile: (digest: string) => Promise<FileHandle>, digest: string, size: number, start: number, end: number): Promise<BlobFile | undefined> {
    if (this.rehashWhileServing(digest, size, start, end)) return undefined
    const release = this.hold(digest)
    let fh: FileHandle
    try {
      fh = await openFile(digest)
    } catch (err) {
      release()
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined
      throw err
    }
    const st = await fh.stat().catch(() => undefined)
    if (st === undefined || !st.isFile() || st.size !== size) {
      // Evicted or replaced since get() looked: open() reports it, as it always has.
      release()
      await fh.close().catch(() => {})
      return undefined
    }
    const handle = fh
    let closed = false
    return {
      fd: handle.fd,
      close: async () => {
        if (closed) return
        closed = true
        release()
        await handle.close()
      },
    }
  }

  /** Counts a client stream as serving `digest` until it closes. */
  private track(digest: string, stream: Readable): Readable {
    stream.once('close', this.hold(digest))
    return stream
  }

  /** Counts one more reader of `digest` (eviction leaves it alone) until the returned function is called. */
  private hold(digest: string): () => void {
    this.serving.set(digest, (this.serving.get(digest) ?? 0) + 1)
    let released = false
    return () => {
      if (released) return
      released = true
      const n = (this.serving.get(digest) ?? 1) - 1
      if (n <= 0) this.serving.delete(digest)
      else this.serving.set(digest, n)
    }
  }

  private fromFill(fill: Fill, outcome: CacheOutcome): BlobResult {
    // Only a local file store's fill file is complete on disk as it grows: other stores' clients follow by stream.
    const file = this.store.openFile && ((s: number, e: number) => this.followFill(fill, s, e))
    return { kind: 'blob', digest: fill.digest, size: fill.size, outcome, source: 'upstream', open: (s, e) => this.track(fill.digest, fill.createReadStream(s, e)), file }
  }

  /** Bytes [start, end] of a blob being filled, sent from the fill's file as they become safe to send. */
  private async followFill(fill: Fill, start: number, end: number): Promise<BlobFile | undefined> {
    const release = this.hold(fill.digest)
    const follower = await fill.openFollower(start, end).catch((err: unknown) => {
      release()
      throw err
    })
    if (!follower) {
      release()
      return undefined
    }
    return {
      fd: follower.fd,
      available: follower.available,
      close: async () => {
        release()
        await follower.close()
      },
    }
  }

  /** Upstream says this repository has the blob: link it, so the cached copy may be served for it. */
  private async confirmUpstream(t: Target, digest: string): Promise<boolean> {
    const res = await this.upstreams.call(t.upstream, {
      method: 'HEAD',
      repository: t.repository,
      path: `blobs/${digest}`,
      signal: AbortSignal.timeout(t.upstream.config.revalidate.timeoutMs),
    })
    await res.body.dump().catch(() => {})
    if (res.status === 200) {
      this.meta.link(t.upstream.name, t.repository, digest)
      return true
    }
    throw errorForUpstreamStatus(res.status, 'BLOB_UNKNOWN', headerValue(res.headers['retry-after']))
  }

  private async headUpstream(t: Target, digest: string): Promise<BlobResult> {
    const res = await this.upstreams.call(t.upstream, {
      method: 'HEAD',
      repository: t.repository,
      path: `blobs/${digest}`,
      signal: AbortSignal.timeout(t.upstream.config.timeouts.headersMs),
    })
    await res.body.dump().catch(() => {})
    if (res.status !== 200) throw errorForUpstreamStatus(res.status, 'BLOB_UNKNOWN', headerValue(res.headers['retry-after']))
    const size = Number(headerValue(res.headers['content-length']))
    if (!Number.isSafeInteger(size) || size < 0) throw new RegistryError('UPSTREAM_ERROR', 'upstream answered a blob HEAD without a Content-Length')
    return {
      kind: 'blob',
      digest,
      size,
      outcome: 'miss',
      source: 'upstream',
      open: () => {
        throw new Error('HEAD results have no body')
      },
    }
  }

  private async startFill(t: Target, digest: string): Promise<Fill | { kind: 'stored'; size: number }> {
    const existing = this.fills.get(digest)
    if (existing) return existing
    const claim = this.cluster ? await this.cluster.claim(digest) : undefined
    if (claim?.kind === 'stored') return claim
    try {
      const fill = await this.startLocalFill(t, digest)
      if (claim) void fill.done.catch(() => {}).finally(() => claim.end())
      return fill
    } catch (err) {
      await claim?.end()
      throw err
    }
  }

  private async startLocalFill(t: Target, digest: string): Promise<Fill> {
    const path = `blobs/${digest}`
    const first = await this.upstreams.call(t.upstream, { method: 'GET', repository: t.repository, path })
    if (first.status !== 200) {
      await first.body.dump().catch(() => {})
      throw errorForUpstreamStatus(first.status, 'BLOB_UNKNOWN', headerValue(first.headers['retry-after']))
    }
    const size = Number(headerValue(first.headers['content-length']))
    if (!Number.isSafeInteger(size) || size < 0) {
      discard(first)
      throw new RegistryError('UPSTREAM_ERROR', 'upstream sent a blob without a Content-Length')
    }
    let writer
    try {
      writer = await this.store.createWriter(digest)
    } catch (err) {
      discard(first)
      throw err
    }
    const log = this.log.child({ upstream: t.upstream.name, repository: t.repository, digest })
    const fill = new Fill({
      digest,
      size,
      writer,
      first,
      resume: (offset) => {
        log.warn({ offset }, 'upstream connection cut; resuming blob download')
        return this.upstreams.call(t.upstream, { method: 'GET', repository: t.repository, path, headers: { range: `bytes=${offset}-` } })
      },
      onCommitted: () => this.meta.putContent({ digest, size }, { upstream: t.upstream.name, repository: t.repository }),
    })
    this.fills.set(digest, fill)
    // A fill that hit a full disk serves only the clients it has; later ones start their own.
    fill.once('relaying', (err) => {
      if (this.fills.get(digest) === fill) this.fills.delete(digest)
      log.error({ err, offset: fill.written }, 'disk full while caching a blob; streaming it through to the clients without keeping it')
    })
    this.metrics.fillsInFlight.inc()
    const started = Date.now()
    fill.done.then(
      () => {
        this.metrics.fillResults.inc({ result: 'ok' })
        log.info({ size, ms: Date.now() - started, resumes: fill.resumes }, 'blob cached')
      },
      (err) => {
        const result = err instanceof DigestMismatchError ? 'digest_mismatch' : isDiskError(err) ? 'disk_error' : 'error'
        this.metrics.fillResults.inc({ result })
        if (fill.state === 'relayed') log.warn({ size, clients: 'served' }, 'blob streamed through but not cached (disk full)')
        else log.error({ err, result }, 'blob download failed; nothing cached')
      },
    ).finally(() => {
      if (this.fills.get(digest) === fill) this.fills.delete(digest)
      this.metrics.fillsInFlight.dec()
      this.onFillEnded()
    })
    return fill
  }
}


/** Drops a response body we will not read; its abort error has a listener, so it is never uncaught. */
function discard(res: UpstreamResponse): void {
  res.body.on('error', () => {})
  res.body.destroy()
}
