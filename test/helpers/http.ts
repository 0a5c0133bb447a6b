// Small HTTP utilities for protocol-level tests: a recording undici client, OCI error parsing,
// a monolithic blob upload (for blobs of an exact size), and a "paginating front" that makes a
// real distribution 2.8 registry answer `tags/list?n=` with a Link header as newer registries
// (distribution 3, Docker Hub) do, passing every other request through untouched.

import { createHash } from 'node:crypto'
import http from 'node:http'
import { Agent, request } from 'undici'
import { freePort } from './ports.js'
import { HELPER_USER_AGENT } from './registry.js'

export type RequestHeaders = Record<string, string | string[]>

export interface HttpResponse {
  method: string
  url: string
  status: number
  headers: Record<string, string | string[] | undefined>
  body: Buffer
}

export interface HttpClient {
  request(method: string, url: string, opts?: { headers?: RequestHeaders; body?: Buffer | string }): Promise<HttpResponse>
  get(url: string, headers?: RequestHeaders): Promise<HttpResponse>
  head(url: string, headers?: RequestHeaders): Promise<HttpResponse>
  /** Every response received so far, in order. */
  readonly responses: HttpResponse[]
  close(): Promise<void>
}

/** An undici client on its own Agent (closed by close()); every response is kept in `responses`. */
export function createHttpClient(opts: { userAgent?: string; localAddress?: string } = {}): HttpClient {
  // localAddress: another loopback address (127.0.0.2, …) is another client to per-address limits.
  const agent = new Agent({ keepAliveTimeout: 2000, connect: { timeout: 5000 }, ...(opts.localAddress ? { localAddress: opts.localAddress } : {}) })
  const responses: HttpResponse[] = []
  const doRequest = async (method: string, url: string, o: { headers?: RequestHeaders; body?: Buffer | string } = {}) => {
    const res = await request(url, {
      method: method as 'GET',
      headers: { 'user-agent': opts.userAgent ?? 'regcache-protocol-test', ...(o.headers ?? {}) },
      body: o.body,
      dispatcher: agent,
      headersTimeout: 5_000,
      bodyTimeout: 5_000,
    })
    const body = Buffer.from(await res.body.arrayBuffer())
    const out: HttpResponse = { method, url, status: res.statusCode, headers: res.headers, body }
    responses.push(out)
    return out
  }
  return {
    request: doRequest,
    get: (url, headers) => doRequest('GET', url, { headers }),
    head: (url, headers) => doRequest('HEAD', url, { headers }),
    responses,
    close: () => agent.close(),
  }
}

/** First value of a response header (names are lowercase in undici). */
export function header(res: HttpResponse, name: string): string | undefined {
  const v = res.headers[name.toLowerCase()]
  return Array.isArray(v) ? v[0] : v
}

export function sha256(b: Buffer): string {
  return 'sha256:' + createHash('sha256').update(b).digest('hex')
}

export interface OciError {
  code: unknown
  message: unknown
  detail?: unknown
}

/** The `errors` array of an OCI error body, or undefined when the body is not one. */
export function ociErrors(res: HttpResponse): OciError[] | undefined {
  try {
    const doc = JSON.parse(res.body.toString('utf8'))
    return Array.isArray(doc?.errors) ? doc.errors : undefined
  } catch {
    return undefined
  }
}

/**
 * Monolithic blob upload (POST, then PUT ?digest=) straight to a registry, as the test helper
 * user agent so it stays out of Registry.requests(). Returns the digest.
 */
export async function uploadBlob(registryUrl: string, repo: string, bytes: Buffer): Promise<string> {
  const digest = sha256(bytes)
  const ua = { 'user-agent': `${HELPER_USER_AGENT}/upload` }
  const start = await request(`${registryUrl}/v2/${repo}/blobs/uploads/`, { method: 'POST', headers: ua })
  await start.body.dump()
  const location = start.headers.location
  if (start.statusCode !== 202 || typeof location !== 'string') throw new Error(`upload start ${repo}: ${start.statusCode}`)
  const put = new URL(location, registryUrl)
  put.searchParams.set('digest', digest)
  const done = await request(put, {
    method: 'PUT',
    headers: { ...ua, 'content-type': 'application/octet-stream', 'content-length': String(bytes.length) },
    body: bytes,
  })
  await done.body.dump()
  if (done.statusCode !== 201) throw new Error(`upload ${repo} ${digest}: ${done.statusCode}`)
  return digest
}

