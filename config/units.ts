// Human-readable durations ("2s", "5m", "7d") and sizes ("50GiB", "500MB"), as used in
// config.example.yaml. Both return plain numbers (milliseconds, bytes) so the rest of the code
// never parses strings.

const DURATION_UNITS: Record<string, number> = {
  ms: 1,
  s: 1000,
  m: 60_000,
  h: 3_600_000,
  d: 86_400_000,
  w: 604_800_000,
}

const SIZE_UNITS: Record<string, number> = {
  '': 1,
  b: 1,
  kb: 1e3,
  mb: 1e6,
  gb: 1e9,
  tb: 1e12,
  kib: 1024,
  mib: 1024 ** 2,
  gib: 1024 ** 3,
  tib: 1024 ** 4,
}

/** Parses "1h30m", "2s", "0", or a bare number of seconds. Returns undefined when malformed. */
export function parseDuration(value: string | number): number | undefined {
  if (typeof value === 'number') return Number.isFinite(value) && value >= 0 ? value * 1000 : undefined
  const text = value.trim()
  if (text === '0') return 0
  const re = /(\d+(?:\.\d+)?)(ms|s|m|h|d|w)/gy
  let total = 0
  let matched = 0
  let m: RegExpExecArray | null
  while ((m = re.exec(text)) !== null) {
    total += Number(m[1]) * DURATION_UNITS[m[2]]
    matched = re.lastIndex
  }
  return matched === text.length && matched > 0 ? Math.round(total) : undefined
}

/** Parses "50GiB", "500MB", "1024" (bytes). Returns undefined when malformed. */
export function parseSize(value: string | number): number | undefined {
  if (typeof value === 'number') return Number.isFinite(value) && value >= 0 ? Math.floor(value) : undefined
  const m = /^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$/.exec(value)
  if (!m) return undefined
  const unit = SIZE_UNITS[m[2].toLowerCase()]
  return unit === undefined ? undefined : Math.floor(Number(m[1]) * unit)
}
