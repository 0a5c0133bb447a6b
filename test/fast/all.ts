// The fast tier in one process: every test file of test/unit and test/fast, imported in turn,
// so the tier pays for one Node start-up instead of one per file. `npm run test:unit` runs this;
// `npm test` still runs each file on its own.

import { readdirSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'

// Without the tap runner, tap's own limit for the whole process is 30 s; on a loaded machine
// the tier may need longer, and each test keeps its own short timeouts anyway.
process.env.TAP_TIMEOUT ??= '300'

const here = dirname(fileURLToPath(import.meta.url))
for (const dir of [join(here, '..', 'unit'), here]) {
  for (const name of readdirSync(dir).filter((n) => n.endsWith('.test.js')).sort()) {
    await import(pathToFileURL(join(dir, name)).href)
  }
}
