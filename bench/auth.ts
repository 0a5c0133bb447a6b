// What client authentication costs: tag revalidation req/s and warm blob MB/s through regcache
// with `credentials: client` (recheck 5m, every client sending Basic credentials) against the
// same regcache without an auth section (the upstream credentials configured in regcache).
// Upstream: a token-auth docker-registry with the test token service. All on 127.0.0.1.
//   npm run build && node dist/bench/auth.js          (BENCH_QUICK=1: small blob, one short run;
//                                                     BENCH_CPU_PROF=DIR: CPU profiles of both regcaches)

import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { stringify } from 'yaml'
import { CONTAINERD_ACCEPT } from '../oci/media-types.js'
import { buildBigImage, buildImage } from '../test/helpers/images.js'
import { freePort } from '../test/helpers/ports.js'
import { makeTempDir, removeTempDir, run, spawnDaemon, waitUntil, type Daemon } from '../test/helpers/proc.js'
import { pushWithCreds, startAuthRegistry } from '../test/helpers/token-registry.js'
import { startTokenServer, teamUsers } from '../test/helpers/token-server.js'
import { MB, cpuSeconds, fail, fmt, log, median, textTable } from './lib.js'
import { load } from './load.js'

const QUICK = process.env.BENCH_QUICK === '1'
const S = QUICK
  ? { blobBytes: 64 * MB, runs: 1, revalSeconds: 3, blobRuns: 2 }
  : { blobBytes: 256 * MB, runs: 3, revalSeconds: 10, blobRuns: 5 }
const CLIENTS = 20
const SERVICE = 'regcache-bench-registry'
const ISSUER = 'regcache-bench-issuer'
const MAIN = fileURLToPath(new URL('../cli/main.js', import.meta.url))

interface Proc {
  url: string
  daemon: Daemon
  dir: string
}

async function startRegcache(name: string, doc: Record<string, unknown>): Promise<Proc> {
  const dir = await makeTempDir()
  const port = await freePort()
  const configFile = join(dir, 'config.yaml')
  await writeFile(configFile, stringify({ listen: `127.0.0.1:${port}`, dataDir: join(dir, 'data'), logLevel: 'warn', defaultUpstream: 'registry.test', ...doc }))
  // BENCH_CPU_PROF=DIR: a V8 CPU profile of each regcache, written when it stops (bench/profile-summary.ts reads them).
  const prof = process.env.BENCH_CPU_PROF ? ['--cpu-prof', '--cpu-prof-dir', process.env.BENCH_CPU_PROF, '--cpu-prof-name', `regcache-${name.replace(/\W+/g, '-')}.cpuprofile`] : []
  const daemon = spawnDaemon(process.execPath, [...prof, MAIN, 'serve', '--config', configFile], { cwd: dir })
  const url = `http://127.0.0.1:${port}`
  await waitUntil(name, async () => (await fetch(`${url}/healthz`, { signal: AbortSignal.timeout(2000) }).catch(() => undefined))?.status === 200, { daemon, timeoutMs: 30_000 })
  return { url, daemon, dir }
}

async function curlMBps(url: string, user: string | undefined, size: number): Promise<number> {
  const args = ['-sS', '-o', '/dev/null', '-w', '%{http_code} %{size_download} %{time_total}', ...(user ? ['-u', user] : []), url]
  const r = await run('curl', args, { timeoutMs: 600_000 })
  if (r.code !== 0) fail(`curl exited ${r.code}: ${r.stderr}`)
  const [status, bytes, seconds] = r.stdout.trim().split(/\s+/).map(Number)
  if (status !== 200 || bytes !== size) fail(`${url}: status ${status}, ${bytes} bytes (expected 200, ${size})`)
  return bytes / MB / seconds
}

/** Upstream requests the regcache has made so far, from its own /metrics. */
async function upstreamRequests(p: Proc): Promise<number> {
  const text = await (await fetch(`${p.url}/metrics`)).text()
  let n = 0
  for (const line of text.split('\n')) if (line.startsWith('regcache_upstream_requests_total{')) n += Number(line.slice(line.lastIndexOf(' ') + 1))
  return n
}

