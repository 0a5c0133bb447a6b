// Content in an S3-compatible object store (AWS S3, Ceph RGW, MinIO...), shared by every replica
// pointed at the same bucket and prefix. Keys are in storage/s3-keys.ts, fills in
// storage/s3-writer.ts, the cross-replica single filler in storage/s3-lease.ts.
//
// Any failure to talk to the store surfaces as StoreUnavailableError: the caller answers 503 and
// never serves partial data. Timeouts are short so that a dead store is reported within seconds.

import { createHash, randomBytes } from 'node:crypto'
import { mkdir, open, readdir, rm } from 'node:fs/promises'
import { join } from 'node:path'
import { PassThrough, type Readable } from 'node:stream'
import {
  AbortMultipartUploadCommand,
  DeleteObjectCommand,
  GetObjectCommand,
  HeadBucketCommand,
  HeadObjectCommand,
  ListMultipartUploadsCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  type S3Client,
} from '@aws-sdk/client-s3'
import { getSignedUrl } from '@aws-sdk/s3-request-presigner'
import { DigestMismatchError } from './blob-store.js'
import type { ContentStore } from './content-store.js'
import { createS3Client, isNotFound, s3Status, unavailable } from './s3-client.js'
import { StoreUnavailableError } from './store-unavailable.js'
import { blobKey, blobsPrefix, checkDigest, digestOfKey } from './s3-keys.js'
import { FillLeases } from './s3-lease.js'
import { MIN_PART_SIZE, S3_DEFAULTS, type S3StoreSettings, type S3StoreTuning } from './s3-settings.js'
import { S3Writer } from './s3-writer.js'

const SPOOL_SUFFIX = '.s3spool'

/** Stored content that is not there, with the code a missing file has. */
export class ContentMissingError extends Error {
  readonly code = 'ENOENT'
  constructor(readonly digest: string) {
    super(`${digest} is not in the object store`)
  }
}

export interface MultipartUploadInfo {
  key: string
  uploadId: string
  /** The digest the upload is filling, when its key is a content key. */
  digest?: string
  initiated?: Date
}

export class S3Store implements ContentStore {
  readonly bucket: string
  readonly prefix: string
  readonly leases: FillLeases
  private readonly partSize: number
  private readonly partsInFlight: number
  private readonly abandonedUploadAgeMs: number

  /** Builds the client from the settings (reads the key files). */
  static async create(settings: S3StoreSettings, tuning: S3StoreTuning): Promise<S3Store> {
    return new S3Store(settings, tuning, await createS3Client(settings, tuning))
  }

  constructor(
    readonly settings: S3StoreSettings,
    private readonly tuning: S3StoreTuning,
    readonly client: S3Client,
  ) {
    this.bucket = settings.bucket
    this.prefix = settings.prefix ?? ''
    this.partSize = Math.max(MIN_PART_SIZE, tuning.partSize ?? S3_DEFAULTS.partSize)
    this.partsInFlight = Math.max(1, tuning.partsInFlight ?? S3_DEFAULTS.partsInFlight)
    this.abandonedUploadAgeMs = tuning.abandonedUploadAgeMs ?? S3_DEFAULTS.abandonedUploadAgeMs
    const owner = tuning.owner ?? `replica-${randomBytes(6).toString('hex')}`
    this.leases = new FillLeases(client, this.bucket, this.prefix, owner, tuning.leaseTtlMs ?? S3_DEFAULTS.leaseTtlMs)
  }

  /**
   * Checks the bucket answers, removes this process's leftover spool files and aborts multipart
   * uploads that a crashed fill (of any replica) left behind.
   */
  async init(): Promise<{ removedTemporary: number }> {
    // Local leftovers first: they go even when the store is down at start-up.
    await mkdir(this.tuning.spoolDir, { recursive: true })
    let removed = 0
    for (const name of await readdir(this.tuning.spoolDir)) {
      if (!name.endsWith(SPOOL_SUFFIX)) continue
      await rm(join(this.tuning.spoolDir, name), { force: true })
      removed++
    }
    await this.checkReady()
    removed += await this.abortAbandonedUploads(this.abandonedUploadAgeMs)
    return { removedTemporary: removed }
  }

  /** Resolves when the bucket answers; StoreUnavailableError otherwise (for /readyz). */
  async checkReady(): Promise<void> {
    try {
      await this.client.send(new HeadBucketCommand({ Bucket: this.bucket }))
    } catch (err) {
      throw unavailable(err, `reaching bucket ${this.bucket}`)
    }
  }

