// Blob bodies sent by the native addon (native/sendfile): from the stored file, or from the file
// of a fill under way as its bytes arrive, to the client's socket without passing through
// JavaScript buffers: by a copy loop in C through one reused buffer, or by sendfile(2)
// (SendMode). The response stays Node's: the head goes out through Node, the addon sends the
// body, then Node ends the response, so keep-alive, pipelined requests, the request log and
// metrics work as for any other answer.
// Used only when every condition holds (the addon was built, a plain TCP socket, a local file
// store, bytes not due to be re-hashed); otherwise bodies are streamed as before.

import { createRequire } from 'node:module'
import type { Socket } from 'node:net'
import type { Readable } from 'node:stream'
import { pipeline } from 'node:stream'
import { TLSSocket } from 'node:tls'
import { fileURLToPath } from 'node:url'
import { getSystemErrorName } from 'node:util'
import type { FastifyReply, FastifyRequest } from 'fastify'
import type { BlobFile, BlobResult } from '../../core/blobs.js'

/** The native addon's interface (native/sendfile/index.js), with its way of moving bytes chosen. */
export interface SendfileAddon {
  start(socketFd: number, fileFd: number, offset: number, length: number, callback: (errno: number, sent: number, shortFile: boolean) => void): object
  cancel(transfer: object): void
  sent(transfer: object): number
}

/** The addon, or why it cannot be used. */
export type SendfileLoad = { ok: true; addon: SendfileAddon } | { ok: false; reason: string }

/**
 * How the addon moves file bytes to a socket: `copy`, pread(2) into one reused buffer and send(2)
 * from it, in C; `kernel`, sendfile(2). On the machines regcache is benchmarked on (loopback and
 * veth) copy is about twice as fast for the same CPU per GB (bench/RESULTS.md); sendfile spares
 * a copy, which may pay off with a network card that takes page fragments.
 */
export type SendMode = 'copy' | 'kernel'

/** REGCACHE_SENDFILE's value: 'off' (bodies streamed through Node), a SendMode, unset (copy). */
export function sendModeFromEnv(value: string | undefined): SendMode | 'off' {
  if (value === undefined || value === '') return 'copy'
  if (value === 'off' || value === 'copy' || value === 'kernel') return value
  throw new Error(`REGCACHE_SENDFILE=${JSON.stringify(value)}: expected copy (the default), kernel or off`)
}

/** The raw addon: start() takes a sixth argument, true for copy mode. */
interface RawAddon {
  start(socketFd: number, fileFd: number, offset: number, length: number, callback: (errno: number, sent: number, shortFile: boolean) => void, copy: boolean): object
  cancel(transfer: object): void
  sent(transfer: object): number
}

/** Loads the addon (an optional dependency: absent when it could not be built at install time). */
export function loadSendfile(mode: SendMode = 'copy'): SendfileLoad {
  if (process.platform !== 'linux') return { ok: false, reason: 'sendfile is used on Linux only' }
  const require = createRequire(import.meta.url)
  const load = (): unknown => {
    try {
      return require('regcache-sendfile')
    } catch (err) {
      // `npm prune` can drop the link to the in-repository package (the container image's build
      // does): the addon is then loaded from the repository directly.
      if ((err as NodeJS.ErrnoException).code !== 'MODULE_NOT_FOUND') throw err
      return require(fileURLToPath(new URL('../../../native/sendfile/index.js', import.meta.url)))
    }
  }
  try {
    const raw = load() as RawAddon
    if (typeof raw.start !== 'function' || typeof raw.cancel !== 'function' || typeof raw.sent !== 'function') {
      return { ok: false, reason: 'the regcache-sendfile module is not the expected one' }
    }
    const copy = mode === 'copy'
    return {
      ok: true,
      addon: {
        start: (socketFd, fileFd, offset, length, callback) => raw.start(socketFd, fileFd, offset, length, callback, copy),
        cancel: (transfer) => raw.cancel(transfer),
        sent: (transfer) => raw.sent(transfer),
      },
    }
  } catch (err) {
    return { ok: false, reason: `the regcache-sendfile addon is not built (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})` }
  }
}

/**
 * The descriptor of the request's plain TCP socket (not TLS, not HTTP/2), or undefined. Also
 * undefined while an earlier response on the connection is still going out (pipelined
 * requests): Node queues this one's output until then, which only a streamed body can join.
 */
export function plainSocketFd(req: FastifyRequest, reply: FastifyReply): number | undefined {
  const socket = req.raw.socket as Socket | null
  if (!socket || reply.raw.socket !== socket || socket instanceof TLSSocket || req.raw.httpVersionMajor !== 1) return undefined
  return socketFd(socket)
}

/** The socket's descriptor while it is open (read it again after any wait: a closed one's number is reused). */
function socketFd(socket: Socket): number | undefined {
  if (socket.destroyed) return undefined
  const fd = (socket as unknown as { _handle?: { fd?: unknown } | null })._handle?.fd
  return typeof fd === 'number' && fd >= 0 ? fd : undefined
}