async function main(): Promise<number> {
  const cleanups: (() => Promise<void>)[] = []
  try {
    const users = teamUsers()
    const ts = await startTokenServer({ issuer: ISSUER, users })
    cleanups.push(ts.stop)
    const reg = await startAuthRegistry({ auth: { token: { realm: ts.realm, service: SERVICE, issuer: ISSUER, rootcertbundle: ts.certFile } } })
    cleanups.push(reg.stop)
    log(`building and pushing a ${fmt(S.blobBytes / MB)} MB layer and a small image`)
    const [small, big] = await Promise.all([buildImage({ layers: 1, layerSize: 4 * 1024 }), buildBigImage(S.blobBytes)])
    cleanups.push(small.remove, big.remove)
    const seeder = { username: 'seeder', password: users.seeder.password }
    await pushWithCreds(small, reg.host, 'team-a/app:v1', seeder)
    await pushWithCreds(big, reg.host, 'team-a/big:v1', seeder)

    const secrets = await makeTempDir()
    cleanups.push(() => removeTempDir(secrets))
    await writeFile(join(secrets, 'password'), users.alice.password)
    const upstream = { url: reg.url, revalidate: { timeout: '2s', minInterval: 0 } }
    const off = await startRegcache('regcache (auth off)', { upstreams: { 'registry.test': { ...upstream, username: 'alice', passwordFile: join(secrets, 'password') } } })
    cleanups.push(async () => (await off.daemon.stop(10_000), await removeTempDir(off.dir)))
    const on = await startRegcache('regcache (auth on)', {
      upstreams: { 'registry.test': { ...upstream, credentials: 'client', authorization: { recheck: '5m', offline: '24h' } } },
      auth: { anonymous: true },
    })
    cleanups.push(async () => (await on.daemon.stop(10_000), await removeTempDir(on.dir)))

    const alice = `alice:${users.alice.password}`
    const basic = `Basic ${Buffer.from(alice).toString('base64')}`
    const who = [
      { id: 'auth off', proc: off, headers: {} as Record<string, string>, user: undefined as string | undefined },
      { id: 'auth on (client, recheck 5m)', proc: on, headers: { authorization: basic }, user: alice },
    ]
    const tagUrl = (p: Proc) => `${p.url}/v2/team-a/app/manifests/v1`
    const blobUrl = (p: Proc) => `${p.url}/v2/team-a/big/blobs/${big.layerDigest}`
    // Warm-up: each regcache caches the blob and the tag.
    for (const c of who) {
      await curlMBps(blobUrl(c.proc), c.user, big.layerSize)
      const r = await fetch(tagUrl(c.proc), { headers: { accept: CONTAINERD_ACCEPT, ...c.headers } })
      await r.arrayBuffer()
      if (r.status !== 200) fail(`${c.id}: warm-up tag request answered ${r.status}`)
    }

    // Runs alternate between the two, so load from elsewhere on the machine hits both alike. The
    // server's own CPU per request / per GB is reported beside the rates: it moves far less with
    // other load than req/s or MB/s do.
    const rps: Record<string, number[]> = {}
    const mbps: Record<string, number[]> = {}
    const cpuPerKReq: Record<string, number[]> = {}
    const cpuPerGB: Record<string, number[]> = {}
    const upstreamPerReq: Record<string, number[]> = {}
    for (let i = 0; i < S.runs; i++) {
      for (const c of who) {
        const cpu0 = await cpuSeconds([c.proc.daemon.pid])
        const up0 = await upstreamRequests(c.proc)
        const r = await load({ url: tagUrl(c.proc), connections: CLIENTS, durationS: S.revalSeconds, headers: { accept: CONTAINERD_ACCEPT, ...c.headers } })
        const cpu = (await cpuSeconds([c.proc.daemon.pid])) - cpu0
        const bad = Object.entries(r.statuses).filter(([s]) => s !== '200')
        if (bad.length || r.errors || r.requests === 0) fail(`${c.id}: statuses ${JSON.stringify(r.statuses)}, ${r.errors} errors`)
        ;(rps[c.id] ??= []).push(r.rps)
        ;(cpuPerKReq[c.id] ??= []).push((1000 * cpu) / r.requests)
        // Revalidation shares one upstream HEAD among concurrent requests: how many it took explains most of the CPU.
        const ups = ((await upstreamRequests(c.proc)) - up0) / r.requests
        ;(upstreamPerReq[c.id] ??= []).push(ups)
        log(`   ${c.id}: ${fmt(r.rps)} req/s, ${fmt((1000 * cpu) / r.requests, 3)} CPU s per 1,000 requests, ${fmt(ups, 3)} upstream requests per request (${r.tool})`)
      }
    }
    for (let i = 0; i < S.blobRuns; i++) {
      for (const c of who) {
        const cpu0 = await cpuSeconds([c.proc.daemon.pid])
        const m = await curlMBps(blobUrl(c.proc), c.user, big.layerSize)
        const cpu = (await cpuSeconds([c.proc.daemon.pid])) - cpu0
        ;(mbps[c.id] ??= []).push(m)
        ;(cpuPerGB[c.id] ??= []).push(cpu / (big.layerSize / 1e9))
        log(`   ${c.id}: warm blob ${fmt(m)} MB/s, ${fmt(cpu / (big.layerSize / 1e9), 2)} CPU s per GB`)
      }
    }
    const [a, b] = who.map((c) => c.id)
    const ratio = (x: number, y: number) => `${fmt((100 * x) / y)} %`
    // Target: auth on within 10% of auth off (rates at least 90% of off).
    const verdict = (on: number, off: number, higherIsBetter: boolean) =>
      (higherIsBetter ? on >= 0.9 * off : on <= 1.1 * off) ? 'MET' : 'MISSED'
    const row = (what: string, xs: Record<string, number[]>, digits: number, higherIsBetter: boolean) => {
      const off = median(xs[a!]!)
      const on = median(xs[b!]!)
      return [what, fmt(off, digits), fmt(on, digits), ratio(on, off), verdict(on, off, higherIsBetter)]
    }
    const rows = [
      row(`tag revalidation, ${CLIENTS} clients (req/s, median)`, rps, 0, true),
      // The target is about rates; the CPU rows say where a difference would come from.
      [...row('tag revalidation: server CPU s per 1,000 requests (median)', cpuPerKReq, 3, false).slice(0, 4), 'info'],
      [...row('tag revalidation: upstream requests per client request (median)', upstreamPerReq, 3, false).slice(0, 4), 'info'],
      row('warm blob, 1 client (MB/s, median)', mbps, 0, true),
      [...row('warm blob: server CPU s per GB (median)', cpuPerGB, 2, false).slice(0, 4), 'info'],
    ]
    process.stdout.write('\n' + textTable(['measurement', a!, b!, 'on / off', 'within 10%'], rows) + '\n')
    return 0
  } catch (err) {
    process.stderr.write(`bench/auth: ${(err as Error).message}\n`)
    return 1
  } finally {
    for (const c of cleanups.reverse()) await c().catch(() => {})
  }
}

process.exitCode = await main()
