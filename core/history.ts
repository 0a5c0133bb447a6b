// Reading a tag's digest history, shared by `regcache history` and GET /api/history.

import type { Config } from '../config/config.js'
import type { HistoryEvent, Metadata, TagDigestRow } from '../storage/metadata.js'
import { RegistryError } from './errors.js'
import { parseImageRef, repositoryFor } from '../oci/reference.js'

export interface History {
  image: string
  upstream: string
  repository: string
  tag?: string
  digests: (TagDigestRow & { current: boolean })[]
  events: HistoryEvent[]
}

export function readHistory(meta: Metadata, image: string, config: Config, limit = 200): History {
  const ref = parseImageRef(image, config.defaultUpstream)
  const upstream = Object.keys(config.upstreams).find((u) => u === ref.registry)
  if (!upstream) {
    throw new RegistryError('NAME_UNKNOWN', `registry ${ref.registry} is not a configured upstream (${Object.keys(config.upstreams).join(', ')})`)
  }
  const repository = repositoryFor(upstream, ref.repository)
  const tag = ref.tag
  const rows = meta.tagDigests(upstream, repository, tag)
  const current = new Set<string>()
  for (const r of rows) {
    const t = meta.getTag({ upstream, repository, tag: r.tag, acceptKey: r.acceptKey })
    if (t?.digest === r.digest) current.add(`${r.tag}\n${r.acceptKey}\n${r.digest}`)
  }
  return {
    image,
    upstream,
    repository,
    tag,
    digests: rows.map((r) => ({ ...r, current: current.has(`${r.tag}\n${r.acceptKey}\n${r.digest}`) })),
    events: meta.events(upstream, repository, tag, limit),
  }
}
