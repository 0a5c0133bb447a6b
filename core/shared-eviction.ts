// Eviction when replicas share one bucket: one replica evicts at a time (the `leases/evictor`
// lease, taken like a fill lease), and content with a fill lease is left alone, since a replica
// is about to publish it. Sizes and last-access times come from this replica's own index: it
// knows what it stored, served or found in the bucket, which behind a load balancer is nearly
// all that is in use; content no replica has touched since it started is not counted.

import type { Logger } from 'pino'
import { EVICTOR_LEASE } from '../storage/s3-keys.js'
import type { S3Store } from '../storage/s3-store.js'

export class SharedEviction {
  constructor(
    private readonly store: S3Store,
    private readonly log: Logger,
  ) {}

  /** Runs `pass` holding the evictor lease; undefined when another replica is evicting. */
  async exclusive<T>(pass: () => Promise<T>): Promise<T | undefined> {
    const leases = this.store.leases
    const lease = await leases.acquire(EVICTOR_LEASE)
    if (!lease) {
      this.log.debug('another replica is evicting from the shared store; skipped')
      return undefined
    }
    const renewal = leases.keepRenewed(lease, (err) => this.log.warn({ err }, 'lost the evictor lease; this pass ends with the current page'))
    try {
      return await pass()
    } finally {
      renewal.stop()
      await leases.release(lease).catch((err: unknown) => this.log.warn({ err }, 'releasing the evictor lease failed; it expires by itself'))
    }
  }

  /** False while any replica holds a fill lease on `digest`. */
  async mayRemove(digest: string): Promise<boolean> {
    return (await this.store.leases.holder(digest)) === undefined
  }
}
