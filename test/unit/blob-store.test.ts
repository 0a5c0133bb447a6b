// The content-addressed blob store: only verified content ever appears under blobs/.
import { createHash } from 'node:crypto'
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { BlobStore, DigestMismatchError } from '../../storage/blob-store.js'
import { blobPath, tmpDir } from '../../storage/layout.js'

const sha256 = (b: Buffer) => `sha256:${createHash('sha256').update(b).digest('hex')}`
const sha512 = (b: Buffer) => `sha512:${createHash('sha512').update(b).digest('hex')}`

/** 2048 bytes whose value is their offset mod 251, so any range is recognisable. */
const BLOB = Buffer.from(Array.from({ length: 2048 }, (_, i) => i % 251))
const BLOB_DIGEST = sha256(BLOB)

async function store(t: { teardown: (fn: () => void) => void }): Promise<{ dir: string; store: BlobStore }> {
  const dir = mkdtempSync(join(tmpdir(), 'regcache-blobs-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const s = new BlobStore(dir)
  await s.init()
  return { dir, store: s }
}

async function readAll(stream: NodeJS.ReadableStream): Promise<Buffer> {
  const chunks: Buffer[] = []
  for await (const c of stream) chunks.push(c as Buffer)
  return Buffer.concat(chunks)
}

t.test('writer: commit renames into place only when the digest matches', async (t) => {
  const { dir, store: s } = await store(t)
  const w = await s.createWriter(BLOB_DIGEST)
  t.ok(w.tempPath.startsWith(tmpDir(dir)), 'written under tmp/')
  await w.write(BLOB.subarray(0, 1000))
  await w.write(BLOB.subarray(1000))
  t.equal(w.written, 2048)
  t.notOk(existsSync(w.finalPath), 'not visible before commit')
  t.equal(await s.size(BLOB_DIGEST), undefined)
  await w.commit()
  t.equal(w.finalPath, blobPath(dir, BLOB_DIGEST))
  t.ok(existsSync(blobPath(dir, BLOB_DIGEST)), 'visible under its digest')
  t.notOk(existsSync(w.tempPath), 'temporary file gone')
  t.strictSame(readdirSync(tmpDir(dir)), [], 'tmp/ is empty')
  t.equal(await s.size(BLOB_DIGEST), 2048)
  t.ok((await s.read(BLOB_DIGEST))?.equals(BLOB), 'same bytes')
})

t.test('writer: sha512 digests', async (t) => {
  const { dir, store: s } = await store(t)
  const d = sha512(BLOB)
  await s.put(d, BLOB)
  t.ok(existsSync(blobPath(dir, d)))
  t.ok(await s.verify(d))
})

t.test('writer: a mismatch throws DigestMismatchError and leaves neither temp nor final file', async (t) => {
  const { dir, store: s } = await store(t)
  const wrong = sha256(Buffer.from('something else'))
  const w = await s.createWriter(wrong)
  await w.write(BLOB)
  let caught: unknown
  try {
    await w.commit()
  } catch (err) {
    caught = err
  }
  t.ok(caught instanceof DigestMismatchError, 'DigestMismatchError')
  t.equal((caught as DigestMismatchError).code, 'DIGEST_MISMATCH')
  t.equal((caught as DigestMismatchError).expected, wrong)
  t.equal((caught as DigestMismatchError).actual, BLOB_DIGEST)
  t.notOk(existsSync(w.tempPath), 'temporary file removed')
  t.notOk(existsSync(blobPath(dir, wrong)), 'nothing under the expected digest')
  t.notOk(existsSync(blobPath(dir, BLOB_DIGEST)), 'nothing under the actual digest either')
  t.strictSame(readdirSync(tmpDir(dir)), [], 'tmp/ is empty')
  t.equal(await s.size(wrong), undefined)
})

t.test('put: verifies a complete buffer; a mismatch stores nothing', async (t) => {
  const { dir, store: s } = await store(t)
  const manifest = Buffer.from('{"schemaVersion":2}')
  await s.put(sha256(manifest), manifest)
  t.ok((await s.read(sha256(manifest)))?.equals(manifest))
  const wrong = sha256(Buffer.from('nope'))
  const caught = await s.put(wrong, manifest).then(
    () => undefined,
    (err: unknown) => err,
  )
  t.ok(caught instanceof DigestMismatchError, 'DigestMismatchError')
  t.equal(await s.read(wrong), undefined)
  t.strictSame(readdirSync(tmpDir(dir)), [], 'tmp/ is empty')
})

t.test('writer: abort removes the temporary file', async (t) => {
  const { dir, store: s } = await store(t)
  const w = await s.createWriter(BLOB_DIGEST)
  await w.write(BLOB.subarray(0, 100))
  t.ok(existsSync(w.tempPath))
  await w.abort()
  t.notOk(existsSync(w.tempPath))
  t.notOk(existsSync(blobPath(dir, BLOB_DIGEST)))
  await w.abort()
  t.pass('aborting twice is harmless')
})

t.test('init() removes leftover temporary files and creates the directories', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'regcache-blobs-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const fresh = new BlobStore(join(dir, 'new'))
  t.strictSame(await fresh.init(), { removedTemporary: 0 }, 'a new data directory')
  t.ok(existsSync(join(dir, 'new', 'blobs')))
  t.ok(existsSync(tmpDir(join(dir, 'new'))))

  const s = new BlobStore(dir)
  await s.init()
  await s.put(BLOB_DIGEST, BLOB)
  writeFileSync(join(tmpDir(dir), 'abc.partial'), 'half a blob')
  writeFileSync(join(tmpDir(dir), 'def.partial'), 'another half')
  mkdirSync(join(tmpDir(dir), 'stray-dir'))
  const again = new BlobStore(dir)
  t.strictSame(await again.init(), { removedTemporary: 3 })
  t.strictSame(readdirSync(tmpDir(dir)), [], 'tmp/ is empty')
  t.equal(await again.size(BLOB_DIGEST), 2048, 'committed blobs are kept')
})

t.test('list() and verify()', async (t) => {
  const { dir, store: s } = await store(t)
  const list = async () => {
    const out: string[] = []
    for await (const d of s.list()) out.push(d)
    return out.sort()
  }
  t.strictSame(await list(), [], 'empty store')
  const small = Buffer.from('small')
  await s.put(BLOB_DIGEST, BLOB)
  await s.put(sha256(small), small)
  await s.put(sha512(small), small)
  t.strictSame(await list(), [BLOB_DIGEST, sha256(small), sha512(small)].sort())

  t.ok(await s.verify(BLOB_DIGEST), 'intact blob verifies')
  t.ok(await s.verify(sha512(small)), 'sha512 blob verifies')
  // Corrupt a stored file behind the store's back.
  writeFileSync(blobPath(dir, sha256(small)), 'smell')
  t.notOk(await s.verify(sha256(small)), 'corrupted blob does not verify')

  await s.remove(BLOB_DIGEST)
  t.equal(await s.size(BLOB_DIGEST), undefined, 'removed')
  await s.remove(BLOB_DIGEST)
  t.pass('removing twice is harmless')
})

t.test('createReadStream: inclusive byte ranges', async (t) => {
  const { store: s } = await store(t)
  await s.put(BLOB_DIGEST, BLOB)
  const cases: [string, number | undefined, number | undefined, Buffer][] = [
    ['whole blob', undefined, undefined, BLOB],
    ['500-1499', 500, 1499, BLOB.subarray(500, 1500)],
    ['500 to the end', 500, 2047, BLOB.subarray(500)],
    ['last 500 bytes', 1548, 2047, BLOB.subarray(1548)],
    ['first byte', 0, 0, BLOB.subarray(0, 1)],
    ['last byte', 2047, 2047, BLOB.subarray(2047)],
    ['start only', 2000, undefined, BLOB.subarray(2000)],
  ]
  for (const [why, start, end, expect] of cases) {
    const got = await readAll(s.createReadStream(BLOB_DIGEST, start, end))
    t.equal(got.length, expect.length, `${why}: length`)
    t.ok(got.equals(expect), `${why}: bytes`)
  }
})
