// A TCP pass-through that can hold a response mid-body: with hold(n), every connection stops
// delivering upstream bytes to its client after n bytes (headers included) until release().
// Other connections pass untouched until they reach the same point. This pins a fill at a known
// point, so "mid-download" is a state, not a race.

import net from 'node:net'
import { freePort } from './ports.js'

export interface Gate {
  url: string
  hold(afterBytes: number): void
  release(): void
  /** Connections currently stopped at the hold point. */
  held(): number
  stop(): Promise<void>
}

export async function startGate(target: { host: string; port: number }): Promise<Gate> {
  const port = await freePort()
  let holdAt = Infinity
  interface Conn {
    client: net.Socket
    upstream: net.Socket
    flowed: number
    held: boolean
    queue: Buffer[]
  }
  const conns = new Set<Conn>()
  const sockets = new Set<net.Socket>()
  const track = (s: net.Socket) => {
    sockets.add(s)
    s.on('error', () => {})
    s.once('close', () => sockets.delete(s))
  }
  const deliver = (c: Conn, chunk: Buffer) => {
    if (c.held) {
      c.queue.push(chunk)
      return
    }
    const room = holdAt - c.flowed
    if (chunk.length > room) {
      const now = chunk.subarray(0, Math.max(0, room))
      c.queue.push(chunk.subarray(now.length))
      c.held = true
      c.upstream.pause()
      c.flowed += now.length
      if (now.length > 0) c.client.write(now)
      return
    }
    c.flowed += chunk.length
    if (!c.client.write(chunk)) {
      c.upstream.pause()
      c.client.once('drain', () => {
        if (!c.held) c.upstream.resume()
      })
    }
  }
  const server = net.createServer((client) => {
    track(client)
    const upstream = net.connect({ host: target.host, port: target.port })
    track(upstream)
    const c: Conn = { client, upstream, flowed: 0, held: false, queue: [] }
    conns.add(c)
    client.pipe(upstream)
    upstream.on('data', (chunk: Buffer) => deliver(c, chunk))
    upstream.once('end', () => client.end())
    upstream.once('close', () => {
      if (!c.held) client.destroy()
    })
    client.once('close', () => {
      conns.delete(c)
      upstream.destroy()
    })
  })
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(port, '127.0.0.1', () => resolve())
  })
  return {
    url: `http://127.0.0.1:${port}`,
    hold(afterBytes) {
      holdAt = afterBytes
    },
    release() {
      holdAt = Infinity
      for (const c of conns) {
        if (!c.held) continue
        c.held = false
        const queued = c.queue
        c.queue = []
        for (const b of queued) {
          c.flowed += b.length
          c.client.write(b)
        }
        c.upstream.resume()
      }
    },
    held: () => [...conns].filter((c) => c.held).length,
    async stop() {
      for (const s of sockets) s.destroy()
      await new Promise<void>((r) => server.close(() => r()))
    },
  }
}
