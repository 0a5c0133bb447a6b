// regcache client-config containerd|docker|podman --mirror URL: prints (or writes) the client
// configuration for the configured upstreams.

import { mkdir, readFile, writeFile } from 'node:fs/promises'
import { dirname, join } from 'node:path'
import { CLIENT_CONFIG_USAGE } from './usage.js'
import { configOrExit, parse, usageFailure } from './common.js'
import { containerdHosts, dockerCredentialsNote, dockerDaemonJson, podmanAuthJson, podmanRegistriesConf, type GeneratedFile } from './client-config.js'

export async function clientConfigCommand(argv: string[]): Promise<number> {
  let values, positionals
  try {
    ;({ values, positionals } = parse(
      argv,
      {
        config: { type: 'string', short: 'c' },
        mirror: { type: 'string' },
        upstreams: { type: 'string' },
        'output-dir': { type: 'string' },
        'no-fallback': { type: 'boolean' },
        ca: { type: 'string' },
        'skip-verify': { type: 'boolean' },
        username: { type: 'string' },
        'password-file': { type: 'string' },
      },
      true,
    ))
  } catch (err) {
    return usageFailure(err, CLIENT_CONFIG_USAGE)
  }
  if (values.help) {
    process.stdout.write(CLIENT_CONFIG_USAGE)
    return 0
  }
  const client = positionals[0]
  if (positionals.length !== 1 || !['containerd', 'docker', 'podman'].includes(client)) {
    process.stderr.write('regcache: client-config takes one of: containerd, docker, podman\n')
    return 2
  }
  const mirror = values.mirror as string | undefined
  if (!mirror || !/^https?:\/\/[^/\s]+/.test(mirror)) {
    process.stderr.write('regcache: client-config needs --mirror URL, the mirror as nodes reach it (e.g. http://regcache.internal:5000)\n')
    return 2
  }
  const config = configOrExit(values.config as string | undefined)
  if (!config) return 2
  let upstreams = Object.fromEntries(Object.values(config.upstreams).map((u) => [u.name, u.url]))
  if (values.upstreams) {
    const wanted = String(values.upstreams).split(',').map((s) => s.trim()).filter(Boolean)
    const unknown = wanted.filter((w) => !(w in upstreams))
    if (unknown.length > 0) {
      process.stderr.write(`regcache: not configured as upstreams: ${unknown.join(', ')} (configured: ${Object.keys(upstreams).join(', ')})\n`)
      return 2
    }
    upstreams = Object.fromEntries(wanted.map((w) => [w, upstreams[w]]))
  }
  const username = values.username as string | undefined
  const passwordFile = values['password-file'] as string | undefined
  if ((username === undefined) !== (passwordFile === undefined)) {
    process.stderr.write('regcache: --username and --password-file go together\n')
    return 2
  }
  if (username !== undefined && (username === '' || username.includes(':') || /[\u0000-\u001f\u007f]/.test(username))) {
    process.stderr.write('regcache: --username must be non-empty, without ":" or control characters\n')
    return 2
  }
  let credentials: { username: string; password: string } | undefined
  if (username !== undefined && passwordFile !== undefined) {
    let password: string
    try {
      password = (await readFile(passwordFile, 'utf8')).replace(/\r?\n$/, '')
    } catch (err) {
      process.stderr.write(`regcache: cannot read --password-file ${passwordFile} (${(err as NodeJS.ErrnoException).code ?? 'error'})\n`)
      return 2
    }
    credentials = { username, password }
  }
  const opts = {
    credentials,
    mirror: mirror.replace(/\/+$/, ''),
    upstreams,
    fallback: values['no-fallback'] !== true,
    ca: values.ca as string | undefined,
    skipVerify: values['skip-verify'] === true,
  }
  const auth = podmanAuthJson(opts)
  const files: GeneratedFile[] =
    client === 'containerd' ? containerdHosts(opts) : client === 'docker' ? [dockerDaemonJson(opts)] : [podmanRegistriesConf(opts), ...(auth ? [auth] : [])]
  const note = client === 'docker' ? dockerCredentialsNote(opts) : undefined
  if (note) process.stderr.write(note)
  const out = values['output-dir'] as string | undefined
  if (out) {
    for (const f of files) {
      await mkdir(dirname(join(out, f.path)), { recursive: true })
      await writeFile(join(out, f.path), f.content, f.secret ? { mode: 0o600 } : {})
      process.stdout.write(`wrote ${join(out, f.path)}\n`)
    }
    return 0
  }
  const where = client === 'containerd' ? '/etc/containerd/certs.d/' : client === 'docker' ? '/etc/docker/' : '/etc/containers/'
  for (const f of files) process.stdout.write(`# ==> ${where}${f.path} <==\n${f.content}\n`)
  return 0
}
