// `npm run bench -- --fsck`: how long `regcache fsck` takes over many small blobs. A data
// directory is filled with BENCH_FSCK_BLOBS blobs of 1 KiB: the files written straight to where
// the filesystem store keeps them (BlobStore.put syncs every file, which would make the filling
// take far longer than the check), the rows through Metadata.putContent in batched transactions
// (default 1,000,000; BENCH_QUICK=1: 20,000), then the real command runs as a child process, as
// an operator runs it. Reported: wall time, blobs per second, CPU (user + system) and the
// progress lines it printed. Target: a million small blobs in minutes.

import { createHash, randomBytes } from 'node:crypto'
import { mkdir, writeFile } from 'node:fs/promises'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import pLimit from 'p-limit'
import { stringify } from 'yaml'
import { BlobStore } from '../storage/blob-store.js'
import { blobPath, dbPath } from '../storage/layout.js'
import { Metadata } from '../storage/metadata.js'
import { makeTempDir, removeTempDir, run } from '../test/helpers/proc.js'
import { cpuAccount, fmt, log, now } from './lib.js'

const QUICK = process.env.BENCH_QUICK === '1'
const BLOBS = Number(process.env.BENCH_FSCK_BLOBS ?? (QUICK ? 20_000 : 1_000_000))
const BLOB_BYTES = 1024
const BATCH = 5_000
/** "In minutes": the target is read as under ten minutes for a million blobs on these machines. */
const TARGET_S_PER_MILLION = 600
const MAIN = fileURLToPath(new URL('../cli/main.js', import.meta.url))

/** Writes `count` random 1 KiB blobs and their rows; returns the seconds it took. */
async function fill(dataDir: string, count: number): Promise<number> {
  const t0 = now()
  const store = new BlobStore(dataDir)
  await store.init()
  const meta = new Metadata(dbPath(dataDir))
  const limit = pLimit(32)
  const dirs = new Map<string, Promise<unknown>>()
  try {
    for (let b = 0; b < count; b += BATCH) {
      const n = Math.min(BATCH, count - b)
      const rows = await Promise.all(
        Array.from({ length: n }, () =>
          limit(async () => {
            const bytes = randomBytes(BLOB_BYTES)
            const digest = `sha256:${createHash('sha256').update(bytes).digest('hex')}`
            const path = blobPath(dataDir, digest)
            const dir = dirname(path)
            if (!dirs.has(dir)) dirs.set(dir, mkdir(dir, { recursive: true }))
            await dirs.get(dir)
            await writeFile(path, bytes)
            return digest
          }),
        ),
      )
      meta.db.transaction(() => {
        for (const digest of rows) meta.putContent({ digest, size: BLOB_BYTES }, { upstream: 'bench.test', repository: 'bench/fsck' })
      })()
      if ((b / BATCH) % 20 === 0) log(`   filled ${fmt(b + n)} of ${fmt(count)} blobs`)
    }
  } finally {
    meta.close()
  }
  return (now() - t0) / 1000
}

export async function runFsck(): Promise<number> {
  const dir = await makeTempDir()
  try {
    const dataDir = join(dir, 'data')
    log(`filling ${fmt(BLOBS)} blobs of ${BLOB_BYTES} bytes`)
    const fillS = await fill(dataDir, BLOBS)
    const configFile = join(dir, 'config.yaml')
    await writeFile(configFile, stringify({ dataDir, logLevel: 'warn' }))
    // Drop nothing from the page cache: the files were just written, as on a server that runs.
    log('running regcache fsck')
    const acct0 = await cpuAccount()
    const t0 = now()
    // BENCH_CPU_PROF=DIR: a V8 CPU profile of the fsck process (bench/profile-summary.ts reads it).
    const prof = process.env.BENCH_CPU_PROF ? ['--cpu-prof', '--cpu-prof-dir', process.env.BENCH_CPU_PROF] : []
    const r = await run(process.execPath, [...prof, MAIN, 'fsck', '--config', configFile], { timeoutMs: 3 * 3600_000 })
    const seconds = (now() - t0) / 1000
    const cpu = (await cpuAccount()).mine - acct0.mine
    const progress = r.stderr.split('\n').filter((l) => l.includes('fsck:'))
    const summary = r.stdout.trim().split('\n').pop() ?? ''
    if (r.code !== 0 || !summary.includes(`checked ${BLOBS} blobs: ${BLOBS} ok`)) {
      process.stderr.write(`bench/fsck: fsck exited ${r.code}: ${summary}\n${r.stderr.slice(-2000)}\n`)
      return 1
    }
    const perMillion = (seconds * 1_000_000) / BLOBS
    const met = perMillion <= TARGET_S_PER_MILLION
    process.stdout.write(
      `\nfsck of ${fmt(BLOBS)} blobs of 1 KiB (filled in ${fmt(fillS, 1)} s): ${fmt(seconds, 1)} s wall, ${fmt(BLOBS / seconds)} blobs/s, ` +
        `${fmt(cpu, 1)} CPU s; ${progress.length} progress lines (last: ${progress.at(-1)?.replace(/^regcache: fsck: /, '') ?? 'none'}); ` +
        `${fmt(perMillion / 60, 1)} min per million — target ≤ ${TARGET_S_PER_MILLION / 60} min per million: ${met ? 'MET' : 'MISSED'}\n`,
    )
    return 0
  } finally {
    await removeTempDir(dir)
  }
}
