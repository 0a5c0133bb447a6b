// Proves the Ceph RADOS Gateway helper on its own: a cluster starts, answers signed S3 requests,
// and stops with its daemons and directory gone.
import { existsSync, readFileSync } from 'node:fs'
import { GetObjectCommand, PutObjectCommand } from '@aws-sdk/client-s3'
import t from 'tap'
import { rgwMissing, startRgw } from '../helpers/rgw.js'

const missing = await rgwMissing()
if (missing) console.error(`rgw-harness.test: skipped: ${missing}`)

/** Running or sleeping; an exited process waiting to be reaped (state Z) counts as gone. */
function alive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    return stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z'
  } catch {
    return false
  }
}

t.test('a throw-away RADOS Gateway answers signed PUT and GET, then stops', { skip: missing ?? false }, async (t) => {
  const rgw = await startRgw()
  t.teardown(() => rgw.stop())
  const client = rgw.client()
  t.teardown(() => client.destroy())

  const body = Buffer.from('hello from the gateway\n')
  await client.send(new PutObjectCommand({ Bucket: rgw.bucket, Key: 'greeting', Body: body }))
  const got = await client.send(new GetObjectCommand({ Bucket: rgw.bucket, Key: 'greeting' }))
  t.same(Buffer.from(await got.Body!.transformToByteArray()), body, 'the object reads back')

  // Unsigned requests are refused: the gateway really checks signatures.
  const anon = await fetch(`${rgw.endpoint}/${rgw.bucket}/greeting`, { signal: AbortSignal.timeout(5000) })
  await anon.arrayBuffer()
  t.equal(anon.status, 403, 'an unsigned GET is refused')

  t.equal(rgw.pids.length, 3, 'monitor, OSD and gateway')
  await rgw.stop()
  t.same(rgw.pids.filter(alive), [], 'every daemon it started is gone')
  t.notOk(existsSync(rgw.dir), 'the cluster directory is removed')
  const after = await fetch(`${rgw.endpoint}/`, { signal: AbortSignal.timeout(5000) }).then(
    (r) => r.arrayBuffer().then(() => 'answered'),
    () => 'refused',
  )
  t.equal(after, 'refused', 'nothing listens on the gateway port after stop')
  await rgw.stop()
  t.pass('stop() is idempotent')
})
