// Graceful shutdown of the real process (`regcache serve`): on SIGTERM it stops accepting
// connections, lets the request and the cache fill in flight finish within shutdownGrace,
// closes the database and exits 0; a second signal exits at once.

import { createHash, randomBytes } from 'node:crypto'
import http from 'node:http'
import net from 'node:net'
import t, { type Test } from 'tap'
import { startChildRegcache, type ChildRegcache } from '../helpers/child-regcache.js'
import { uploadBlob } from '../helpers/http.js'
import { freePort } from '../helpers/ports.js'
import { sleep, waitUntil, type ExitInfo } from '../helpers/proc.js'
import { startRegistry } from '../helpers/registry.js'

const MiB = 1024 * 1024
const BLOB_SIZE = 50 * MiB
const GRACE_MS = 10_000
const EXIT_WAIT_MS = GRACE_MS + 2000

interface Throttle {
  url: string
  stop(): Promise<void>
}

/**
 * A TCP proxy that passes target → client traffic one `chunkBytes` slice per `delayMs`
 * (50 MiB at 64 KiB / 2 ms: about 3 s, timers being coarse), so a download is reliably still
 * running when the test acts.
 */
async function startThrottle(target: { host: string; port: number }, o: { chunkBytes: number; delayMs: number }): Promise<Throttle> {
  const port = await freePort()
  const open = new Set<net.Socket>()
  const track = (s: net.Socket) => {
    open.add(s)
    s.on('error', () => {})
    s.once('close', () => open.delete(s))
  }
  const server = net.createServer((client) => {
    const upstream = net.connect(target)
    track(client)
    track(upstream)
    client.pipe(upstream)
    client.once('close', () => upstream.destroy())
    upstream.once('error', () => client.destroy())
    const queue: Buffer[] = []
    let pumping = false
    let ended = false
    const pump = () => {
      if (client.destroyed) return
      const head = queue[0]
      if (!head) {
        pumping = false
        if (ended) client.end()
        else upstream.resume()
        return
      }
      const piece = head.subarray(0, o.chunkBytes)
      if (piece.length === head.length) queue.shift()
      else queue[0] = head.subarray(o.chunkBytes)
      client.write(piece)
      setTimeout(pump, o.delayMs)
    }
    upstream.on('data', (b: Buffer) => {
      queue.push(b)
      upstream.pause()
      if (!pumping) {
        pumping = true
        pump()
      }
    })
    upstream.once('end', () => {
      ended = true
      if (!pumping) client.end()
    })
  })
  await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve))
  return {
    url: `http://127.0.0.1:${port}`,
    async stop() {
      for (const s of open) s.destroy()
      await new Promise<void>((r) => server.close(() => r()))
    },
  }
}

interface Download {
  status: Promise<number>
  received(): number
  finished(): boolean
  done: Promise<{ status: number; received: number; digest: string; error?: Error; at: number }>
}

/** GET a URL, hashing the body as it arrives. Never rejects: a cut transfer is reported in `error`. */
function download(url: string, agent: http.Agent): Download {
  let received = 0
  let finished = false
  const hash = createHash('sha256')
  let resolveStatus: (s: number) => void = () => {}
  const status = new Promise<number>((r) => (resolveStatus = r))
  const done = new Promise<{ status: number; received: number; digest: string; error?: Error; at: number }>((resolve) => {
    let code = 0
    const finish = (error?: Error) => {
      if (finished) return
      finished = true
      resolveStatus(code)
      resolve({ status: code, received, digest: `sha256:${hash.digest('hex')}`, error, at: Date.now() })
    }
    const req = http.get(url, { agent, headers: { 'user-agent': 'regcache-shutdown-test' } }, (res) => {
      code = res.statusCode ?? 0
      resolveStatus(code)
      res.on('data', (c: Buffer) => {
        received += c.length
        hash.update(c)
      })
      res.once('end', () => finish(res.complete ? undefined : new Error('response ended before its Content-Length')))
      res.once('aborted', () => finish(new Error('response aborted')))
      res.once('error', (e) => finish(e))
      res.once('close', () => finish(res.complete ? undefined : new Error('connection closed mid-body')))
    })
    req.once('error', (e) => finish(e))
  })
  return { status, received: () => received, finished: () => finished, done }
}

