// A TCP forwarder whose target → client direction shares one bandwidth budget across all its
// connections: a stand-in for a registry that is further away than the clients are (the usual
// case: upstream over the internet, nodes on the LAN). On loopback everything is equally fast,
// which hides what fan-out coalescing is for.

import net from 'node:net'
import { freePort } from '../test/helpers/ports.js'

export interface Throttle {
  url: string
  port: number
  stop(): Promise<void>
}

export async function startThrottle(target: { host: string; port: number }, bytesPerSecond: number): Promise<Throttle> {
  const port = await freePort()
  const open = new Set<net.Socket>()
  /** When the shared link is free again (ms, performance.now()). */
  let linkFreeAt = 0
  const track = (s: net.Socket) => {
    open.add(s)
    s.on('error', () => {})
    s.once('close', () => open.delete(s))
  }
  const server = net.createServer((client) => {
    track(client)
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
    upstream.on('data', (chunk: Buffer) => {
      const t = performance.now()
      linkFreeAt = Math.max(linkFreeAt, t) + (chunk.length / bytesPerSecond) * 1000
      const wait = linkFreeAt - t
      // Below a millisecond timers cannot help; the debt is carried in linkFreeAt.
      if (wait < 1) {
        if (!client.write(chunk)) {
          upstream.pause()
          client.once('drain', () => upstream.resume())
        }
        return
      }
      upstream.pause()
      waiting = true
      setTimeout(() => {
        waiting = false
        if (client.destroyed) return
        if (client.write(chunk)) upstream.resume()
        else client.once('drain', () => upstream.resume())
        if (ended) client.end()
      }, wait)
    })
    upstream.once('end', () => {
      ended = true
      if (!waiting) client.end()
    })
  })
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(port, '127.0.0.1', () => resolve())
  })
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    async stop() {
      for (const s of open) s.destroy()
      await new Promise<void>((r) => server.close(() => r()))
    },
  }
}