/** Errors that mean sendfile cannot be used on this file or socket at all (the body is then streamed). */
const UNSUPPORTED = new Set(['EINVAL', 'ENOSYS', 'EOPNOTSUPP', 'ENOTSUP'])
/** Errors that mean the client went away: nothing to report. */
const CLIENT_GONE = new Set(['EPIPE', 'ECONNRESET', 'ENOTCONN', 'ESHUTDOWN', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENETUNREACH'])

function errnoName(errno: number | undefined): string {
  try {
    return errno ? getSystemErrorName(-Math.abs(errno)) : 'UNKNOWN'
  } catch {
    return 'UNKNOWN'
  }
}

export interface SendfileBody {
  addon: SendfileAddon
  file: BlobFile
  /** First byte and length of the body within the file. */
  start: number
  length: number
  /** Bytes [start, end] of the blob as a stream: used when sendfile turns out not to work here. */
  fallback(start: number, end: number): Readable
  /** Called once with the body bytes that left through this response: by sendfile, and streamed after a fallback. */
  onSent(kernel: number, streamed: number): void
  /** The body could not be sent whole (the connection is then cut). Not called when the client left. */
  onError(err: Error): void
}

/**
 * Sends the reply's status and headers, then the body with the addon: in one transfer from a
 * stored file, or step by step behind a fill (BlobFile.available). Takes the reply over from
 * fastify (hijack): nothing else may be sent on it. The file is closed in every case.
 */
export function sendFileBody(req: FastifyRequest, reply: FastifyReply, body: SendfileBody): void {
  const { addon, file, start, length } = body
  const res = reply.raw
  const socket = req.raw.socket
  /** End (exclusive) of the body within the file, and the next byte to send. */
  const last = start + length
  let pos = start
  let transfer: object | undefined
  let finished = false
  /** Body bytes sent by the kernel, and streamed through Node after a fallback. */
  let kernelSent = 0
  let streamed = 0

  const done = (err?: Error) => {
    if (finished) return
    finished = true
    socket.off('close', onClose)
    body.onSent(kernelSent, streamed)
    void file.close().catch(() => {})
    if (err) {
      body.onError(err)
      // The head promised `length` bytes: a short body must not look like a whole one.
      socket.destroy()
    }
  }
  const onClose = () => {
    if (transfer && !finished) {
      addon.cancel(transfer)
      kernelSent += addon.sent(transfer)
    }
    done()
  }
  socket.on('close', onClose)

  reply.hijack()
  for (const [name, value] of Object.entries(reply.getHeaders())) if (value !== undefined) res.setHeader(name, value)
  res.writeHead(reply.statusCode)
  res.flushHeaders()
  // The head must be in the kernel before the body: this callback runs once Node's queue to the
  // socket has drained up to here.
  socket.write(Buffer.alloc(0), (err) => {
    if (finished) return
    if (err) return done()
    next()
  })

  /** The next step: everything at once from a stored file, what the fill allows from a growing one. */
  function next(): void {
    if (pos >= last) {
      res.end()
      return done()
    }
    if (!file.available) return send(last)
    file.available(pos).then(
      (upTo) => {
        if (finished) return
        if (upTo === 'stream') return streamRest(pos)
        send(Math.min(upTo, last))
      },
      (err: Error) => done(err),
    )
  }

  /** Bytes [pos, upTo) with one transfer of the addon. */
  function send(upTo: number): void {
    const fd = socketFd(socket)
    if (fd === undefined) return done()
    try {
      transfer = addon.start(fd, file.fd, pos, upTo - pos, (errno, sent, shortFile) => {
        if (finished) return
        kernelSent += sent
        pos += sent
        transfer = undefined
        if (errno === 0) return next()
        const name = errnoName(errno)
        if (UNSUPPORTED.has(name) && !shortFile) return streamRest(pos)
        if (CLIENT_GONE.has(name) && !shortFile) {
          done()
          socket.destroy()
          return
        }
        done(Object.assign(new Error(shortFile ? 'the stored file ended before the range did' : `sendfile failed: ${name}`), { code: shortFile ? 'EIO' : name }))
      })
    } catch (err) {
      // It could not start (a socket or file it cannot use): the body goes through Node instead.
      if (UNSUPPORTED.has(errnoName((err as { errno?: number }).errno))) return streamRest(pos)
      done(err as Error)
    }
  }

  /** The rest of the body, from byte `from` of the blob, through Node. */
  function streamRest(from: number): void {
    const stream = body.fallback(from, last - 1)
    // The stream reads on its own: a fill must stop waiting for this file's reader.
    void file.close().catch(() => {})
    stream.on('data', (c: Buffer) => (streamed += c.length))
    pipeline(stream, res, (err) => {
      if (err && socket.destroyed) done()
      else done(err ?? undefined)
    })
  }
}

/**
 * Sends bytes [start, end] of a blob (cached, or being filled) with sendfile when it can be used for this request,
 * and says whether it took the reply; false leaves the reply untouched, to be streamed as before.
 */
export async function trySendfile(addon: SendfileAddon, blob: BlobResult, start: number, end: number, req: FastifyRequest, reply: FastifyReply, onSent: (bytes: number) => void): Promise<boolean> {
  if (!blob.file) return false
  if (plainSocketFd(req, reply) === undefined) return false
  const file = await blob.file(start, end)
  if (!file) return false
  if (plainSocketFd(req, reply) === undefined) {
    await file.close()
    return false
  }
  sendFileBody(req, reply, {
    addon,
    file,
    start,
    length: end - start + 1,
    fallback: (s, e) => blob.open(s, e),
    onSent: (kernel, streamed) => {
      onSent(kernel + streamed)
      req.log.debug({ digest: blob.digest, start, end, sendfile: kernel, streamed }, 'blob body sent')
    },
    onError: (err) => req.log.error({ err, digest: blob.digest }, blob.source === 'cache' ? 'sending a stored blob failed; connection closed' : 'blob download failed before this client had every byte; connection closed'),
  })
  return true
}
