// Programs the integration tests drive that may be missing on a fresh machine (dockerd, podman):
// installed from Debian's packages on demand when running as root, as test/install-deps.sh
// does for the rest, so a test can say exactly why it skipped instead of failing obscurely.

import { existsSync } from 'node:fs'
import { run } from './proc.js'

/** Path of a command on PATH (or in Debian's sbin/bin when PATH lacks them), or undefined. */
export async function which(cmd: string): Promise<string | undefined> {
  const r = await run('sh', ['-c', 'command -v "$1"', 'sh', cmd], { timeoutMs: 5000 })
  const p = r.stdout.trim()
  if (r.code === 0 && p !== '') return p
  return ['/usr/sbin', '/usr/bin', '/sbin', '/bin'].map((d) => `${d}/${cmd}`).find((f) => existsSync(f))
}

/**
 * Make sure `cmd` exists, installing Debian's `pkg` when it is missing and we are root.
 * Returns undefined when it is there, else why it is not.
 */
export async function ensureCommand(cmd: string, pkg: string): Promise<string | undefined> {
  if (await which(cmd)) return undefined
  if (process.getuid?.() !== 0) return `${cmd} is missing and installing ${pkg} needs root`
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' }
  // Test files run in parallel: wait for another one's apt-get instead of failing on the lock.
  const lock = ['-o', 'DPkg::Lock::Timeout=180']
  const install = () => run('apt-get', [...lock, 'install', '-y', '-qq', '--no-install-recommends', pkg], { env, timeoutMs: 240_000 })
  let r = await install()
  if (r.code !== 0) {
    await run('apt-get', [...lock, 'update', '-qq'], { env, timeoutMs: 120_000 })
    r = await install()
  }
  if (r.code !== 0) return `apt-get install ${pkg} failed (${r.code}): ${(r.stderr || r.stdout).trim().slice(-800)}`
  return (await which(cmd)) ? undefined : `${pkg} installed but ${cmd} is still not on PATH`
}
