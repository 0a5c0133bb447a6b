// The `auth:` section and the per-upstream credential settings as the config loader reads them,
// and the client configuration generated with credentials.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { stringify } from 'yaml'
import { ConfigError, loadConfig } from '../../config/config.js'
import { containerdHosts, dockerCredentialsNote, podmanAuthJson } from '../../cli/client-config.js'

function load(t: { teardown: (fn: () => void) => void }, doc: Record<string, unknown>) {
  const dir = mkdtempSync(join(tmpdir(), 'regcache-config-auth-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const file = join(dir, 'config.yaml')
  writeFileSync(file, stringify(doc))
  return { dir, load: () => loadConfig({ file, env: {} }) }
}

function problems(fn: () => unknown): string[] {
  try {
    fn()
  } catch (err) {
    if (err instanceof ConfigError) return err.problems
    throw err
  }
  return []
}

t.test('no auth section: no auth, every upstream in mirror mode with the default windows', async (t) => {
  const cfg = load(t, { upstreams: { 'docker.io': { url: 'https://registry-1.docker.io' } } }).load()
  t.equal(cfg.auth, undefined)
  t.equal(cfg.upstreams['docker.io'].credentials, 'mirror')
  t.same(cfg.upstreams['docker.io'].authorization, { recheckMs: 300_000, offlineMs: 86_400_000 })
})

t.test('an auth section: htpasswd relative to the config file, anonymous default, rules', async (t) => {
  const c = load(t, {
    upstreams: { 'ghcr.io': { url: 'https://ghcr.io', credentials: 'client', authorization: { recheck: '30s', offline: '2h' } }, 'docker.io': { url: 'https://registry-1.docker.io' } },
    defaultUpstream: 'docker.io',
    auth: { htpasswd: './htpasswd', rules: [{ users: ['carol'], upstreams: ['docker.io'], repositories: ['team-a/*'] }] },
  })
  const cfg = c.load()
  t.equal(cfg.auth?.htpasswd, join(c.dir, 'htpasswd'))
  t.equal(cfg.auth?.anonymous, true)
  t.same(cfg.auth?.rules, [{ users: ['carol'], upstreams: ['docker.io'], repositories: ['team-a/*'] }])
  t.equal(cfg.upstreams['ghcr.io'].credentials, 'client')
  t.same(cfg.upstreams['ghcr.io'].authorization, { recheckMs: 30_000, offlineMs: 7_200_000 })
})

t.test('what is refused', async (t) => {
  const base = { upstreams: { 'docker.io': { url: 'https://registry-1.docker.io' } } }
  const p = (doc: Record<string, unknown>) => problems(load(t, doc).load).join('\n')
  t.match(p({ ...base, auth: { rules: [{ users: ['x'], upstreams: ['quay.io'], repositories: ['a/*'] }] } }), /auth\.rules\[0\]\.upstreams: "quay\.io" is not a configured upstream/)
  t.match(p({ ...base, auth: { rules: [{ users: ['x'], upstreams: ['*'], repositories: ['Team/*'] }] } }), /auth\.rules\[0\]\.repositories\[0\]/)
  t.match(p({ ...base, auth: { anonymous: 'no' } }), /auth\.anonymous/)
  t.match(p({ ...base, auth: { users: [] } }), /auth\.users: unknown key/)
  t.match(p({ upstreams: { 'docker.io': { url: 'https://x.test', credentials: 'both' } } }), /credentials: expected one of "mirror", "client"/)
  t.match(p({ upstreams: { 'docker.io': { url: 'https://x.test', credentials: 'client', username: 'u', passwordEnv: 'P' } } }), /credentials is "client".*remove username/)
  t.match(p({ upstreams: { 'docker.io': { url: 'https://x.test', credentials: 'client', authorization: { recheck: '0' } } } }), /authorization\.recheck: expected a duration above 0/)
})

t.test('client configuration with credentials', async (t) => {
  const o = { mirror: 'https://regcache.internal:5000', upstreams: { 'docker.io': 'https://registry-1.docker.io' }, fallback: true, credentials: { username: 'carol', password: 's3cret' } }
  const hosts = containerdHosts(o)
  const b64 = Buffer.from('carol:s3cret').toString('base64')
  for (const f of hosts) {
    t.match(f.content, `[host."https://regcache.internal:5000".header]\n  Authorization = ["Basic ${b64}"]`, `${f.path}: the header, for the mirror only`)
    t.equal(f.secret, true)
  }
  t.same(JSON.parse(podmanAuthJson(o)?.content ?? '{}'), { auths: { 'regcache.internal:5000': { auth: b64 } } })
  t.match(dockerCredentialsNote(o) ?? '', /docker login regcache\.internal:5000/)
  t.notOk(dockerCredentialsNote(o)?.includes('s3cret'), 'the note does not print the password')
  t.equal(podmanAuthJson({ ...o, credentials: undefined }), undefined)
  t.notMatch(containerdHosts({ ...o, credentials: undefined })[0].content, /Authorization/)
})
