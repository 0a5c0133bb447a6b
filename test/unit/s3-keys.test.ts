// Object keys of the S3 store: content under its digest, nothing else reachable from a name.
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { createS3Client } from '../../storage/s3-client.js'
import { blobKey, digestOfKey, leaseKey } from '../../storage/s3-keys.js'

const hex64 = 'ab'.repeat(32)
const hex128 = 'cd'.repeat(64)

t.test('content and lease keys', async (t) => {
  t.equal(blobKey('prod/', `sha256:${hex64}`), `prod/blobs/sha256/ab/${hex64}`)
  t.equal(blobKey('', `sha512:${hex128}`), `blobs/sha512/cd/${hex128}`)
  t.equal(leaseKey('prod/', `sha256:${hex64}`), `prod/leases/sha256:${hex64}`)
})

t.test('keys map back to their digests; anything else is not content', async (t) => {
  t.equal(digestOfKey('prod/', `prod/blobs/sha256/ab/${hex64}`), `sha256:${hex64}`)
  t.equal(digestOfKey('', `blobs/sha512/cd/${hex128}`), `sha512:${hex128}`)
  const foreign = [
    `other/blobs/sha256/ab/${hex64}`,
    `prod/blobs/sha256/cd/${hex64}`,
    `prod/blobs/sha256/ab/${hex64}/x`,
    `prod/blobs/sha256/ab/${hex64.toUpperCase()}`,
    `prod/blobs/md5/ab/${hex64}`,
    `prod/blobs/sha256/ab/${hex64.slice(2)}`,
    `prod/leases/sha256:${hex64}`,
  ]
  for (const key of foreign) t.equal(digestOfKey('prod/', key), undefined, key)
})

t.test('hostile digests never become keys', async (t) => {
  for (const bad of ['', 'sha256:', `sha256:${hex64}/../../x`, `sha256:${hex64.toUpperCase()}`, `sha512:${hex64}`, `../sha256:${hex64}`, `sha256:${hex64}\n`]) {
    t.throws(() => blobKey('p/', bad), { code: 'INVALID_DIGEST' }, JSON.stringify(bad))
    t.throws(() => leaseKey('p/', bad), { code: 'INVALID_DIGEST' }, JSON.stringify(bad))
  }
})

t.test('credential files: both or neither, readable, never echoed', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'regcache-s3-'))
  t.teardown(() => rm(dir, { recursive: true, force: true }))
  const base = { region: 'us-east-1', bucket: 'b' }
  const tuning = { spoolDir: dir }
  await t.rejects(createS3Client({ ...base, accessKeyFile: join(dir, 'ak') }, tuning), /go together/)
  await t.rejects(createS3Client({ ...base, accessKeyFile: join(dir, 'none'), secretKeyFile: join(dir, 'none') }, tuning), /ENOENT/)
  await writeFile(join(dir, 'ak'), 'AKIDSECRETVALUE\n')
  await writeFile(join(dir, 'empty'), '\n')
  await t.rejects(createS3Client({ ...base, accessKeyFile: join(dir, 'ak'), secretKeyFile: join(dir, 'empty') }, tuning), /is empty/)
  await writeFile(join(dir, 'sk'), 's3cr3t-value\n')
  const client = await createS3Client({ ...base, accessKeyFile: join(dir, 'ak'), secretKeyFile: join(dir, 'sk') }, tuning)
  const creds = await client.config.credentials()
  t.equal(creds.accessKeyId, 'AKIDSECRETVALUE', 'trimmed')
  t.equal(creds.secretAccessKey, 's3cr3t-value')
  client.destroy()
})
