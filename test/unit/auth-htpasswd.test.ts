// htpasswd users: a real file written by `htpasswd -B`, every bcrypt prefix, reloads on change,
// a broken file keeps the last good set, and repeated checks cost one bcrypt.
import { execFileSync } from 'node:child_process'
import { appendFile, chmod, mkdtemp, readFile, rename, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import bcrypt from 'bcryptjs'
import t from 'tap'
import { Htpasswd, HtpasswdError, parseHtpasswd } from '../../auth/htpasswd.js'

interface Line {
  level: 'warn' | 'info'
  obj: object
  msg: string
}

function recorder() {
  const lines: Line[] = []
  return {
    lines,
    log: {
      warn: (obj: object, msg: string) => void lines.push({ level: 'warn', obj, msg }),
      info: (obj: object, msg: string) => void lines.push({ level: 'info', obj, msg }),
    },
  }
}

async function tempDir(t: { teardown(fn: () => unknown): void }): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'regcache-htpasswd-'))
  t.teardown(() => rm(dir, { recursive: true, force: true }))
  return dir
}

async function eventually(what: string, probe: () => Promise<boolean>, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!(await probe())) {
    if (Date.now() > deadline) throw new Error(`${what}: not after ${timeoutMs}ms`)
    await new Promise((r) => setTimeout(r, 50))
  }
}

/** Apache's htpasswd (apache2-utils), as operators create the file. */
const htpasswdB = (args: string[]) => execFileSync('htpasswd', ['-B', '-b', ...args], { stdio: 'pipe' })

const hashWithPrefix = (password: string, prefix: '$2a$' | '$2b$' | '$2y$') => prefix + bcrypt.hashSync(password, 4).slice(4)

t.test('a file written by htpasswd -B ($2y$)', async (t) => {
  const dir = await tempDir(t)
  const file = join(dir, 'htpasswd')
  htpasswdB(['-c', file, 'alice', 'wonder land'])
  htpasswdB([file, 'bob', 'b0b:with:colons'])
  t.match(await readFile(file, 'utf8'), /^alice:\$2y\$05\$.{53}\nbob:\$2y\$/, 'htpasswd wrote $2y$ entries')
  const { log } = recorder()
  const h = await Htpasswd.open(file, { log })
  t.teardown(() => h.close())
  t.equal(h.size, 2)
  t.ok(await h.verify('alice', 'wonder land'), 'alice with her password')
  t.ok(await h.verify('bob', 'b0b:with:colons'), 'bob with his')
  t.notOk(await h.verify('alice', 'wonder lan'), 'a wrong password')
  t.notOk(await h.verify('alice', 'b0b:with:colons'), "another user's password")
  t.notOk(await h.verify('carol', 'wonder land'), 'an unknown user')
  t.notOk(await h.verify('Alice', 'wonder land'), 'names are case-sensitive')
})

t.test('$2a$ and $2b$ entries too', async (t) => {
  const dir = await tempDir(t)
  const file = join(dir, 'htpasswd')
  await writeFile(file, `a:${hashWithPrefix('pa', '$2a$')}\nb:${hashWithPrefix('pb', '$2b$')}\ny:${hashWithPrefix('py', '$2y$')}\n`)
  const h = await Htpasswd.open(file, { log: recorder().log })
  t.teardown(() => h.close())
  for (const u of ['a', 'b', 'y']) {
    t.ok(await h.verify(u, `p${u}`), `${u} accepted`)
    t.notOk(await h.verify(u, `x${u}`), `${u} with a wrong password refused`)
  }
})

t.test('an unknown user costs a bcrypt like a known one', async (t) => {
  const dir = await tempDir(t)
  const file = join(dir, 'htpasswd')
  await writeFile(file, `alice:${hashWithPrefix('pw', '$2y$')}\n`)
  const h = await Htpasswd.open(file, { log: recorder().log })
  t.teardown(() => h.close())
  const before = h.comparisons
  t.notOk(await h.verify('nobody', 'pw'))
  t.equal(h.comparisons - before, 1, 'compared against a stand-in hash')
})

t.test('successful checks are remembered; concurrent ones share one bcrypt', async (t) => {
  const dir = await tempDir(t)
  const file = join(dir, 'htpasswd')
  await writeFile(file, `alice:${hashWithPrefix('pw', '$2y$')}\n`)
  const h = await Htpasswd.open(file, { log: recorder().log })
  t.teardown(() => h.close())
  const results = await Promise.all(Array.from({ length: 20 }, () => h.verify('alice', 'pw')))
  t.ok(results.every((r) => r), 'all 20 accepted')
  t.equal(h.comparisons, 1, 'one bcrypt for 20 concurrent checks')
  for (let i = 0; i < 20; i++) await h.verify('alice', 'pw')
  t.equal(h.comparisons, 1, 'none for 20 more')
  t.notOk(await h.verify('alice', 'nope'))
  t.notOk(await h.verify('alice', 'nope'))
  t.equal(h.comparisons, 3, 'failures are not remembered')
})

t.test('remembered successes expire', async (t) => {
  const dir = await tempDir(t)
  const file = join(dir, 'htpasswd')
  await writeFile(file, `alice:${hashWithPrefix('pw', '$2y$')}\n`)
  const h = await Htpasswd.open(file, { log: recorder().log, cacheTtlMs: 50 })
  t.teardown(() => h.close())
  await h.verify('alice', 'pw')
  await new Promise((r) => setTimeout(r, 200))
  await h.verify('alice', 'pw')
  t.equal(h.comparisons, 2, 'checked again after the TTL')
})

