// A private containerd (own root, state and socket under a temp dir) so tests
// can pull through regcache with the same client code real nodes use,
// configured through hosts.toml mirrors exactly as operators would.
import { mkdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { makeTempDir, removeTempDir, run, spawnDaemon, unmountUnder, waitUntil, type Daemon, type RunResult } from './proc.js'

export const CTR_NAMESPACE = 'regcache-test'

export interface PullOptions {
  /** Directory holding `<host>/hosts.toml` (see writeHostsToml). */
  hostsDir: string
  platform?: string
  allPlatforms?: boolean
  /** ctr --plain-http: default scheme for hosts without an explicit one. */
  plainHttp?: boolean
  /** ctr --user `name:password`: answered to a registry's (or mirror's) Basic challenge. */
  user?: string
  timeoutMs?: number
}

export interface PullResult {
  code: number
  stdout: string
  stderr: string
  timedOut: boolean
}

export interface CtrImage {
  ref: string
  mediaType: string
  digest: string
}

export interface Containerd {
  /** gRPC unix socket. */
  address: string
  /** containerd root (content store, metadata, snapshots). */
  root: string
  /** ctr namespace every helper command uses. */
  namespace: string
  /** Run any ctr subcommand against this daemon and namespace; never throws. */
  ctr(args: string[], timeoutMs?: number): Promise<RunResult>
  /** `ctr images pull`; a failed pull is reported through `code`, not thrown. */
  pull(ref: string, opts: PullOptions): Promise<PullResult>
  images(): Promise<CtrImage[]>
  /** Target digest of a pulled image (manifest or index). Throws if absent. */
  imageDigest(ref: string): Promise<string>
  removeImage(ref: string): Promise<void>
  contentDigests(): Promise<string[]>
  /** Drop every image and blob so the next pull must fetch everything again. */
  removeAllContent(): Promise<void>
  stop(): Promise<void>
}

function configToml(dir: string, sock: string): string {
  const q = JSON.stringify // TOML basic strings accept JSON string escapes
  return `version = 2
root = ${q(join(dir, 'root'))}
state = ${q(join(dir, 'state'))}
# CRI would start a CNI/stream server; the exotic snapshotters only log
# probe errors; opt wants to write /opt/containerd. None are needed to pull.
disabled_plugins = [
  "io.containerd.grpc.v1.cri",
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.internal.v1.opt",
]

[grpc]
  address = ${q(sock)}

# Explicit so two daemons (parallel test files) never share the default
# /run/containerd/containerd.sock.ttrpc.
[ttrpc]
  address = ${q(sock + '.ttrpc')}

[debug]
  address = ""
  level = "info"

[metrics]
  address = ""
`
}

export async function startContainerd(): Promise<Containerd> {
  const dir = await makeTempDir()
  const address = join(dir, 'containerd.sock')
  const root = join(dir, 'root')
  let daemon: Daemon | undefined
  try {
    const configPath = join(dir, 'config.toml')
    await writeFile(configPath, configToml(dir, address))
    daemon = spawnDaemon('containerd', ['--config', configPath], { cwd: dir })
    const ctr = (args: string[], timeoutMs = 30_000) =>
      run('ctr', ['--address', address, '--namespace', CTR_NAMESPACE, ...args], { timeoutMs })
    const ctrOk = async (args: string[], timeoutMs = 30_000) => {
      const r = await ctr(args, timeoutMs)
      if (r.code !== 0) throw new Error(`ctr ${args.join(' ')} exited ${r.code}: ${r.stderr}`)
      return r
    }
    await waitUntil('containerd', async () => (await ctr(['version'], 5000)).code === 0, { daemon, timeoutMs: 30_000 })

    const images = async (): Promise<CtrImage[]> => {
      const r = await ctrOk(['images', 'ls'])
      // Columns: REF TYPE DIGEST SIZE PLATFORMS LABELS (tabwriter-aligned).
      return r.stdout
        .split('\n')
        .slice(1)
        .map((l) => l.trim().split(/\s+/))
        .filter((cols) => cols.length >= 3 && cols[2]!.startsWith('sha256:'))
        .map(([ref, mediaType, digest]) => ({ ref: ref!, mediaType: mediaType!, digest: digest! }))
    }
    const contentDigests = async () =>
      (await ctrOk(['content', 'ls', '-q'])).stdout.split('\n').filter((l) => l.startsWith('sha256:'))

    const d = daemon
    return {
      address,
      root,
      namespace: CTR_NAMESPACE,
      ctr,
      async pull(ref, opts) {
        const args = ['images', 'pull', '--hosts-dir', opts.hostsDir]
        if (opts.plainHttp) args.push('--plain-http')
        if (opts.user !== undefined) args.push('--user', opts.user)
        if (opts.allPlatforms) args.push('--all-platforms')
        else if (opts.platform) args.push('--platform', opts.platform)
        args.push(ref)
        const r = await ctr(args, opts.timeoutMs ?? 60_000)
        return { code: r.code, stdout: r.stdout, stderr: r.stderr, timedOut: r.timedOut }
      },
      images,
      async imageDigest(ref) {
        const img = (await images()).find((i) => i.ref === ref)
        if (!img) throw new Error(`containerd has no image ${ref}`)
        return img.digest
      },
      async removeImage(ref) {
        // --sync waits for GC so the content is really gone when this returns.
        await ctrOk(['images', 'rm', '--sync', ref])
      },
      contentDigests,
      async removeAllContent() {
        const refs = (await images()).map((i) => i.ref)
        if (refs.length) await ctrOk(['images', 'rm', '--sync', ...refs])
        const left = await contentDigests()
        if (left.length) await ctrOk(['content', 'rm', ...left])
      },
      async stop() {
        await d.stop(10_000)
        await unmountUnder(dir)
        await removeTempDir(dir)
      },
    }
  } catch (e) {
    await daemon?.stop()
    await unmountUnder(dir)
    await removeTempDir(dir)
    throw e
  }
}

export interface HostsTomlOptions {
  /** CA bundle path for an https mirror. */
  ca?: string
  skipVerify?: boolean
  /**
   * Fallback upstream. Without it containerd falls back to the registry host
   * itself (plain http for loopback hosts), which can hide a broken mirror:
   * point it at the mirror too, or at a dead port, when a test must prove the
   * mirror served the pull.
   */
  server?: string
  /** Use the mirror URL path as-is instead of appending /v2. */
  overridePath?: boolean
  capabilities?: Array<'pull' | 'resolve' | 'push'>
}

/**
 * Write DIR/<registryHost>/hosts.toml. registryHost is the host part of the
 * image reference ('docker.io', '127.0.0.1:5000'), or '_default'.
 */
export async function writeHostsToml(
  dir: string,
  registryHost: string,
  mirrorUrl: string,
  opts: HostsTomlOptions = {},
): Promise<string> {
  const q = JSON.stringify
  const lines: string[] = []
  if (opts.server) lines.push(`server = ${q(opts.server)}`, '')
  lines.push(`[host.${q(mirrorUrl)}]`)
  lines.push(`  capabilities = ${q(opts.capabilities ?? ['pull', 'resolve'])}`)
  if (opts.skipVerify !== undefined) lines.push(`  skip_verify = ${opts.skipVerify}`)
  if (opts.ca) lines.push(`  ca = ${q(opts.ca)}`)
  if (opts.overridePath) lines.push('  override_path = true')
  const hostDir = join(dir, registryHost)
  await mkdir(hostDir, { recursive: true })
  const file = join(hostDir, 'hosts.toml')
  await writeFile(file, lines.join('\n') + '\n')
  return file
}
