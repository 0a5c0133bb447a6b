// The content-store contract, run against the filesystem store and against the S3 store on a
// real Ceph RADOS Gateway; then what only the object store has: multipart fills, cleanup of
// leftover uploads, fill leases between replicas, presigned URLs, and a store that is gone.
import { createHash, randomBytes } from 'node:crypto'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { PutObjectCommand } from '@aws-sdk/client-s3'
import t from 'tap'
import { BlobStore, DigestMismatchError } from '../../storage/blob-store.js'
import type { ContentStore, ContentWriter } from '../../storage/content-store.js'
import { blobKey } from '../../storage/s3-keys.js'
import type { S3StoreTuning } from '../../storage/s3-settings.js'
import { S3Store } from '../../storage/s3-store.js'
import { StoreUnavailableError } from '../../storage/store-unavailable.js'
import { startForwarder } from '../helpers/forwarder.js'
import { makeTempDir, removeTempDir } from '../helpers/proc.js'
import { rgwMissing, startRgw, type Rgw } from '../helpers/rgw.js'

const MiB = 1024 * 1024

function sha256(bytes: Buffer): string {
  return `sha256:${createHash('sha256').update(bytes).digest('hex')}`
}

async function collect(stream: NodeJS.ReadableStream): Promise<Buffer> {
  const chunks: Buffer[] = []
  for await (const c of stream) chunks.push(c as Buffer)
  return Buffer.concat(chunks)
}

async function writeAll(writer: ContentWriter, bytes: Buffer, chunk = 64 * 1024): Promise<void> {
  for (let o = 0; o < bytes.length; o += chunk) await writer.write(bytes.subarray(o, o + chunk))
}

/** Rejects when `p` takes longer than `ms`: a hang is a failure, whatever the reason. */
function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  return Promise.race([
    p,
    sleep(ms, undefined, { ref: false }).then(() => {
      throw new Error(`${what}: still waiting after ${ms} ms`)
    }),
  ])
}

/** What `p` rejected with (undefined when it resolved). */
function rejection(p: Promise<unknown>): Promise<unknown> {
  return p.then(
    () => undefined,
    (err: unknown) => err,
  )
}

interface Backend {
  store: ContentStore
  /** Replaces the stored bytes of `digest` behind the store's back. */
  corrupt(digest: string, bytes: Buffer): Promise<void>
  cleanup(): Promise<void>
}

