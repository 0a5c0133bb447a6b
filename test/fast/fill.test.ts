// One shared blob download (core/fill.ts), driven chunk by chunk from a stream the test holds:
// late joiners, the last byte held back until the digest verifies, mismatches, resumes, surplus
// bytes and readers that leave.
import { randomBytes } from 'node:crypto'
import { mkdtempSync, readSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { PassThrough, type Readable } from 'node:stream'
import t from 'tap'
import { Fill } from '../../core/fill.js'
import { BlobStore } from '../../storage/blob-store.js'
import type { UpstreamResponse } from '../../upstream/client.js'
import { sha256 } from './fake-registry.js'

const SIZE = 64 * 1024
const tick = () => new Promise((r) => setImmediate(r))

function upstreamBody(status = 200, headers: UpstreamResponse['headers'] = {}): { res: UpstreamResponse; body: PassThrough } {
  const body = new PassThrough()
  const res = { status, headers, body: Object.assign(body, { dump: async () => void body.resume() }) }
  return { res, body }
}

async function setup(t: { teardown(fn: () => void): void }, bytes: Buffer, opts: { digest?: string; resume?: (offset: number) => Promise<UpstreamResponse>; maxResumes?: number } = {}) {
  const dir = mkdtempSync(join(tmpdir(), 'regcache-fill-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const store = new BlobStore(dir)
  await store.init()
  const digest = opts.digest ?? sha256(bytes)
  const first = upstreamBody()
  const events: string[] = []
  const resumes: number[] = []
  const fill = new Fill({
    digest,
    size: bytes.length,
    writer: await store.createWriter(digest),
    first: first.res,
    resume: async (offset) => {
      resumes.push(offset)
      if (!opts.resume) throw new Error('no resume in this test')
      return opts.resume(offset)
    },
    maxResumes: opts.maxResumes,
    onCommitted: () => events.push('committed'),
  })
  return { store, digest, fill, body: first.body, events, resumes }
}

/** Reads a stream to its end or error; `seen` shows what arrived so far. */
function follow(stream: Readable, events?: string[]) {
  const chunks: Buffer[] = []
  const result = new Promise<{ bytes: Buffer; error?: Error }>((resolve) => {
    stream.on('data', (c: Buffer) => chunks.push(c))
    stream.on('end', () => {
      events?.push('reader-end')
      resolve({ bytes: Buffer.concat(chunks) })
    })
    stream.on('error', (error) => resolve({ bytes: Buffer.concat(chunks), error }))
  })
  return { result, seen: () => chunks.reduce((n, c) => n + c.length, 0) }
}

async function until(cond: () => boolean): Promise<void> {
  for (let i = 0; i < 2000 && !cond(); i++) await new Promise((r) => setTimeout(r, 2))
}

t.test('a client that joins late reads what is on disk, then the rest', async (t) => {
  const bytes = randomBytes(SIZE)
  const { fill, body, store, digest } = await setup(t, bytes)
  const early = follow(fill.createReadStream(0, SIZE - 1))
  body.write(bytes.subarray(0, SIZE / 2))
  await until(() => fill.written === SIZE / 2)
  const late = follow(fill.createReadStream(0, SIZE - 1))
  const ranged = follow(fill.createReadStream(100, 199))
  body.end(bytes.subarray(SIZE / 2))
  for (const r of [early, late]) t.ok((await r.result).bytes.equals(bytes))
  t.ok((await ranged.result).bytes.equals(bytes.subarray(100, 200)), 'a range of the blob')
  await fill.done
  t.equal(fill.state, 'done')
  t.equal(await store.size(digest), SIZE, 'stored under its digest')
})

t.test('the last byte is held until the digest verifies and the blob is recorded', async (t) => {
  const bytes = randomBytes(SIZE)
  const { fill, body, events } = await setup(t, bytes)
  const r = follow(fill.createReadStream(0, SIZE - 1), events)
  body.write(bytes.subarray(0, SIZE - 1))
  await until(() => r.seen() === SIZE - 1)
  await tick()
  t.equal(r.seen(), SIZE - 1, 'everything but the last byte')
  t.same(events, [], 'not recorded, not ended')
  body.end(bytes.subarray(SIZE - 1))
  t.ok((await r.result).bytes.equals(bytes))
  t.same(events, ['committed', 'reader-end'], 'recorded before the client saw the end')
})

t.test('a digest mismatch never completes a stream and stores nothing', async (t) => {
  const bytes = randomBytes(SIZE)
  const wrong = Buffer.from(bytes)
  wrong[SIZE - 1] ^= 1
  const { fill, body, store, digest, events } = await setup(t, bytes)
  const readers = [follow(fill.createReadStream(0, SIZE - 1), events), follow(fill.createReadStream(SIZE - 10, SIZE - 1), events)]
  body.end(wrong)
  for (const r of readers) {
    const { bytes: got, error } = await r.result
    t.ok(error, 'the client sees an error')
    t.ok(got.length < SIZE - 10 || got.length < SIZE, 'never the whole blob')
  }
  await t.rejects(fill.done)
  t.equal(fill.state, 'failed')
  t.notOk(events.includes('reader-end'))
  t.notOk(events.includes('committed'))
  t.equal(await store.size(digest), undefined)
})

t.test('a cut is resumed with a range from the received offset', async (t) => {
  const bytes = randomBytes(SIZE)
  const cutAt = 20_000
  const { fill, body, resumes } = await setup(t, bytes, {
    resume: async (offset) => {
      const r = upstreamBody(206, { 'content-range': `bytes ${offset}-${SIZE - 1}/${SIZE}` })
      r.body.end(bytes.subarray(offset))
      return r.res
    },
  })
  const r = follow(fill.createReadStream(0, SIZE - 1))
  body.write(bytes.subarray(0, cutAt))
  await until(() => fill.written === cutAt)
  body.destroy(Object.assign(new Error('socket hang up'), { code: 'ECONNRESET' }))
  t.ok((await r.result).bytes.equals(bytes))
  await fill.done
  t.same(resumes, [cutAt])
  t.equal(fill.resumes, 1)
})

t.test('resumes that do not continue at the offset fail the fill', async (t) => {
  const cases: { name: string; status: number; range?: string }[] = [
    { name: 'upstream ignores the range (200)', status: 200 },
    { name: 'upstream resumes elsewhere', status: 206, range: `bytes 0-${SIZE - 1}/${SIZE}` },
  ]
  for (const c of cases) {
    await t.test(c.name, async (t) => {
      const bytes = randomBytes(SIZE)
      const { fill, body, store, digest } = await setup(t, bytes, {
        resume: async () => {
          const r = upstreamBody(c.status, c.range ? { 'content-range': c.range } : {})
          r.body.end(bytes)
          return r.res
        },
      })
      const r = follow(fill.createReadStream(0, SIZE - 1))
      body.write(bytes.subarray(0, 1000))
      await until(() => fill.written === 1000)
      body.destroy(Object.assign(new Error('cut'), { code: 'ECONNRESET' }))
      t.ok((await r.result).error)
      await t.rejects(fill.done)
      t.equal(await store.size(digest), undefined)
    })
  }
})

t.test('repeated cuts give up after maxResumes', async (t) => {
  const bytes = randomBytes(SIZE)
  const { fill, body, resumes } = await setup(t, bytes, {
    maxResumes: 2,
    resume: async (offset) => {
      const r = upstreamBody(206, { 'content-range': `bytes ${offset}-${SIZE - 1}/${SIZE}` })
      r.body.write(bytes.subarray(offset, offset + 100))
      setImmediate(() => r.body.destroy(Object.assign(new Error('cut'), { code: 'ECONNRESET' })))
      return r.res
    },
  })
  const r = follow(fill.createReadStream(0, SIZE - 1))
  body.write(bytes.subarray(0, 100))
  await until(() => fill.written === 100)
  body.destroy(Object.assign(new Error('cut'), { code: 'ECONNRESET' }))
  t.ok((await r.result).error)
  await t.rejects(fill.done)
  t.equal(resumes.length, 2)
})

t.test('upstream sending more than it announced fails the fill', async (t) => {
  const bytes = randomBytes(SIZE)
  const { fill, body, store, digest } = await setup(t, bytes)
  const r = follow(fill.createReadStream(0, SIZE - 1))
  body.end(Buffer.concat([bytes, Buffer.from('surplus')]))
  const { error, bytes: got } = await r.result
  t.ok(error)
  t.ok(got.length < SIZE)
  await t.rejects(fill.done)
  t.equal(await store.size(digest), undefined)
})

t.test('a reader destroyed mid-way leaves the fill and the other readers alone', async (t) => {
  const bytes = randomBytes(SIZE)
  const { fill, body, store, digest } = await setup(t, bytes)
  const leaving = fill.createReadStream(0, SIZE - 1)
  const gone = follow(leaving)
  const staying = follow(fill.createReadStream(0, SIZE - 1))
  body.write(bytes.subarray(0, SIZE / 4))
  await until(() => gone.seen() > 0)
  leaving.destroy()
  body.end(bytes.subarray(SIZE / 4))
  t.ok((await staying.result).bytes.equals(bytes))
  await fill.done
  t.equal(fill.state, 'done')
  t.equal(await store.size(digest), SIZE)
})

/**
 * Follows a fill the way the sendfile sender does (server/registry/blob-sendfile.ts): asks how far
 * it may go, reads those bytes from the descriptor, asks again. Falls back to a stream on 'stream'.
 */
function followFile(fill: Fill, start: number, end: number) {
  const steps: { from: number; to: number; state: string }[] = []
  const chunks: Buffer[] = []
  const result = (async (): Promise<{ bytes: Buffer; error?: Error; streamedFrom?: number }> => {
    const f = await fill.openFollower(start, end)
    if (!f) throw new Error('no follower')
    let pos = start
    try {
      while (pos <= end) {
        const upTo = await f.available(pos)
        if (upTo === 'stream') {
          const stream = follow(fill.createReadStream(pos, end))
          await f.close()
          const rest = await stream.result
          return { bytes: Buffer.concat([...chunks, rest.bytes]), error: rest.error, streamedFrom: pos }
        }
        steps.push({ from: pos, to: upTo, state: fill.state })
        const buf = Buffer.alloc(upTo - pos)
        readSync(f.fd, buf, 0, buf.length, pos)
        chunks.push(buf)
        pos = upTo
      }
      return { bytes: Buffer.concat(chunks) }
    } catch (error) {
      return { bytes: Buffer.concat(chunks), error: error as Error }
    } finally {
      await f.close()
    }
  })()
  return { result, steps, seen: () => chunks.reduce((n, c) => n + c.length, 0) }
}

t.test('a file follower (sendfile) gets every byte, the last one only after the blob verified', async (t) => {
  const bytes = randomBytes(SIZE)
  const { fill, body, events } = await setup(t, bytes)
  const f = followFile(fill, 0, SIZE - 1)
  body.write(bytes.subarray(0, SIZE - 1))
  await until(() => f.seen() === SIZE - 1)
  await tick()
  t.equal(f.seen(), SIZE - 1, 'everything but the last byte')
  t.same(events, [], 'not recorded yet')
  body.end(bytes.subarray(SIZE - 1))
  const { bytes: got, error } = await f.result
  t.error(error)
  t.ok(got.equals(bytes), 'byte for byte')
  t.same(events, ['committed'])
  t.equal(f.steps.at(-1)?.state, 'done', 'the step with the last byte came after the commit')
  t.ok(f.steps.slice(0, -1).every((s) => s.to <= SIZE - 1), 'no earlier step reached the last byte')
})

t.test('a file follower gets what is written in few steps; one that joins late, all of it in one', async (t) => {
  const big = 3 * 1024 * 1024 + 123
  const bytes = randomBytes(big)
  const { fill, body } = await setup(t, bytes)
  const whole = followFile(fill, 0, big - 1)
  const ranged = followFile(fill, 1000, 1999)
  for (let off = 0; off < big - 1; off += 16 * 1024) {
    body.write(bytes.subarray(off, Math.min(big - 1, off + 16 * 1024)))
    await tick()
  }
  await until(() => fill.written === big - 1)
  const late = followFile(fill, 0, big - 1)
  await until(() => late.seen() === big - 1)
  t.same(
    late.steps.map((s) => [s.from, s.to]),
    [[0, big - 1]],
    'the late follower: everything but the last byte in one step',
  )
  body.end(bytes.subarray(big - 1))
  for (const f of [whole, late]) t.ok((await f.result).bytes.equals(bytes), 'whole blob byte for byte')
  t.ok(whole.steps.length <= (big / (16 * 1024)) + 1, `no more steps than chunks: ${whole.steps.length}`)
  const r = await ranged.result
  t.ok(r.bytes.equals(bytes.subarray(1000, 2000)), 'range byte for byte')
  t.equal(ranged.steps.length, 1, 'the range in one step, as soon as it was written')
  t.equal(ranged.steps[0].state, 'filling')
})

t.test('a digest mismatch rejects the file follower before its last byte', async (t) => {
  const bytes = randomBytes(SIZE)
  const wrong = Buffer.from(bytes)
  wrong[SIZE - 1] ^= 1
  const { fill, body, store, digest } = await setup(t, bytes)
  const f = followFile(fill, 0, SIZE - 1)
  body.end(wrong)
  const { bytes: got, error } = await f.result
  t.ok(error, 'the follower is told to cut the client off')
  t.ok(got.length < SIZE, 'never the whole blob')
  await t.rejects(fill.done)
  t.equal(await store.size(digest), undefined)
})

t.test('a file follower that leaves does not hold up the fill or others', async (t) => {
  const bytes = randomBytes(SIZE)
  const { fill, body } = await setup(t, bytes)
  const leaving = await fill.openFollower(0, SIZE - 1)
  t.ok(leaving)
  const staying = followFile(fill, 0, SIZE - 1)
  body.write(bytes.subarray(0, SIZE / 2))
  await leaving?.close()
  await leaving?.close()
  body.end(bytes.subarray(SIZE / 2))
  t.ok((await staying.result).bytes.equals(bytes))
  await fill.done
  t.equal(fill.state, 'done')
})

t.test('when the disk fills up, a file follower finishes through the relay stream', async (t) => {
  const bytes = randomBytes(SIZE)
  const { fill, body, store, digest } = await setup(t, bytes)
  // The disk "fills up" halfway: writes after that fail with ENOSPC.
  const writer = (fill as unknown as { writer: { write(b: Buffer): Promise<void>; written: number } }).writer
  const write = writer.write.bind(writer)
  writer.write = async (b: Buffer) => {
    if (writer.written + b.length > SIZE / 2) throw Object.assign(new Error('no space left on device'), { code: 'ENOSPC' })
    return write(b)
  }
  const f = followFile(fill, 0, SIZE - 1)
  body.write(bytes.subarray(0, SIZE / 2))
  await until(() => fill.written === SIZE / 2)
  body.end(bytes.subarray(SIZE / 2))
  const { bytes: got, error, streamedFrom } = await f.result
  t.error(error)
  t.ok(got.equals(bytes), 'byte for byte across the switch')
  t.ok(streamedFrom !== undefined && streamedFrom <= SIZE / 2, `switched to the relay at byte ${streamedFrom}`)
  await t.rejects(fill.done, { code: 'ENOSPC' })
  t.equal(fill.state, 'relayed')
  t.equal(await store.size(digest), undefined, 'nothing kept')
})

t.test('no file follower once the fill ended badly', async (t) => {
  const bytes = randomBytes(SIZE)
  const { fill, body } = await setup(t, bytes)
  body.destroy(new Error('cut'))
  await t.rejects(fill.done)
  t.equal(await fill.openFollower(0, SIZE - 1), undefined)
})

t.test('a slow download still reaches a file follower in small steps', async (t) => {
  const big = 3 * 1024 * 1024
  const bytes = randomBytes(big)
  const { fill, body } = await setup(t, bytes)
  const f = followFile(fill, 0, big - 1)
  body.write(bytes.subarray(0, 10_000))
  const t0 = Date.now()
  await until(() => f.seen() === 10_000)
  t.equal(f.seen(), 10_000, 'the first 10 kB went out without waiting for a whole step')
  t.ok(Date.now() - t0 < 2000, `within ${Date.now() - t0} ms`)
  body.end(bytes.subarray(10_000))
  t.ok((await f.result).bytes.equals(bytes))
})
