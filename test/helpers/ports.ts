import net from 'node:net'

/**
 * Ask the kernel for an unused loopback port. There is an unavoidable window
 * between closing this probe socket and the caller binding the port; on a
 * test machine that window is harmless in practice, and it lets us hand a
 * concrete port to daemons (docker-registry, config files) that cannot
 * report back the port they picked themselves.
 */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer()
    srv.unref()
    srv.once('error', reject)
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address()
      if (addr === null || typeof addr === 'string') {
        srv.close()
        reject(new Error('freePort: listener has no TCP address'))
        return
      }
      const { port } = addr
      srv.close((err) => (err ? reject(err) : resolve(port)))
    })
  })
}