function contractSuite(name: string, make: () => Promise<Backend>): void {
  t.test(`contract: ${name}`, async (t) => {
    const b = await make()
    t.teardown(() => b.cleanup())
    const { store } = b
    await store.init()

    t.test('put, read, size; missing content is undefined', async (t) => {
      const bytes = Buffer.from(JSON.stringify({ schemaVersion: 2, n: randomBytes(8).toString('hex') }))
      const d = sha256(bytes)
      t.equal(await store.size(d), undefined)
      t.equal(await store.read(d), undefined)
      await store.put(d, bytes)
      t.equal(await store.size(d), bytes.length)
      t.same(await store.read(d), bytes)
    })

    t.test('put with the wrong digest stores nothing', async (t) => {
      const bytes = Buffer.from('not what the digest says')
      const d = sha256(Buffer.from('something else'))
      t.type(await rejection(store.put(d, bytes)), DigestMismatchError)
      t.equal(await store.size(d), undefined)
    })

    t.test('empty content', async (t) => {
      const bytes = Buffer.alloc(0)
      const d = sha256(bytes)
      await store.put(d, bytes)
      t.equal(await store.size(d), 0)
      t.same(await store.read(d), bytes)
    })

    t.test('stream ranges; missing content errors with ENOENT', async (t) => {
      const bytes = randomBytes(300 * 1024)
      const d = sha256(bytes)
      await store.put(d, bytes)
      t.same(await collect(store.createReadStream(d)), bytes, 'whole')
      t.same(await collect(store.createReadStream(d, 0, 0)), bytes.subarray(0, 1), 'first byte')
      t.same(await collect(store.createReadStream(d, 1000, 1999)), bytes.subarray(1000, 2000), 'middle')
      t.same(await collect(store.createReadStream(d, bytes.length - 10, bytes.length - 1)), bytes.subarray(-10), 'tail')
      t.same(await collect(store.createReadStream(d, 5000)), bytes.subarray(5000), 'open-ended')
      t.same(await collect(store.createReadStream(d, bytes.length + 10)), Buffer.alloc(0), 'past the end reads nothing')
      const missing = sha256(randomBytes(16))
      await t.rejects(collect(store.createReadStream(missing)), { code: 'ENOENT' })
    })

    t.test('a reader that stops early releases the stream', async (t) => {
      const bytes = randomBytes(4 * MiB)
      const d = sha256(bytes)
      await store.put(d, bytes)
      const s = store.createReadStream(d)
      for await (const chunk of s) {
        t.ok((chunk as Buffer).length > 0)
        break
      }
      t.ok(s.destroyed, 'destroyed after break')
    })

    t.test('remove, list, verify', async (t) => {
      const a = Buffer.from('alpha ' + randomBytes(8).toString('hex'))
      const c = Buffer.from('gamma ' + randomBytes(8).toString('hex'))
      await store.put(sha256(a), a)
      await store.put(sha256(c), c)
      const listed = new Set<string>()
      for await (const d of store.list()) listed.add(d)
      t.ok(listed.has(sha256(a)) && listed.has(sha256(c)), 'both listed')
      t.equal(await store.verify(sha256(a)), true)
      await b.corrupt(sha256(c), Buffer.from('gamma but changed on disk'))
      t.equal(await store.verify(sha256(c)), false, 'changed bytes fail verification')
      await store.remove(sha256(a))
      t.equal(await store.size(sha256(a)), undefined)
      await store.remove(sha256(a))
      t.pass('removing twice is fine')
      const after = new Set<string>()
      for await (const d of store.list()) after.add(d)
      t.notOk(after.has(sha256(a)), 'removed content is not listed')
    })

    t.test('writer: invisible until commit', async (t) => {
      const bytes = randomBytes(700 * 1024)
      const d = sha256(bytes)
      const w = await store.createWriter(d)
      await writeAll(w, bytes)
      t.equal(w.written, bytes.length)
      t.equal(await store.size(d), undefined, 'nothing visible before commit')
      await w.commit()
      t.equal(await store.size(d), bytes.length)
      t.same(await store.read(d), bytes)
    })

    t.test('writer: abort leaves nothing', async (t) => {
      const bytes = randomBytes(200 * 1024)
      const d = sha256(bytes)
      const w = await store.createWriter(d)
      await writeAll(w, bytes.subarray(0, 100 * 1024))
      await w.abort()
      t.equal(await store.size(d), undefined)
      await w.abort()
      t.pass('abort twice is fine')
    })

    t.test('writer: a digest mismatch is never visible', async (t) => {
      const bytes = randomBytes(300 * 1024)
      const d = sha256(bytes)
      const w = await store.createWriter(d)
      const tampered = Buffer.from(bytes)
      tampered[1234] ^= 0xff
      await writeAll(w, tampered)
      t.type(await rejection(w.commit()), DigestMismatchError)
      t.equal(await store.size(d), undefined)
    })

    t.test('writer: readers follow the fill through openRead', async (t) => {
      const bytes = randomBytes(512 * 1024)
      const d = sha256(bytes)
      const w = await store.createWriter(d)
      await w.write(bytes.subarray(0, 100_000))
      const early = await w.openRead()
      const buf = Buffer.alloc(bytes.length)
      let got = (await early.read(buf, 0, 100_000, 0)).bytesRead
      t.equal(got, 100_000)
      const second = await w.openRead()
      await writeAll(w, bytes.subarray(100_000))
      while (got < bytes.length) {
        const { bytesRead } = await early.read(buf, got, bytes.length - got, got)
        if (bytesRead === 0) break
        got += bytesRead
      }
      t.same(buf, bytes, 'the early reader saw every byte')
      await w.commit()
      const mid = Buffer.alloc(1000)
      t.equal((await second.read(mid, 0, 1000, 200_000)).bytesRead, 1000, 'a handle opened before commit still reads after it')
      t.same(mid, bytes.subarray(200_000, 201_000))
      const late = await w.openRead()
      const tail = Buffer.alloc(4096)
      t.equal((await late.read(tail, 0, 4096, bytes.length - 4096)).bytesRead, 4096, 'a handle opened after commit reads the stored content')
      t.same(tail, bytes.subarray(-4096))
      for (const h of [early, second, late]) await h.close()
    })
  })
}

