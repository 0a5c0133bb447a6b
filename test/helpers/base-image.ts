// A stand-in for node:20-bookworm-slim, made on this machine because no registry can be reached:
// a minimal Debian root filesystem (debootstrap --variant=minbase, from this machine's own Debian
// mirror and release) with this machine's Node.js copied in where the official image has it
// (/usr/local/bin/node, npm under /usr/local/lib/node_modules, headers in /usr/local/include/node).
// Like the official slim image it has apt-get but no python3/make/g++, and dpkg leaves out docs,
// man pages and translations, so the Dockerfile's own install path is exercised.
//
// The tarball is cached under os.tmpdir()/regcache-image-cache/, keyed by Debian release,
// architecture, Node.js version and this recipe's version, so only the first run pays for it.

import { existsSync } from 'node:fs'
import { chmod, cp, mkdir, readdir, readFile, realpath, rename, rm, stat, symlink, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { ensureCommand, which } from './packages.js'
import { makeTempDir, removeTempDir, run, runOk, unmountUnder } from './proc.js'
import type { Dockerd } from './dockerd.js'

/** Bump when the recipe below changes, so cached tarballs are rebuilt. */
const RECIPE = 2

export const BASE_PATH_ENV = 'PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'

export interface BaseTarball {
  path: string
  cached: boolean
  /** Debian mirror the rootfs (and its apt sources) came from. */
  mirror: string
  suite: string
}

async function osRelease(): Promise<Record<string, string>> {
  const text = await readFile('/etc/os-release', 'utf8').catch(() => '')
  return Object.fromEntries(
    text
      .split('\n')
      .map((l) => /^([A-Z_]+)=(.*)$/.exec(l))
      .filter((m): m is RegExpExecArray => !!m)
      .map((m) => [m[1]!, m[2]!.replace(/^"(.*)"$/, '$1')]),
  )
}

/**
 * This machine's Debian mirror for `suite`: the first enabled apt source (one-line .list or
 * deb822 .sources) with a `deb` entry for exactly that suite.
 */
export async function debianMirror(suite: string): Promise<string> {
  const files = ['/etc/apt/sources.list']
  const d = '/etc/apt/sources.list.d'
  for (const f of (await readdir(d).catch(() => [] as string[])).sort()) {
    if (f.endsWith('.list') || f.endsWith('.sources')) files.push(join(d, f))
  }
  for (const f of files) {
    const text = await readFile(f, 'utf8').catch(() => '')
    if (f.endsWith('.sources')) {
      for (const block of text.split(/\n\s*\n/)) {
        const field = (k: string) =>
          (new RegExp(`^${k}:\\s*(.*)$`, 'mi').exec(block.split('\n').filter((l) => !l.startsWith('#')).join('\n'))?.[1] ?? '').trim()
        if (/^(no|false)$/i.test(field('Enabled'))) continue
        if (!field('Types').split(/\s+/).includes('deb')) continue
        if (!field('Suites').split(/\s+/).includes(suite)) continue
        const uri = field('URIs').split(/\s+/)[0]
        if (uri) return uri
      }
    } else {
      for (const line of text.split('\n')) {
        const m = /^\s*deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+(\S+)/.exec(line)
        if (m && m[2] === suite) return m[1]!
      }
    }
  }
  return 'http://deb.debian.org/debian'
}

function cacheDir(): string {
  return join(tmpdir(), 'regcache-image-cache')
}

/** Where this machine's npm lives (the package directory holding bin/npm-cli.js). */
async function npmDir(): Promise<string> {
  const npm = await which('npm')
  if (npm) {
    const real = await realpath(npm)
    const dir = dirname(dirname(real))
    if (existsSync(join(dir, 'bin', 'npm-cli.js'))) return dir
  }
  const beside = join(dirname(dirname(process.execPath)), 'lib', 'node_modules', 'npm')
  if (existsSync(join(beside, 'bin', 'npm-cli.js'))) return beside
  throw new Error('cannot find npm on this machine (looked at `which npm` and beside node)')
}

const DPKG_SLIM = `# As in Debian's slim images (node:*-slim is one): no docs, man pages or translations.
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
`

// What Debian's official images configure (debuerreotype): no .deb files left in a layer.
const APT_CLEAN = `DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
`

/** Why the base image cannot be made on this machine, or undefined when it can. */
export async function baseImageUnsupported(): Promise<string | undefined> {
  const rel = await osRelease()
  if (rel.ID !== 'debian' || !rel.VERSION_CODENAME) return `this machine is not Debian (${rel.PRETTY_NAME ?? 'no /etc/os-release'}): the base image recipe uses debootstrap with its own release`
  if (process.getuid?.() !== 0) return 'making the base image needs root (debootstrap, chroot)'
  return undefined
}

/**
 * The base root filesystem as a tar file (built on the first call on this machine, then cached).
 * Needs root and Debian's debootstrap (installed on demand).
 */
export async function baseImageTarball(log: (msg: string) => void = () => {}): Promise<BaseTarball> {
  const rel = await osRelease()
  if (rel.ID !== 'debian' || !rel.VERSION_CODENAME) throw new Error(`this machine is not Debian (${rel.PRETTY_NAME ?? 'unknown'}): no debootstrap recipe`)
  const suite = rel.VERSION_CODENAME
  const arch = (await runOk('dpkg', ['--print-architecture'])).stdout.trim()
  const mirror = await debianMirror(suite)
  const npm = await npmDir()
  const npmVersion = JSON.parse(await readFile(join(npm, 'package.json'), 'utf8')).version as string
  const file = join(cacheDir(), `base-${suite}-${arch}-node-${process.version}-npm-${npmVersion}-r${RECIPE}.tar`)
  if (existsSync(file) && (await stat(file)).size > 0) return { path: file, cached: true, mirror, suite }

  if (process.getuid?.() !== 0) throw new Error('building the base image needs root (debootstrap, chroot)')
  const missing = await ensureCommand('debootstrap', 'debootstrap')
  if (missing) throw new Error(`debootstrap unavailable: ${missing}`)
  const nodeBin = await realpath(process.execPath)
  const prefix = dirname(dirname(nodeBin))
  const headers = join(prefix, 'include', 'node')
  if (!existsSync(join(headers, 'node.h'))) {
    // Without them node-gyp downloads headers from nodejs.org, which closed networks cannot reach.
    throw new Error(`no Node.js headers at ${headers}: better-sqlite3 could not be compiled offline`)
  }

  const work = await makeTempDir()
  const root = join(work, 'rootfs')
  const part = `${file}.${process.pid}.part`
  try {
    log(`debootstrap --variant=minbase ${suite} (${arch}) from ${mirror}`)
    const boot = await run('debootstrap', ['--variant=minbase', `--arch=${arch}`, suite, root, mirror], { timeoutMs: 8 * 60_000 })
    if (boot.code !== 0) {
      const logTail = await readFile(join(root, 'debootstrap', 'debootstrap.log'), 'utf8').catch(() => '')
      throw new Error(`debootstrap failed (${boot.code}):\n${(boot.stderr + boot.stdout).slice(-2000)}\n${logTail.slice(-2000)}`)
    }
    await unmountUnder(root)

    // Slim: as Debian's own slim images.
    await writeFile(join(root, 'etc/dpkg/dpkg.cfg.d/docker-slim'), DPKG_SLIM)
    await writeFile(join(root, 'etc/apt/apt.conf.d/docker-clean'), APT_CLEAN)
    await writeFile(join(root, 'etc/apt/apt.conf.d/docker-no-languages'), 'Acquire::Languages "none";\n')
    for (const d of ['usr/share/doc', 'usr/share/man', 'usr/share/info', 'usr/share/locale', 'usr/share/groff', 'usr/share/lintian']) {
      const p = join(root, d)
      if (!existsSync(p)) continue
      for (const e of await readdir(p, { withFileTypes: true })) {
        if (d === 'usr/share/locale' && e.name === 'locale.alias') continue
        if (d === 'usr/share/doc' && e.isDirectory()) {
          // keep copyright files, as path-include does
          for (const f of await readdir(join(p, e.name))) if (f !== 'copyright') await rm(join(p, e.name, f), { recursive: true, force: true })
          continue
        }
        await rm(join(p, e.name), { recursive: true, force: true })
      }
    }
    await rm(join(root, 'var/cache/apt/archives'), { recursive: true, force: true })
    await mkdir(join(root, 'var/cache/apt/archives/partial'), { recursive: true })
    await rm(join(root, 'var/lib/apt/lists'), { recursive: true, force: true })
    await mkdir(join(root, 'var/lib/apt/lists/partial'), { recursive: true })

    // Node.js where the official images have it.
    log(`adding Node.js ${process.version} (${nodeBin}), npm (${npm}) and headers (${headers})`)
    await mkdir(join(root, 'usr/local/bin'), { recursive: true })
    await mkdir(join(root, 'usr/local/lib/node_modules'), { recursive: true })
    await mkdir(join(root, 'usr/local/include'), { recursive: true })
    await cp(nodeBin, join(root, 'usr/local/bin/node'))
    await chmod(join(root, 'usr/local/bin/node'), 0o755)
    await cp(npm, join(root, 'usr/local/lib/node_modules/npm'), { recursive: true, verbatimSymlinks: true })
    await cp(headers, join(root, 'usr/local/include/node'), { recursive: true })
    await symlink('../lib/node_modules/npm/bin/npm-cli.js', join(root, 'usr/local/bin/npm'))
    await symlink('../lib/node_modules/npm/bin/npx-cli.js', join(root, 'usr/local/bin/npx'))

    // Every library the binary needs must come from the rootfs itself.
    // env -i inside the chroot: the test runner's NODE_OPTIONS (tap's --import hooks) would
    // point at files the rootfs does not have.
    const inRoot = (...argv: string[]) =>
      run('chroot', [root, '/usr/bin/env', '-i', BASE_PATH_ENV, 'HOME=/root', ...argv], { timeoutMs: 30_000 })
    const check = await inRoot('/usr/local/bin/node', '-e', 'console.log(process.version)')
    if (check.code !== 0 || check.stdout.trim() !== process.version) {
      throw new Error(`node does not run in the new rootfs (${check.code}): ${check.stderr}`)
    }
    const npmCheck = await inRoot('/usr/local/bin/npm', '--version')
    if (npmCheck.code !== 0) throw new Error(`npm does not run in the new rootfs (${npmCheck.code}): ${npmCheck.stderr}`)

    await mkdir(cacheDir(), { recursive: true })
    // Tarballs of other Node.js versions or recipes are dead weight (~290 MB each).
    for (const f of await readdir(cacheDir())) {
      if (/^base-.*\.tar$/.test(f) && join(cacheDir(), f) !== file) await rm(join(cacheDir(), f), { force: true })
    }
    // /dev, /proc and /sys are the runtime's business (debootstrap created device nodes in /dev).
    await runOk('tar', ['-C', root, '--numeric-owner', '--exclude=./dev/*', '--exclude=./proc/*', '--exclude=./sys/*', '-cf', part, '.'], { timeoutMs: 5 * 60_000 })
    await rename(part, file)
    return { path: file, cached: false, mirror, suite }
  } finally {
    await rm(part, { force: true })
    await unmountUnder(work)
    await removeTempDir(work)
  }
}

/** `docker import` the tarball as `tag`, with the environment the official node images set. */
export async function importBaseImage(d: Dockerd, tarball: string, tag: string): Promise<void> {
  const r = await d.docker(
    ['import', '--change', `ENV ${BASE_PATH_ENV}`, '--change', `ENV NODE_VERSION=${process.version.slice(1)}`, '--change', 'CMD ["node"]', tarball, tag],
    5 * 60_000,
  )
  if (r.code !== 0) throw new Error(`docker import ${tarball} failed (${r.code}): ${r.stderr}`)
}
