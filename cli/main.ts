#!/usr/bin/env node
// The regcache command. Each subcommand lives in its own file; this one only dispatches, and
// loads only the command that runs (so `--help` and small commands start fast).

import { COMMAND_USAGE, USAGE } from './usage.js'

type Command = (argv: string[]) => Promise<number>

const commands: Record<string, () => Promise<Command>> = {
  serve: async () => (await import('./serve-command.js')).serveCommand,
  history: async () => (await import('./history-command.js')).historyCommand,
  fsck: async () => (await import('./fsck-command.js')).fsckCommand,
  'client-config': async () => (await import('./client-config-command.js')).clientConfigCommand,
  warm: async () => (await import('./warm-command.js')).warmCommand,
  invalidate: async () => (await import('./invalidate-command.js')).invalidateCommand,
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
  const load = Object.hasOwn(commands, name) ? commands[name] : undefined
  if (!load) {
    process.stderr.write(`regcache: unknown command ${JSON.stringify(name)}\n\n${USAGE}`)
    return 2
  }
  // A command's own --help needs nothing but its usage text.
  if ((rest[0] === '--help' || rest[0] === '-h') && rest.length === 1 && name in COMMAND_USAGE) {
    process.stdout.write(COMMAND_USAGE[name])
    return 0
  }
  return (await load())(rest)
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
