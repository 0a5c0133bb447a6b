// regcache warm IMAGE...: pulls images through a running mirror ahead of a rollout, so the nodes'
// pulls are cache hits. It is an ordinary client of the mirror (the same requests containerd
// makes), so it warms exactly what nodes will ask for.

import { request } from 'undici'
import { USAGE } from './usage.js'
import { configOrExit, parse, usageFailure } from './common.js'
import { parseImageRef } from '../oci/reference.js'
import { CONTAINERD_ACCEPT as ACCEPT, isIndexType } from '../oci/media-types.js'

export async function warmCommand(argv: string[]): Promise<number> {
  let values, positionals
  try {
    ;({ values, positionals } = parse(
      argv,
      { config: { type: 'string', short: 'c' }, mirror: { type: 'string' }, platform: { type: 'string', multiple: true }, 'all-platforms': { type: 'boolean' } },
      true,
    ))
  } catch (err) {
    return usageFailure(err, USAGE)
  }
  if (values.help) {
    process.stdout.write(USAGE)
    return 0
  }
  if (positionals.length === 0) {
    process.stderr.write('regcache: warm takes one or more image references\n')
    return 2
  }
  const config = configOrExit(values.config as string | undefined)
  if (!config) return 2
  const host = config.listen.host === '0.0.0.0' || config.listen.host === '::' ? '127.0.0.1' : config.listen.host
  const mirror = ((values.mirror as string | undefined) ?? `${config.tls ? 'https' : 'http'}://${host.includes(':') ? `[${host}]` : host}:${config.listen.port}`).replace(/\/+$/, '')
  const platforms = (values.platform as string[] | undefined) ?? ['linux/amd64']
  let failures = 0
  for (const ref of positionals) {
    const started = Date.now()
    try {
      const r = parseImageRef(ref, config.defaultUpstream)
      const base = `${mirror}/v2/${r.repository}`
      const ns = `?ns=${encodeURIComponent(r.registry)}`
      let blobs = 0
      let bytes = 0
      const fetchBlob = async (digest: string) => {
        const res = await request(`${base}/blobs/${digest}${ns}`)
        for await (const chunk of res.body) bytes += (chunk as Buffer).length
        if (res.statusCode !== 200) throw new Error(`blob ${digest}: status ${res.statusCode}`)
        blobs++
      }
      const fetchManifest = async (reference: string, accept: string): Promise<{ mediaType: string; doc: any; digest: string }> => {
        const res = await request(`${base}/manifests/${reference}${ns}`, { headers: { accept } })
        const text = await res.body.text()
        if (res.statusCode !== 200) throw new Error(`manifest ${reference}: status ${res.statusCode} ${text.slice(0, 200)}`)
        return { mediaType: String(res.headers['content-type']), doc: JSON.parse(text), digest: String(res.headers['docker-content-digest']) }
      }
      const top = await fetchManifest(r.digest ?? (r.tag as string), ACCEPT)
      const images: any[] = []
      if (isIndexType(top.mediaType)) {
        for (const m of top.doc.manifests ?? []) {
          const p = m.platform ? `${m.platform.os}/${m.platform.architecture}${m.platform.variant ? `/${m.platform.variant}` : ''}` : ''
          if (values['all-platforms'] || platforms.some((want) => p === want || p.startsWith(`${want}/`))) {
            images.push((await fetchManifest(m.digest, `${m.mediaType}, ${ACCEPT}`)).doc)
          }
        }
      } else {
        images.push(top.doc)
      }
      for (const img of images) {
        if (img.config?.digest) await fetchBlob(img.config.digest)
        for (const l of img.layers ?? []) await fetchBlob(l.digest)
      }
      process.stdout.write(`warmed ${ref} (${top.digest}): ${images.length} manifest(s), ${blobs} blobs, ${bytes} bytes in ${Date.now() - started} ms\n`)
    } catch (err) {
      failures++
      process.stderr.write(`regcache: warming ${ref} failed: ${(err as Error).message}\n`)
    }
  }
  return failures > 0 ? 1 : 0
}
