// Which CA certificate (if any) a build must trust to reach this machine's npm registry.
// Machines behind a TLS-intercepting proxy (or with a private registry) trust an extra CA that a
// container's Node.js does not know: the Docker build then needs it in deploy/docker/build-ca/.

import { existsSync } from 'node:fs'
import { readdir, readFile } from 'node:fs/promises'
import { join } from 'node:path'
import tls from 'node:tls'
import { run } from './proc.js'

export interface NpmRegistryInfo {
  /** `npm config get registry` */
  registry: string
  /** PEM file to give the build, or undefined when Node's built-in roots suffice (or plain http). */
  caFile?: string
  /** How the decision was made, for the test output. */
  reason: string
}

/** TLS handshake to host:port trusting exactly `ca`; resolves with the error code or 'ok'. */
function handshake(host: string, port: number, ca: string[]): Promise<string> {
  return new Promise((resolve) => {
    const s = tls.connect({ host, port, servername: host, ca, timeout: 15_000 }, () => {
      s.end()
      resolve('ok')
    })
    s.once('timeout', () => {
      s.destroy()
      resolve('ETIMEDOUT')
    })
    s.once('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? e.message))
  })
}

async function listCrt(dir: string): Promise<string[]> {
  const out: string[] = []
  const entries = await readdir(dir, { withFileTypes: true }).catch(() => [])
  for (const e of entries) {
    const p = join(dir, e.name)
    if (e.isDirectory()) out.push(...(await listCrt(p)))
    else if (/\.(crt|pem)$/.test(e.name)) out.push(p)
  }
  return out.sort()
}

export async function npmRegistryInfo(): Promise<NpmRegistryInfo> {
  const r = await run('npm', ['config', 'get', 'registry'], { timeoutMs: 30_000 })
  const registry = r.stdout.trim()
  if (r.code !== 0 || registry === '') throw new Error(`npm config get registry failed: ${r.stderr}`)
  const url = new URL(registry)
  if (url.protocol !== 'https:') return { registry, reason: `${url.protocol} registry: no CA needed` }
  const host = url.hostname
  const port = Number(url.port || 443)
  const roots = [...tls.rootCertificates]

  const plain = await handshake(host, port, roots)
  if (plain === 'ok') return { registry, reason: `${host} verifies with Node's built-in roots` }

  // Most specific first: single local CA certificates, then whatever bundle this machine's
  // Node.js and npm are told to use.
  const npmCafile = (await run('npm', ['config', 'get', 'cafile'], { timeoutMs: 30_000 })).stdout.trim()
  const candidates = [
    ...(await listCrt('/usr/local/share/ca-certificates')),
    process.env.NODE_EXTRA_CA_CERTS,
    npmCafile !== 'null' && npmCafile !== 'undefined' ? npmCafile : undefined,
    '/etc/ssl/certs/ca-certificates.crt',
  ].filter((f, i, a): f is string => !!f && existsSync(f) && a.indexOf(f) === i)
  const tried: string[] = []
  for (const file of candidates) {
    const pem = await readFile(file, 'utf8').catch(() => '')
    if (!pem.includes('-----BEGIN CERTIFICATE-----')) continue
    const res = await handshake(host, port, [...roots, pem])
    if (res === 'ok') return { registry, caFile: file, reason: `${host} fails with Node's built-in roots (${plain}), verifies with ${file}` }
    tried.push(`${file}: ${res}`)
  }
  throw new Error(`${host}:${port} does not verify with Node's roots (${plain}) nor with any local CA:\n${tried.join('\n')}`)
}
