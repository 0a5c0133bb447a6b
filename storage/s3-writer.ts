// A fill into the object store. Bytes go to a local spool file (which clients following the fill
// read back through openRead(), as with the filesystem store) and, part by part as they fill,
// into a multipart upload of the digest's own key. A multipart upload is invisible until it is
// completed, and commit() completes it only after the digest verified, so nothing partial or
// foreign ever appears under a digest key; abort() aborts the upload. Content smaller than one
// part goes as a single PUT at commit.

import { createHash, type Hash } from 'node:crypto'
import { open, rm, type FileHandle } from 'node:fs/promises'
import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CreateMultipartUploadCommand,
  PutObjectCommand,
  UploadPartCommand,
  type CompletedPart,
  type S3Client,
} from '@aws-sdk/client-s3'
import { DigestMismatchError } from './blob-store.js'
import type { ContentWriter, ReadHandle } from './content-store.js'
import { unavailable } from './s3-client.js'
import { S3ReadHandle } from './s3-read-handle.js'

export interface S3WriterTarget {
  client: S3Client
  bucket: string
  key: string
  partSize: number
  partsInFlight: number
}

export class S3Writer implements ContentWriter {
  written = 0
  private readonly hash: Hash
  private state: 'open' | 'committed' | 'aborted' = 'open'
  private fileClosed = false
  private creating: Promise<string> | undefined
  private uploadId: string | undefined
  /** Offset where the next part starts. */
  private partStart = 0
  private readonly parts: CompletedPart[] = []
  private readonly inFlight = new Set<Promise<void>>()
  private uploadError: unknown
  private readonly cancel = new AbortController()
  private slotFreed: (() => void) | undefined

  constructor(
    readonly digest: string,
    readonly spoolPath: string,
    private readonly fh: FileHandle,
    private readonly target: S3WriterTarget,
  ) {
    this.hash = createHash(digest.startsWith('sha512:') ? 'sha512' : 'sha256')
  }

  async write(chunk: Buffer): Promise<void> {
    if (this.state !== 'open') throw new Error(`write after ${this.state}`)
    // Wait for an upload slot first, so a failure leaves nothing of this chunk counted.
    while (this.inFlight.size >= this.target.partsInFlight && this.uploadError === undefined) {
      await new Promise<void>((resolve) => (this.slotFreed = resolve))
      if (this.state !== 'open') throw new Error(`write after ${this.state}`)
    }
    if (this.uploadError !== undefined) throw unavailable(this.uploadError, 'part upload')
    let offset = 0
    while (offset < chunk.length) {
      const { bytesWritten } = await this.fh.write(chunk, offset, chunk.length - offset, this.written + offset)
      offset += bytesWritten
    }
    this.written += chunk.length
    this.hash.update(chunk)
    while (this.written - this.partStart >= this.target.partSize) {
      this.startPart(this.partStart, this.target.partSize)
      this.partStart += this.target.partSize
    }
  }

  hashOnly(chunk: Buffer): void {
    this.hash.update(chunk)
  }

  actualDigest(): string {
    return `${this.digest.slice(0, this.digest.indexOf(':'))}:${this.hash.digest('hex')}`
  }

  async commit(): Promise<void> {
    if (this.state !== 'open') throw new Error(`commit after ${this.state}`)
    const actual = this.actualDigest()
    if (actual !== this.digest) {
      await this.abort()
      throw new DigestMismatchError(this.digest, actual)
    }
    const { client, bucket, key } = this.target
    try {
      if (this.creating === undefined) {
        const body = await this.readSpool(0, this.written)
        await client.send(
          new PutObjectCommand({ Bucket: bucket, Key: key, Body: body, ContentLength: body.length, ContentMD5: md5(body) }),
          { abortSignal: this.cancel.signal },
        )
      } else {
        if (this.written > this.partStart) this.startPart(this.partStart, this.written - this.partStart)
        this.partStart = this.written
        while (this.inFlight.size > 0) await Promise.allSettled([...this.inFlight])
        if (this.uploadError !== undefined) throw this.uploadError
        await client.send(
          new CompleteMultipartUploadCommand({
            Bucket: bucket,
            Key: key,
            UploadId: await this.creating,
            MultipartUpload: { Parts: this.parts },
          }),
          { abortSignal: this.cancel.signal },
        )
      }
    } catch (err) {
      await this.abort()
      throw unavailable(err, 'publishing content')
    }
    this.state = 'committed'
    await this.closeFile()
    // Readers that opened the spool file keep reading it; later ones read the object.
    await rm(this.spoolPath, { force: true })
  }

