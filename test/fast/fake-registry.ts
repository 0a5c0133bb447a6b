// An OCI distribution registry in the test process: plain node:http on port 0, content held in
// memory. It counts every request by method and path kind, so a test can assert that an answer
// came from the cache (zero upstream calls), and it misbehaves on demand, one path at a time:
// error statuses, refused or reset connections, hangs, stalls and cuts mid-body, wrong bytes,
// missing headers and redirects.

import { createHash, randomBytes } from 'node:crypto'
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { AddressInfo, Socket } from 'node:net'

export const MT = {
  ociManifest: 'application/vnd.oci.image.manifest.v1+json',
  ociIndex: 'application/vnd.oci.image.index.v1+json',
  ociConfig: 'application/vnd.oci.image.config.v1+json',
  ociLayer: 'application/vnd.oci.image.layer.v1.tar+gzip',
  dockerManifest: 'application/vnd.docker.distribution.manifest.v2+json',
  dockerList: 'application/vnd.docker.distribution.manifest.list.v2+json',
} as const

const INDEX_TYPES: ReadonlySet<string> = new Set([MT.ociIndex, MT.dockerList])

export type PathKind = 'base' | 'manifest' | 'blob' | 'redirected-blob' | 'tags' | 'token' | 'other'
export type Method = 'GET' | 'HEAD'

export interface Fault {
  /** Answer with this status and an OCI error body. */
  status?: number
  /** Extra response headers (Retry-After, RateLimit-*), with a status fault or on a normal answer. */
  headers?: Record<string, string>
  /** Destroy the connection without answering (the client sees a reset). */
  reset?: boolean
  /** Never send the headers. */
  hang?: boolean
  /** Send the headers and this many body bytes, then nothing more. */
  stallAfter?: number
  /** Send the headers (full Content-Length) and this many body bytes, then destroy the connection. */
  cutAfter?: number
  /** Flip one byte of the body: the content no longer matches its digest. */
  wrongBytes?: boolean
  /** Send the body chunked, without Content-Length. */
  noContentLength?: boolean
  /** Leave Docker-Content-Digest off (the HEAD of a manifest, typically). */
  noDigest?: boolean
  /** Answer a blob GET with a 307 to another path on this server. */
  redirect?: boolean
}

export interface FaultRule {
  method?: Method
  kind?: PathKind
  /** Substring or pattern of the request path. */
  path?: string | RegExp
  /** Applies to this many matching requests, then lapses; default: until cleared. */
  times?: number
}

export interface Layer {
  digest: string
  size: number
  bytes: Buffer
}

export interface SeededImage {
  /** The digest the tag points at: the index for a multi-platform image, else the manifest. */
  digest: string
  mediaType: string
  /** One manifest per platform (one for a single-platform image). */
  manifests: { digest: string; mediaType: string; bytes: Buffer; platform: string; config: Layer; layers: Layer[] }[]
  /** Every blob of the image: configs then layers. */
  blobs: Layer[]
}

export interface FakeRegistryOptions {
  /** 'bearer': token auth with a token endpoint on this server; 'basic': Basic auth. */
  auth?: 'bearer' | 'basic'
  /** Credentials accepted (Basic, or at the token endpoint); without them the token endpoint issues anonymous tokens. */
  user?: { username: string; password: string }
  /** Lifetime the token endpoint announces, in seconds. */
  tokenSeconds?: number
}

interface Repo {
  tags: Map<string, string>
  manifests: Set<string>
  blobs: Set<string>
}

interface ActiveFault {
  rule: FaultRule
  fault: Fault
  left: number
}

export const sha256 = (b: Buffer): string => `sha256:${createHash('sha256').update(b).digest('hex')}`

export class FakeRegistry {
  private server!: Server
  private port = 0
  private readonly sockets = new Set<Socket>()
  private readonly repos = new Map<string, Repo>()
  private readonly content = new Map<string, { bytes: Buffer; mediaType?: string }>()
  private readonly faults: ActiveFault[] = []
  private readonly counts = new Map<string, number>()
  private readonly tokens = new Map<string, number>()
  /** Every request, in order: "GET manifest /v2/app/manifests/1". */
  readonly log: string[] = []

  private constructor(private readonly opts: FakeRegistryOptions) {}

