// Numbers as people read them on a terminal: sizes in binary units, rates, durations.

const UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'] as const

/** 1536 → "1.5 KiB". Three significant digits at most, whole bytes below 1 KiB. */
export function formatBytes(bytes: number): string {
  if (!Number.isFinite(bytes) || bytes < 0) return '?'
  let value = bytes
  let unit = 0
  while (value >= 1024 && unit < UNITS.length - 1) {
    value /= 1024
    unit++
  }
  if (unit === 0) return `${Math.round(value)} B`
  // 1023.96 KiB would print as "1024 KiB": move up a unit instead.
  if (value >= 1023.95 && unit < UNITS.length - 1) {
    value /= 1024
    unit++
  }
  const text = value >= 100 ? value.toFixed(0) : value >= 10 ? value.toFixed(1) : value.toFixed(2)
  return `${text} ${UNITS[unit]}`
}

export function formatRate(bytesPerSecond: number): string {
  return `${formatBytes(bytesPerSecond)}/s`
}

/** 0.4 → "0.4s", 75 → "1m15s", 3725 → "1h02m". Undefined or non-finite → "--". */
export function formatDuration(seconds: number | undefined): string {
  if (seconds === undefined || !Number.isFinite(seconds) || seconds < 0) return '--'
  if (seconds < 10) return `${seconds.toFixed(1)}s`
  const s = Math.round(seconds)
  if (s < 60) return `${s}s`
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`
  return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`
}

/** Seconds until `remaining` bytes arrive at `bytesPerSecond`; undefined while the rate is unknown. */
export function etaSeconds(remaining: number, bytesPerSecond: number): number | undefined {
  if (remaining <= 0) return 0
  if (!(bytesPerSecond > 0) || !Number.isFinite(bytesPerSecond)) return undefined
  return remaining / bytesPerSecond
}