  async abort(): Promise<void> {
    if (this.state !== 'open') return
    this.state = 'aborted'
    this.cancel.abort()
    this.slotFreed?.()
    await Promise.allSettled([...this.inFlight])
    await this.closeFile()
    await rm(this.spoolPath, { force: true })
    const uploadId = this.creating && (await this.creating.catch(() => undefined))
    if (uploadId === undefined) return
    try {
      await this.target.client.send(
        new AbortMultipartUploadCommand({ Bucket: this.target.bucket, Key: this.target.key, UploadId: uploadId }),
      )
    } catch {
      // The store is unreachable: the upload stays invisible, and init() of any replica removes it later.
    }
  }

  async openRead(): Promise<ReadHandle> {
    const stored = () => new S3ReadHandle(this.target.client, this.target.bucket, this.target.key)
    if (this.state === 'committed') return stored()
    try {
      return await open(this.spoolPath, 'r')
    } catch (err) {
      // commit() may have removed the spool file while this open was under way.
      if ((err as NodeJS.ErrnoException).code === 'ENOENT' && this.committed()) return stored()
      throw err
    }
  }

  private committed(): boolean {
    return this.state === 'committed'
  }

  /** The multipart upload id, once one was started (content above one part). */
  get multipartUploadId(): string | undefined {
    return this.uploadId
  }

  private startPart(start: number, size: number): void {
    const partNumber = Math.floor(start / this.target.partSize) + 1
    const { client, bucket, key } = this.target
    const signal = this.cancel.signal
    this.creating ??= client
      // Not cancelled by abort(): abort() waits for the id so it can abort the upload it names.
      .send(new CreateMultipartUploadCommand({ Bucket: bucket, Key: key }))
      .then((res) => {
        if (!res.UploadId) throw new Error('object store: no UploadId in CreateMultipartUpload answer')
        this.uploadId = res.UploadId
        return res.UploadId
      })
    const creating = this.creating
    const upload = (async () => {
      const uploadId = await creating
      const body = await this.readSpool(start, size)
      const res = await client.send(
        new UploadPartCommand({
          Bucket: bucket,
          Key: key,
          UploadId: uploadId,
          PartNumber: partNumber,
          Body: body,
          ContentLength: body.length,
          ContentMD5: md5(body),
        }),
        { abortSignal: signal },
      )
      this.parts[partNumber - 1] = { PartNumber: partNumber, ETag: res.ETag }
    })()
    this.inFlight.add(upload)
    upload
      .catch((err: unknown) => {
        this.uploadError ??= err
      })
      .finally(() => {
        this.inFlight.delete(upload)
        const wake = this.slotFreed
        this.slotFreed = undefined
        wake?.()
      })
  }

  private async readSpool(start: number, size: number): Promise<Buffer> {
    const buf = Buffer.allocUnsafe(size)
    let done = 0
    while (done < size) {
      const { bytesRead } = await this.fh.read(buf, done, size - done, start + done)
      if (bytesRead === 0) throw new Error(`spool file ended at ${start + done}, expected ${start + size}`)
      done += bytesRead
    }
    return buf
  }

  private async closeFile(): Promise<void> {
    if (this.fileClosed) return
    this.fileClosed = true
    await this.fh.close().catch(() => {})
  }
}

function md5(bytes: Buffer): string {
  return createHash('md5').update(bytes).digest('base64')
}