  static async start(opts: FakeRegistryOptions = {}): Promise<FakeRegistry> {
    const r = new FakeRegistry(opts)
    await r.listen()
    return r
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}`
  }

  private async listen(): Promise<void> {
    this.server = createServer((req, res) => this.handle(req, res))
    this.server.on('connection', (s) => {
      this.sockets.add(s)
      s.on('close', () => this.sockets.delete(s))
    })
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject)
      this.server.listen(this.port, '127.0.0.1', () => resolve())
    })
    this.port = (this.server.address() as AddressInfo).port
  }

  /** Stops listening and drops every connection: requests are refused until resume(). */
  async refuse(): Promise<void> {
    for (const s of this.sockets) s.destroy()
    await new Promise<void>((resolve) => this.server.close(() => resolve()))
  }

  /** Listens again on the same port after refuse(). */
  async resume(): Promise<void> {
    await this.listen()
  }

  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy()
    if (this.server.listening) await new Promise<void>((resolve) => this.server.close(() => resolve()))
  }

  // ---- counting ----

  /** Requests seen for a method and path kind (both optional: all of them). */
  count(method?: Method, kind?: PathKind): number {
    let n = 0
    for (const [key, v] of this.counts) {
      const [m, k] = key.split(' ')
      if ((method === undefined || m === method) && (kind === undefined || k === kind)) n += v
    }
    return n
  }

  resetCounts(): void {
    this.counts.clear()
    this.log.length = 0
  }

  // ---- faults ----

  fail(rule: FaultRule, fault: Fault): void {
    this.faults.push({ rule, fault, left: rule.times ?? Infinity })
  }

  clearFaults(): void {
    this.faults.length = 0
  }

  private faultFor(method: string, kind: PathKind, path: string): Fault | undefined {
    for (const f of this.faults) {
      const r = f.rule
      if (f.left <= 0) continue
      if (r.method !== undefined && r.method !== method) continue
      if (r.kind !== undefined && r.kind !== kind) continue
      if (r.path !== undefined && !(typeof r.path === 'string' ? path.includes(r.path) : r.path.test(path))) continue
      f.left--
      return f.fault
    }
    return undefined
  }

  // ---- content ----

  private repo(name: string): Repo {
    let r = this.repos.get(name)
    if (!r) {
      r = { tags: new Map(), manifests: new Set(), blobs: new Set() }
      this.repos.set(name, r)
    }
    return r
  }

  addBlob(repository: string, bytes: Buffer): Layer {
    const digest = sha256(bytes)
    this.content.set(digest, { bytes })
    this.repo(repository).blobs.add(digest)
    return { digest, size: bytes.length, bytes }
  }

  /** A blob of `size` random bytes. */
  randomBlob(repository: string, size: number): Layer {
    return this.addBlob(repository, randomBytes(size))
  }

  addManifest(repository: string, doc: object | Buffer, mediaType: string, tag?: string): { digest: string; bytes: Buffer } {
    const bytes = Buffer.isBuffer(doc) ? doc : Buffer.from(JSON.stringify(doc))
    const digest = sha256(bytes)
    this.content.set(digest, { bytes, mediaType })
    this.repo(repository).manifests.add(digest)
    if (tag !== undefined) this.moveTag(repository, tag, digest)
    return { digest, bytes }
  }

  moveTag(repository: string, tag: string, digest: string): void {
    this.repo(repository).tags.set(tag, digest)
  }

  deleteTag(repository: string, tag: string): void {
    this.repo(repository).tags.delete(tag)
  }

  /** Removes a blob from one repository (its bytes stay for the others). */
  unlinkBlob(repository: string, digest: string): void {
    this.repo(repository).blobs.delete(digest)
  }

  /**
   * An image of random layers of the given sizes under repository:tag. With `platforms`, one
   * manifest per platform under an index; otherwise one manifest.
   */
  seedImage(repository: string, tag: string, opts: { layers?: number[]; platforms?: string[]; docker?: boolean } = {}): SeededImage {
    const sizes = opts.layers ?? [1024]
    const manifestType = opts.docker ? MT.dockerManifest : MT.ociManifest
    const blobs: Layer[] = []
    const manifests: SeededImage['manifests'] = []
    for (const platform of opts.platforms ?? ['linux/amd64']) {
      const [os, architecture] = platform.split('/')
      const layers = sizes.map((n) => this.randomBlob(repository, n))
      const config = this.addBlob(repository, Buffer.from(JSON.stringify({ architecture, os, nonce: randomBytes(8).toString('hex'), rootfs: { type: 'layers', diff_ids: [] } })))
      const doc = {
        schemaVersion: 2,
        mediaType: manifestType,
        config: { mediaType: MT.ociConfig, digest: config.digest, size: config.size },
        layers: layers.map((l) => ({ mediaType: MT.ociLayer, digest: l.digest, size: l.size })),
      }
      const m = this.addManifest(repository, doc, manifestType)
      manifests.push({ ...m, mediaType: manifestType, platform, config, layers })
      blobs.push(config, ...layers)
    }
    if (!opts.platforms) {
      this.moveTag(repository, tag, manifests[0].digest)
      return { digest: manifests[0].digest, mediaType: manifestType, manifests, blobs }
    }
    const indexType = opts.docker ? MT.dockerList : MT.ociIndex
    const index = this.addManifest(
      repository,
      {
        schemaVersion: 2,
        mediaType: indexType,
        manifests: manifests.map((m) => {
          const [os, architecture] = m.platform.split('/')
          return { mediaType: m.mediaType, digest: m.digest, size: m.bytes.length, platform: { os, architecture } }
        }),
      },
      indexType,
      tag,
    )
    return { digest: index.digest, mediaType: indexType, manifests, blobs }
  }

  // ---- serving ----

  private kindOf(path: string): PathKind {
    if (path === '/v2/' || path === '/v2') return 'base'
    if (path === '/token') return 'token'
    if (path.startsWith('/_storage/')) return 'redirected-blob'
    if (/\/manifests\/[^/]+$/.test(path)) return 'manifest'
    if (/\/blobs\/[^/]+$/.test(path)) return 'blob'
    if (path.endsWith('/tags/list')) return 'tags'
    return 'other'
  }

  private handle(req: IncomingMessage, res: ServerResponse): void {
    const url = new URL(req.url ?? '/', this.url)
    const path = url.pathname
    const method = req.method ?? 'GET'
    const kind = this.kindOf(path)
    const key = `${method} ${kind}`
    this.counts.set(key, (this.counts.get(key) ?? 0) + 1)
    this.log.push(`${method} ${kind} ${path}`)
    req.resume()
    if (kind === 'token') return this.token(req, url, res)

    const fault = this.faultFor(method, kind, path)
    if (fault?.reset) {
      req.socket.destroy()
      return
    }
    if (fault?.hang) return
    if (!this.authorized(req, res)) return
    for (const [k, v] of Object.entries(fault?.headers ?? {})) res.setHeader(k, v)
    if (fault?.status !== undefined) return this.error(res, method, fault.status, 'FAULT')

    if (kind === 'base') return this.send(res, method, 200, { 'content-type': 'application/json' }, Buffer.from('{}'), fault)
    if (kind === 'redirected-blob') return this.blob(req, res, method, path.slice('/_storage/'.length), fault)
    const m = /^\/v2\/(.+)\/(manifests|blobs|tags)\/([^/]+)$/.exec(path)
    if (!m) return this.error(res, method, 404, 'NAME_UNKNOWN')
    const [, name, what, ref] = m
    const repo = this.repos.get(name)
    if (!repo) return this.error(res, method, 404, 'NAME_UNKNOWN')
    if (what === 'tags') {
      const tags = [...repo.tags.keys()].sort()
      return this.send(res, method, 200, { 'content-type': 'application/json' }, Buffer.from(JSON.stringify({ name, tags })), fault)
    }
    if (what === 'blobs') {
      if (!repo.blobs.has(ref) || !this.content.has(ref)) return this.error(res, method, 404, 'BLOB_UNKNOWN')
      if (fault?.redirect && method === 'GET') {
        res.writeHead(307, { location: `/_storage/${ref}`, 'content-length': '0' })
        res.end()
        return
      }
      return this.blob(req, res, method, ref, fault)
    }
    let digest = ref.includes(':') ? ref : repo.tags.get(ref)
    if (digest === undefined || !repo.manifests.has(digest)) return this.error(res, method, 404, 'MANIFEST_UNKNOWN')
    let c = this.content.get(digest)
    if (!c) return this.error(res, method, 404, 'MANIFEST_UNKNOWN')
    // An index asked for by a client that does not accept indexes: its first platform's manifest, as distribution does.
    if (!ref.includes(':') && c.mediaType && INDEX_TYPES.has(c.mediaType) && !accepts(req.headers.accept, c.mediaType)) {
      const child = (JSON.parse(c.bytes.toString()) as { manifests: { digest: string }[] }).manifests[0]?.digest
      const cc = child ? this.content.get(child) : undefined
      if (!child || !cc?.mediaType || !accepts(req.headers.accept, cc.mediaType)) return this.error(res, method, 404, 'MANIFEST_UNKNOWN')
      digest = child
      c = cc
    }
    const headers: Record<string, string> = { 'content-type': c.mediaType ?? 'application/octet-stream' }
    if (!fault?.noDigest) headers['docker-content-digest'] = digest
    return this.send(res, method, 200, headers, c.bytes, fault)
  }

  private blob(req: IncomingMessage, res: ServerResponse, method: string, digest: string, fault: Fault | undefined): void {
    const c = this.content.get(digest)
    if (!c) return this.error(res, method, 404, 'BLOB_UNKNOWN')
    const headers: Record<string, string> = { 'content-type': 'application/octet-stream', 'accept-ranges': 'bytes' }
    if (!fault?.noDigest) headers['docker-content-digest'] = digest
    const range = /^bytes=(\d+)-(\d*)$/.exec(String(req.headers.range ?? ''))
    if (range && method === 'GET') {
      const start = Number(range[1])
      const end = range[2] === '' ? c.bytes.length - 1 : Math.min(Number(range[2]), c.bytes.length - 1)
      if (start >= c.bytes.length || end < start) {
        res.writeHead(416, { 'content-range': `bytes */${c.bytes.length}` })
        res.end()
        return
      }
      headers['content-range'] = `bytes ${start}-${end}/${c.bytes.length}`
      return this.send(res, method, 206, headers, c.bytes.subarray(start, end + 1), fault)
    }
    return this.send(res, method, 200, headers, c.bytes, fault)
  }

  private send(res: ServerResponse, method: string, status: number, headers: Record<string, string>, body: Buffer, fault: Fault | undefined): void {
    let bytes = body
    if (fault?.wrongBytes && bytes.length > 0) {
      bytes = Buffer.from(bytes)
      bytes[bytes.length - 1] ^= 0xff
    }
    if (!fault?.noContentLength) headers['content-length'] = String(bytes.length)
    res.writeHead(status, headers)
    if (method === 'HEAD') return void res.end()
    if (fault?.stallAfter !== undefined) {
      res.write(bytes.subarray(0, fault.stallAfter))
      return
    }
    if (fault?.cutAfter !== undefined) {
      res.write(bytes.subarray(0, fault.cutAfter), () => setTimeout(() => res.socket?.destroy(), 5))
      return
    }
    res.end(bytes)
  }

  private error(res: ServerResponse, method: string, status: number, code: string): void {
    const body = Buffer.from(JSON.stringify({ errors: [{ code, message: code.toLowerCase(), detail: null }] }))
    res.writeHead(status, { 'content-type': 'application/json', 'content-length': String(body.length) })
    res.end(method === 'HEAD' ? undefined : body)
  }

  // ---- auth ----

  private authorized(req: IncomingMessage, res: ServerResponse): boolean {
    const auth = req.headers.authorization ?? ''
    if (this.opts.auth === 'basic') {
      if (auth === `Basic ${this.basicCredential()}`) return true
      res.setHeader('www-authenticate', 'Basic realm="fake"')
      this.error(res, req.method ?? 'GET', 401, 'UNAUTHORIZED')
      return false
    }
    if (this.opts.auth === 'bearer') {
      const token = auth.startsWith('Bearer ') ? auth.slice(7) : undefined
      const expires = token !== undefined ? this.tokens.get(token) : undefined
      if (expires !== undefined && expires > Date.now()) return true
      const m = /^\/v2\/(.+)\/(?:manifests|blobs|tags)\//.exec(new URL(req.url ?? '/', this.url).pathname)
      const scope = m ? `,scope="repository:${m[1]}:pull"` : ''
      res.setHeader('www-authenticate', `Bearer realm="${this.url}/token",service="fake"${scope}`)
      this.error(res, req.method ?? 'GET', 401, 'UNAUTHORIZED')
      return false
    }
    return true
  }

  private basicCredential(): string {
    const u = this.opts.user ?? { username: 'user', password: 'secret' }
    return Buffer.from(`${u.username}:${u.password}`).toString('base64')
  }

  private token(req: IncomingMessage, url: URL, res: ServerResponse): void {
    const fault = this.faultFor(req.method ?? 'GET', 'token', url.pathname)
    if (fault?.hang) return
    if (fault?.status !== undefined) return this.error(res, 'GET', fault.status, 'DENIED')
    if (this.opts.user && req.headers.authorization !== `Basic ${this.basicCredential()}`) return this.error(res, 'GET', 401, 'UNAUTHORIZED')
    const token = randomBytes(12).toString('hex')
    const seconds = this.opts.tokenSeconds ?? 300
    this.tokens.set(token, Date.now() + seconds * 1000)
    const body = Buffer.from(JSON.stringify({ token, expires_in: seconds, scope: url.searchParams.getAll('scope').join(' ') }))
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': String(body.length) })
    res.end(body)
  }
}

function accepts(accept: string | string[] | undefined, mediaType: string): boolean {
  if (accept === undefined) return true
  const types = (Array.isArray(accept) ? accept.join(',') : accept).split(',').map((s) => s.split(';')[0].trim().toLowerCase())
  return types.includes(mediaType) || types.includes('*/*')
}