  async size(digest: string): Promise<number | undefined> {
    try {
      const res = await this.client.send(new HeadObjectCommand({ Bucket: this.bucket, Key: blobKey(this.prefix, digest) }))
      return res.ContentLength ?? 0
    } catch (err) {
      if (isNotFound(err)) return undefined
      throw unavailable(err, 'looking up content')
    }
  }

  async read(digest: string): Promise<Buffer | undefined> {
    try {
      const res = await this.client.send(new GetObjectCommand({ Bucket: this.bucket, Key: blobKey(this.prefix, digest) }))
      return Buffer.from((await res.Body?.transformToByteArray()) ?? [])
    } catch (err) {
      if (isNotFound(err)) return undefined
      throw unavailable(err, 'reading content')
    }
  }

  createReadStream(digest: string, start?: number, end?: number): Readable {
    const key = blobKey(this.prefix, digest)
    const out = new PassThrough({ highWaterMark: 1024 * 1024 })
    const cancel = new AbortController()
    out.once('close', () => cancel.abort())
    const range = start === undefined && end === undefined ? undefined : `bytes=${start ?? 0}-${end ?? ''}`
    this.client.send(new GetObjectCommand({ Bucket: this.bucket, Key: key, Range: range }), { abortSignal: cancel.signal }).then(
      (res) => {
        const body = res.Body as Readable
        if (out.destroyed) return void body.destroy()
        // Not pipeline(): it would hand the reader the raw socket error instead of the store's.
        body.once('error', (err) => out.destroy(unavailable(err, 'streaming content')))
        out.once('close', () => body.destroy())
        // A body cut short must reach the reader as an error, never as a shorter success.
        const expected = res.ContentLength
        let received = 0
        body.on('data', (chunk: Buffer) => (received += chunk.length))
        body.once('end', () => {
          if (expected === undefined || received === expected) out.end()
          else out.destroy(new StoreUnavailableError(`object store: content stream ended at ${received} of ${expected} bytes`))
        })
        body.pipe(out, { end: false })
      },
      (err: unknown) => {
        if (out.destroyed) return
        // Starting past the end reads nothing, as from a file.
        if (s3Status(err) === 416) return void out.end()
        out.destroy(isNotFound(err) ? new ContentMissingError(digest) : unavailable(err, 'streaming content'))
      },
    )
    return out
  }

