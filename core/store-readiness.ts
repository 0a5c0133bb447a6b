// Whether the content store answers, for /readyz and the regcache_store_up gauge. The check is
// short (a dead store is reported within seconds, never waited on) and its answer is reused for
// a moment, so frequent probes do not become a load on the store.

import type { S3Store } from '../storage/s3-store.js'
import type { Metrics } from './metrics.js'

/** Longest wait for the store's answer. */
export const STORE_CHECK_TIMEOUT_MS = 2000
/** How long an answer is reused. */
export const STORE_CHECK_CACHE_MS = 1500

export class StoreReadiness {
  private last?: { at: number; problem: string | undefined }
  private pending?: Promise<string | undefined>

  constructor(
    /** Undefined for the filesystem store: the data directory check covers it. */
    private readonly store: Pick<S3Store, 'checkReady'> | undefined,
    private readonly metrics: Metrics,
  ) {
    metrics.storeUp.set(1)
  }

  /** Undefined when the store answers, else why not. */
  async problem(): Promise<string | undefined> {
    if (!this.store) return undefined
    if (this.last && Date.now() - this.last.at < STORE_CHECK_CACHE_MS) return this.last.problem
    this.pending ??= this.check(this.store).finally(() => (this.pending = undefined))
    return this.pending
  }

  /** Drops the cached answer (a request just failed on the store). */
  forget(): void {
    this.last = undefined
    this.metrics.storeUp.set(0)
  }

  private async check(store: Pick<S3Store, 'checkReady'>): Promise<string | undefined> {
    let timer: NodeJS.Timeout | undefined
    const timeout = new Promise<string>((resolve) => {
      timer = setTimeout(() => resolve(`no answer within ${STORE_CHECK_TIMEOUT_MS} ms`), STORE_CHECK_TIMEOUT_MS)
      timer.unref()
    })
    const answer = store.checkReady().then(
      () => undefined,
      (err: unknown) => (err instanceof Error ? err.message : String(err)),
    )
    const problem = await Promise.race([answer, timeout])
    clearTimeout(timer)
    this.last = { at: Date.now(), problem }
    this.metrics.storeUp.set(problem === undefined ? 1 : 0)
    return problem
  }
}
