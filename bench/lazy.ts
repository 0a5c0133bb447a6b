// 7. A lazy-pulling snapshotter's first request: the tail of a cold layer (its table of contents),
// over a bandwidth-limited upstream link. Straight from the upstream, through a fresh regcache,
// through a fresh distribution proxy. The figure is the time until the first byte of the tail
// arrives (and until the whole tail has): a proxy that answers with the whole blob, or makes the
// range wait for its own download, only delivers the tail once the blob crossed the link.

import { request } from 'undici'
import type { Registry } from '../test/helpers/registry.js'
import type { Server } from './contestants.js'
import { fail, fmt, log, now } from './lib.js'

export type LazyWho = 'direct' | 'regcache' | 'dist'

export interface TailTiming {
  who: LazyWho
  /** From the request until the tail's first byte arrived. */
  firstByteMs: number
  /** Until its last byte arrived. */
  tailMs: number
  status: number
  cache?: string
  /** Upstream blob GETs during the measurement: whole blob (200) and ranges (206). */
  upstreamFull: number
  upstreamRanges: number
}

export interface LazyOptions {
  upstream: Registry
  /** The bandwidth-limited way to the upstream (bench/throttle.ts). */
  linkUrl: string
  repo: string
  digest: string
  size: number
  /** Bytes at the end of the blob asked for (the eStargz footer and table of contents). */
  tailBytes: number
  /** Starts a fresh (cold) proxy whose upstream is the given URL. */
  start: Record<'regcache' | 'dist', (upstreamUrl: string) => Promise<Server>>
}

/**
 * Reads a blob GET's body, whether a 206 of the tail or a 200 of the whole blob, until the tail
 * [start, end] has arrived; times its first and last byte and checks them against `expected`.
 */
async function timedTail(url: string, start: number, end: number, expected: Buffer): Promise<Omit<TailTiming, 'who' | 'upstreamFull' | 'upstreamRanges'>> {
  const t0 = now()
  const res = await request(url, {
    headers: { range: `bytes=${start}-${end}`, 'user-agent': 'regcache-bench' },
    headersTimeout: 600_000,
    bodyTimeout: 600_000,
  })
  const one = (v: string | string[] | undefined) => (Array.isArray(v) ? v[0] : v)
  let offset: number
  if (res.statusCode === 206) {
    const cr = one(res.headers['content-range'])
    if (!cr?.startsWith(`bytes ${start}-${end}/`)) {
      await res.body.dump()
      fail(`${url}: 206 with Content-Range ${cr}, expected bytes ${start}-${end}/…`)
    }
    offset = start
  } else if (res.statusCode === 200) {
    offset = 0
  } else {
    await res.body.dump()
    fail(`${url}: HTTP ${res.statusCode}`)
  }
  const got: Buffer[] = []
  let firstByteMs: number | undefined
  for await (const c of res.body as AsyncIterable<Buffer>) {
    const from = Math.max(start, offset)
    const to = Math.min(end + 1, offset + c.length)
    if (to > from) {
      firstByteMs ??= now() - t0
      got.push(c.subarray(from - offset, to - offset))
    }
    offset += c.length
    // A whole-blob answer is not read past the tail.
    if (res.statusCode === 200 && offset > end) break
  }
  const tailMs = now() - t0
  const tail = Buffer.concat(got)
  if (!tail.equals(expected)) fail(`${url}: the tail's ${tail.length} bytes differ from the blob's last ${expected.length}`)
  return { firstByteMs: firstByteMs ?? tailMs, tailMs, status: res.statusCode, cache: one(res.headers['x-regcache-cache']) }
}

export async function lazyTail(o: LazyOptions): Promise<TailTiming[]> {
  const start = o.size - o.tailBytes
  const end = o.size - 1
  const path = `/v2/${o.repo}/blobs/${o.digest}`
  // The expected bytes, straight from the upstream (not through the link).
  const ref = await request(`${o.upstream.url}${path}`, { headers: { range: `bytes=${start}-${end}`, 'user-agent': 'regcache-test-helper/bench' } })
  if (ref.statusCode !== 206) fail(`upstream answered the tail range with ${ref.statusCode}`)
  const expected = Buffer.from(await ref.body.arrayBuffer())

  const out: TailTiming[] = []
  const gets = (status: number) => o.upstream.count({ method: 'GET', pathIncludes: `/blobs/${o.digest}`, status })
  for (const who of ['direct', 'regcache', 'dist'] as const) {
    await o.upstream.settle()
    o.upstream.resetRequests()
    const s = who === 'direct' ? undefined : await o.start[who](o.linkUrl)
    const url = `${s?.url ?? o.linkUrl}${path}`
    let r: Awaited<ReturnType<typeof timedTail>>
    try {
      // A HEAD first, as a snapshotter sends: the process has served a request and has its
      // upstream connection, as a long-running mirror would; the blob is still not fetched.
      const head = await request(url, { method: 'HEAD', headers: { 'user-agent': 'regcache-bench' } })
      await head.body.dump()
      if (head.statusCode !== 200) fail(`${who}: HEAD of the blob answered ${head.statusCode}`)
      r = await timedTail(url, start, end, expected)
    } finally {
      // Stopping lets a background download finish or be cut, so the next one starts on an idle
      // link; upstream's log has its GETs only once they ended.
      await s?.stop()
    }
    await o.upstream.settle()
    const t: TailTiming = { who, ...r, upstreamFull: gets(200), upstreamRanges: gets(206) }
    out.push(t)
    log(`   ${who}: tail first byte ${fmt(t.firstByteMs)} ms, whole tail ${fmt(t.tailMs)} ms (HTTP ${t.status}${t.cache ? `, ${t.cache}` : ''}; upstream blob GETs: ${t.upstreamFull} whole, ${t.upstreamRanges} ranges)`)
  }
  return out
}

export function lazyLines(runs: TailTiming[], linkMBps: number, tailBytes: number): string[] {
  const name = { direct: 'straight from the upstream', regcache: 'regcache', dist: 'distribution' }
  return [
    `- last ${fmt(tailBytes / 1000)} kB of a cold blob over the ${linkMBps} MB/s link (first byte / whole tail; upstream blob GETs whole + ranges): ${runs
      .map((r) => `${name[r.who]} ${fmt(r.firstByteMs)} / ${fmt(r.tailMs)} ms (HTTP ${r.status}${r.cache ? ` ${r.cache}` : ''}; ${r.upstreamFull} + ${r.upstreamRanges})`)
      .join('; ')}`,
  ]
}
