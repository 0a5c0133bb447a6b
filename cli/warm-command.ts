// regcache warm: pulls images through a running mirror ahead of a rollout, so the nodes' pulls
// are cache hits. It is an ordinary client of the mirror (the same requests containerd makes),
// so it warms exactly what nodes will ask for. The parts: targets.ts (which images),
// kubernetes.ts (images of a cluster), pull.ts (one image), progress.ts (what is shown).

import { readFile } from 'node:fs/promises'
import pLimit from 'p-limit'
import { WARM_USAGE } from './usage.js'
import { configOrExit, parse, usageFailure } from './common.js'
import { KubernetesInputError, parseKubernetesJson } from './warm/kubernetes.js'
import { BlobDownloads, WarmError, warmImage } from './warm/pull.js'
import { newProgress, PlainReporter, renderSummary, TerminalReporter, type ImageProgress, type Reporter } from './warm/progress.js'
import { planTargets, referencesFromText, type WarmRequest } from './warm/targets.js'

const DEFAULT_CONCURRENCY = 4
const MAX_CONCURRENCY = 64
const PLATFORM_RE = /^[a-z0-9][a-z0-9._-]*\/[a-z0-9][a-z0-9._-]*(\/[a-z0-9][a-z0-9._-]*)?$/

class InputError extends Error {}

async function readInput(path: string, what: string): Promise<string> {
  try {
    if (path !== '-') return await readFile(path, 'utf8')
    if (process.stdin.isTTY) process.stderr.write(`regcache: reading ${what} from standard input (end with Ctrl-D)\n`)
    const chunks: Buffer[] = []
    for await (const chunk of process.stdin) chunks.push(chunk as Buffer)
    return Buffer.concat(chunks).toString('utf8')
  } catch (err) {
    throw new InputError(`cannot read ${what} ${path === '-' ? 'from standard input' : path}: ${(err as Error).message}`)
  }
}

async function gatherRequests(positionals: string[], fromFiles: string[], fromKubernetes: string[]): Promise<WarmRequest[]> {
  const asRequest = (ref: string): WarmRequest => ({ ref, platforms: [], defaultPlatforms: true })
  const requests = positionals.map(asRequest)
  for (const file of fromFiles) requests.push(...referencesFromText(await readInput(file, 'the image list')).map(asRequest))
  for (const file of fromKubernetes) {
    try {
      requests.push(...parseKubernetesJson(await readInput(file, 'kubectl JSON')))
    } catch (err) {
      if (err instanceof KubernetesInputError) throw new InputError(`--from-kubernetes ${file}: ${err.message}`)
      throw err
    }
  }
  return requests
}

export async function warmCommand(argv: string[]): Promise<number> {
  let values, positionals
  try {
    ;({ values, positionals } = parse(
      argv,
      {
        config: { type: 'string', short: 'c' },
        mirror: { type: 'string' },
        platform: { type: 'string', multiple: true },
        'all-platforms': { type: 'boolean' },
        concurrency: { type: 'string' },
        'from-file': { type: 'string', multiple: true },
        'from-kubernetes': { type: 'string', multiple: true },
      },
      true,
    ))
  } catch (err) {
    return usageFailure(err, WARM_USAGE)
  }
  if (values.help) {
    process.stdout.write(WARM_USAGE)
    return 0
  }
  const concurrency = values.concurrency === undefined ? DEFAULT_CONCURRENCY : Number(values.concurrency)
  if (!Number.isInteger(concurrency) || concurrency < 1 || concurrency > MAX_CONCURRENCY) {
    process.stderr.write(`regcache: --concurrency takes a whole number from 1 to ${MAX_CONCURRENCY}\n`)
    return 2
  }
  const platforms = values.platform ?? ['linux/amd64']
  const badPlatform = platforms.find((p) => !PLATFORM_RE.test(p))
  if (badPlatform !== undefined) {
    process.stderr.write(`regcache: --platform ${JSON.stringify(badPlatform)} is not OS/ARCH[/VARIANT], e.g. linux/arm64\n`)
    return 2
  }
  const fromFiles = values['from-file'] ?? []
  const fromKubernetes = values['from-kubernetes'] ?? []
  if (positionals.length === 0 && fromFiles.length === 0 && fromKubernetes.length === 0) {
    process.stderr.write('regcache: warm takes image references, --from-file FILE or --from-kubernetes FILE|-\n\n' + WARM_USAGE)
    return 2
  }
  const config = configOrExit(values.config)
  if (!config) return 2
  let requests: WarmRequest[]
  try {
    requests = await gatherRequests(positionals, fromFiles, fromKubernetes)
  } catch (err) {
    if (!(err instanceof InputError)) throw err
    process.stderr.write(`regcache: ${err.message}\n`)
    return 2
  }
  const targets = planTargets(requests, config.defaultUpstream, platforms)
  if (targets.length === 0) {
    process.stdout.write('nothing to warm: no image references found\n')
    return 0
  }

  const host = config.listen.host === '0.0.0.0' || config.listen.host === '::' ? '127.0.0.1' : config.listen.host
  const mirror = (values.mirror ?? `${config.tls ? 'https' : 'http'}://${host.includes(':') ? `[${host}]` : host}:${config.listen.port}`).replace(/\/+$/, '')
  const progress = targets.map((t) => newProgress(t.name))
  // A terminal that cannot move the cursor (TERM=dumb, e.g. an editor's shell) gets plain lines too.
  const live = process.stdout.isTTY === true && process.env.TERM !== 'dumb'
  const images = pLimit(concurrency)
  const blobs = new BlobDownloads(pLimit(concurrency))
  const reporter: Reporter = live ? new TerminalReporter(process.stdout, progress, () => blobs.received) : new PlainReporter(process.stdout)
  const started = Date.now()
  // Ctrl-C: leave the terminal clean (no half-drawn lines, cursor visible) and say what was done.
  const onInterrupt = () => {
    reporter.close()
    process.stdout.write(`interrupted\n${renderSummary(progress, blobs.received, Date.now() - started)}`)
    process.exit(130)
  }
  process.once('SIGINT', onInterrupt)

  const finish = (p: ImageProgress, error?: string) => {
    p.finishedAt = Date.now()
    p.state = error === undefined ? 'ok' : 'failed'
    p.error = error
    reporter.finished(p)
    if (error !== undefined && !live) process.stderr.write(`regcache: warming ${p.name} failed: ${error}\n`)
  }
  try {
    await Promise.all(
      targets.map((target, i) =>
        images(async () => {
          const p = progress[i]
          p.startedAt = Date.now()
          if (!target.image) return finish(p, target.error)
          p.state = 'resolving'
          reporter.started(p)
          try {
            p.result = await warmImage({
              mirror,
              image: target.image,
              platforms: target.platforms,
              allPlatforms: values['all-platforms'] === true,
              blobs,
              onPlan(plan) {
                p.plan = plan
                p.state = 'downloading'
                p.meter.record(Date.now(), 0)
                reporter.planned(p)
              },
              onBytes(n) {
                p.bytes += n
                p.meter.record(Date.now(), p.bytes)
              },
            })
            finish(p)
          } catch (err) {
            if (!(err instanceof WarmError)) throw err
            finish(p, err.message)
          }
        }),
      ),
    )
  } finally {
    reporter.close()
    process.removeListener('SIGINT', onInterrupt)
  }
  process.stdout.write(renderSummary(progress, blobs.received, Date.now() - started))
  return progress.every((p) => p.state === 'ok') ? 0 : 1
}
