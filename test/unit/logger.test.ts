// The server's log lines: readable on a terminal, JSON elsewhere, secrets hidden in both.
import { PassThrough } from 'node:stream'
import t from 'tap'
import { createLogger, logFormat } from '../../cli/logger.js'

t.test('logFormat', async (t) => {
  const cases: [string, boolean, Record<string, string>, string][] = [
    ['a terminal', true, {}, 'pretty'],
    ['a pipe or file', false, {}, 'json'],
    ['json forced on a terminal', true, { REGCACHE_LOG_FORMAT: 'json' }, 'json'],
    ['JSON in capitals', true, { REGCACHE_LOG_FORMAT: 'JSON' }, 'json'],
    ['pretty forced into a pipe', false, { REGCACHE_LOG_FORMAT: 'pretty' }, 'pretty'],
    ['an unknown value decides nothing', false, { REGCACHE_LOG_FORMAT: 'xml' }, 'json'],
  ]
  for (const [name, tty, env, want] of cases) t.equal(logFormat(tty, env), want, name)
})

function capture(isTTY: boolean) {
  const stream = Object.assign(new PassThrough(), { isTTY })
  let text = ''
  stream.on('data', (c: Buffer) => (text += c.toString('utf8')))
  return { stream, text: () => text }
}

const SECRET = 'hunter2-do-not-log'

t.test('pretty lines on a terminal, secrets redacted', async (t) => {
  const out = capture(true)
  const log = createLogger({ level: 'info', stream: out.stream, env: {} })
  log.info({ req: { headers: { authorization: `Bearer ${SECRET}` } }, upstream: { password: SECRET } }, 'regcache listening')
  log.debug('below the level')
  await new Promise((r) => setImmediate(r))
  const text = out.text()
  t.match(text, /INFO.*regcache listening/)
  t.notOk(text.trimStart().startsWith('{'), 'not JSON')
  t.match(text, /\[redacted\]/)
  t.notMatch(text, SECRET)
  t.notMatch(text, 'below the level')
})

t.test('JSON lines otherwise (and when asked for on a terminal), secrets redacted', async (t) => {
  for (const [isTTY, env] of [
    [false, {}],
    [true, { REGCACHE_LOG_FORMAT: 'json' }],
  ] as const) {
    const out = capture(isTTY)
    const log = createLogger({ level: 'info', stream: out.stream, env })
    log.info({ headers: { authorization: `Basic ${SECRET}` }, password: SECRET }, 'regcache listening')
    await new Promise((r) => setImmediate(r))
    const line = JSON.parse(out.text().trim())
    t.equal(line.msg, 'regcache listening')
    t.equal(line.headers.authorization, '[redacted]')
    t.equal(line.password, '[redacted]')
    t.notMatch(out.text(), SECRET)
  }
})
