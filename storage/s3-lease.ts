// One filler per digest across every replica sharing a bucket. A fill lease is a small object
// `<prefix>leases/<digest>` created with `If-None-Match: *`, so exactly one creator wins (the
// store answers 412 to the others). It names its holder and an expiry; the holder renews it while
// filling and deletes it at the end. Others wait for the content to appear, or for the lease to
// go away or expire (the filler died) and then take over.
//
// Expiry compares the holder's clock with the reader's, so replicas need roughly synchronised
// clocks (NTP); a skew well below the lease time is harmless. Taking over an expired lease is
// delete-then-create, and two replicas taking over in the same instant can both believe they
// hold it; renew() notices (the token no longer matches) and reports the lease lost. The worst
// case is one extra upstream download: content is named by its digest, so two fills of the same
// digest publish the same bytes.

import { randomBytes } from 'node:crypto'
import { setTimeout as sleep } from 'node:timers/promises'
import {
  DeleteObjectCommand,
  GetObjectCommand,
  HeadObjectCommand,
  PutObjectCommand,
  type S3Client,
} from '@aws-sdk/client-s3'
import { isNotFound, isPreconditionFailed, s3Status, unavailable } from './s3-client.js'
import { blobKey, leaseKey } from './s3-keys.js'

export interface LeaseRecord {
  /** Which process holds it (a replica name). */
  owner: string
  /** Unique per acquisition, so a stale holder never renews or deletes its successor's lease. */
  token: string
  /** Milliseconds since the epoch, holder's clock. */
  expiresAt: number
}

export interface FillLease extends LeaseRecord {
  readonly digest: string
}

export type WaitOutcome =
  /** The content is in the store. */
  | { kind: 'stored'; size: number }
  /** The previous filler finished without storing it, or died: this process now fills. */
  | { kind: 'lease'; lease: FillLease }

export interface WaitOptions {
  /** How often to look again (default 250 ms). */
  pollMs?: number
  /** Give up (LeaseWaitTimeoutError) after this long; default: wait while a live holder renews. */
  timeoutMs?: number
  signal?: AbortSignal
}

export class LeaseWaitTimeoutError extends Error {
  readonly code = 'LEASE_WAIT_TIMEOUT'
  constructor(readonly digest: string) {
    super(`gave up waiting for another replica to fill ${digest}`)
  }
}

export class FillLeases {
  constructor(
    private readonly client: S3Client,
    private readonly bucket: string,
    private readonly prefix: string,
    /** This process, as named in leases it holds. */
    readonly owner: string,
    readonly ttlMs: number,
  ) {}

  /** Takes the lease for filling `digest`, or returns undefined while another holder's lease is live. */
  async acquire(digest: string): Promise<FillLease | undefined> {
    const created = await this.create(digest)
    if (created) return created
    const holder = await this.holder(digest)
    if (holder !== undefined && holder.expiresAt > Date.now()) return undefined
    // Released meanwhile, or its holder stopped renewing: take over.
    if (holder !== undefined) await this.deleteLease(digest)
    return this.create(digest)
  }

  /** Extends a held lease. False when it was lost (expired and taken over). */
  async renew(lease: FillLease): Promise<boolean> {
    const holder = await this.holder(lease.digest)
    if (holder?.token !== lease.token) return false
    const expiresAt = Date.now() + this.ttlMs
    try {
      await this.client.send(
        new PutObjectCommand({
          Bucket: this.bucket,
          Key: leaseKey(this.prefix, lease.digest),
          Body: JSON.stringify({ owner: lease.owner, token: lease.token, expiresAt } satisfies LeaseRecord),
          ContentType: 'application/json',
        }),
      )
    } catch (err) {
      throw unavailable(err, 'renewing a fill lease')
    }
    lease.expiresAt = expiresAt
    return true
  }

  /** Gives a lease up (when still ours). */
  async release(lease: FillLease): Promise<void> {
    const holder = await this.holder(lease.digest)
    if (holder?.token === lease.token) await this.deleteLease(lease.digest)
  }

