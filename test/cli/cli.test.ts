// The regcache command as a user runs it: defaults with no config, exit statuses, --help.

import { spawn } from 'node:child_process'
import { existsSync } from 'node:fs'
import { writeFile } from 'node:fs/promises'
import { join, resolve } from 'node:path'
import t from 'tap'
import { loadConfig } from '../../config/config.js'
import { ensureCommand } from '../helpers/packages.js'
import { makeTempDir, removeTempDir, run, runOk, waitUntil } from '../helpers/proc.js'

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

t.test('serve in a terminal (tmux): readable log lines, not JSON', async (t) => {
  const missing = await ensureCommand('tmux', 'tmux')
  if (missing) {
    t.comment(`skipped, tmux unavailable: ${missing}`)
    return
  }
  const cwd = await makeTempDir()
  t.teardown(() => removeTempDir(cwd))
  const socket = `regcache-serve-${process.pid}`
  const tmux = (...args: string[]) => runOk('tmux', ['-L', socket, ...args])
  await tmux('-f', '/dev/null', 'new-session', '-d', '-s', 'serve', '-x', '200', '-y', '40', '-c', cwd, '-e', 'REGCACHE_LISTEN=127.0.0.1:0', `${process.execPath} ${CLI} serve; echo "EXIT=$?"; sleep 600`)
  t.teardown(() => run('tmux', ['-L', socket, 'kill-server']))
  const screen = async () => (await tmux('capture-pane', '-p', '-t', 'serve')).stdout
  let text = ''
  await waitUntil('regcache listening', async () => (text = await screen()).includes('regcache listening'), { timeoutMs: 60_000, intervalMs: 200 })
  const line = text.split('\n').find((l) => l.includes('regcache listening')) ?? ''
  t.match(line, /^\[\d\d:\d\d:\d\d\.\d{3}\] INFO: regcache listening/, 'time, level and message first')
  t.notMatch(text, /^\{/m, 'no JSON lines')
  t.match(text, /url: "http:\/\/127\.0\.0\.1:\d+"/, 'fields follow, one per line')
  await tmux('send-keys', '-t', 'serve', 'C-c')
  await waitUntil('serve to stop', async () => /^EXIT=\d+$/m.test((text = await screen())), { timeoutMs: 60_000, intervalMs: 200 })
  t.match(text, /INFO: stopped/)
  t.match(text, /^EXIT=0$/m)
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
  for (const cmd of ['serve', 'history', 'fsck', 'client-config', 'warm', 'invalidate']) t.match(help.stdout, `regcache ${cmd}`)
  const unknown = await run(process.execPath, [CLI, 'frobnicate'])
  t.equal(unknown.code, 2)
  const badFlag = await run(process.execPath, [CLI, 'serve', '--nope'])
  t.equal(badFlag.code, 2)
})

t.test('each command has its own --help; the overview stays with regcache --help', async (t) => {
  const overview = (await run(process.execPath, [CLI, '--help'])).stdout
  t.match(overview, "Run 'regcache COMMAND --help'")
  const own: Record<string, RegExp[]> = {
    serve: [/^Usage: regcache serve /, /REGCACHE_LOG_FORMAT=json/, /shutdownGrace/],
    history: [/^Usage: regcache history IMAGE/, /--json/, /rollback_refused/],
    fsck: [/^Usage: regcache fsck/, /--repair/, /orphaned/],
    'client-config': [/^Usage: regcache client-config containerd\|docker\|podman --mirror URL/, /--no-fallback/, /hosts\.toml/],
    warm: [/^Usage: regcache warm /, /--from-kubernetes FILE/, /--from-file FILE/, /--concurrency N/, /kubectl get pods -A -o json/],
    invalidate: [/^Usage: regcache invalidate IMAGE/, /history is kept/],
  }
  const texts = new Set<string>()
  for (const [cmd, patterns] of Object.entries(own)) {
    for (const flag of ['--help', '-h']) {
      const r = await run(process.execPath, [CLI, cmd, flag])
      t.equal(r.code, 0, `${cmd} ${flag} exits 0`)
      t.equal(r.stderr, '')
      for (const p of patterns) t.match(r.stdout, p, `${cmd} ${flag}: ${p}`)
      t.not(r.stdout, overview, `${cmd} ${flag} is not the overview`)
      texts.add(r.stdout)
    }
    t.equal((await run(process.execPath, [CLI, 'help', cmd])).stdout, (await run(process.execPath, [CLI, cmd, '--help'])).stdout, `regcache help ${cmd}`)
    const bad = await run(process.execPath, [CLI, cmd, '--no-such-flag'])
    t.equal(bad.code, 2, `${cmd} with an unknown flag exits 2`)
    t.match(bad.stderr, new RegExp(`Usage: regcache ${cmd}`), `${cmd}: a bad flag prints that command's usage`)
  }
  t.equal(texts.size, Object.keys(own).length, 'one text per command')
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
