// Consistency check of a data directory: every stored blob re-hashed against its name, and the
// metadata compared with the files. Used by `regcache fsck`, with the server stopped or running.

import type { BlobStore } from '../storage/blob-store.js'
import type { Metadata } from '../storage/metadata.js'

export interface FsckReport {
  checked: number
  ok: number
  /** Files whose bytes do not hash to their name. */
  corrupt: string[]
  /** Files with no metadata row. */
  orphaned: string[]
  /** Metadata rows with no file. */
  missing: string[]
  repaired: boolean
}

export async function fsck(store: BlobStore, meta: Metadata, opts: { repair: boolean; onProblem?: (kind: string, digest: string) => void }): Promise<FsckReport> {
  const report: FsckReport = { checked: 0, ok: 0, corrupt: [], orphaned: [], missing: [], repaired: opts.repair }
  const onDisk = new Set<string>()
  for await (const digest of store.list()) {
    onDisk.add(digest)
    report.checked++
    let good = false
    try {
      good = /^sha(256|512):[a-f0-9]+$/.test(digest) && (await store.verify(digest))
    } catch {
      good = false
    }
    if (!good) {
      report.corrupt.push(digest)
      opts.onProblem?.('corrupt', digest)
      if (opts.repair) {
        await store.remove(digest)
        meta.deleteContent(digest)
      }
      continue
    }
    if (!meta.getContent(digest)) {
      report.orphaned.push(digest)
      opts.onProblem?.('orphaned', digest)
      if (opts.repair) await store.remove(digest)
      continue
    }
    report.ok++
  }
  for (const digest of meta.allContentDigests()) {
    if (onDisk.has(digest)) continue
    report.missing.push(digest)
    opts.onProblem?.('missing', digest)
    if (opts.repair) meta.deleteContent(digest)
  }
  return report
}
