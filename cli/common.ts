// What the subcommands share: option parsing and configuration loading with the exit codes
// the usage text promises.

import { parseArgs, type ParseArgsConfig } from 'node:util'
import { ConfigError, loadConfig, type Config } from '../config/config.js'

export class UsageError extends Error {}

export function parse<T extends NonNullable<ParseArgsConfig['options']>>(argv: string[], options: T, allowPositionals = false) {
  try {
    return parseArgs({ args: argv, options: { ...options, help: { type: 'boolean', short: 'h' } }, allowPositionals, strict: true })
  } catch (err) {
    throw new UsageError((err as Error).message)
  }
}

/** Loads the configuration, or prints what is wrong and returns undefined (exit status 2). */
export function configOrExit(file: string | undefined): Config | undefined {
  try {
    return loadConfig({ file })
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`regcache: ${err.message}\n`)
      return undefined
    }
    throw err
  }
}

export function usageFailure(err: unknown, usage: string): number {
  if (err instanceof UsageError) {
    process.stderr.write(`regcache: ${err.message}\n\n${usage}`)
    return 2
  }
  throw err
}
