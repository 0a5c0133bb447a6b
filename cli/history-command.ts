// regcache history IMAGE: reads the metadata database directly (WAL allows it while the server runs).

import { existsSync } from 'node:fs'
import { HISTORY_USAGE } from './usage.js'
import { configOrExit, parse, usageFailure } from './common.js'
import { Metadata } from '../storage/metadata.js'
import { dbPath } from '../storage/layout.js'
import { readHistory } from '../core/history.js'
import { RegistryError } from '../core/errors.js'

export async function historyCommand(argv: string[]): Promise<number> {
  let values, positionals
  try {
    ;({ values, positionals } = parse(argv, { config: { type: 'string', short: 'c' }, json: { type: 'boolean' } }, true))
  } catch (err) {
    return usageFailure(err, HISTORY_USAGE)
  }
  if (values.help) {
    process.stdout.write(HISTORY_USAGE)
    return 0
  }
  if (positionals.length !== 1) {
    process.stderr.write(`regcache: history takes one image reference, e.g. docker.io/library/alpine:latest\n`)
    return 2
  }
  const config = configOrExit(values.config as string | undefined)
  if (!config) return 2
  const path = dbPath(config.dataDir)
  if (!existsSync(path)) {
    process.stderr.write(`regcache: no database at ${path} (has the server run with this dataDir?)\n`)
    return 1
  }
  const meta = new Metadata(path, { readonly: true })
  try {
    const h = readHistory(meta, positionals[0], config)
    if (values.json) {
      process.stdout.write(JSON.stringify(h, null, 2) + '\n')
      return 0
    }
    const iso = (ms: number) => new Date(ms).toISOString().replace(/\.\d+Z$/, 'Z')
    process.stdout.write(`${h.upstream}/${h.repository}${h.tag ? `:${h.tag}` : ''}\n\nDigests:\n`)
    if (h.digests.length === 0) process.stdout.write('  (none recorded)\n')
    for (const d of h.digests) {
      process.stdout.write(`  ${d.current ? '*' : ' '} ${h.tag ? '' : `${d.tag}  `}${d.digest}  ${d.mediaType ?? '(media type unknown)'}  first ${iso(d.firstSeen)}  last ${iso(d.lastSeen)}\n`)
    }
    process.stdout.write('\nEvents (newest first):\n')
    if (h.events.length === 0) process.stdout.write('  (none recorded)\n')
    for (const e of h.events) {
      const count = e.count > 1 ? ` x${e.count} until ${iso(e.lastAt)}` : ''
      const prev = e.previousDigest ? ` (was ${e.previousDigest.slice(0, 19)})` : ''
      process.stdout.write(`  ${iso(e.at)}  ${e.type.padEnd(18)} ${e.digest ?? ''}${prev}${count}${e.detail ? `  ${e.detail}` : ''}\n`)
    }
    return 0
  } catch (err) {
    if (err instanceof RegistryError) {
      process.stderr.write(`regcache: ${err.message}\n`)
      return 2
    }
    throw err
  } finally {
    meta.close()
  }
}