t.test('the file is re-read when it changes', async (t) => {
  const dir = await tempDir(t)
  const file = join(dir, 'htpasswd')
  htpasswdB(['-c', file, 'alice', 'old'])
  const rec = recorder()
  const h = await Htpasswd.open(file, { log: rec.log, debounceMs: 20 })
  t.teardown(() => h.close())
  t.ok(await h.verify('alice', 'old'))

  htpasswdB([file, 'alice', 'new'])
  await eventually('new password in force', () => h.verify('alice', 'new'))
  t.notOk(await h.verify('alice', 'old'), 'the old password, remembered a moment ago, is refused')

  // Replaced by rename, as editors and Kubernetes secret volumes do.
  const next = join(dir, 'htpasswd.next')
  await writeFile(next, `carol:${hashWithPrefix('c', '$2y$')}\n`)
  await rename(next, file)
  await eventually('the replaced file in force', () => h.verify('carol', 'c'))
  t.notOk(await h.verify('alice', 'new'), 'alice is gone')
  t.notOk(rec.lines.some((l) => l.level === 'warn'), 'no warning on the way')
})

t.test('a broken or missing file keeps the last good set and warns', async (t) => {
  const dir = await tempDir(t)
  const file = join(dir, 'htpasswd')
  await writeFile(file, `alice:${hashWithPrefix('pw', '$2y$')}\n`)
  const rec = recorder()
  const h = await Htpasswd.open(file, { log: rec.log, debounceMs: 20 })
  t.teardown(() => h.close())

  await appendFile(file, 'bob:$apr1$abcdefgh$0123456789abcdefghijkl\n')
  await eventually('a warning about the MD5 line', async () => rec.lines.some((l) => l.level === 'warn'))
  const warning = rec.lines.find((l) => l.level === 'warn')
  t.match(warning?.obj, { problems: ['line 2 (bob): not a bcrypt hash; create entries with "htpasswd -B"'] })
  t.notOk(JSON.stringify(rec.lines).includes('$apr1$'), 'the hash is not logged')
  t.ok(await h.verify('alice', 'pw'), 'alice still accepted')

  rec.lines.length = 0
  await rm(file)
  await eventually('a warning about the missing file', async () => rec.lines.some((l) => l.level === 'warn'))
  t.ok(await h.verify('alice', 'pw'), 'alice still accepted with the file gone')
  await h.reload()
  await h.reload()
  t.equal(rec.lines.filter((l) => l.level === 'warn').length, 1, 'said once while the file stays missing')

  rec.lines.length = 0
  await writeFile(file, `alice:${hashWithPrefix('pw2', '$2y$')}\n`)
  await eventually('the good file back', () => h.verify('alice', 'pw2'))
  t.ok(rec.lines.some((l) => l.level === 'info' && l.msg === 'htpasswd file loaded'))
})

t.test('an unusable file at start is an error', async (t) => {
  const dir = await tempDir(t)
  const missing = join(dir, 'none')
  await t.rejects(Htpasswd.open(missing, { log: recorder().log }), { code: 'REGCACHE_HTPASSWD_INVALID' })
  const bad = join(dir, 'bad')
  await writeFile(bad, 'alice:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=\n')
  const err = await Htpasswd.open(bad, { log: recorder().log }).catch((e: unknown) => e)
  t.ok(err instanceof HtpasswdError)
  t.same((err as HtpasswdError).problems, ['line 1 (alice): not a bcrypt hash; create entries with "htpasswd -B"'])
  if (process.getuid?.() !== 0) {
    const unreadable = join(dir, 'unreadable')
    await writeFile(unreadable, '')
    await chmod(unreadable, 0)
    await t.rejects(Htpasswd.open(unreadable, { log: recorder().log }), { code: 'REGCACHE_HTPASSWD_INVALID' })
  }
})

t.test('parsing', async (t) => {
  const h = hashWithPrefix('x', '$2y$')
  t.same(parseHtpasswd(`# comment\n\nalice:${h}\r\n  \nbob:${h}`).problems, [], 'comments, blank lines, CRLF, no final newline')
  t.same([...parseHtpasswd(`alice:${h}\r\n`).users.keys()], ['alice'])
  const rows: Array<[string, string, string]> = [
    ['no colon', 'alice', 'line 1: expected "name:hash"'],
    ['empty name', `:${h}`, 'line 1: expected "name:hash"'],
    ['spaces around the name', ` alice:${h}`, 'line 1: user name with spaces or control characters'],
    ['reserved anonymous', `anonymous:${h}`, 'line 1: "anonymous" is reserved for the access rules'],
    ['reserved star', `*:${h}`, 'line 1: "*" is reserved for the access rules'],
    ['crypt', 'alice:rl0uE9j5Ff8Cg', 'line 1 (alice): not a bcrypt hash; create entries with "htpasswd -B"'],
    ['truncated bcrypt', `alice:${h.slice(0, -1)}`, 'line 1 (alice): not a bcrypt hash; create entries with "htpasswd -B"'],
    ['cost out of range', `alice:$2y$03$${h.slice(7)}`, 'line 1 (alice): not a bcrypt hash; create entries with "htpasswd -B"'],
    ['unknown minor', `alice:$2x$05$${h.slice(7)}`, 'line 1 (alice): not a bcrypt hash; create entries with "htpasswd -B"'],
    ['duplicate', `alice:${h}\nalice:${h}`, 'line 2: user "alice" appears twice'],
  ]
  for (const [name, text, problem] of rows) t.same(parseHtpasswd(text).problems, [problem], name)
})
