// A private Docker daemon (its own data root, exec root, socket and managed containerd under a
// temp dir), so a test can pull through regcache with Docker's classic image store exactly as a
// node configured with `registry-mirrors` does. Never touches /var/lib/docker or /run/docker.sock.

import { existsSync } from 'node:fs'
import { readFile } from 'node:fs/promises'
import { dirname, join } from 'node:path'
import { which } from './packages.js'
import { makeTempDir, removeTempDir, run, spawnDaemon, waitUntil, type Daemon, type RunResult } from './proc.js'

export interface Dockerd {
  socket: string
  /** Run the docker CLI against this daemon; never throws. */
  docker(args: string[], timeoutMs?: number): Promise<RunResult>
  /** Last lines of dockerd's own output. */
  tail(lines?: number): string
  stop(): Promise<void>
}

export interface DockerdOptions {
  /** daemon.json for --config-file (e.g. from `regcache client-config docker`). */
  configFile?: string
  extraArgs?: string[]
}

export async function startDockerd(opts: DockerdOptions = {}): Promise<Dockerd> {
  const dockerdPath = await which('dockerd')
  if (!dockerdPath) throw new Error('dockerd is not installed')
  // The CLI shipped beside the daemon matches its API version; any docker CLI negotiates down.
  const sibling = join(dirname(dockerdPath), 'docker')
  const cli = existsSync(sibling) ? sibling : 'docker'
  const dir = await makeTempDir()
  const socket = join(dir, 'docker.sock')
  const args = [
    '--data-root', join(dir, 'data'),
    '--exec-root', join(dir, 'exec'),
    '--pidfile', join(dir, 'docker.pid'),
    '-H', `unix://${socket}`,
    '--storage-driver', 'vfs',
    '--iptables=false',
    '--ip6tables=false',
    '--ip-masq=false',
    '--bridge', 'none',
    ...(opts.configFile ? ['--config-file', opts.configFile] : []),
    ...(opts.extraArgs ?? []),
  ]
  let daemon: Daemon | undefined
  // The CLI writes ~/.docker otherwise.
  const cliEnv: NodeJS.ProcessEnv = { ...process.env, DOCKER_CONFIG: join(dir, 'cli-config'), DOCKER_HOST: `unix://${socket}` }
  delete cliEnv.DOCKER_CONTEXT
  const docker = (a: string[], timeoutMs = 60_000) => run(cli, ['-H', `unix://${socket}`, ...a], { env: cliEnv, timeoutMs })
  try {
    daemon = spawnDaemon(dockerdPath, args, { cwd: dir })
    const d = daemon
    await waitUntil('dockerd', async () => (await docker(['version', '--format', '{{.Server.Version}}'], 5000)).code === 0, {
      daemon: d,
      timeoutMs: 45_000,
      intervalMs: 250,
    })
    return {
      socket,
      docker,
      tail: (n) => d.tail(n),
      async stop() {
        await d.stop(15_000)
        // A dockerd killed before its managed containerd leaves that one running (ours: its args name our dir).
        const pid = Number((await readFile(join(dir, 'exec', 'containerd', 'containerd.pid'), 'utf8').catch(() => '')).trim())
        const cmdline = pid > 0 ? await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '') : ''
        if (cmdline.includes(dir)) {
          try {
            process.kill(pid, 'SIGKILL')
          } catch {
            /* already gone */
          }
        }
        await removeTempDir(dir)
      },
    }
  } catch (e) {
    const tail = daemon?.tail(60) ?? ''
    await daemon?.stop(5000)
    await removeTempDir(dir)
    throw Object.assign(new Error(`${(e as Error).message}\n--- dockerd output ---\n${tail}`), { dockerdTail: tail })
  }
}
