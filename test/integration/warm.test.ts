// regcache warm and invalidate, run as an operator would against a running mirror: in a pipe, with
// image lists and kubectl JSON, and in a real terminal (tmux) for the live display.

import { execFile, spawn } from 'node:child_process'
import { createHash } from 'node:crypto'
import { readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { promisify } from 'node:util'
import t from 'tap'
import { startForwarder } from '../helpers/forwarder.js'
import { buildImage, buildIndex, pushImage, type OciLayout } from '../helpers/images.js'
import { ensureCommand } from '../helpers/packages.js'
import { makeTempDir, removeTempDir, run, runOk, waitUntil } from '../helpers/proc.js'
import { startRegistry } from '../helpers/registry.js'
import { startRegcache } from '../helpers/regcache.js'

const exec = promisify(execFile)
const cli = (...args: string[]) => exec(process.execPath, ['dist/cli/main.js', ...args])

t.test('warm fills the cache ahead of a pull; invalidate forgets a tag', async (t) => {
  const reg = await startRegistry()
  t.teardown(reg.stop)
  const fwd = await startForwarder({ host: '127.0.0.1', port: reg.port })
  t.teardown(fwd.stop)
  const amd = await buildImage({ layers: 2, layerSize: 8192, arch: 'amd64' })
  const arm = await buildImage({ layers: 2, layerSize: 8192, arch: 'arm64' })
  const idx = await buildIndex([amd, arm])
  for (const x of [amd, arm, idx]) t.teardown(x.remove)
  await pushImage(idx, reg.host, 'library/multi:1')
  const rc = await startRegcache({ upstreams: { 'docker.io': { url: fwd.url } } })
  t.teardown(rc.stop)

  const { stdout } = await cli('warm', '--config', rc.configFile, '--mirror', rc.url, 'docker.io/library/multi:1')
  t.match(stdout, /warmed docker\.io\/library\/multi:1 .*1 manifest\(s\), 3 blobs/)
  const store = rc.storage.store
  for (const d of [idx.indexDigest, amd.manifestDigest, amd.configDigest, ...amd.layerDigests]) t.ok(await store.size(d), `${d.slice(0, 19)} cached`)
  t.equal(await store.size(arm.layerDigests[0]), undefined, 'other platforms left alone')

  await reg.settle()
  reg.resetRequests()
  await fwd.setMode('refuse', { dropExisting: true })
  const stale = await fetch(`${rc.url}/v2/library/multi/manifests/1`, { headers: { accept: 'application/vnd.oci.image.index.v1+json, */*' } })
  t.equal(stale.status, 200, 'warmed tag served during an outage')

  const inv = await cli('invalidate', '--config', rc.configFile, 'docker.io/library/multi:1')
  t.match(inv.stdout, /forgot docker\.io\/library\/multi:1/)
  const gone = await fetch(`${rc.url}/v2/library/multi/manifests/1`, { headers: { accept: 'application/vnd.oci.image.index.v1+json, */*' } })
  t.equal(gone.status, 503, 'an invalidated tag is not answered from cache')
  await fwd.setMode('pass')
})

// Runs the command with `input` on standard input and its output in pipes (not a terminal).
function cliWithInput(args: string[], input: string): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['dist/cli/main.js', ...args], { stdio: ['pipe', 'pipe', 'pipe'] })
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (c) => (stdout += c))
    child.stderr.on('data', (c) => (stderr += c))
    child.once('error', reject)
    child.once('close', (code) => resolve({ code, stdout, stderr }))
    child.stdin.end(input)
  })
}

const ESC = '\x1b'

