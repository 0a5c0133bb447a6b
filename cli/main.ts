#!/usr/bin/env node
// The regcache command. Each subcommand lives in its own file; this one only dispatches.

import { serveCommand } from './serve-command.js'
import { historyCommand } from './history-command.js'
import { fsckCommand } from './fsck-command.js'
import { clientConfigCommand } from './client-config-command.js'
import { warmCommand } from './warm-command.js'
import { invalidateCommand } from './invalidate-command.js'
import { COMMAND_USAGE, USAGE } from './usage.js'

const commands: Record<string, (argv: string[]) => Promise<number>> = {
  serve: serveCommand,
  history: historyCommand,
  fsck: fsckCommand,
  'client-config': clientConfigCommand,
  warm: warmCommand,
  invalidate: invalidateCommand,
}

async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv
  if (name === 'help' && rest[0] !== undefined && rest[0] in COMMAND_USAGE) {
    process.stdout.write(COMMAND_USAGE[rest[0]])
    return 0
  }
  if (name === undefined || name === '--help' || name === '-h' || name === 'help') {
    process.stdout.write(USAGE)
    return name === undefined ? 2 : 0
  }
  if (name === '--version') {
    const { readFileSync } = await import('node:fs')
    const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8'))
    process.stdout.write(`regcache ${pkg.version}\n`)
    return 0
  }
  const command = commands[name]
  if (!command) {
    process.stderr.write(`regcache: unknown command ${JSON.stringify(name)}\n\n${USAGE}`)
    return 2
  }
  return command(rest)
}

// `regcache history ... | head`: a reader that stops early is not an error.
process.stdout.on('error', (err: NodeJS.ErrnoException) => {
  if (err.code === 'EPIPE') process.exit(process.exitCode ?? 0)
  process.stderr.write(`regcache: cannot write to stdout: ${err.code ?? err.message}\n`)
  process.exit(1)
})

main(process.argv.slice(2)).then(
  (code) => {
    if (code !== 0 || process.exitCode === undefined) process.exitCode = code
  },
  (err) => {
    process.stderr.write(`regcache: ${(err as Error)?.stack ?? err}\n`)
    process.exitCode = 1
  },
)
