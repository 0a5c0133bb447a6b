// What `regcache warm` shows while it works. On a terminal: one live line per image in progress
// (bytes of total, rate, ETA), redrawn in place, with each finished image left above as a line of
// its own. Anywhere else: one plain line when an image starts and one when it finishes.

import { createLogUpdate } from 'log-update'
import { etaSeconds, formatBytes, formatDuration, formatRate } from '../human.js'
import type { Plan, WarmResult } from './pull.js'
import { RateMeter } from './rate.js'

export interface ImageProgress {
  name: string
  state: 'waiting' | 'resolving' | 'downloading' | 'ok' | 'failed'
  plan?: Plan
  bytes: number
  meter: RateMeter
  startedAt?: number
  finishedAt?: number
  result?: WarmResult
  error?: string
}

export function newProgress(name: string): ImageProgress {
  return { name, state: 'waiting', bytes: 0, meter: new RateMeter() }
}

export interface Reporter {
  started(p: ImageProgress): void
  planned(p: ImageProgress): void
  finished(p: ImageProgress): void
  /** Removes the live lines (leaving finished ones) and restores the cursor. */
  close(): void
}

const BAR_WIDTH = 20

/** Fits text into `width` columns, keeping its end (the tag) when it must be cut. */
export function fit(text: string, width: number): string {
  if (text.length <= width) return text
  if (width <= 3) return text.slice(text.length - width)
  return `...${text.slice(text.length - width + 3)}`
}

/** For columns: a digest in a reference shortened to 12 hex digits, as `docker images` does. */
export function shortName(name: string): string {
  return name.replace(/@(sha256|sha512):([0-9a-f]{12})[0-9a-f]+$/, '@$1:$2')
}

function bar(done: number, total: number): string {
  const filled = total > 0 ? Math.min(BAR_WIDTH, Math.floor((done / total) * BAR_WIDTH)) : BAR_WIDTH
  return `[${'='.repeat(filled)}${filled < BAR_WIDTH ? '>' : ''}${' '.repeat(Math.max(0, BAR_WIDTH - filled - 1))}]`
}

/** One live line: `  NAME  [=====>    ]  12.0 MiB / 48.0 MiB  3.10 MiB/s  ETA 12s`. */
export function renderLive(p: ImageProgress, now: number, nameWidth: number, width: number): string {
  const name = fit(shortName(p.name), nameWidth).padEnd(nameWidth)
  let tail: string
  if (p.state !== 'downloading' || !p.plan) {
    tail = 'resolving'
  } else {
    const rate = p.meter.rate(now)
    const total = p.plan.totalBytes
    tail = `${bar(p.bytes, total)} ${formatBytes(p.bytes)} / ${formatBytes(total)}  ${formatRate(rate)}  ETA ${formatDuration(etaSeconds(total - p.bytes, rate))}`
  }
  return fit(`  ${name}  ${tail}`, width)
}

/** The line a finished image leaves behind, on a terminal and in plain output alike. */
export function renderFinished(p: ImageProgress): string {
  const took = formatDuration(((p.finishedAt ?? 0) - (p.startedAt ?? 0)) / 1000)
  if (p.state === 'failed' || !p.result) return `failed ${p.name}: ${p.error ?? 'unknown error'}`
  const r = p.result
  return `warmed ${p.name} (${r.digest}): ${r.manifests} manifest(s), ${r.blobs} blobs, ${formatBytes(r.totalBytes)} in ${took}`
}

/** The live display for a terminal; redrawn every `intervalMs` and whenever an image changes state. */
export class TerminalReporter implements Reporter {
  private readonly live = new Set<ImageProgress>()
  private readonly update: ReturnType<typeof createLogUpdate>
  private readonly timer: NodeJS.Timeout
  private done = 0
  private failed = 0

  constructor(
    private readonly stream: NodeJS.WriteStream,
    private readonly all: ImageProgress[],
    private readonly received: () => number,
    intervalMs = 100,
  ) {
    this.update = createLogUpdate(stream)
    this.timer = setInterval(() => this.draw(), intervalMs)
    this.draw()
  }

  started(p: ImageProgress): void {
    this.live.add(p)
    this.draw()
  }

  planned(): void {
    this.draw()
  }

  finished(p: ImageProgress): void {
    this.live.delete(p)
    if (p.state === 'ok') this.done++
    else this.failed++
    // Replace the live lines by the finished one, then draw the live lines again below it.
    this.update(fit(renderFinished(p), this.width()))
    this.update.done()
    this.draw()
  }

  close(): void {
    clearInterval(this.timer)
    this.update.clear()
    this.update.done()
  }

  private width(): number {
    return Math.max(20, (this.stream.columns ?? 80) - 1)
  }

  private draw(): void {
    const now = Date.now()
    const width = this.width()
    const rows = [...this.live]
    const nameWidth = Math.min(Math.max(0, ...rows.map((p) => shortName(p.name).length)), Math.max(12, Math.floor(width * 0.4)))
    const lines = rows.map((p) => renderLive(p, now, nameWidth, width))
    const waiting = this.all.length - this.done - this.failed - rows.length
    lines.push(fit(`warming ${this.all.length} image(s): ${this.done} done, ${this.failed} failed, ${rows.length} in progress, ${waiting} waiting; ${formatBytes(this.received())} received`, width))
    this.update(lines.join('\n'))
  }
}

/** Plain lines for logs and pipes: no ANSI, one line per image start and finish. */
export class PlainReporter implements Reporter {
  constructor(private readonly stream: NodeJS.WritableStream) {}

  started(p: ImageProgress): void {
    this.stream.write(`warming ${p.name}\n`)
  }

  planned(): void {}

  finished(p: ImageProgress): void {
    this.stream.write(`${renderFinished(p)}\n`)
  }

  close(): void {}
}

/** The closing table: the totals, then every image with its result. */
export function renderSummary(all: ImageProgress[], receivedBytes: number, elapsedMs: number): string {
  const ok = all.filter((p) => p.state === 'ok')
  const failed = all.filter((p) => p.state !== 'ok')
  // Not cut: the summary is what people copy from. Longer names only push their own row.
  const nameWidth = Math.min(50, Math.max(0, ...all.map((p) => shortName(p.name).length)))
  const lines = [`Summary: ${all.length} image(s), ${ok.length} warmed, ${failed.length} failed; ${formatBytes(receivedBytes)} received in ${formatDuration(elapsedMs / 1000)}`]
  for (const p of all) {
    const name = shortName(p.name).padEnd(nameWidth)
    if (p.state === 'ok' && p.result) {
      lines.push(`  ok      ${name}  ${formatBytes(p.result.totalBytes).padStart(10)}  ${p.result.blobs} blobs  ${p.result.digest}`)
    } else {
      lines.push(`  FAILED  ${name}  ${p.error ?? (p.state === 'waiting' ? 'not started' : 'interrupted')}`)
    }
  }
  return lines.join('\n') + '\n'
}