  /**
   * Renews `lease` every third of its lifetime until stop(). onLost runs (once) when it was
   * taken over or could not be renewed before it expired.
   */
  keepRenewed(lease: FillLease, onLost: (err?: unknown) => void = () => {}): { stop(): void } {
    let stopped = false
    let lost = false
    const tick = async () => {
      try {
        if (!(await this.renew(lease))) lose()
      } catch (err) {
        if (Date.now() >= lease.expiresAt) lose(err)
      }
    }
    const lose = (err?: unknown) => {
      if (stopped || lost) return
      lost = true
      clearInterval(timer)
      onLost(err)
    }
    const timer = setInterval(() => void tick(), Math.max(100, Math.floor(this.ttlMs / 3)))
    timer.unref()
    return {
      stop() {
        stopped = true
        clearInterval(timer)
      },
    }
  }

  /** The current lease on `digest`, or undefined. An unreadable lease counts as expired. */
  async holder(digest: string): Promise<LeaseRecord | undefined> {
    let text: string
    try {
      const res = await this.client.send(new GetObjectCommand({ Bucket: this.bucket, Key: leaseKey(this.prefix, digest) }))
      text = (await res.Body?.transformToString('utf8')) ?? ''
    } catch (err) {
      if (isNotFound(err)) return undefined
      throw unavailable(err, 'reading a fill lease')
    }
    return parseLease(text)
  }

  /**
   * Waits until `digest` is stored (by whoever fills it) or this process holds its lease,
   * whichever comes first.
   */
  async waitForContentOrLease(digest: string, opts: WaitOptions = {}): Promise<WaitOutcome> {
    const pollMs = opts.pollMs ?? 250
    const deadline = opts.timeoutMs === undefined ? Infinity : Date.now() + opts.timeoutMs
    for (;;) {
      opts.signal?.throwIfAborted()
      const size = await this.storedSize(digest)
      if (size !== undefined) return { kind: 'stored', size }
      const lease = await this.acquire(digest)
      if (lease) {
        // The filler may have published and released between the two looks.
        const after = await this.storedSize(digest)
        if (after === undefined) return { kind: 'lease', lease }
        await this.release(lease)
        return { kind: 'stored', size: after }
      }
      if (Date.now() >= deadline) throw new LeaseWaitTimeoutError(digest)
      await sleep(pollMs, undefined, { signal: opts.signal })
    }
  }

  private async create(digest: string): Promise<FillLease | undefined> {
    const lease: FillLease = {
      digest,
      owner: this.owner,
      token: randomBytes(12).toString('hex'),
      expiresAt: Date.now() + this.ttlMs,
    }
    try {
      await this.client.send(
        new PutObjectCommand({
          Bucket: this.bucket,
          Key: leaseKey(this.prefix, digest),
          Body: JSON.stringify({ owner: lease.owner, token: lease.token, expiresAt: lease.expiresAt } satisfies LeaseRecord),
          ContentType: 'application/json',
          IfNoneMatch: '*',
        }),
      )
      return lease
    } catch (err) {
      // 409: AWS's answer when another conditional write on the key is in progress.
      if (isPreconditionFailed(err) || s3Status(err) === 409) return undefined
      throw unavailable(err, 'creating a fill lease')
    }
  }

  private async deleteLease(digest: string): Promise<void> {
    try {
      await this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: leaseKey(this.prefix, digest) }))
    } catch (err) {
      throw unavailable(err, 'deleting a fill lease')
    }
  }

  private async storedSize(digest: string): Promise<number | undefined> {
    try {
      const res = await this.client.send(new HeadObjectCommand({ Bucket: this.bucket, Key: blobKey(this.prefix, digest) }))
      return res.ContentLength ?? 0
    } catch (err) {
      if (isNotFound(err)) return undefined
      throw unavailable(err, 'looking up content')
    }
  }
}

function parseLease(text: string): LeaseRecord {
  try {
    const v = JSON.parse(text) as Partial<LeaseRecord>
    if (typeof v.owner === 'string' && typeof v.token === 'string' && typeof v.expiresAt === 'number' && Number.isFinite(v.expiresAt)) {
      return { owner: v.owner, token: v.token, expiresAt: v.expiresAt }
    }
  } catch {
    // fall through: treated as expired
  }
  return { owner: '', token: '', expiresAt: 0 }
}
