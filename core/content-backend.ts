// Where content bytes live, from the configuration: files under dataDir (the default), or an S3
// bucket shared by every replica pointed at it. Only the shared store brings the cross-replica
// pieces: one filler per digest (core/cluster-fill.ts) and presigned URLs for redirect mode.

import { hostname } from 'node:os'
import { join } from 'node:path'
import type { Config } from '../config/config.js'
import { BlobStore } from '../storage/blob-store.js'
import type { ContentStore } from '../storage/content-store.js'
import type { S3Store } from '../storage/s3-store.js'

/** Requests to the store give up after this long, so a dead store is an error, never a hang. */
const S3_REQUEST_TIMEOUT_MS = 10_000

export interface ContentBackend {
  store: ContentStore
  /** Set for the shared object store. */
  s3?: S3Store
  /** Set in redirect mode: a short-lived URL that GETs the content straight from the store. */
  presign?: (digest: string) => Promise<string>
}

/** The spool directory of fills into the object store, under dataDir. */
export function s3SpoolDir(dataDir: string): string {
  return join(dataDir, 's3-spool')
}

export async function openContentBackend(config: Config): Promise<ContentBackend> {
  if (config.storage.type === 'filesystem') return { store: new BlobStore(config.dataDir) }
  const settings = config.storage.s3
  // Loaded only for this store: the AWS SDK is a good part of startup time otherwise spent for nothing.
  const { S3Store } = await import('../storage/s3-store.js')
  const s3 = await S3Store.create(settings, {
    spoolDir: s3SpoolDir(config.dataDir),
    // Names this replica in the leases it holds (the pod name in Kubernetes).
    owner: `${hostname()}/${process.pid}`,
    leaseTtlMs: settings.leaseTtlMs,
    requestTimeoutMs: S3_REQUEST_TIMEOUT_MS,
  })
  return {
    store: s3,
    s3,
    presign: settings.redirect ? (digest) => s3.presign(digest, settings.redirectExpirySeconds) : undefined,
  }
}
