// The regcache command as a user runs it: defaults with no config, exit statuses, --help.

import { spawn } from 'node:child_process'
import { existsSync } from 'node:fs'
import { writeFile } from 'node:fs/promises'
import { join, resolve } from 'node:path'
import t from 'tap'
import { loadConfig } from '../../config/config.js'
import { makeTempDir, removeTempDir, run } from '../helpers/proc.js'

const CLI = resolve('dist/cli/main.js')

t.test('serve with no config: defaults, ./data, Docker Hub, graceful SIGTERM', async (t) => {
  const cwd = await makeTempDir()
  t.teardown(() => removeTempDir(cwd))
  // Port 0 so the test never collides; everything else is the built-in default.
  const child = spawn(process.execPath, [CLI, 'serve'], { cwd, env: { ...process.env, REGCACHE_LISTEN: '127.0.0.1:0' }, stdio: ['ignore', 'pipe', 'pipe'] })
  t.teardown(() => child.kill('SIGKILL'))
  let out = ''
  const listening = await new Promise<Record<string, any>>((resolveLine, reject) => {
    child.stdout.on('data', (c) => {
      out += c
      for (const line of out.split('\n')) {
        if (line.includes('regcache listening')) resolveLine(JSON.parse(line))
      }
    })
    child.once('exit', (code) => reject(new Error(`exited ${code}: ${out}`)))
  })
  t.same(listening.upstreams, ['docker.io=https://registry-1.docker.io'])
  t.equal(listening.defaultUpstream, 'docker.io')
  t.equal(listening.dataDir, join(cwd, 'data'))
  const res = await fetch(`${listening.url}/v2/`)
  t.equal(res.status, 200)
  t.equal(res.headers.get('docker-distribution-api-version'), 'registry/2.0')
  t.ok(existsSync(join(cwd, 'data', 'regcache.db')), 'database under ./data')
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)))
  child.kill('SIGTERM')
  t.equal(await exited, 0, 'SIGTERM exits 0')
})

t.test('invalid configuration: exit 2 naming the file and the key', async (t) => {
  const dir = await makeTempDir()
  t.teardown(() => removeTempDir(dir))
  const file = join(dir, 'bad.yaml')
  await writeFile(file, 'upstreams:\n  ghcr.io:\n    url: ftp://ghcr.io\ndefaultUpstream: quay.io\n')
  const r = await run(process.execPath, [CLI, 'serve', '--config', file])
  t.equal(r.code, 2)
  t.match(r.stderr, file)
  t.match(r.stderr, 'upstreams.ghcr.io.url')
  t.match(r.stderr, 'http:// or https://')
  const missing = await run(process.execPath, [CLI, 'serve', '--config', join(dir, 'nope.yaml')])
  t.equal(missing.code, 2)
  t.match(missing.stderr, 'cannot read the file')
})

t.test('usage', async (t) => {
  const help = await run(process.execPath, [CLI, '--help'])
  t.equal(help.code, 0)
  for (const cmd of ['serve', 'history', 'fsck', 'client-config']) t.match(help.stdout, `regcache ${cmd}`)
  const unknown = await run(process.execPath, [CLI, 'frobnicate'])
  t.equal(unknown.code, 2)
  const badFlag = await run(process.execPath, [CLI, 'serve', '--nope'])
  t.equal(badFlag.code, 2)
})

t.test('config.example.yaml is valid and documents the defaults', async (t) => {
  const example = loadConfig({ file: 'config.example.yaml', env: {} })
  const defaults = loadConfig({ env: {}, cwd: process.cwd() })
  t.same(example.upstreams, defaults.upstreams, 'the example upstream settings are the built-in defaults')
  t.same(example.listen, defaults.listen)
  t.equal(example.shutdownGraceMs, defaults.shutdownGraceMs)
  t.equal(example.logLevel, defaults.logLevel)
  t.equal(example.dataDir, defaults.dataDir)
})
