// `npm run bench -- --memory`: 1,000 concurrent clients of one cached 50 MB blob. Peak RSS of the
// server (VmHWM) and the aggregate throughput, each client counting every byte; the blob is
// filled once from a local upstream before the clients start.

import { join } from 'node:path'
import { Agent, request } from 'undici'
import { makeTempDir, removeTempDir } from '../test/helpers/proc.js'
import { MB, fmt, memoryOf, now, cpuSeconds } from './lib.js'
import { FILL_REPO, get, startServer, startUpstream } from './scale.js'

const CLIENTS = Number(process.env.BENCH_MEMORY_CLIENTS ?? 1000)
const BLOB = 50 * MB

export async function runMemory(): Promise<number> {
  const dir = await makeTempDir()
  const up = await startUpstream(1, BLOB)
  const srv = await startServer(dir, join(dir, 'data'), up.url)
  const agent = new Agent({ connections: CLIENTS, pipelining: 1, bodyTimeout: 600_000, headersTimeout: 600_000 })
  try {
    const url = `${srv.url}/v2/${FILL_REPO}/blobs/${up.digests[0]}`
    const first = await get(agent, url)
    if (first.status !== 200 || first.bytes !== BLOB) throw new Error(`fill: status ${first.status}, ${first.bytes} bytes`)
    const idle = await memoryOf(srv.daemon.pid)
    const cpu0 = await cpuSeconds([srv.daemon.pid])
    const t0 = now()
    const sizes = await Promise.all(
      Array.from({ length: CLIENTS }, async () => {
        const res = await request(url, { dispatcher: agent })
        if (res.statusCode !== 200) throw new Error(`status ${res.statusCode}`)
        let n = 0
        for await (const c of res.body) n += (c as Buffer).length
        return n
      }),
    )
    const seconds = (now() - t0) / 1000
    const cpu = (await cpuSeconds([srv.daemon.pid])) - cpu0
    if (sizes.some((n) => n !== BLOB)) throw new Error('a client received a short blob')
    const mem = await memoryOf(srv.daemon.pid)
    const mbps = (CLIENTS * BLOB) / MB / seconds
    process.stdout.write(
      `\n${CLIENTS} clients x 50 MB: ${fmt(seconds, 1)} s, ${fmt(mbps)} MB/s aggregate; server peak RSS ${fmt(mem.hwm / MB)} MB (idle after the fill ${fmt(idle.rss / MB)} MB), ` +
        `server CPU ${fmt(cpu, 1)} s (${fmt(cpu / ((CLIENTS * BLOB) / 1e9), 2)} s per GB); target: peak < 400 MB — ${mem.hwm < 400 * MB ? 'MET' : 'MISSED'}\n`,
    )
    return 0
  } finally {
    await agent.close()
    await srv.daemon.stop(10_000)
    await up.close()
    await removeTempDir(dir)
  }
}
