// Programmable HTTP fronts for upstream-behaviour tests:
// - startInterceptingFront: a pass-through to a registry that records every request and lets the
//   test answer some requests itself (a redirecting blob front, a lying manifest server).
// - startBlobCdn: a second origin (`http://localhost:<port>`, while the fronts are on 127.0.0.1)
//   that serves blob bytes at /blob/<digest>, honours `Range: bytes=N-` / `bytes=a-b`, records the
//   request headers, and can cut a transfer halfway once per digest.

import http from 'node:http'
import { freePort } from './ports.js'

export interface SeenRequest {
  method: string
  /** Path and query. */
  url: string
  headers: http.IncomingHttpHeaders
  /** Who answered: the test's hook, or the registry behind. */
  by: 'hook' | 'forward'
}

export type Intercept = (req: http.IncomingMessage, res: http.ServerResponse) => boolean | Promise<boolean>

export interface InterceptingFront {
  url: string
  host: string
  port: number
  requests: SeenRequest[]
  stop(): Promise<void>
}

const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'transfer-encoding', 'proxy-connection', 'upgrade', 'te', 'trailer'])

async function listen(server: http.Server, port: number): Promise<void> {
  server.keepAliveTimeout = 5000
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(port, '127.0.0.1', () => resolve())
  })
}

async function close(server: http.Server): Promise<void> {
  await new Promise<void>((resolve) => {
    server.close(() => resolve())
    server.closeAllConnections()
  })
}

/**
 * Forwards every request byte for byte (Authorization included) to `target`, unless `intercept`
 * answers it (returns true).
 */
export async function startInterceptingFront(target: { host: string; port: number }, intercept?: Intercept): Promise<InterceptingFront> {
  const port = await freePort()
  const agent = new http.Agent({ keepAlive: true })
  const targetHost = `${target.host}:${target.port}`
  const requests: SeenRequest[] = []

  const forward = (req: http.IncomingMessage, res: http.ServerResponse) => {
    const headers: http.OutgoingHttpHeaders = {}
    for (const [k, v] of Object.entries(req.headers)) if (!HOP_BY_HOP.has(k) && v !== undefined) headers[k] = v
    headers.host = targetHost
    const up = http.request({ host: target.host, port: target.port, method: req.method, path: req.url, headers, agent }, (upRes) => {
      const out: string[] = []
      const raw = upRes.rawHeaders
      for (let i = 0; i < raw.length; i += 2) if (!HOP_BY_HOP.has(raw[i]!.toLowerCase())) out.push(raw[i]!, raw[i + 1]!)
      res.writeHead(upRes.statusCode ?? 502, out)
      upRes.pipe(res)
      upRes.on('error', () => res.destroy())
    })
    up.on('error', () => res.destroy())
    req.pipe(up)
  }

  const server = http.createServer((req, res) => {
    const seen: SeenRequest = { method: req.method ?? '', url: req.url ?? '/', headers: { ...req.headers }, by: 'forward' }
    requests.push(seen)
    void (async () => {
      try {
        if (intercept && (await intercept(req, res))) {
          seen.by = 'hook'
          return
        }
      } catch {
        res.destroy()
        return
      }
      forward(req, res)
    })()
  })
  await listen(server, port)
  return {
    url: `http://127.0.0.1:${port}`,
    host: `127.0.0.1:${port}`,
    port,
    requests,
    async stop() {
      await close(server)
      agent.destroy()
    },
  }
}

export interface CdnRequest {
  digest: string
  /** The `sig` query parameter. */
  sig: string | null
  headers: http.IncomingHttpHeaders
  status: number
}

export interface BlobCdn {
  /** `http://localhost:<port>`: another origin than the 127.0.0.1 fronts. */
  url: string
  port: number
  requests: CdnRequest[]
  /** Digests whose next full transfer is cut halfway (then removed from the set). */
  cutOnce: Set<string>
  stop(): Promise<void>
}

export async function startBlobCdn(fetchBlob: (digest: string) => Promise<Buffer | undefined>): Promise<BlobCdn> {
  const port = await freePort()
  const requests: CdnRequest[] = []
  const cutOnce = new Set<string>()
  const server = http.createServer((req, res) => {
    req.resume()
    const u = new URL(req.url ?? '/', 'http://cdn')
    const m = /^\/blob\/(sha256:[a-f0-9]{64})$/.exec(u.pathname)
    const record: CdnRequest = { digest: m?.[1] ?? '', sig: u.searchParams.get('sig'), headers: { ...req.headers }, status: 0 }
    requests.push(record)
    void (async () => {
      const bytes = m && req.method === 'GET' ? await fetchBlob(m[1]!) : undefined
      if (!bytes) {
        record.status = 404
        res.writeHead(404, { 'content-type': 'text/plain', 'content-length': 9 })
        res.end('not found')
        return
      }
      const range = req.headers.range
      const rm = range !== undefined ? /^bytes=(\d+)-(\d*)$/.exec(range) : null
      if (rm) {
        const start = Number(rm[1])
        const end = rm[2] === '' ? bytes.length - 1 : Math.min(Number(rm[2]), bytes.length - 1)
        if (start > end) {
          record.status = 416
          res.writeHead(416, { 'content-range': `bytes */${bytes.length}`, 'content-length': 0 })
          res.end()
          return
        }
        record.status = 206
        res.writeHead(206, {
          'content-type': 'application/octet-stream',
          'content-length': end - start + 1,
          'content-range': `bytes ${start}-${end}/${bytes.length}`,
          'accept-ranges': 'bytes',
        })
        res.end(bytes.subarray(start, end + 1))
        return
      }
      record.status = 200
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': bytes.length, 'accept-ranges': 'bytes' })
      if (cutOnce.delete(m![1]!)) {
        // Half the body, flushed, then the connection dies.
        res.write(bytes.subarray(0, Math.floor(bytes.length / 2)), () => setTimeout(() => res.socket?.destroy(), 50))
        return
      }
      res.end(bytes)
    })().catch(() => res.destroy())
  })
  await listen(server, port)
  return { url: `http://localhost:${port}`, port, requests, cutOnce, stop: () => close(server) }
}
