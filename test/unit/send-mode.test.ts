// REGCACHE_SENDFILE, the way blob bodies leave (server/registry/blob-sendfile.ts): table-driven.
import t from 'tap'
import { sendModeFromEnv } from '../../server/registry/blob-sendfile.js'

const cases: [string | undefined, string][] = [
  [undefined, 'copy'],
  ['', 'copy'],
  ['copy', 'copy'],
  ['kernel', 'kernel'],
  ['off', 'off'],
]
for (const [value, want] of cases) t.equal(sendModeFromEnv(value), want, `${JSON.stringify(value)} → ${want}`)

for (const bad of ['on', 'sendfile', 'OFF', ' copy', 'kernel,copy']) {
  t.throws(() => sendModeFromEnv(bad), /REGCACHE_SENDFILE=.*expected copy \(the default\), kernel or off/, `${JSON.stringify(bad)} is refused with a clear error`)
}