contractSuite('filesystem', async () => {
  const dir = await makeTempDir()
  const store = new BlobStore(dir)
  return {
    store,
    corrupt: (digest, bytes) => writeFile(store.pathOf(digest), bytes),
    cleanup: () => removeTempDir(dir),
  }
})

const missing = await rgwMissing()
if (missing) console.error(`s3-store.test: object-store parts skipped: ${missing}`)
let rgw: Rgw | undefined
if (!missing) {
  rgw = await startRgw()
  t.teardown(() => rgw?.stop())
}

/** An S3 store on the test gateway under a fresh prefix, with credentials read from files as configured. */
async function s3Store(g: Rgw, tuning: Partial<S3StoreTuning> = {}, prefix = `t-${randomBytes(4).toString('hex')}/`) {
  const dir = await makeTempDir()
  await writeFile(join(dir, 'access'), `${g.accessKey}\n`)
  await writeFile(join(dir, 'secret'), `${g.secretKey}\n`)
  const store = await S3Store.create(
    {
      endpoint: g.endpoint,
      region: g.region,
      bucket: g.bucket,
      prefix,
      forcePathStyle: true,
      accessKeyFile: join(dir, 'access'),
      secretKeyFile: join(dir, 'secret'),
    },
    { spoolDir: join(dir, 'spool'), ...tuning },
  )
  return {
    store,
    dir,
    prefix,
    cleanup: async () => {
      store.close()
      await removeTempDir(dir)
    },
  }
}

