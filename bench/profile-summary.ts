// Summarises V8 CPU profiles (node --cpu-prof; the bench writes them for every regcache it
// starts when BENCH_CPU_PROF=DIR is set): self time per function, busiest first, idle excluded.
//
//   node dist/bench/profile-summary.js [--top N] FILE.cpuprofile...

import { readFileSync } from 'node:fs'
import { relative } from 'node:path'

interface CallFrame {
  functionName: string
  url: string
  lineNumber: number
}
interface ProfileNode {
  id: number
  callFrame: CallFrame
  hitCount?: number
  children?: number[]
}
interface Profile {
  nodes: ProfileNode[]
  startTime: number
  endTime: number
  samples?: number[]
  timeDeltas?: number[]
}

function where(cf: CallFrame): string {
  if (!cf.url) return ''
  let u = cf.url.replace(/^file:\/\//, '')
  if (u.startsWith('/')) u = relative(process.cwd(), u)
  u = u.replace(/^(\.\.\/)*.*node_modules\//, '')
  return `${u}:${cf.lineNumber + 1}`
}

/** Package or area a frame belongs to: node internals, a dependency, or regcache itself. */
function area(cf: CallFrame): string {
  const u = cf.url
  if (!u) return cf.functionName.startsWith('(') ? cf.functionName : '(native)'
  if (u.startsWith('node:')) return 'node:' + u.slice(5).split('/')[0]
  const m = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(u)
  if (m) return m[1]!
  const r = /\/dist\/([^/]+)\//.exec(u)
  return r ? `regcache/${r[1]}` : u
}

function summarise(file: string, top: number): string {
  const p = JSON.parse(readFileSync(file, 'utf8')) as Profile
  const byId = new Map(p.nodes.map((n) => [n.id, n]))
  // Self time from samples × time deltas (exact), else hitCount × mean interval.
  const selfUs = new Map<number, number>()
  if (p.samples && p.timeDeltas) {
    for (let i = 0; i < p.samples.length; i++) selfUs.set(p.samples[i]!, (selfUs.get(p.samples[i]!) ?? 0) + Math.max(0, p.timeDeltas[i + 1] ?? 0))
  } else {
    const hits = p.nodes.reduce((a, n) => a + (n.hitCount ?? 0), 0)
    const per = hits ? (p.endTime - p.startTime) / hits : 0
    for (const n of p.nodes) selfUs.set(n.id, (n.hitCount ?? 0) * per)
  }
  const fn = new Map<string, number>()
  const areas = new Map<string, number>()
  let total = 0
  let idle = 0
  for (const [id, us] of selfUs) {
    const n = byId.get(id)!
    const cf = n.callFrame
    if (cf.functionName === '(idle)') {
      idle += us
      continue
    }
    total += us
    const key = `${cf.functionName || '(anonymous)'}  ${where(cf)}`
    fn.set(key, (fn.get(key) ?? 0) + us)
    const a = area(cf)
    areas.set(a, (areas.get(a) ?? 0) + us)
  }
  const wall = (p.endTime - p.startTime) / 1e6
  const pct = (us: number) => `${((100 * us) / total).toFixed(1).padStart(5)}%`
  const lines = [
    `${file}: ${wall.toFixed(1)} s profiled, ${(total / 1e6).toFixed(2)} s on CPU (main thread), ${(idle / 1e6).toFixed(2)} s idle`,
    '  by area (self time):',
    ...[...areas].sort((a, b) => b[1] - a[1]).slice(0, 12).map(([k, v]) => `    ${pct(v)}  ${(v / 1e3).toFixed(0).padStart(7)} ms  ${k}`),
    `  top ${top} functions (self time):`,
    ...[...fn].sort((a, b) => b[1] - a[1]).slice(0, top).map(([k, v]) => `    ${pct(v)}  ${(v / 1e3).toFixed(0).padStart(7)} ms  ${k}`),
  ]
  return lines.join('\n')
}

const args = process.argv.slice(2)
let top = 25
const files: string[] = []
for (let i = 0; i < args.length; i++) {
  if (args[i] === '--top') top = Number(args[++i])
  else files.push(args[i]!)
}
if (!files.length) {
  process.stderr.write('usage: node dist/bench/profile-summary.js [--top N] FILE.cpuprofile...\n')
  process.exit(2)
}
for (const f of files) process.stdout.write(summarise(f, top) + '\n\n')