t.test('warm for people: plain lines, --from-file, --from-kubernetes, the live display in a terminal', async (t) => {
  const reg = await startRegistry()
  t.teardown(reg.stop)
  const small = (arch = 'amd64') => buildImage({ layers: 1, layerSize: 4096, arch })
  const coredns = await small()
  const busybox = await small()
  const nginx = await buildImage({ layers: 2, layerSize: 4096 })
  const shipper = await small()
  const api = await small()
  const agentAmd = await small('amd64')
  const agentArm = await small('arm64')
  const agent = await buildIndex([agentAmd, agentArm])
  // Two releases of one application on the same base: the layers are shared, the configs differ.
  const appV1 = await buildImage({ layers: 2, layerSize: 4096, seed: 'shared-base', label: 'v1' })
  const appV2 = await buildImage({ layers: 2, layerSize: 4096, seed: 'shared-base', label: 'v2' })
  // Big enough that the throttled download below lasts a few seconds.
  const big = await buildImage({ layers: 3, layerSize: 1024 * 1024 })
  for (const x of [coredns, busybox, nginx, shipper, api, agentAmd, agentArm, agent, appV1, appV2, big]) t.teardown(x.remove)
  await pushImage(coredns, reg.host, 'coredns/coredns:v1.11.1')
  await pushImage(busybox, reg.host, 'library/busybox:1.36')
  await pushImage(nginx, reg.host, 'library/nginx:1.27')
  await pushImage(shipper, reg.host, 'acme/log-shipper:0.9')
  const apiDigest = (await pushImage(api, reg.host, 'acme/api:1.4')).digest
  await pushImage(agent, reg.host, 'acme/agent:2.0')
  await pushImage(big, reg.host, 'acme/big:1')
  await pushImage(appV1, reg.host, 'acme/app:1')
  await pushImage(appV2, reg.host, 'acme/app:2')
  // Both names lead to the one test registry; the images keep the names a cluster uses.
  const upstreams = { 'docker.io': { url: reg.url }, 'registry.k8s.io': { url: reg.url } }
  const blobsOf = (img: OciLayout) => [img.configDigest, ...img.layerDigests]
  const upstreamBlobGets = () => reg.requests({ method: 'GET', pathIncludes: '/blobs/' })

  await t.test('without a terminal: one plain line per image start and finish, --from-file, a summary, exit 1 when one fails', async (t) => {
    const rc = await startRegcache({ upstreams })
    t.teardown(rc.stop)
    const dir = await makeTempDir()
    t.teardown(() => removeTempDir(dir))
    const list = join(dir, 'images.txt')
    await writeFile(list, '# images for the rollout\n\nnginx:1.27\n  docker.io/library/nginx:1.27   # the same image, named in full\nlibrary/busybox:1.36\nacme/missing:1\n')
    const r = await run(process.execPath, ['dist/cli/main.js', 'warm', '--config', rc.configFile, '--mirror', rc.url, '--from-file', list])
    t.equal(r.code, 1, 'exit status 1: one image failed')
    t.notOk(r.stdout.includes(ESC) || r.stderr.includes(ESC), 'no ANSI escapes')
    const lines = r.stdout.trimEnd().split('\n')
    for (const name of ['nginx:1.27', 'library/busybox:1.36', 'acme/missing:1']) {
      t.equal(lines.filter((l) => l === `warming ${name}`).length, 1, `one start line for ${name}`)
      t.equal(lines.filter((l) => l.startsWith(`warmed ${name} `) || l.startsWith(`failed ${name}:`)).length, 1, `one finish line for ${name}`)
    }
    t.match(r.stdout, /^warmed nginx:1\.27 \(sha256:[0-9a-f]{64}\): 1 manifest\(s\), 3 blobs, \d+(\.\d+)? KiB in \d/m)
    t.match(r.stdout, /^failed acme\/missing:1: manifest 1: HTTP 404 MANIFEST_UNKNOWN/m)
    t.match(r.stdout, /^Summary: 3 image\(s\), 2 warmed, 1 failed; .* received in /m)
    t.match(r.stdout, /^ {2}ok {6}nginx:1\.27 +\d/m)
    t.match(r.stdout, /^ {2}ok {6}library\/busybox:1\.36 +\d/m)
    t.match(r.stdout, /^ {2}FAILED {2}acme\/missing:1 +manifest 1: HTTP 404/m)
    t.match(r.stderr, /regcache: warming acme\/missing:1 failed: manifest 1: HTTP 404/)
    for (const d of [...blobsOf(nginx), ...blobsOf(busybox)]) t.ok(await rc.storage.store.size(d), `${d.slice(0, 19)} cached`)

    await reg.settle()
    reg.resetRequests()
    const again = await run(process.execPath, ['dist/cli/main.js', 'warm', '--config', rc.configFile, '--mirror', rc.url, 'nginx:1.27', 'library/busybox:1.36'])
    t.equal(again.code, 0, 'exit status 0 when every image is warmed')
    t.match(again.stdout, /Summary: 2 image\(s\), 2 warmed, 0 failed/)
    await reg.settle()
    t.equal(upstreamBlobGets().length, 0, 'the second run is served from cache')
  })

  await t.test('layers shared by images of one repository are fetched once', async (t) => {
    const rc = await startRegcache({ upstreams })
    t.teardown(rc.stop)
    t.same(appV1.layerDigests, appV2.layerDigests, 'the two images share their layers')
    await reg.settle()
    reg.resetRequests()
    const r = await run(process.execPath, ['dist/cli/main.js', 'warm', '--config', rc.configFile, '--mirror', rc.url, '--concurrency', '2', 'acme/app:1', 'acme/app:2'])
    t.equal(r.code, 0, r.stderr)
    t.match(r.stdout, /^warmed acme\/app:1 .*: 1 manifest\(s\), 3 blobs/m)
    t.match(r.stdout, /^warmed acme\/app:2 .*: 1 manifest\(s\), 3 blobs/m)
    await reg.settle()
    const gets = upstreamBlobGets().map((x) => x.path)
    t.same(gets.sort(), [appV1.configDigest, appV2.configDigest, ...appV1.layerDigests].map((d) => `/v2/acme/app/blobs/${d}`).sort(), 'each blob once')
    for (const d of [...blobsOf(appV1), ...blobsOf(appV2)]) t.ok(await rc.storage.store.size(d), `${d.slice(0, 19)} cached`)
  })

  await t.test('--from-kubernetes - warms every distinct image a pods list runs, once', async (t) => {
    const rc = await startRegcache({ upstreams })
    t.teardown(rc.stop)
    await reg.settle()
    reg.resetRequests()
    const pods = (await readFile('test/fixtures/kubernetes/pods.json', 'utf8')).replaceAll('API_DIGEST', apiDigest)
    const r = await cliWithInput(['warm', '--config', rc.configFile, '--mirror', rc.url, '--from-kubernetes', '-'], pods)
    t.equal(r.code, 0, r.stderr)
    t.match(r.stdout, /^Summary: 6 image\(s\), 6 warmed, 0 failed/m)
    for (const name of ['registry.k8s.io/coredns/coredns:v1.11.1', 'busybox:1.36', 'nginx:1.27', 'docker.io/acme/log-shipper:0.9', `docker.io/acme/api:1.4@${apiDigest.slice(0, 19)}`, 'docker.io/acme/agent:2.0']) {
      t.match(r.stdout, new RegExp(`^ {2}ok {6}${name.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')} `, 'm'), `${name} warmed`)
    }
    const expected = new Map<string, string>()
    for (const [repo, img] of [
      ['coredns/coredns', coredns],
      ['library/busybox', busybox],
      ['library/nginx', nginx],
      ['acme/log-shipper', shipper],
      ['acme/api', api],
      ['acme/agent', agentArm],
    ] as const) {
      for (const d of blobsOf(img)) expected.set(`/v2/${repo}/blobs/${d}`, d)
    }
    const store = rc.storage.store
    for (const d of expected.values()) t.ok(await store.size(d), `${d.slice(0, 19)} cached`)
    for (const d of agentAmd.layerDigests) t.equal(await store.size(d), undefined, 'the agent pod is pinned to arm64: amd64 layers left alone')
    await reg.settle()
    const gets = upstreamBlobGets().map((x) => x.path)
    t.same([...new Set(gets)].sort(), [...expected.keys()].sort(), 'upstream asked for exactly the blobs of the distinct images')
    t.equal(gets.length, expected.size, 'each blob fetched from upstream once, duplicates and all')

    // A node pulling the same images now: every blob a cache hit, no upstream blob traffic.
    reg.resetRequests()
    for (const [path, digest] of expected) {
      const ns = path.startsWith('/v2/coredns/') ? 'registry.k8s.io' : 'docker.io'
      const res = await fetch(`${rc.url}${path}?ns=${ns}`)
      t.equal(res.status, 200)
      t.equal(createHash('sha256').update(Buffer.from(await res.arrayBuffer())).digest('hex'), digest.slice(7))
    }
    await reg.settle()
    t.equal(upstreamBlobGets().length, 0, 'pulls after warming cost upstream no blob GETs')
  })

  const noTmux = await ensureCommand('tmux', 'tmux')
  if (noTmux) console.error(`warm.test: terminal display skipped, tmux unavailable: ${noTmux}`)
  await t.test('in a terminal (tmux): live progress lines, then only the results and the summary', { skip: noTmux ? `tmux unavailable: ${noTmux}` : false }, async (t) => {
    const rc = await startRegcache({ upstreams })
    t.teardown(rc.stop)
    // Slow the mirror's answers so the download can be watched.
    const mirror = new URL(rc.url)
    const slow = await startForwarder({ host: mirror.hostname, port: Number(mirror.port) }, { bytesPerSecond: 256 * 1024 })
    t.teardown(slow.stop)
    const socket = `regcache-warm-${process.pid}`
    const tmux = (...args: string[]) => runOk('tmux', ['-L', socket, ...args])
    const command = `${process.execPath} dist/cli/main.js warm --config ${rc.configFile} --mirror ${slow.url} docker.io/acme/big:1 nginx:1.27; echo "EXIT=$?"; sleep 600`
    await tmux('-f', '/dev/null', 'new-session', '-d', '-s', 'warm', '-x', '150', '-y', '40', '-c', process.cwd(), command)
    t.teardown(() => run('tmux', ['-L', socket, 'kill-server']))
    const screen = async () => (await tmux('capture-pane', '-p', '-t', 'warm')).stdout
    const cursorVisible = async () => (await tmux('display-message', '-p', '-t', 'warm', '#{cursor_flag}')).stdout.trim() === '1'

    const progressLine = /^ {2}docker\.io\/acme\/big:1 +\[=*>? *\] \d+(\.\d+)? (B|KiB|MiB) \/ 3\.\d\d MiB {2}\d+(\.\d+)? (B|KiB|MiB)\/s {2}ETA (\d+\.\ds|\d+s|\d+m\d\ds|--)$/m
    let during = ''
    await waitUntil('a progress line for docker.io/acme/big:1', async () => progressLine.test((during = await screen())), { timeoutMs: 60_000, intervalMs: 100 })
    t.match(during, progressLine, 'bytes of total, rate and ETA')
    t.match(during, /^warming 2 image\(s\): \d done, 0 failed, \d in progress, \d waiting; .* received$/m, 'a status line')
    t.notOk(await cursorVisible(), 'the cursor is hidden while the display is live')

    let after = ''
    await waitUntil('warm to finish', async () => /^EXIT=\d+$/m.test((after = await screen())), { timeoutMs: 120_000, intervalMs: 200 })
    t.match(after, /^EXIT=0$/m)
    t.match(after, /^warmed docker\.io\/acme\/big:1 \(sha256:[0-9a-f]{64}\): 1 manifest\(s\), 4 blobs, 3\.\d\d MiB in /m, 'the finished image stays as one line')
    t.match(after, /^warmed nginx:1\.27 /m)
    t.match(after, /^Summary: 2 image\(s\), 2 warmed, 0 failed; 3\.\d\d MiB received in /m)
    t.match(after, /^ {2}ok {6}docker\.io\/acme\/big:1 +3\.\d\d MiB {2}4 blobs {2}sha256:/m)
    t.notMatch(after, /\[=*>? *\]/, 'no progress bar left behind')
    t.notMatch(after, /^warming 2 image\(s\)/m, 'no status line left behind')
    t.equal(after.split('\n').filter((l) => l.startsWith('warmed docker.io/acme/big:1')).length, 1, 'drawn in place: the image is not repeated')
    t.ok(await cursorVisible(), 'the cursor is shown again')
    for (const d of blobsOf(big)) t.ok(await rc.storage.store.size(d), `${d.slice(0, 19)} cached`)

    // Ctrl-C while the display is live: the live lines go, the cursor comes back, a summary says
    // what was done, exit status 130.
    await tmux('new-session', '-d', '-s', 'stop', '-x', '150', '-y', '40', '-c', process.cwd(), command.replace('nginx:1.27', ''))
    const stopScreen = async () => (await tmux('capture-pane', '-p', '-t', 'stop')).stdout
    await waitUntil('a progress line to interrupt', async () => progressLine.test(await stopScreen()), { timeoutMs: 60_000, intervalMs: 100 })
    await tmux('send-keys', '-t', 'stop', 'C-c')
    let stopped = ''
    await waitUntil('warm to stop', async () => /^EXIT=\d+$/m.test((stopped = await stopScreen())), { timeoutMs: 30_000, intervalMs: 100 })
    t.match(stopped, /^EXIT=130$/m)
    t.match(stopped, /^interrupted\nSummary: 1 image\(s\), 0 warmed, 1 failed/m)
    t.notMatch(stopped, /\[=*>? *\]/, 'no progress bar left behind')
    t.ok((await tmux('display-message', '-p', '-t', 'stop', '#{cursor_flag}')).stdout.trim() === '1', 'the cursor is shown again')
  })
})
