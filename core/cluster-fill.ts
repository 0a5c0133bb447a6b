// One upstream download per blob per cluster. Replicas sharing a bucket agree on one filler per
// digest through the fill lease (storage/s3-lease.ts): the replica that takes it downloads, the
// others wait until the object appears and serve it from the store, or take over when the
// filler's lease runs out (it died). The lease is held from before the upstream request until
// the fill ended, so the content is published before anyone else may start again.

import type { Logger } from 'pino'
import type { S3Store } from '../storage/s3-store.js'

export type Claim =
  /** This replica fills; end() gives the lease up (call it once the fill ended, either way). */
  | { kind: 'fill'; end: () => Promise<void> }
  /** Another replica stored it meanwhile. */
  | { kind: 'stored'; size: number }

export class ClusterFill {
  constructor(
    private readonly store: S3Store,
    private readonly log: Logger,
  ) {}

  /** Size of `digest` in the shared store (whichever replica stored it), or undefined. */
  storedSize(digest: string): Promise<number | undefined> {
    return this.store.size(digest)
  }

  /** Waits until this replica may fill `digest`, or until another replica stored it. */
  async claim(digest: string): Promise<Claim> {
    const leases = this.store.leases
    let lease = await leases.acquire(digest)
    if (!lease) {
      this.log.debug({ digest }, 'another replica is downloading this blob; waiting for it')
      const outcome = await leases.waitForContentOrLease(digest)
      if (outcome.kind === 'stored') return outcome
      lease = outcome.lease
    }
    const held = lease
    const release = async () => {
      await leases.release(held).catch((err: unknown) => this.log.warn({ err, digest }, 'releasing a fill lease failed; it expires by itself'))
    }
    try {
      // The previous holder may have published and released just before this lease was taken.
      const size = await this.store.size(digest)
      if (size !== undefined) {
        await release()
        return { kind: 'stored', size }
      }
      // Uploads of this key begun well before the lease was ours belong to a filler that died
      // (a live one renews every third of the lease time); newer ones may be a concurrent
      // taker's and are left alone.
      const aborted = await this.store.abortUploadsOf(digest, new Date(Date.now() - leases.ttlMs / 2))
      if (aborted > 0) this.log.warn({ digest, aborted }, 'aborted the upload of a replica that died while downloading this blob')
    } catch (err) {
      await release()
      throw err
    }
    const renewal = leases.keepRenewed(held, (err) =>
      // The worst case is a second download of the same bytes: content is named by its digest.
      this.log.warn({ err, digest }, 'lost the fill lease (renewal failed or it was taken over); another replica may download this blob too'),
    )
    let ended = false
    return {
      kind: 'fill',
      end: async () => {
        if (ended) return
        ended = true
        renewal.stop()
        await release()
      },
    }
  }
}
