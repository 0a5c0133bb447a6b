// TCP man-in-the-middle used to put an upstream registry into failure modes
// (down, hanging, truncating) without touching the registry itself, so
// regcache's "serve from cache when upstream is sick" paths can be driven.
// Optionally a slow link: the target -> client direction of all connections
// shares one bandwidth budget, like a registry across the internet.
import net from 'node:net'
import { freePort } from './ports.js'

export type ForwarderMode = 'pass' | 'refuse' | 'hang' | 'cut'

export interface ModeOptions {
  /** 'cut': bytes (target -> client) a connection may carry before both sides are torn down. */
  cutAfterBytes?: number
  /** 'cut': only the next N connections are cut; later ones pass. Default: all. */
  cutConnections?: number
  /**
   * Also destroy connections that are already open. Modes otherwise only
   * apply to new connections, so an HTTP client's pooled keep-alive socket
   * would keep working after setMode('refuse'). Set this to simulate an
   * upstream that died outright.
   */
  dropExisting?: boolean
}

export interface Forwarder {
  port: number
  host: string
  url: string
  mode(): ForwarderMode
  setMode(mode: ForwarderMode, opts?: ModeOptions): Promise<void>
  /** Connections accepted since start (in any mode). */
  connections(): number
  stop(): Promise<void>
}

export interface ForwarderOptions {
  /** Bandwidth of the target -> client direction, shared by all connections. Default: unlimited. */
  bytesPerSecond?: number
}

export async function startForwarder(target: { host: string; port: number }, opts: ForwarderOptions = {}): Promise<Forwarder> {
  const port = await freePort()
  const rate = opts.bytesPerSecond ?? Infinity
  /** When the shared link is free again (performance.now() ms). */
  let linkFreeAt = 0
  let mode: ForwarderMode = 'pass'
  let cutAfter = Infinity
  let cutsLeft = Infinity
  let accepted = 0
  let stopped = false
  let server: net.Server | undefined
  const open = new Set<net.Socket>()
  const hung = new Set<net.Socket>()

  const track = (s: net.Socket) => {
    open.add(s)
    // Peers vanish mid-stream by design here; errors are expected, not bugs.
    s.on('error', () => {})
    s.once('close', () => {
      open.delete(s)
      hung.delete(s)
    })
  }

  const forward = (client: net.Socket, limit: number) => {
    const upstream = net.connect({ host: target.host, port: target.port })
    track(upstream)
    // The target may close while a chunk waits its turn (pause() holds back neither 'end' nor
    // 'close'): the close is passed on after that chunk.
    let waiting = false
    let ended = false
    upstream.once('close', () => {
      ended = true
      if (!waiting) client.destroy()
    })
    client.once('close', () => upstream.destroy())
    client.pipe(upstream)
    if (limit === Infinity && rate === Infinity) {
      upstream.pipe(client)
      return
    }
    const send = (chunk: Buffer) => {
      if (!client.write(chunk)) {
        upstream.pause()
        client.once('drain', () => upstream.resume())
      }
    }
    // One chunk at a time per connection: the link is busy until linkFreeAt, so each chunk
    // waits its turn and the connection stays paused meanwhile.
    const paced = (chunk: Buffer) => {
      if (rate === Infinity) return send(chunk)
      const now = performance.now()
      linkFreeAt = Math.max(linkFreeAt, now) + (chunk.length / rate) * 1000
      const wait = linkFreeAt - now
      if (wait < 1) return send(chunk)
      upstream.pause()
      waiting = true
      setTimeout(() => {
        waiting = false
        if (client.destroyed) return
        if (client.write(chunk)) upstream.resume()
        else client.once('drain', () => upstream.resume())
        if (ended) client.end()
      }, wait)
    }
    let flowed = 0
    upstream.on('data', (chunk: Buffer) => {
      const room = limit - flowed
      if (chunk.length < room) {
        flowed += chunk.length
        paced(chunk)
        return
      }
      // Deliver exactly `limit` bytes, then tear down: the client sees a
      // response that stops mid-body.
      upstream.destroy()
      client.end(chunk.subarray(0, room), () => client.destroy())
    })
    upstream.once('end', () => {
      ended = true
      if (!waiting) client.end()
    })
  }

  const onConnection = (client: net.Socket) => {
    accepted++
    track(client)
    if (stopped) {
      client.destroy()
      return
    }
    if (mode === 'hang') {
      // Never read, never answer: the client waits until its own timeout.
      hung.add(client)
      return
    }
    if (mode === 'cut' && cutsLeft > 0) {
      cutsLeft--
      forward(client, cutAfter)
      return
    }
    forward(client, Infinity)
  }

  const listen = () =>
    new Promise<void>((resolve, reject) => {
      const srv = net.createServer(onConnection)
      srv.once('error', reject)
      srv.listen(port, '127.0.0.1', () => {
        srv.off('error', reject)
        server = srv
        resolve()
      })
    })

  // close() releases the listening fd immediately (so connects are refused
  // right away); its callback would wait for accepted sockets, so don't.
  const unlisten = () => {
    server?.close()
    server = undefined
  }

  await listen()

  return {
    port,
    host: `127.0.0.1:${port}`,
    url: `http://127.0.0.1:${port}`,
    mode: () => mode,
    async setMode(next, opts = {}) {
      if (stopped) throw new Error('forwarder stopped')
      if (next === 'cut') {
        if (opts.cutAfterBytes === undefined || opts.cutAfterBytes < 0) {
          throw new Error("setMode('cut') needs cutAfterBytes >= 0")
        }
        cutAfter = opts.cutAfterBytes
        cutsLeft = opts.cutConnections ?? Infinity
      }
      if (opts.dropExisting) {
        for (const s of open) s.destroy()
      } else if (mode === 'hang' && next !== 'hang') {
        for (const s of hung) s.destroy()
      }
      mode = next
      if (next === 'refuse') unlisten()
      else if (!server) await listen()
    },
    connections: () => accepted,
    async stop() {
      if (stopped) return
      stopped = true
      const srv = server
      server = undefined
      for (const s of open) s.destroy()
      if (srv) await new Promise<void>((r) => srv.close(() => r()))
    },
  }
}
