// auth/ is a leaf the server and the mirror core build on: it must not reach back into them.
import { readdir, readFile } from 'node:fs/promises'
import { fileURLToPath } from 'node:url'
import pino from 'pino'
import t from 'tap'
import type { WarnLogger } from '../../auth/htpasswd.js'

t.test('auth/ imports nothing from server/, core/, storage/ or upstream/', async (t) => {
  const dir = fileURLToPath(new URL('../../../auth/', import.meta.url))
  const files = (await readdir(dir)).filter((f) => f.endsWith('.ts'))
  t.ok(files.length >= 7, `${files.length} source files`)
  for (const f of files) {
    const text = await readFile(dir + f, 'utf8')
    const imports = [...text.matchAll(/from '([^']+)'/g)].map((m) => m[1])
    const outside = imports.filter((i) => i.startsWith('.') && !i.startsWith('./'))
    t.same(outside, [], `${f} imports only from auth/ and packages`)
  }
})

t.test('a pino logger is what the htpasswd loader logs to', async (t) => {
  const log: WarnLogger = pino({ level: 'silent' })
  t.ok(log)
})
