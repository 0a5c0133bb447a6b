// A ReadHandle over a stored object: each read() is one ranged GET. Used for content a fill has
// already published, where the local spool file is gone.

import { GetObjectCommand, type S3Client } from '@aws-sdk/client-s3'
import type { Readable } from 'node:stream'
import type { ReadHandle } from './content-store.js'
import { s3Status, unavailable } from './s3-client.js'

export class S3ReadHandle implements ReadHandle {
  constructor(
    private readonly client: S3Client,
    private readonly bucket: string,
    private readonly key: string,
  ) {}

  async read(buffer: Buffer, offset: number, length: number, position: number): Promise<{ bytesRead: number }> {
    if (length <= 0) return { bytesRead: 0 }
    let body: Readable
    try {
      const res = await this.client.send(
        new GetObjectCommand({ Bucket: this.bucket, Key: this.key, Range: `bytes=${position}-${position + length - 1}` }),
      )
      body = res.Body as Readable
    } catch (err) {
      // Past the end, like a file read at EOF.
      if (s3Status(err) === 416) return { bytesRead: 0 }
      throw unavailable(err, 'ranged read')
    }
    let bytesRead = 0
    try {
      for await (const chunk of body) {
        const c = chunk as Buffer
        const n = Math.min(c.length, length - bytesRead)
        c.copy(buffer, offset + bytesRead, 0, n)
        bytesRead += n
      }
    } catch (err) {
      throw unavailable(err, 'ranged read')
    } finally {
      body.destroy()
    }
    return { bytesRead }
  }

  async close(): Promise<void> {}
}
