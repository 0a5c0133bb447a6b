// Reading a tag's digest history, shared by `regcache history` and GET /api/history: each digest
// the tag pointed at once, with the media type it was served as and whether some client is
// served it now, and the events, newest first.

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
  return {
    image,
    upstream,
    repository,
    tag,
    digests: rows.map((r) => ({ ...r, current: meta.digestStanding({ upstream, repository, tag: r.tag }, r.digest) === 'current' })),
    events: meta.events(upstream, repository, tag, limit),
  }
}
