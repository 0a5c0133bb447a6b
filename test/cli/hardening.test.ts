// The regcache command at its edges: a data directory it cannot create, a port already taken,
// an unknown REGCACHE_SENDFILE, the permissions of what it creates, and `history` writing into a pipe that closed early.

import { spawn } from 'node:child_process'
import { statSync } from 'node:fs'
import { writeFile } from 'node:fs/promises'
import { createServer } from 'node:net'
import { join, resolve } from 'node:path'
import t, { type Test } from 'tap'

import { stringify } from 'yaml'
import { makeTempDir, removeTempDir, run } from '../helpers/proc.js'

const CLI = resolve('dist/cli/main.js')

/** One line on stderr, naming the problem, and no stack trace. */
function oneClearLine(t: Test, stderr: string, about: RegExp): void {
  const lines = stderr.trim().split('\n')
  t.equal(lines.length, 1, `one line on stderr: ${JSON.stringify(stderr)}`)
  t.match(lines[0], /^regcache: /)
  t.match(lines[0], about)
  t.notMatch(stderr, /\n\s+at /, 'no stack trace')
}

async function configFile(dir: string, doc: Record<string, unknown>): Promise<string> {
  const file = join(dir, 'config.yaml')
  await writeFile(file, stringify({ listen: '127.0.0.1:0', logLevel: 'warn', ...doc }))
  return file
}

t.test('a data directory that cannot be created: one clear line, exit 1', async (t) => {
  const dir = await makeTempDir()
  t.teardown(() => removeTempDir(dir))
  // A file where a directory should be (root ignores permission bits, so this is the portable case).
  await writeFile(join(dir, 'blocker'), 'not a directory')
  const dataDir = join(dir, 'blocker', 'data')
  const r = await run(process.execPath, [CLI, 'serve', '--config', await configFile(dir, { dataDir })])
  t.equal(r.code, 1)
  oneClearLine(t, r.stderr, /cannot create the data directory .*blocker\/data: .*ENOTDIR/)
})

t.test('a port already in use: one clear line, exit 1', async (t) => {
  const dir = await makeTempDir()
  t.teardown(() => removeTempDir(dir))
  const taken = createServer()
  await new Promise<void>((r) => taken.listen(0, '127.0.0.1', () => r()))
  t.teardown(() => new Promise<void>((r) => taken.close(() => r())))
  const port = (taken.address() as { port: number }).port
  const r = await run(process.execPath, [CLI, 'serve', '--config', await configFile(dir, { dataDir: join(dir, 'data'), listen: `127.0.0.1:${port}` })])
  t.equal(r.code, 1)
  oneClearLine(t, r.stderr, new RegExp(`cannot listen on 127\\.0\\.0\\.1:${port}: address already in use`))
})

t.test('an unknown REGCACHE_SENDFILE: one clear line, exit 2, nothing created', async (t) => {
  const dir = await makeTempDir()
  t.teardown(() => removeTempDir(dir))
  const dataDir = join(dir, 'data')
  const r = await run(process.execPath, [CLI, 'serve', '--config', await configFile(dir, { dataDir })], { env: { ...process.env, REGCACHE_SENDFILE: 'sendfile' } })
  t.equal(r.code, 2)
  oneClearLine(t, r.stderr, /REGCACHE_SENDFILE="sendfile": expected copy \(the default\), kernel or off/)
  t.throws(() => statSync(dataDir), { code: 'ENOENT' }, 'no data directory created')
})

t.test('the data directory is 0700 and its files 0600, whatever the umask; history into a closed pipe exits quietly', async (t) => {
  const dir = await makeTempDir()
  t.teardown(() => removeTempDir(dir))
  const dataDir = join(dir, 'nested', 'data')
  const config = await configFile(dir, { dataDir, logLevel: 'info' })
  // A permissive umask in the parent must not leak into what regcache creates.
  const child = spawn('sh', ['-c', `umask 000; exec "${process.execPath}" "${CLI}" serve --config "${config}"`], { stdio: ['ignore', 'pipe', 'pipe'] })
  t.teardown(() => child.kill('SIGKILL'))
  let out = ''
  await new Promise<void>((ready, reject) => {
    child.stdout.on('data', (c) => {
      out += c
      if (out.includes('regcache listening')) ready()
    })
    child.stderr.on('data', (c) => (out += c))
    child.once('exit', (code) => reject(new Error(`exited ${code}: ${out}`)))
  })
  const mode = (p: string) => statSync(p).mode & 0o777
  t.equal(mode(dataDir).toString(8), '700', 'data directory')
  t.equal(mode(join(dataDir, 'regcache.db')).toString(8), '600', 'database')
  for (const sub of ['blobs']) t.equal(mode(join(dataDir, sub)).toString(8), '700', sub)
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)))
  child.kill('SIGTERM')
  t.equal(await exited, 0)

  // `true` exits at once, so every write of history meets a closed pipe (EPIPE).
  const piped = await run('bash', ['-c', `set -o pipefail; "${process.execPath}" "${CLI}" history --config "${config}" docker.io/library/alpine:latest | true`])
  t.equal(piped.code, 0, 'exit 0 when the reader went away')
  t.equal(piped.stderr, '', 'nothing on stderr')
  const pipedJson = await run('bash', ['-c', `set -o pipefail; "${process.execPath}" "${CLI}" history --json --config "${config}" docker.io/library/alpine:latest | head -c 1 >/dev/null`])
  t.equal(pipedJson.code, 0)
  t.equal(pipedJson.stderr, '')
})
