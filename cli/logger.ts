// The server's logger. People watching `regcache serve` in a terminal get readable, coloured
// lines; log collectors (anything that is not a terminal, or REGCACHE_LOG_FORMAT=json) get one
// JSON object per line. Redaction happens in pino before either format sees a record, so secrets
// are hidden in both.

import { pino, type Logger } from 'pino'
import pretty from 'pino-pretty'

export const REDACT_PATHS = ['req.headers.authorization', 'headers.authorization', 'password', '*.password']

export type LogFormat = 'json' | 'pretty'

export interface LoggerOptions {
  level: string
  /** Where lines go; standard output by default. */
  stream?: NodeJS.WritableStream & { isTTY?: boolean }
  env?: NodeJS.ProcessEnv
}

/** REGCACHE_LOG_FORMAT (json or pretty) decides; unset, a terminal gets pretty lines. */
export function logFormat(isTTY: boolean, env: NodeJS.ProcessEnv): LogFormat {
  const wanted = env.REGCACHE_LOG_FORMAT?.trim().toLowerCase()
  if (wanted === 'json' || wanted === 'pretty') return wanted
  return isTTY ? 'pretty' : 'json'
}

export function createLogger(o: LoggerOptions): Logger {
  const stream = o.stream ?? process.stdout
  const options = { level: o.level, redact: { paths: REDACT_PATHS, censor: '[redacted]' } }
  if (logFormat(stream.isTTY === true, o.env ?? process.env) === 'json') {
    return o.stream ? pino(options, o.stream) : pino(options)
  }
  // In the main thread and synchronous, so the last lines before an exit are not lost.
  return pino(options, pretty({ destination: stream, sync: true, colorize: stream.isTTY === true, translateTime: 'SYS:HH:MM:ss.l', ignore: 'pid,hostname' }))
}
