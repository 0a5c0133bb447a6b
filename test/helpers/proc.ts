// Process and temp-dir plumbing shared by the daemon helpers (registry,
// containerd) and the CLI-driving helpers (skopeo, ctr).
import { spawn, type ChildProcess } from 'node:child_process'
import { existsSync, rmSync } from 'node:fs'
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createInterface } from 'node:readline'

const SETPRIV = '/usr/bin/setpriv'
const hasSetpriv = existsSync(SETPRIV)

// Anything still alive/on disk when node exits (a crashed or timed-out test
// that never reached its teardown) is cleaned up synchronously here, so one
// broken test cannot leave daemons holding ports for the next run.
const liveChildren = new Set<ChildProcess>()
const liveDirs = new Set<string>()
process.once('exit', () => {
  for (const c of liveChildren) {
    try {
      c.kill('SIGKILL')
    } catch {
      /* already gone */
    }
  }
  for (const d of liveDirs) {
    try {
      rmSync(d, { recursive: true, force: true })
    } catch {
      /* best effort */
    }
  }
})

export async function makeTempDir(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'regcache-test-'))
  liveDirs.add(dir)
  return dir
}

export async function removeTempDir(dir: string): Promise<void> {
  liveDirs.delete(dir)
  await rm(dir, { recursive: true, force: true, maxRetries: 3 })
}

/**
 * Starts something that lives in a fresh temp dir. `start` hands the daemon it spawns to `track`;
 * when `start` throws, that daemon is stopped and the dir removed, so a failed start leaves
 * nothing behind.
 */
export async function startInTempDir<T>(start: (dir: string, track: (d: Daemon) => Daemon) => Promise<T>): Promise<T> {
  const dir = await makeTempDir()
  let daemon: Daemon | undefined
  try {
    return await start(dir, (d) => (daemon = d))
  } catch (e) {
    await daemon?.stop()
    await removeTempDir(dir)
    throw e
  }
}

/**
 * Unmount whatever is still mounted below dir (overlay snapshots of a killed containerd, what a
 * failed debootstrap left), deepest first: rm of a mount point fails with EBUSY.
 */
export async function unmountUnder(dir: string): Promise<void> {
  const info = await readFile('/proc/self/mountinfo', 'utf8').catch(() => '')
  const points = info
    .split('\n')
    .map((l) => l.split(' ')[4])
    .filter((p): p is string => !!p && p.startsWith(dir + '/'))
    .sort((a, b) => b.length - a.length)
  for (const p of points) await run('umount', ['-l', p], { timeoutMs: 10_000 })
}

export interface ExitInfo {
  code: number | null
  signal: NodeJS.Signals | null
}

export interface Daemon {
  readonly pid: number
  /** Resolves when the process has exited, for whatever reason. */
  readonly exited: Promise<ExitInfo>
  /** True once the process has exited. */
  hasExited(): boolean
  /** Last lines of combined output, for error messages when startup fails. */
  tail(lines?: number): string
  /** SIGTERM, then SIGKILL after graceMs. Idempotent. */
  stop(graceMs?: number): Promise<ExitInfo>
}

export interface DaemonOptions {
  cwd?: string
  env?: NodeJS.ProcessEnv
  /** Called for every complete output line, in arrival order per stream. */
  onLine?: (line: string, stream: 'stdout' | 'stderr') => void
}

/**
 * Start a long-running child. When setpriv is available the child gets
 * PDEATHSIG=KILL so even a SIGKILLed test runner does not orphan it
 * (node's 'exit' hook above only covers orderly exits).
 */
