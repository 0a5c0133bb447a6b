// Measurement 7: content in an S3-compatible object store (a throw-away Ceph RADOS Gateway on
// 127.0.0.1) against local disk. For one warm blob: throughput seen by clients and server CPU per
// GB for (a) the filesystem store, (b) S3 streamed through regcache, (c) S3 redirect mode, where
// the client follows a 307 to a presigned URL and the gateway sends the bytes; and the aggregate
// throughput of three streaming replicas on one bucket against one replica with the same clients.
//
// Everything shares this machine's cores (regcache, the gateway, the clients), so the figures
// compare costs on one host; they do not show what separate machines would do.

import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { request } from 'undici'
import { createHash } from 'node:crypto'
import { rgwMissing, startRgw, type Rgw } from '../test/helpers/rgw.js'
import type { Registry } from '../test/helpers/registry.js'
import type { BigImage } from '../test/helpers/images.js'
import { makeTempDir, removeTempDir } from '../test/helpers/proc.js'
import { startRegcacheProc, type Server } from './contestants.js'
import { MB, cpuSeconds, fail, fmt, log, now, textTable } from './lib.js'

export interface ObjectStoreOptions {
  up: Registry
  /** Image in `repo` whose one layer is the blob measured. */
  big: BigImage
  repo: string
  /** Sequential warm GETs per variant. */
  runs: number
  /** Concurrent clients of the aggregate comparison. */
  clients: number
  /** Registers a cleanup with the caller (stopped on failure, signal or watchdog too). */
  defer: (what: string, f: () => Promise<void>) => () => Promise<void>
}

export interface ObjectStoreRow {
  variant: string
  mbps: number
  /** regcache's CPU seconds (all replicas) per GB delivered. */
  cpuPerGB: number
  /** The gateway's CPU seconds per GB delivered (0 for the filesystem store). */
  storeCpuPerGB: number
}

export interface ObjectStoreResult {
  rows: ObjectStoreRow[]
  table: string
  skipped?: string
}

/** GET through regcache; in redirect mode follows the 307 itself and hashes what the store sends. */
async function fetchBlob(url: string, digest: string): Promise<number> {
  let res = await request(url, { headers: { 'user-agent': 'regcache-bench' } })
  if (res.statusCode === 307) {
    await res.body.dump()
    const location = res.headers.location
    if (typeof location !== 'string') fail('307 without Location')
    res = await request(location, {})
  }
  if (res.statusCode !== 200) {
    await res.body.dump()
    fail(`GET ${url}: HTTP ${res.statusCode}`)
  }
  const h = createHash('sha256')
  let bytes = 0
  for await (const chunk of res.body as AsyncIterable<Buffer>) {
    h.update(chunk)
    bytes += chunk.length
  }
  if (`sha256:${h.digest('hex')}` !== digest) fail(`GET ${url}: the bytes do not hash to ${digest}`)
  return bytes
}

async function measure(
  variant: string,
  servers: Server[],
  rgw: Rgw | undefined,
  requests: number,
  clients: number,
  urlOf: (s: Server) => string,
  digest: string,
): Promise<ObjectStoreRow> {
  const pids = servers.map((s) => s.pid)
  const cpu0 = await cpuSeconds(pids)
  const store0 = rgw ? await cpuSeconds(rgw.pids) : 0
  const t0 = now()
  let next = 0
  let bytes = 0
  await Promise.all(
    Array.from({ length: clients }, async (_, c) => {
      while (next < requests) {
        next++
        bytes += await fetchBlob(urlOf(servers[c % servers.length]!), digest)
      }
    }),
  )
  const seconds = (now() - t0) / 1000
  const gb = bytes / 1e9
  const row = {
    variant,
    mbps: bytes / MB / seconds,
    cpuPerGB: ((await cpuSeconds(pids)) - cpu0) / gb,
    storeCpuPerGB: rgw ? ((await cpuSeconds(rgw.pids)) - store0) / gb : 0,
  }
  log(`   ${variant}: ${fmt(row.mbps)} MB/s, regcache ${fmt(row.cpuPerGB, 2)} CPU s/GB, store ${fmt(row.storeCpuPerGB, 2)} CPU s/GB`)
  return row
}

export async function objectStore(o: ObjectStoreOptions): Promise<ObjectStoreResult> {
  const missing = await rgwMissing()
  if (missing) return { rows: [], table: '', skipped: `Ceph RADOS Gateway unavailable: ${missing}` }
  const rgwStarted = await startRgw()
  const rgw = rgwStarted
  o.defer('RADOS Gateway', () => rgw.stop())
  const secrets = await makeTempDir()
  o.defer('S3 key files', () => removeTempDir(secrets))
  await writeFile(join(secrets, 'access'), rgw.accessKey)
  await writeFile(join(secrets, 'secret'), rgw.secretKey)
  const s3 = (redirect: boolean) => ({
    storage: {
      type: 's3',
      s3: {
        endpoint: rgw.endpoint,
        region: rgw.region,
        bucket: rgw.bucket,
        prefix: 'bench/',
        forcePathStyle: true,
        accessKeyFile: join(secrets, 'access'),
        secretKeyFile: join(secrets, 'secret'),
        redirect,
      },
    },
  })
  const start = async (label: string, extra?: Record<string, unknown>) => {
    const s = await startRegcacheProc({ upstreamUrl: o.up.url, label, extra })
    o.defer(`regcache ${label}`, () => s.stop())
    return s
  }
  const digest = o.big.layerDigest
  const urlOf = (s: Server) => `${s.url}/v2/${o.repo}/blobs/${digest}`

  const rows: ObjectStoreRow[] = []
  const fs = await start('filesystem')
  await fetchBlob(urlOf(fs), digest) // fills the cache
  rows.push(await measure('(a) filesystem, streamed', [fs], undefined, o.runs, 1, urlOf, digest))
  await fs.stop()

  const streamed = await start('s3-streamed', s3(false))
  await fetchBlob(urlOf(streamed), digest)
  rows.push(await measure('(b) S3, streamed', [streamed], rgw, o.runs, 1, urlOf, digest))

  const redirecting = await start('s3-redirect', s3(true))
  await fetchBlob(urlOf(redirecting), digest)
  rows.push(await measure('(c) S3, redirect', [redirecting], rgw, o.runs, 1, urlOf, digest))
  await redirecting.stop()

  const more = [await start('s3-replica-2', s3(false)), await start('s3-replica-3', s3(false))]
  const three = [streamed, ...more]
  for (const s of more) await fetchBlob(urlOf(s), digest) // each replica's index learns the blob
  const total = o.runs * o.clients
  rows.push(await measure(`S3 streamed, 1 replica, ${o.clients} clients`, [streamed], rgw, total, o.clients, urlOf, digest))
  rows.push(await measure(`S3 streamed, 3 replicas, ${o.clients} clients`, three, rgw, total, o.clients, urlOf, digest))
  for (const s of three) await s.stop()

  const table = textTable(
    ['object store (7)', 'MB/s', 'regcache CPU s/GB', 'store CPU s/GB'],
    rows.map((r) => [r.variant, fmt(r.mbps), fmt(r.cpuPerGB, 2), r.variant.startsWith('(a)') ? '-' : fmt(r.storeCpuPerGB, 2)]),
  )
  return { rows, table }
}