if (rgw) {
  const g = rgw
  contractSuite('S3 on Ceph RGW', async () => {
    const s = await s3Store(g)
    const client = g.client()
    return {
      store: s.store,
      corrupt: async (digest, bytes) => {
        await client.send(new PutObjectCommand({ Bucket: g.bucket, Key: blobKey(s.prefix, digest), Body: bytes }))
      },
      cleanup: async () => {
        client.destroy()
        await s.cleanup()
      },
    }
  })

  const uploadsFor = async (store: S3Store, digest: string) => {
    const ids: string[] = []
    for await (const u of store.multipartUploads()) if (u.digest === digest) ids.push(u.uploadId)
    return ids
  }

  t.test('S3: a blob above one part goes as a multipart upload, visible only after commit', async (t) => {
    const s = await s3Store(g, { partSize: 5 * MiB })
    t.teardown(s.cleanup)
    await s.store.init()
    const bytes = randomBytes(12 * MiB + 12345)
    const d = sha256(bytes)
    const w = await s.store.createWriter(d)
    await writeAll(w, bytes.subarray(0, 6 * MiB))
    for (let i = 0; i < 200 && (await uploadsFor(s.store, d)).length === 0; i++) await sleep(50)
    t.equal((await uploadsFor(s.store, d)).length, 1, 'one multipart upload in progress')
    t.equal(await s.store.size(d), undefined, 'nothing under the digest while filling')
    await writeAll(w, bytes.subarray(6 * MiB))
    await w.commit()
    t.equal(await s.store.size(d), bytes.length)
    t.equal(await s.store.verify(d), true)
    t.same(await collect(s.store.createReadStream(d, 5 * MiB - 10, 5 * MiB + 9)), bytes.subarray(5 * MiB - 10, 5 * MiB + 10), 'range across a part boundary')
    t.same(await uploadsFor(s.store, d), [], 'the upload is completed, not left over')
  })

  t.test('S3: a multipart fill with the wrong bytes is aborted and never visible', async (t) => {
    const s = await s3Store(g, { partSize: 5 * MiB })
    t.teardown(s.cleanup)
    const bytes = randomBytes(11 * MiB)
    const d = sha256(bytes)
    const w = await s.store.createWriter(d)
    const tampered = Buffer.from(bytes)
    tampered[tampered.length - 1] ^= 1
    await writeAll(w, tampered)
    t.type(await rejection(w.commit()), DigestMismatchError)
    t.equal(await s.store.size(d), undefined)
    t.same(await uploadsFor(s.store, d), [], 'the multipart upload was aborted')
  })

  t.test('S3: init() aborts uploads left by a crashed fill, not those of a live filler', async (t) => {
    const prefix = `t-${randomBytes(4).toString('hex')}/`
    const crashed = await s3Store(g, { partSize: 5 * MiB }, prefix)
    t.teardown(crashed.cleanup)
    const live = await s3Store(g, { partSize: 5 * MiB }, prefix)
    t.teardown(live.cleanup)

    const dead = randomBytes(6 * MiB)
    const deadWriter = await crashed.store.createWriter(sha256(dead))
    await writeAll(deadWriter, dead)
    const busy = randomBytes(6 * MiB)
    const lease = await live.store.leases.acquire(sha256(busy))
    t.ok(lease, 'the live filler holds its lease')
    const busyWriter = await live.store.createWriter(sha256(busy))
    await writeAll(busyWriter, busy)
    for (let i = 0; i < 200; i++) {
      if ((await uploadsFor(crashed.store, sha256(dead))).length && (await uploadsFor(live.store, sha256(busy))).length) break
      await sleep(50)
    }

    // A replica restarting: its uploads are abandoned (age 0 here, minutes in production).
    const restarted = await s3Store(g, { abandonedUploadAgeMs: 0 }, prefix)
    t.teardown(restarted.cleanup)
    const { removedTemporary } = await restarted.store.init()
    t.equal(removedTemporary, 1, 'one leftover upload aborted')
    t.same(await uploadsFor(restarted.store, sha256(dead)), [], 'the crashed fill left nothing')
    t.equal((await uploadsFor(restarted.store, sha256(busy))).length, 1, 'the live fill goes on')
    await busyWriter.commit()
    t.equal(await live.store.size(sha256(busy)), busy.length)
    await live.store.leases.release(lease!)
    await deadWriter.abort()
  })

  t.test('S3: one fill lease per digest across replicas; takeover after expiry', async (t) => {
    const prefix = `t-${randomBytes(4).toString('hex')}/`
    const a = await s3Store(g, { owner: 'replica-a', leaseTtlMs: 3000 }, prefix)
    t.teardown(a.cleanup)
    const b = await s3Store(g, { owner: 'replica-b', leaseTtlMs: 3000 }, prefix)
    t.teardown(b.cleanup)
    const d = sha256(randomBytes(32))

    const [x, y] = await Promise.all([a.store.leases.acquire(d), b.store.leases.acquire(d)])
    t.ok((x === undefined) !== (y === undefined), 'exactly one of two concurrent acquirers wins')
    const winner = x ? a : b
    const loser = x ? b : a
    const lease = (x ?? y)!
    t.equal((await loser.store.leases.holder(d))?.owner, lease.owner, 'the loser sees who holds it')
    await winner.store.leases.release(lease)
    const again = await loser.store.leases.acquire(d)
    t.ok(again, 'after release the other replica gets it')

    // The holder stops renewing (it died): the other takes over once the lease expired.
    t.equal(await winner.store.leases.acquire(d), undefined, 'live lease: no takeover')
    await sleep(3500)
    const taken = await winner.store.leases.acquire(d)
    t.ok(taken, 'expired lease: taken over')
    t.equal(await loser.store.leases.renew(again!), false, 'the old holder learns it lost the lease')
    await winner.store.leases.release(taken!)

    // A renewed lease stays exclusive well past its lifetime.
    const kept = (await a.store.leases.acquire(d))!
    const renewing = a.store.leases.keepRenewed(kept)
    await sleep(7000)
    t.equal(await b.store.leases.acquire(d), undefined, 'renewed lease still held')
    renewing.stop()
    await a.store.leases.release(kept)
  })

  t.test('S3: waiting replicas get the content, or the lease when the filler dies', async (t) => {
    const prefix = `t-${randomBytes(4).toString('hex')}/`
    const a = await s3Store(g, { owner: 'replica-a', leaseTtlMs: 1500 }, prefix)
    t.teardown(a.cleanup)
    const b = await s3Store(g, { owner: 'replica-b', leaseTtlMs: 1500 }, prefix)
    t.teardown(b.cleanup)

    const bytes = randomBytes(256 * 1024)
    const d = sha256(bytes)
    const lease = (await a.store.leases.acquire(d))!
    const renewing = a.store.leases.keepRenewed(lease)
    const waiting = b.store.leases.waitForContentOrLease(d, { pollMs: 100 })
    const w = await a.store.createWriter(d)
    await writeAll(w, bytes)
    await sleep(500)
    await w.commit()
    renewing.stop()
    await a.store.leases.release(lease)
    t.same(await within(waiting, 30_000, 'waiting for content'), { kind: 'stored', size: bytes.length })

    const other = sha256(randomBytes(64))
    const dying = await a.store.leases.acquire(other)
    t.ok(dying, 'a filler takes the lease and then dies without renewing')
    const outcome = await within(b.store.leases.waitForContentOrLease(other, { pollMs: 100 }), 30_000, 'waiting for takeover')
    t.equal(outcome.kind, 'lease', 'the waiter becomes the filler')
    if (outcome.kind === 'lease') {
      t.equal(outcome.lease.owner, 'replica-b')
      await b.store.leases.release(outcome.lease)
    }
    await t.rejects(
      b.store.leases.waitForContentOrLease(other, { pollMs: 100, signal: AbortSignal.abort() }),
      { name: 'AbortError' },
      'a cancelled wait stops',
    )
  })

  t.test('S3: a presigned URL serves the blob to a plain GET, then expires', async (t) => {
    const s = await s3Store(g)
    t.teardown(s.cleanup)
    const bytes = randomBytes(100 * 1024)
    const d = sha256(bytes)
    await s.store.put(d, bytes)
    const url = await s.store.presign(d, 2)
    const res = await fetch(url, { signal: AbortSignal.timeout(10_000) })
    t.equal(res.status, 200)
    t.same(Buffer.from(await res.arrayBuffer()), bytes)
    const ranged = await fetch(url, { headers: { range: 'bytes=10-19' }, signal: AbortSignal.timeout(10_000) })
    t.equal(ranged.status, 206)
    t.same(Buffer.from(await ranged.arrayBuffer()), bytes.subarray(10, 20))
    await sleep(3500)
    const late = await fetch(url, { signal: AbortSignal.timeout(10_000) })
    await late.arrayBuffer()
    t.equal(late.status, 403, 'expired')
  })

  t.test('S3: a store that hangs is reported unavailable, not waited for', async (t) => {
    const fwd = await startForwarder({ host: '127.0.0.1', port: g.port })
    t.teardown(() => fwd.stop())
    const dir = await makeTempDir()
    t.teardown(() => removeTempDir(dir))
    const creds = { accessKeyFile: join(dir, 'ak'), secretKeyFile: join(dir, 'sk') }
    await writeFile(creds.accessKeyFile, g.accessKey)
    await writeFile(creds.secretKeyFile, g.secretKey)
    const settings = { endpoint: fwd.url, region: g.region, bucket: g.bucket, prefix: 'hang/', forcePathStyle: true, ...creds }
    const tuning = { spoolDir: join(dir, 'spool'), requestTimeoutMs: 1500, maxAttempts: 1 }
    const probe = await S3Store.create(settings, tuning)
    await probe.checkReady()
    probe.close()
    t.pass('ready through the forwarder')
    // Connections are accepted and then nothing is ever answered.
    await fwd.setMode('hang', { dropExisting: true })
    const hanging = await S3Store.create(settings, tuning)
    t.teardown(() => hanging.close())
    const err = await within(rejection(hanging.size(sha256(Buffer.from('x')))), 30_000, 'size() on a hanging store')
    t.type(err, StoreUnavailableError)
    t.equal((err as StoreUnavailableError).code, 'STORE_UNAVAILABLE')
    t.match((err as StoreUnavailableError).reason, /^(ETIMEDOUT|TimeoutError)$/, 'given up by the request timeout')
    t.type(await rejection(within(hanging.checkReady(), 30_000, 'checkReady')), StoreUnavailableError)
  })

  t.test('S3: a content stream cut by the network errors, never ends short', async (t) => {
    const fwd = await startForwarder({ host: '127.0.0.1', port: g.port })
    t.teardown(() => fwd.stop())
    const dir = await makeTempDir()
    t.teardown(() => removeTempDir(dir))
    const creds = { accessKeyFile: join(dir, 'ak'), secretKeyFile: join(dir, 'sk') }
    await writeFile(creds.accessKeyFile, g.accessKey)
    await writeFile(creds.secretKeyFile, g.secretKey)
    const store = await S3Store.create(
      { endpoint: fwd.url, region: g.region, bucket: g.bucket, prefix: 'cut/', forcePathStyle: true, ...creds },
      { spoolDir: join(dir, 'spool'), maxAttempts: 1 },
    )
    t.teardown(() => store.close())
    const bytes = randomBytes(2 * MiB)
    const d = sha256(bytes)
    await store.put(d, bytes)
    await fwd.setMode('cut', { cutAfterBytes: 300 * 1024, dropExisting: true })
    const err = await within(rejection(collect(store.createReadStream(d))), 30_000, 'reading a cut stream')
    t.type(err, StoreUnavailableError, 'the reader gets an error')
    await fwd.setMode('pass')
    t.equal(await store.verify(d), true, 'the stored content is intact')
  })

  // Last: it stops the gateway every other test uses.
  t.test('S3: a stopped gateway gives StoreUnavailableError quickly, never a hang', async (t) => {
    const s = await s3Store(g, { maxAttempts: 1 })
    t.teardown(s.cleanup)
    const bytes = randomBytes(64 * 1024)
    const d = sha256(bytes)
    await s.store.put(d, bytes)
    const w = await s.store.createWriter(sha256(randomBytes(8)))
    const big = randomBytes(40 * MiB)
    const multipart = await s3Store(g, { maxAttempts: 1, partSize: 5 * MiB })
    t.teardown(multipart.cleanup)
    const mw = await multipart.store.createWriter(sha256(big))
    await writeAll(mw, big.subarray(0, MiB))
    await g.stopGateway()

    const fails = async (what: string, p: Promise<unknown>) => {
      const err = await within(p.then(() => undefined, (e: unknown) => e), 30_000, what)
      t.type(err, StoreUnavailableError, `${what}: StoreUnavailableError`)
      t.equal((err as { code?: string } | undefined)?.code, 'STORE_UNAVAILABLE', `${what}: stable code`)
    }
    await fails('checkReady', s.store.checkReady())
    await fails('size', s.store.size(d))
    await fails('read', s.store.read(d))
    await fails('put', s.store.put(d, bytes))
    await fails('stream', collect(s.store.createReadStream(d)))
    await fails('list', (async () => { for await (const x of s.store.list()) void x })())
    await fails('lease', s.store.leases.acquire(d))
    await fails('init', s.store.init())
    // A fill whose parts cannot be uploaded fails at a write, and that chunk does not count.
    let failed: unknown
    for (let o = MiB; o < big.length && failed === undefined; o += 64 * 1024) {
      const before = mw.written
      failed = await rejection(within(mw.write(big.subarray(o, o + 64 * 1024)), 30_000, 'write'))
      if (failed !== undefined) t.equal(mw.written, before, 'the failed chunk is not counted')
    }
    t.type(failed, StoreUnavailableError, 'a write reports the store unavailable')
    await mw.abort()
    await w.write(Buffer.from('spooled locally'))
    await w.abort()
    t.pass('a fill can still be aborted while the store is gone')
  })
}
