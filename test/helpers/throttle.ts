// A TCP forwarder that slows the bytes coming back (target -> client) to a fixed rate per
// connection, so a download lasts long enough to be watched while it runs.
import net from 'node:net'
import { freePort } from './ports.js'
import { sleep } from './proc.js'

export interface Throttle {
  url: string
  host: string
  stop(): Promise<void>
}

export async function startThrottle(target: { host: string; port: number }, bytesPerSecond: number): Promise<Throttle> {
  const port = await freePort()
  const tickMs = 50
  const slice = Math.max(1, Math.floor((bytesPerSecond * tickMs) / 1000))
  const open = new Set<net.Socket>()
  const track = (s: net.Socket) => {
    open.add(s)
    s.on('error', () => {})
    s.once('close', () => open.delete(s))
  }
  const server = net.createServer((client) => {
    track(client)
    const upstream = net.connect({ host: target.host, port: target.port })
    track(upstream)
    upstream.once('close', () => client.destroy())
    client.once('close', () => upstream.destroy())
    client.pipe(upstream)
    upstream.on('data', (chunk: Buffer) => {
      // Paused until this chunk has trickled out; 'end' therefore follows the last slice.
      upstream.pause()
      void (async () => {
        for (let off = 0; off < chunk.length && !client.destroyed; off += slice) {
          client.write(chunk.subarray(off, off + slice))
          await sleep(tickMs)
        }
        upstream.resume()
      })()
    })
    upstream.once('end', () => client.end())
  })
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(port, '127.0.0.1', () => resolve())
  })
  return {
    url: `http://127.0.0.1:${port}`,
    host: `127.0.0.1:${port}`,
    async stop() {
      for (const s of open) s.destroy()
      await new Promise<void>((r) => server.close(() => r()))
    },
  }
}
