// regcache invalidate IMAGE: forgets a cached tag, so the next request fetches it from upstream
// (and, while upstream is down, is not answered from cache). History is kept.

import { INVALIDATE_USAGE } from './usage.js'
import { configOrExit, parse, usageFailure } from './common.js'
import { Metadata } from '../storage/metadata.js'
import { dbPath } from '../storage/layout.js'
import { parseImageRef, repositoryFor } from '../oci/reference.js'

export async function invalidateCommand(argv: string[]): Promise<number> {
  let values, positionals
  try {
    ;({ values, positionals } = parse(argv, { config: { type: 'string', short: 'c' } }, true))
  } catch (err) {
    return usageFailure(err, INVALIDATE_USAGE)
  }
  if (values.help) {
    process.stdout.write(INVALIDATE_USAGE)
    return 0
  }
  if (positionals.length !== 1) {
    process.stderr.write('regcache: invalidate takes one image reference with a tag, e.g. docker.io/library/alpine:latest\n')
    return 2
  }
  const config = configOrExit(values.config as string | undefined)
  if (!config) return 2
  const ref = parseImageRef(positionals[0], config.defaultUpstream)
  if (!(ref.registry in config.upstreams)) {
    process.stderr.write(`regcache: ${ref.registry} is not a configured upstream\n`)
    return 2
  }
  if (ref.tag === undefined) {
    process.stderr.write('regcache: invalidate takes a tag; content by digest never changes\n')
    return 2
  }
  const meta = new Metadata(dbPath(config.dataDir))
  try {
    const n = meta.deleteTag(ref.registry, repositoryFor(ref.registry, ref.repository), ref.tag)
    process.stdout.write(n > 0 ? `forgot ${positionals[0]} (${n} cached entr${n === 1 ? 'y' : 'ies'})\n` : `${positionals[0]} was not cached\n`)
    return 0
  } finally {
    meta.close()
  }
}
