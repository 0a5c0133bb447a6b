// The servers under test, each a real separate process on 127.0.0.1 with its own temp dir:
// regcache (built from this working tree), distribution (Debian's docker-registry) in proxy
// mode, and nginx serving a file with sendfile. Every one is stopped by its stop(), and the
// test helpers' exit hook kills whatever a crash left behind.

import { mkdir, readFile, readdir, stat, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { stringify } from 'yaml'
import { freePort } from '../test/helpers/ports.js'
import { makeTempDir, removeTempDir, spawnDaemon, startInTempDir, waitUntil, type Daemon } from '../test/helpers/proc.js'
import { writeRegistryConfig } from '../test/helpers/registry-config.js'

export interface Server {
  name: string
  url: string
  host: string
  pid: number
  /** Storage directory (cache contents). */
  dataDir: string
  daemon: Daemon
  stop(): Promise<void>
}

async function v2Ready(url: string): Promise<boolean> {
  const res = await fetch(`${url}/v2/`, { signal: AbortSignal.timeout(2000), headers: { 'user-agent': 'regcache-bench/ready' } })
  await res.arrayBuffer()
  return res.status === 200
}

/** A server started in its own temp dir, once its /v2/ answers; stop() waits up to graceMs. */
async function v2Server(name: string, daemon: Daemon, port: number, dir: string, dataDir: string, graceMs: number): Promise<Server> {
  const url = `http://127.0.0.1:${port}`
  await waitUntil(name, () => v2Ready(url), { daemon, timeoutMs: 30_000 })
  return {
    name,
    url,
    host: `127.0.0.1:${port}`,
    pid: daemon.pid,
    dataDir,
    daemon,
    async stop() {
      await daemon.stop(graceMs)
      await removeTempDir(dir)
    },
  }
}

const REGCACHE_MAIN = fileURLToPath(new URL('../cli/main.js', import.meta.url))

export interface RegcacheProcOptions {
  upstreamUrl: string
  /** Write a V8 CPU profile into this directory when the process exits (node --cpu-prof). */
  cpuProfDir?: string
  label?: string
  /** More top-level configuration keys (storage, ...). */
  extra?: Record<string, unknown>
  /** Environment variables beside the bench's own (REGCACHE_SENDFILE). */
  env?: Record<string, string>
}

/** `node dist/cli/main.js serve --config FILE`, as an operator would run it. */
export async function startRegcacheProc(opts: RegcacheProcOptions): Promise<Server> {
  return startInTempDir(async (dir, track) => {
    const port = await freePort()
    const dataDir = join(dir, 'data')
    const configFile = join(dir, 'config.yaml')
    await writeFile(
      configFile,
      stringify({
        listen: `127.0.0.1:${port}`,
        dataDir,
        logLevel: 'warn',
        defaultUpstream: 'docker.io',
        upstreams: { 'docker.io': { url: opts.upstreamUrl, revalidate: { timeout: '2s', minInterval: 0 } } },
        ...opts.extra,
      }),
    )
    const nodeArgs: string[] = []
    if (opts.cpuProfDir) {
      await mkdir(opts.cpuProfDir, { recursive: true })
      nodeArgs.push('--cpu-prof', '--cpu-prof-dir', opts.cpuProfDir, '--cpu-prof-name', `regcache-${opts.label ?? 'run'}-${process.hrtime.bigint()}.cpuprofile`)
    }
    const env = opts.env ? { ...process.env, ...opts.env } : undefined
    const daemon = track(spawnDaemon(process.execPath, [...nodeArgs, REGCACHE_MAIN, 'serve', '--config', configFile], { cwd: dir, env }))
    // Graceful (SIGTERM) so a --cpu-prof profile gets written; shutdownGrace bounds it.
    return v2Server('regcache', daemon, port, dir, dataDir, 35_000)
  })
}

/** Debian's docker-registry with `proxy: remoteurl:` — distribution's pull-through cache. */
export async function startDistributionProxy(upstreamUrl: string): Promise<Server> {
  return startInTempDir(async (dir, track) => {
    const port = await freePort()
    const dataDir = join(dir, 'data')
    await mkdir(dataDir)
    // Logging kept quiet (warn level, no access log) like regcache's `logLevel: warn`, so
    // neither side pays for a log line per request.
    const configPath = await writeRegistryConfig(dir, {
      addr: `127.0.0.1:${port}`,
      rootDir: dataDir,
      accessLog: false,
      proxyRemoteUrl: upstreamUrl,
    })
    const daemon = track(spawnDaemon('docker-registry', ['serve', configPath], { cwd: dir }))
    return v2Server('distribution-proxy', daemon, port, dir, dataDir, 5000)
  })
}

/** Size of the blob distribution has committed to its storage, or undefined. */
export async function distributionBlobSize(dataDir: string, digest: string): Promise<number | undefined> {
  const hex = digest.slice('sha256:'.length)
  try {
    return (await stat(join(dataDir, 'docker/registry/v2/blobs/sha256', hex.slice(0, 2), hex, 'data'))).size
  } catch {
    return undefined
  }
}

export interface Nginx extends Server {
  /** URL of the served file. */
  fileUrl: string
}

/** Stops nginx; if the master had to be killed its workers would outlive it (still listening). */
async function stopWithWorkers(master: Daemon): Promise<void> {
  const workers = await childrenOf(master.pid)
  await master.stop(5000)
  for (const w of workers) {
    try {
      process.kill(w, 'SIGKILL')
    } catch {
      /* already gone */
    }
  }
}

/**
 * Debian's nginx serving one file from disk with sendfile: the "how fast can this machine hand
 * a cached file to a client over loopback HTTP" baseline. Workers as Debian ships it
 * (worker_processes auto).
 */
export async function startNginx(fileDir: string, fileName: string): Promise<Nginx> {
  const dir = await makeTempDir()
  let daemon: Daemon | undefined
  try {
    const port = await freePort()
    const p = (s: string) => join(dir, s)
    for (const t of ['body', 'proxy', 'fastcgi', 'uwsgi', 'scgi']) await mkdir(p(t))
    const conf = `
daemon off;
worker_processes auto;
pid ${p('nginx.pid')};
error_log ${p('error.log')} warn;
events { worker_connections 1024; }
http {
  access_log ${p('access.log')};
  client_body_temp_path ${p('body')};
  proxy_temp_path ${p('proxy')};
  fastcgi_temp_path ${p('fastcgi')};
  uwsgi_temp_path ${p('uwsgi')};
  scgi_temp_path ${p('scgi')};
  default_type application/octet-stream;
  sendfile on;
  tcp_nopush on;
  keepalive_timeout 30s;
  server {
    listen 127.0.0.1:${port};
    root ${fileDir};
    location / { }
  }
}
`
    await writeFile(p('nginx.conf'), conf)
    // -e: the error log before the config is read (else /var/log/nginx/error.log).
    daemon = spawnDaemon('/usr/sbin/nginx', ['-p', dir, '-c', p('nginx.conf'), '-e', p('error.log')], { cwd: dir })
    const url = `http://127.0.0.1:${port}`
    const fileUrl = `${url}/${fileName}`
    await waitUntil(
      'nginx',
      async () => {
        const res = await fetch(fileUrl, { method: 'HEAD', signal: AbortSignal.timeout(2000) })
        if (res.status === 403) throw new Error(`nginx cannot read ${fileDir}/${fileName} (403)`)
        return res.status === 200
      },
      { daemon, timeoutMs: 20_000 },
    )
    const d = daemon
    return {
      name: 'nginx',
      url,
      fileUrl,
      host: `127.0.0.1:${port}`,
      pid: d.pid,
      dataDir: fileDir,
      daemon: d,
      async stop() {
        await stopWithWorkers(d)
        await removeTempDir(dir)
      },
    }
  } catch (e) {
    if (daemon) await stopWithWorkers(daemon)
    await removeTempDir(dir)
    throw e
  }
}

/** Pids whose parent is `pid`. */
export async function childrenOf(pid: number): Promise<number[]> {
  const out: number[] = []
  for (const name of await readdir('/proc').catch(() => [] as string[])) {
    if (!/^\d+$/.test(name)) continue
    const stat = await readFile(`/proc/${name}/stat`, 'utf8').catch(() => '')
    // pid (comm) state ppid ...: comm may contain spaces, so split after the last ')'.
    const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1])
    if (ppid === pid) out.push(Number(name))
  }
  return out
}