/** Resolves 'refused' when nothing listens on the port any more, 'accepted' when something does. */
function tryConnect(port: number): Promise<'refused' | 'accepted' | string> {
  return new Promise((resolve) => {
    const s = net.connect({ host: '127.0.0.1', port })
    s.once('connect', () => {
      s.destroy()
      resolve('accepted')
    })
    s.once('error', (e: NodeJS.ErrnoException) => resolve(e.code === 'ECONNREFUSED' ? 'refused' : String(e.code)))
  })
}

function within<T>(p: Promise<T>, ms: number): Promise<T | 'timeout'> {
  return Promise.race([p, sleep(ms).then(() => 'timeout' as const)])
}

t.test('SIGTERM and the download in flight', async (t) => {
  const reg = await startRegistry()
  t.teardown(reg.stop)
  const blob = randomBytes(BLOB_SIZE)
  const digest = await uploadBlob(reg.url, 'library/big', blob)
  const throttle = await startThrottle({ host: '127.0.0.1', port: reg.port }, { chunkBytes: 64 * 1024, delayMs: 2 })
  t.teardown(throttle.stop)

  const start = async (t: Test, graceMs = GRACE_MS): Promise<ChildRegcache> => {
    const rc = await startChildRegcache({
      upstreams: { 'docker.io': { url: throttle.url } },
      extra: { shutdownGrace: `${graceMs}ms` },
    })
    t.teardown(rc.stop)
    return rc
  }
  const blobUrl = (rc: ChildRegcache) => `${rc.url}/v2/library/big/blobs/${digest}`
  const midTransfer = async (t: Test, d: Download, bytes = 4 * MiB) => {
    t.equal(await d.status, 200, 'the cold blob is being served')
    await waitUntil(`${bytes} bytes received`, async () => d.received() >= bytes || d.finished(), { timeoutMs: 20_000, intervalMs: 5 })
  }

  const graceful = async (t: Test, keepAlive: boolean) => {
    const rc = await start(t)
    const agent = new http.Agent({ keepAlive })
    t.teardown(() => agent.destroy())
    const d = download(blobUrl(rc), agent)
    await midTransfer(t, d)
    t.notOk(d.finished(), 'the download is still running')

    const signalledAt = Date.now()
    process.kill(rc.daemon().pid, 'SIGTERM')

    let refused = false
    let runningWhenRefused = false
    const deadline = Date.now() + 3000
    while (Date.now() < deadline) {
      const running = !d.finished()
      if ((await tryConnect(rc.port)) === 'refused') {
        refused = true
        runningWhenRefused = running
        break
      }
      await sleep(20)
    }
    t.ok(refused, 'new connections are refused after SIGTERM')
    t.ok(runningWhenRefused, 'while the download was still running')

    const r = await d.done
    t.equal(r.status, 200)
    t.notOk(r.error, `no transfer error (${r.error?.message})`)
    t.equal(r.received, BLOB_SIZE, 'the whole blob arrived')
    t.equal(r.digest, digest, 'and it hashes to its digest')
    t.ok(r.at - signalledAt > 300, `the download went on after SIGTERM (${r.at - signalledAt} ms)`)

    const exit = await within(rc.daemon().exited, EXIT_WAIT_MS)
    const exitedAt = Date.now()
    t.not(exit, 'timeout', `regcache exited (${exitedAt - signalledAt} ms after SIGTERM; waited at most ${EXIT_WAIT_MS} ms once the download ended)`)
    t.same(exit, { code: 0, signal: null } satisfies ExitInfo, 'with code 0')
    t.ok(exitedAt - signalledAt < GRACE_MS, `within the grace period (${exitedAt - signalledAt} ms < ${GRACE_MS} ms)`)
    t.ok(exitedAt - r.at < 5000, `soon after the last request finished (${exitedAt - r.at} ms), not at the end of the grace period`)
    t.ok(rc.logs().some((l) => l.msg === 'stopped'), 'it logged a clean stop')

    // The fill was allowed to finish and the database was closed cleanly: the blob is stored.
    const fsck = await rc.cli(['fsck'])
    t.equal(fsck.code, 0, `fsck after the shutdown exits 0\n${fsck.stdout}${fsck.stderr}`)
    t.match(fsck.stdout, /checked 1 blobs: 1 ok, 0 corrupt, 0 orphaned, 0 missing/, 'the blob was kept')
  }

  await t.test('the transfer completes, new connections are refused, exit 0 within the grace period', async (t) => {
    await graceful(t, false)
  })

  // containerd, Docker and podman keep idle connections to the mirror open (Go's idle timeout is
  // 90 s): once the last response is done, an idle keep-alive connection must not hold up the exit.
  await t.test('the same with a keep-alive client connection left open', async (t) => {
    await graceful(t, true)
  })

  await t.test('a grace period shorter than the transfer bounds the shutdown', async (t) => {
    // Signalled early in the ~3 s transfer, so the grace period ends well before the download would.
    const shortGrace = 500
    const rc = await start(t, shortGrace)
    const agent = new http.Agent({ keepAlive: false })
    t.teardown(() => agent.destroy())
    const d = download(blobUrl(rc), agent)
    await midTransfer(t, d, MiB)
    t.notOk(d.finished(), 'the download is still running')

    const signalledAt = Date.now()
    process.kill(rc.daemon().pid, 'SIGTERM')
    const exit = await within(rc.daemon().exited, shortGrace + 5000)
    const exitedAt = Date.now()
    t.not(exit, 'timeout', 'regcache exited')
    t.ok(exitedAt - signalledAt < shortGrace + 1000, `about when the grace period ended (${exitedAt - signalledAt} ms after SIGTERM, grace ${shortGrace} ms)`)
    const r = await d.done
    t.ok(r.at - signalledAt < shortGrace + 1000, `the client was not kept waiting past the grace period (${r.at - signalledAt} ms)`)
    if (r.received === BLOB_SIZE) t.equal(r.digest, digest, 'a blob that arrived whole is the right one')
    else t.ok(r.error, `a cut transfer shows as an error to the client (${r.received} bytes)`)
  })

  await t.test('a second SIGTERM exits at once, non-zero, before the transfer finishes', async (t) => {
    const rc = await start(t)
    const agent = new http.Agent({ keepAlive: false })
    t.teardown(() => agent.destroy())
    const d = download(blobUrl(rc), agent)
    await midTransfer(t, d)
    t.notOk(d.finished(), 'the download is still running')

    process.kill(rc.daemon().pid, 'SIGTERM')
    await sleep(100)
    const secondAt = Date.now()
    process.kill(rc.daemon().pid, 'SIGTERM')
    const exit = await within(rc.daemon().exited, 5000)
    const exitedAt = Date.now()
    t.not(exit, 'timeout', 'regcache exited')
    t.ok(exitedAt - secondAt < 1500, `at once (${exitedAt - secondAt} ms after the second signal)`)
    t.ok(exit !== 'timeout' && exit.code !== 0 && exit.code !== null, `with a non-zero code (${JSON.stringify(exit)})`)

    const r = await d.done
    t.ok(r.error !== undefined || r.received < BLOB_SIZE, `the client's transfer was cut (${r.received} of ${BLOB_SIZE} bytes, ${r.error?.message})`)
    t.ok(r.received < BLOB_SIZE, 'before the whole blob was sent')
  })
})
