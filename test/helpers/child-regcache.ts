// regcache as a separate process (`node dist/cli/main.js serve --config FILE`), for tests that
// must kill it hard (kill -9 mid-download) and start it again on the same data directory, and
// to run its other subcommands (fsck, history) against the same configuration file.

import { mkdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { stringify } from 'yaml'
import { freePort } from './ports.js'
import { makeTempDir, removeTempDir, run, spawnDaemon, waitUntil, type Daemon, type ExitInfo, type RunResult } from './proc.js'

/** The compiled CLI, next to this compiled helper (dist/test/helpers → dist/cli/main.js). */
export const REGCACHE_MAIN = fileURLToPath(new URL('../../cli/main.js', import.meta.url))

export interface ChildRegcacheOptions {
  /** name → upstream settings (url required), as in the config file. */
  upstreams: Record<string, Record<string, unknown>>
  defaultUpstream?: string
  /** Extra top-level keys (cache, shutdownGrace, …). */
  extra?: Record<string, unknown>
}

export interface ChildRegcache {
  url: string
  /** host:port, for image references and hosts.toml. */
  host: string
  port: number
  /** Temp dir holding the config file and the data directory. */
  dir: string
  dataDir: string
  configFile: string
  /** The current process (a new one after restart()). */
  daemon(): Daemon
  /** Parsed JSON log lines written to stdout so far, across restarts. */
  logs(): Record<string, any>[]
  /** SIGKILL: no shutdown code runs. Resolves when the process is gone. */
  kill9(): Promise<ExitInfo>
  /** Start a new process on the same config and data directory (the previous one must have exited). */
  restart(): Promise<void>
  /** Run another subcommand (fsck, history, …) with this instance's --config. */
  cli(args: string[], o?: { timeoutMs?: number }): Promise<RunResult>
  stop(): Promise<void>
}

/** The environment without the variables that would override the config file. */
function childEnv(): NodeJS.ProcessEnv {
  const env = { ...process.env }
  delete env.REGCACHE_LISTEN
  delete env.REGCACHE_DATA_DIR
  return env
}

export async function startChildRegcache(opts: ChildRegcacheOptions): Promise<ChildRegcache> {
  const dir = await makeTempDir()
  const dataDir = join(dir, 'data')
  const configFile = join(dir, 'config.yaml')
  const lines: Record<string, any>[] = []
  let daemon: Daemon | undefined
  try {
    await mkdir(dataDir)
    const port = await freePort()
    const host = `127.0.0.1:${port}`
    const url = `http://${host}`
    const doc = {
      listen: host,
      dataDir,
      logLevel: 'debug',
      defaultUpstream: opts.defaultUpstream ?? Object.keys(opts.upstreams)[0],
      upstreams: opts.upstreams,
      shutdownGrace: '2s',
      ...opts.extra,
    }
    await writeFile(configFile, stringify(doc))

    const start = async (): Promise<Daemon> => {
      const d = spawnDaemon(process.execPath, [REGCACHE_MAIN, 'serve', '--config', configFile], {
        cwd: dir,
        env: childEnv(),
        onLine(line) {
          try {
            lines.push(JSON.parse(line))
          } catch {
            lines.push({ msg: line, unparsed: true })
          }
        },
      })
      try {
        await waitUntil(
          'regcache (child process)',
          async () => {
            const res = await fetch(`${url}/v2/`, { signal: AbortSignal.timeout(2000) })
            await res.arrayBuffer()
            return res.status === 200
          },
          { daemon: d, timeoutMs: 20_000 },
        )
      } catch (e) {
        await d.stop(1000)
        throw e
      }
      return d
    }

    daemon = await start()
    let stopped = false
    return {
      url,
      host,
      port,
      dir,
      dataDir,
      configFile,
      daemon: () => daemon as Daemon,
      logs: () => [...lines],
      async kill9() {
        const d = daemon as Daemon
        if (!d.hasExited()) process.kill(d.pid, 'SIGKILL')
        return d.exited
      },
      async restart() {
        const d = daemon as Daemon
        if (!d.hasExited()) throw new Error('restart: the previous process is still running')
        daemon = await start()
      },
      cli(args, o = {}) {
        return run(process.execPath, [REGCACHE_MAIN, ...args, '--config', configFile], {
          cwd: dir,
          env: childEnv(),
          timeoutMs: o.timeoutMs ?? 60_000,
        })
      },
      async stop() {
        if (stopped) return
        stopped = true
        await daemon?.stop(3000)
        await removeTempDir(dir)
      },
    }
  } catch (e) {
    await daemon?.stop(1000)
    await removeTempDir(dir)
    throw e
  }
}