export function spawnDaemon(cmd: string, args: string[], opts: DaemonOptions = {}): Daemon {
  const [file, argv] = hasSetpriv ? [SETPRIV, ['--pdeathsig', 'KILL', '--', cmd, ...args]] : [cmd, args]
  const child = spawn(file, argv, {
    cwd: opts.cwd,
    env: opts.env ?? process.env,
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  liveChildren.add(child)
  const recent: string[] = []
  let done: ExitInfo | undefined
  const exited = new Promise<ExitInfo>((resolve) => {
    child.once('error', (err) => {
      recent.push(`[spawn error] ${err.message}`)
      done = { code: -1, signal: null }
      liveChildren.delete(child)
      resolve(done)
    })
    child.once('exit', (code, signal) => {
      done = { code, signal }
      liveChildren.delete(child)
      resolve(done)
    })
  })
  for (const stream of ['stdout', 'stderr'] as const) {
    const rl = createInterface({ input: child[stream]!, crlfDelay: Infinity })
    rl.on('line', (line) => {
      recent.push(line)
      if (recent.length > 200) recent.shift()
      opts.onLine?.(line, stream)
    })
  }
  let stopping: Promise<ExitInfo> | undefined
  return {
    pid: child.pid ?? -1,
    exited,
    hasExited: () => done !== undefined,
    tail: (n = 30) => recent.slice(-n).join('\n'),
    stop(graceMs = 5000) {
      if (stopping) return stopping
      if (done) return (stopping = Promise.resolve(done))
      child.kill('SIGTERM')
      const timer = setTimeout(() => child.kill('SIGKILL'), graceMs)
      stopping = exited.finally(() => clearTimeout(timer))
      return stopping
    },
  }
}

export interface RunResult {
  code: number
  stdout: string
  stderr: string
  timedOut: boolean
}

export interface RunOptions {
  timeoutMs?: number
  env?: NodeJS.ProcessEnv
  cwd?: string
}

/**
 * Run a command to completion. Never rejects on a non-zero exit or timeout:
 * several tests assert on failures (e.g. a pull that must fail while the
 * cache is down), so the code is data, not an exception.
 */
export function run(cmd: string, args: string[], opts: RunOptions = {}): Promise<RunResult> {
  const timeoutMs = opts.timeoutMs ?? 60_000
  return new Promise((resolve) => {
    const child = spawn(cmd, args, { cwd: opts.cwd, env: opts.env ?? process.env, stdio: ['ignore', 'pipe', 'pipe'] })
    liveChildren.add(child)
    const out: Buffer[] = []
    const err: Buffer[] = []
    child.stdout.on('data', (b: Buffer) => out.push(b))
    child.stderr.on('data', (b: Buffer) => err.push(b))
    let timedOut = false
    const timer = setTimeout(() => {
      timedOut = true
      child.kill('SIGKILL')
    }, timeoutMs)
    const finish = (code: number, extraErr = '') => {
      clearTimeout(timer)
      liveChildren.delete(child)
      resolve({
        code,
        stdout: Buffer.concat(out).toString('utf8'),
        stderr: Buffer.concat(err).toString('utf8') + extraErr,
        timedOut,
      })
    }
    child.once('error', (e) => finish(-1, `\n[spawn error] ${e.message}`))
    // 'close' (not 'exit') so all output has been collected.
    child.once('close', (code) => finish(code ?? -1, timedOut ? `\n[killed after ${timeoutMs}ms timeout]` : ''))
  })
}

/** Like run(), but a non-zero exit is a programming/setup error in the helper. */
export async function runOk(cmd: string, args: string[], opts: RunOptions = {}): Promise<RunResult> {
  const r = await run(cmd, args, opts)
  if (r.code !== 0) {
    throw new Error(`${cmd} ${args.join(' ')} exited ${r.code}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`)
  }
  return r
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms))

/**
 * Poll until probe() returns true. If a daemon is given, fail fast with its
 * output when it dies instead of waiting out the whole timeout.
 */
export async function waitUntil(
  what: string,
  probe: () => Promise<boolean>,
  opts: { timeoutMs?: number; intervalMs?: number; daemon?: Daemon } = {},
): Promise<void> {
  const deadline = Date.now() + (opts.timeoutMs ?? 20_000)
  let lastErr: unknown
  for (;;) {
    if (opts.daemon?.hasExited()) {
      throw new Error(`${what}: process exited before becoming ready\n${opts.daemon.tail()}`)
    }
    try {
      if (await probe()) return
    } catch (e) {
      lastErr = e
    }
    if (Date.now() > deadline) {
      const detail = lastErr instanceof Error ? ` (last error: ${lastErr.message})` : ''
      throw new Error(`${what}: not ready after ${opts.timeoutMs ?? 20_000}ms${detail}\n${opts.daemon?.tail() ?? ''}`)
    }
    await sleep(opts.intervalMs ?? 50)
  }
}