export interface Front {
  url: string
  host: string
  port: number
  stop(): Promise<void>
}

const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'transfer-encoding', 'proxy-connection', 'upgrade', 'te', 'trailer'])

/**
 * An HTTP pass-through in front of a registry. Everything is forwarded byte for byte, except
 * `GET /v2/<name>/tags/list` with `n`, which it paginates itself from the registry's full list
 * (the registry still sees and logs a GET of tags/list), adding
 * `Link: </v2/<name>/tags/list?last=<last>&n=<n>>; rel="next"` like distribution 3.
 */
export async function startPaginatingFront(target: { host: string; port: number }): Promise<Front> {
  const port = await freePort()
  const agent = new http.Agent({ keepAlive: true })
  const targetHost = `${target.host}:${target.port}`

  const forwardHeaders = (h: http.IncomingHttpHeaders): http.OutgoingHttpHeaders => {
    const out: http.OutgoingHttpHeaders = {}
    for (const [k, v] of Object.entries(h)) if (!HOP_BY_HOP.has(k) && v !== undefined) out[k] = v
    out.host = targetHost
    return out
  }

  const responseHeaders = (raw: string[]): string[] => {
    const out: string[] = []
    for (let i = 0; i < raw.length; i += 2) {
      if (!HOP_BY_HOP.has(raw[i]!.toLowerCase())) out.push(raw[i]!, raw[i + 1]!)
    }
    return out
  }

  const forward = (req: http.IncomingMessage, res: http.ServerResponse, path = req.url ?? '/') => {
    const up = http.request(
      { host: target.host, port: target.port, method: req.method, path, headers: forwardHeaders(req.headers), agent },
      (upRes) => {
        res.writeHead(upRes.statusCode ?? 502, responseHeaders(upRes.rawHeaders))
        upRes.pipe(res)
        upRes.on('error', () => res.destroy())
      },
    )
    up.on('error', () => res.destroy())
    req.pipe(up)
  }

  const paginate = (req: http.IncomingMessage, res: http.ServerResponse, name: string, q: URLSearchParams) => {
    const n = Number(q.get('n'))
    const last = q.get('last') ?? ''
    const up = http.request(
      { host: target.host, port: target.port, method: 'GET', path: `/v2/${name}/tags/list`, headers: forwardHeaders(req.headers), agent },
      (upRes) => {
        const chunks: Buffer[] = []
        upRes.on('data', (c: Buffer) => chunks.push(c))
        upRes.on('error', () => res.destroy())
        upRes.on('end', () => {
          const body = Buffer.concat(chunks)
          if (upRes.statusCode !== 200 || !Number.isInteger(n) || n < 1) {
            res.writeHead(upRes.statusCode ?? 502, responseHeaders(upRes.rawHeaders))
            res.end(body)
            return
          }
          const doc = JSON.parse(body.toString('utf8')) as { name: string; tags: string[] | null }
          const all = [...(doc.tags ?? [])].sort().filter((tag) => last === '' || tag > last)
          const page = all.slice(0, n)
          const out = Buffer.from(JSON.stringify({ name: doc.name, tags: page }))
          const headers: http.OutgoingHttpHeaders = {
            'content-type': 'application/json; charset=utf-8',
            'content-length': out.length,
            'docker-distribution-api-version': 'registry/2.0',
          }
          if (all.length > n) {
            const next = new URLSearchParams({ last: page[page.length - 1]!, n: String(n) })
            headers.link = `</v2/${name}/tags/list?${next.toString()}>; rel="next"`
          }
          res.writeHead(200, headers)
          res.end(out)
        })
      },
    )
    up.on('error', () => res.destroy())
    up.end()
    req.resume()
  }

  const server = http.createServer((req, res) => {
    const u = new URL(req.url ?? '/', 'http://front')
    const m = /^\/v2\/(.+)\/tags\/list$/.exec(u.pathname)
    if (req.method === 'GET' && m && u.searchParams.has('n')) return paginate(req, res, m[1]!, u.searchParams)
    forward(req, res)
  })
  server.keepAliveTimeout = 5000
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(port, '127.0.0.1', () => resolve())
  })
  return {
    url: `http://127.0.0.1:${port}`,
    host: `127.0.0.1:${port}`,
    port,
    async stop() {
      await new Promise<void>((resolve) => {
        server.close(() => resolve())
        server.closeAllConnections()
      })
      agent.destroy()
    },
  }
}