  async remove(digest: string): Promise<void> {
    try {
      await this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: blobKey(this.prefix, digest) }))
    } catch (err) {
      throw unavailable(err, 'removing content')
    }
  }

  async put(digest: string, bytes: Buffer): Promise<void> {
    const key = blobKey(this.prefix, digest)
    const actual = `${digest.slice(0, digest.indexOf(':'))}:${createHash(digest.startsWith('sha512:') ? 'sha512' : 'sha256').update(bytes).digest('hex')}`
    if (actual !== digest) throw new DigestMismatchError(digest, actual)
    try {
      await this.client.send(
        new PutObjectCommand({
          Bucket: this.bucket,
          Key: key,
          Body: bytes,
          ContentLength: bytes.length,
          ContentMD5: createHash('md5').update(bytes).digest('base64'),
        }),
      )
    } catch (err) {
      throw unavailable(err, 'storing content')
    }
  }

  async createWriter(digest: string): Promise<S3Writer> {
    const key = blobKey(this.prefix, digest)
    await mkdir(this.tuning.spoolDir, { recursive: true })
    const path = join(this.tuning.spoolDir, `${randomBytes(8).toString('hex')}${SPOOL_SUFFIX}`)
    const fh = await open(path, 'wx+')
    return new S3Writer(digest, path, fh, {
      client: this.client,
      bucket: this.bucket,
      key,
      partSize: this.partSize,
      partsInFlight: this.partsInFlight,
    })
  }

  async *list(): AsyncGenerator<string> {
    let token: string | undefined
    do {
      let res
      try {
        res = await this.client.send(
          new ListObjectsV2Command({ Bucket: this.bucket, Prefix: blobsPrefix(this.prefix), ContinuationToken: token }),
        )
      } catch (err) {
        throw unavailable(err, 'listing content')
      }
      for (const object of res.Contents ?? []) {
        const digest = object.Key === undefined ? undefined : digestOfKey(this.prefix, object.Key)
        if (digest !== undefined) yield digest
      }
      token = res.IsTruncated ? res.NextContinuationToken : undefined
    } while (token !== undefined)
  }

  /** Re-hashes stored content by streaming it; false when it does not match (or is gone). */
  async verify(digest: string): Promise<boolean> {
    checkDigest(digest)
    const hash = createHash(digest.startsWith('sha512:') ? 'sha512' : 'sha256')
    try {
      for await (const chunk of this.createReadStream(digest)) hash.update(chunk as Buffer)
    } catch (err) {
      if (err instanceof ContentMissingError) return false
      throw err
    }
    return `${digest.slice(0, digest.indexOf(':'))}:${hash.digest('hex')}` === digest
  }

  /**
   * A URL that GETs the content directly from the store for `expiresSeconds`. Signing is local:
   * it does not check that the content exists.
   */
  async presign(digest: string, expiresSeconds: number): Promise<string> {
    // SigV4 allows 1 s to 7 days.
    if (!Number.isInteger(expiresSeconds) || expiresSeconds < 1 || expiresSeconds > 604_800) {
      throw new RangeError(`presigned URL expiry must be 1..604800 seconds, got ${expiresSeconds}`)
    }
    return getSignedUrl(this.client, new GetObjectCommand({ Bucket: this.bucket, Key: blobKey(this.prefix, digest) }), {
      expiresIn: expiresSeconds,
    })
  }

  /** Multipart uploads in progress under the content prefix (by any replica), or of one digest's key. */
  async *multipartUploads(digest?: string): AsyncGenerator<MultipartUploadInfo> {
    const prefix = digest === undefined ? blobsPrefix(this.prefix) : blobKey(this.prefix, digest)
    let keyMarker: string | undefined
    let uploadIdMarker: string | undefined
    for (;;) {
      let res
      try {
        res = await this.client.send(
          new ListMultipartUploadsCommand({
            Bucket: this.bucket,
            Prefix: prefix,
            KeyMarker: keyMarker,
            UploadIdMarker: uploadIdMarker,
          }),
        )
      } catch (err) {
        throw unavailable(err, 'listing multipart uploads')
      }
      for (const u of res.Uploads ?? []) {
        if (u.Key === undefined || u.UploadId === undefined) continue
        if (digest !== undefined && u.Key !== prefix) continue
        yield { key: u.Key, uploadId: u.UploadId, digest: digestOfKey(this.prefix, u.Key), initiated: u.Initiated }
      }
      if (!res.IsTruncated) return
      keyMarker = res.NextKeyMarker
      uploadIdMarker = res.NextUploadIdMarker
      if (keyMarker === undefined && uploadIdMarker === undefined) return
    }
  }

  /**
   * Aborts multipart uploads begun more than `olderThanMs` ago whose digest nobody holds a live
   * lease on: fills that died with their process. Returns how many were aborted.
   */
  async abortAbandonedUploads(olderThanMs: number): Promise<number> {
    const cutoff = Date.now() - olderThanMs
    const abandoned: MultipartUploadInfo[] = []
    for await (const u of this.multipartUploads()) {
      if (u.initiated !== undefined && u.initiated.getTime() > cutoff) continue
      if (u.digest !== undefined) {
        const holder = await this.leases.holder(u.digest)
        if (holder !== undefined && holder.expiresAt > Date.now()) continue
      }
      abandoned.push(u)
    }
    let aborted = 0
    for (const u of abandoned) {
      try {
        await this.client.send(new AbortMultipartUploadCommand({ Bucket: this.bucket, Key: u.key, UploadId: u.uploadId }))
        aborted++
      } catch (err) {
        if (!isNotFound(err)) throw unavailable(err, 'aborting a leftover multipart upload')
      }
    }
    return aborted
  }

  /**
   * Aborts the uploads of `digest` begun before `initiatedBefore`: called by a replica that just
   * took the digest's fill lease, so they can only be leftovers of a filler that died.
   */
  async abortUploadsOf(digest: string, initiatedBefore: Date): Promise<number> {
    const stale: MultipartUploadInfo[] = []
    for await (const u of this.multipartUploads(digest)) {
      if (u.initiated !== undefined && u.initiated.getTime() < initiatedBefore.getTime()) stale.push(u)
    }
    let aborted = 0
    for (const u of stale) {
      try {
        await this.client.send(new AbortMultipartUploadCommand({ Bucket: this.bucket, Key: u.key, UploadId: u.uploadId }))
        aborted++
      } catch (err) {
        if (!isNotFound(err)) throw unavailable(err, 'aborting a leftover multipart upload')
      }
    }
    return aborted
  }

  /** Closes the client's connections. */
  close(): void {
    this.client.destroy()
  }
}
