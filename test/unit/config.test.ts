// Configuration loading: built-in defaults, environment overrides, relative paths, and one
// fixture per kind of error, each of which must name the file and the key at fault.
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import t from 'tap'
import { ConfigError, loadConfig, parseListen } from '../../config/config.js'

// Fixtures live in the source tree, not in dist/ (tests run from the project root).
const FIXTURES = resolve(process.cwd(), 'test/fixtures/config')
const fixture = (name: string) => join(FIXTURES, name)

const SEC = 1000
const DAY = 86_400_000

function tempDir(t: { teardown: (fn: () => void) => void }): string {
  const dir = mkdtempSync(join(tmpdir(), 'regcache-config-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  return dir
}

function configError(fn: () => unknown): ConfigError | undefined {
  try {
    fn()
  } catch (err) {
    return err instanceof ConfigError ? err : undefined
  }
  return undefined
}

t.test('built-in defaults when there is no file', async (t) => {
  const cfg = loadConfig({ env: {}, cwd: '/srv/regcache' })
  t.strictSame(cfg.listen, { host: '0.0.0.0', port: 5000 })
  t.equal(cfg.dataDir, '/srv/regcache/data', 'dataDir ./data resolved against cwd')
  t.equal(cfg.logLevel, 'info')
  t.equal(cfg.defaultUpstream, 'docker.io')
  t.strictSame(Object.keys(cfg.upstreams), ['docker.io'])
  const hub = cfg.upstreams['docker.io']
  t.equal(hub.name, 'docker.io')
  t.equal(hub.url, 'https://registry-1.docker.io')
  t.equal(hub.username, undefined)
  t.equal(hub.password, undefined)
  t.equal(hub.insecureSkipVerify, false)
  t.strictSame(hub.revalidate, { timeoutMs: 2 * SEC, minIntervalMs: 0 })
  t.strictSame(hub.stale, { maxAgeMs: 7 * DAY, onNotFound: 'passthrough' })
  t.equal(hub.onRollback, 'follow')
  t.strictSame(hub.down, { failures: 3, probeIntervalMs: 10 * SEC })
  t.strictSame(hub.timeouts, { connectMs: 5 * SEC, headersMs: 30 * SEC, bodyMs: 60 * SEC })
  t.strictSame(cfg.cache, { maxSizeBytes: undefined, maxAgeMs: undefined, scrubMs: 7 * DAY })
  t.equal(cfg.tls, undefined)
  t.equal(cfg.shutdownGraceMs, 30 * SEC)
})

t.test('defaults: dataDir resolved against process.cwd() when no cwd is given', async (t) => {
  const cfg = loadConfig({ env: {} })
  t.equal(cfg.dataDir, resolve(process.cwd(), 'data'))
})

t.test('defaults are not shared between loads, and the result is frozen', async (t) => {
  const a = loadConfig({ env: {}, cwd: '/a' })
  const b = loadConfig({ env: {}, cwd: '/b' })
  t.not(a.upstreams, b.upstreams)
  t.equal(b.dataDir, '/b/data')
  t.ok(Object.isFrozen(a), 'config frozen')
  t.ok(Object.isFrozen(a.upstreams), 'upstreams frozen')
  t.ok(Object.isFrozen(a.upstreams['docker.io']), 'an upstream frozen')
  t.ok(Object.isFrozen(a.upstreams['docker.io'].stale), 'nested blocks frozen')
})

t.test('environment overrides (env passed explicitly)', async (t) => {
  const cases: { name: string; env: Record<string, string>; listen?: { host: string; port: number }; dataDir?: string }[] = [
    { name: 'REGCACHE_LISTEN', env: { REGCACHE_LISTEN: '127.0.0.1:6000' }, listen: { host: '127.0.0.1', port: 6000 } },
    { name: 'REGCACHE_LISTEN with IPv6', env: { REGCACHE_LISTEN: '[::1]:5001' }, listen: { host: '::1', port: 5001 } },
    { name: 'REGCACHE_LISTEN without a host', env: { REGCACHE_LISTEN: ':7000' }, listen: { host: '0.0.0.0', port: 7000 } },
    { name: 'REGCACHE_DATA_DIR absolute', env: { REGCACHE_DATA_DIR: '/var/lib/regcache' }, dataDir: '/var/lib/regcache' },
    { name: 'REGCACHE_DATA_DIR relative, no file: against cwd', env: { REGCACHE_DATA_DIR: 'cache' }, dataDir: '/srv/x/cache' },
    {
      name: 'both',
      env: { REGCACHE_LISTEN: '10.0.0.1:80', REGCACHE_DATA_DIR: '/data' },
      listen: { host: '10.0.0.1', port: 80 },
      dataDir: '/data',
    },
    { name: 'empty values are ignored', env: { REGCACHE_LISTEN: '', REGCACHE_DATA_DIR: '' }, listen: { host: '0.0.0.0', port: 5000 }, dataDir: '/srv/x/data' },
  ]
  for (const c of cases) {
    const cfg = loadConfig({ env: c.env, cwd: '/srv/x' })
    if (c.listen) t.strictSame(cfg.listen, c.listen, `${c.name}: listen`)
    if (c.dataDir) t.equal(cfg.dataDir, c.dataDir, `${c.name}: dataDir`)
  }
})

t.test('environment overrides win over the file', async (t) => {
  const dir = tempDir(t)
  const file = join(dir, 'regcache.yaml')
  writeFileSync(file, 'listen: "0.0.0.0:5000"\ndataDir: ./from-file\n')
  const plain = loadConfig({ file, env: {} })
  t.strictSame(plain.listen, { host: '0.0.0.0', port: 5000 })
  t.equal(plain.dataDir, join(dir, 'from-file'))
  const over = loadConfig({ file, env: { REGCACHE_LISTEN: '127.0.0.1:5555', REGCACHE_DATA_DIR: '/var/lib/regcache' } })
  t.strictSame(over.listen, { host: '127.0.0.1', port: 5555 })
  t.equal(over.dataDir, '/var/lib/regcache')
})

t.test('an invalid REGCACHE_LISTEN is a ConfigError naming listen', async (t) => {
  const err = configError(() => loadConfig({ env: { REGCACHE_LISTEN: 'not-an-address' } }))
  t.ok(err, 'ConfigError thrown')
  t.match(err?.message, /\blisten\b/)
})

t.test('relative paths are resolved against the config file directory', async (t) => {
  const dir = tempDir(t)
  mkdirSync(join(dir, 'secrets'))
  writeFileSync(join(dir, 'secrets', 'ghcr-password'), 's3cret\n')
  const file = join(dir, 'regcache.yaml')
  writeFileSync(
    file,
    [
      'dataDir: ./cache',
      'defaultUpstream: ghcr.io',
      'upstreams:',
      '  ghcr.io:',
      '    url: https://ghcr.io/',
      '    username: robot',
      '    passwordFile: secrets/ghcr-password',
      '    caFile: ./ca.pem',
      'tls:',
      '  certFile: tls/server.crt',
      '  keyFile: /etc/regcache/server.key',
      '',
    ].join('\n'),
  )
  // cwd is elsewhere: paths must not depend on it.
  const cfg = loadConfig({ file, env: {}, cwd: '/somewhere/else' })
  t.equal(cfg.dataDir, join(dir, 'cache'))
  t.equal(cfg.upstreams['ghcr.io'].password, 's3cret', 'password read from the file, trailing newline dropped')
  t.equal(cfg.upstreams['ghcr.io'].caFile, join(dir, 'ca.pem'))
  t.equal(cfg.upstreams['ghcr.io'].url, 'https://ghcr.io', 'trailing slash dropped from the URL')
  t.strictSame(cfg.tls, { certFile: join(dir, 'tls/server.crt'), keyFile: '/etc/regcache/server.key' })
})

t.test('a relative config file path is read from the same cwd its directory is resolved against', async (t) => {
  // loadConfig resolves relative paths against dirname(resolve(cwd, file)), so the file itself
  // must be read from resolve(cwd, file) too, not from process.cwd().
  const dir = tempDir(t)
  writeFileSync(join(dir, 'regcache.yaml'), 'dataDir: ./cache\n')
  t.not(resolve(dir), process.cwd())
  const err = configError(() => loadConfig({ file: 'regcache.yaml', env: {}, cwd: dir }))
  t.equal(err, undefined, 'the file is found relative to cwd')
  if (!err) t.equal(loadConfig({ file: 'regcache.yaml', env: {}, cwd: dir }).dataDir, join(dir, 'cache'))
})

t.test('values from the file: durations, sizes, enums, passwordEnv', async (t) => {
  const dir = tempDir(t)
  const file = join(dir, 'regcache.yaml')
  writeFileSync(
    file,
    [
      'listen: "[::]:5000"',
      'logLevel: debug',
      'upstreams:',
      '  docker.io:',
      '    url: https://registry-1.docker.io',
      '    revalidate: { timeout: 500ms, minInterval: 1m30s }',
      '    stale: { maxAge: 0, onNotFound: serve }',
      '    onRollback: refuse',
      '    down: { failures: 5, probeInterval: 30s }',
      '    timeouts: { connect: 1s, headers: 2 }',
      '  quay.io:',
      '    url: http://quay.internal:8080/mirror',
      '    username: robot',
      '    passwordEnv: QUAY_PASSWORD',
      'cache:',
      '  maxSize: 50GiB',
      '  maxAge: 30d',
      'shutdownGrace: 1h',
      '',
    ].join('\n'),
  )
  const cfg = loadConfig({ file, env: { QUAY_PASSWORD: 'hunter2' } })
  t.strictSame(cfg.listen, { host: '::', port: 5000 })
  t.equal(cfg.logLevel, 'debug')
  const hub = cfg.upstreams['docker.io']
  t.strictSame(hub.revalidate, { timeoutMs: 500, minIntervalMs: 90 * SEC })
  t.strictSame(hub.stale, { maxAgeMs: 0, onNotFound: 'serve' })
  t.equal(hub.onRollback, 'refuse')
  t.strictSame(hub.down, { failures: 5, probeIntervalMs: 30 * SEC })
  t.strictSame(hub.timeouts, { connectMs: SEC, headersMs: 2 * SEC, bodyMs: 60 * SEC }, 'a bare number is seconds; unset keys keep defaults')
  const quay = cfg.upstreams['quay.io']
  t.equal(quay.url, 'http://quay.internal:8080/mirror')
  t.equal(quay.username, 'robot')
  t.equal(quay.password, 'hunter2', 'password from the env passed in')
  t.strictSame(cfg.cache, { maxSizeBytes: 50 * 1024 ** 3, maxAgeMs: 30 * DAY, scrubMs: 7 * DAY })
  t.equal(cfg.shutdownGraceMs, 3_600_000)
})

t.test('an empty file, or one with only comments, means the defaults', async (t) => {
  const dir = tempDir(t)
  for (const [name, text] of [
    ['empty.yaml', ''],
    ['comments.yaml', '# nothing here yet\n# listen: "0.0.0.0:6000"\n'],
    ['empty-blocks.yaml', 'cache:\n  # maxSize: 50GiB\n'],
  ]) {
    const file = join(dir, name)
    writeFileSync(file, text)
    const cfg = loadConfig({ file, env: {} })
    t.strictSame(cfg.listen, { host: '0.0.0.0', port: 5000 }, `${name}: listen`)
    t.equal(cfg.dataDir, join(dir, 'data'), `${name}: dataDir`)
    t.equal(cfg.upstreams['docker.io']?.url, 'https://registry-1.docker.io', `${name}: docker.io`)
  }
})

t.test('a missing config file is a ConfigError naming the file', async (t) => {
  const file = fixture('does-not-exist.yaml')
  const err = configError(() => loadConfig({ file, env: {} }))
  t.ok(err, 'ConfigError thrown')
  t.match(err?.message, file)
  t.equal(err?.code, 'REGCACHE_CONFIG_INVALID')
})

t.test('one fixture per error: ConfigError naming the file and the key', async (t) => {
  const cases: { fixture: string; key: RegExp; about?: RegExp; misleading?: RegExp; env?: Record<string, string> }[] = [
    { fixture: 'unknown-top-level-key.yaml', key: /(^|\s)cacheDir: /m, about: /unknown key/ },
    { fixture: 'unknown-nested-key.yaml', key: /upstreams\.docker\.io\.stale\.maxAgee: /, about: /unknown key/ },
    { fixture: 'wrong-type.yaml', key: /upstreams\.docker\.io\.down\.failures: /, about: /integer/ },
    { fixture: 'bad-url-scheme.yaml', key: /upstreams\.ghcr\.io\.url: /, about: /ftp:\/\/ghcr\.io/ },
    { fixture: 'bad-duration.yaml', key: /upstreams\.docker\.io\.revalidate\.timeout: /, about: /2 seconds/ },
    { fixture: 'bad-duration-negative.yaml', key: /upstreams\.docker\.io\.stale\.maxAge: /, about: /-5/ },
    { fixture: 'bad-enum.yaml', key: /upstreams\.docker\.io\.onRollback: /, about: /"follow".*"refuse"/ },
    { fixture: 'default-upstream-undefined.yaml', key: /(^|\s)defaultUpstream: /m, about: /quay\.io/ },
    { fixture: 'username-without-password.yaml', key: /upstreams\.ghcr\.io(\.username)?: /, about: /username/ },
    { fixture: 'password-env-unset.yaml', key: /upstreams\.ghcr\.io\.passwordEnv: /, about: /REGCACHE_TEST_PASSWORD_NOT_SET/ },
    { fixture: 'password-file-unreadable.yaml', key: /upstreams\.ghcr\.io\.passwordFile: /, about: /no-such-password-file/ },
    { fixture: 'bad-listen.yaml', key: /(^|\s)listen: /m, about: /"5000"/ },
    { fixture: 'bad-size.yaml', key: /(^|\s)cache\.maxSize: /m, about: /50 gigabytes/ },
    { fixture: 'zero-revalidate-timeout.yaml', key: /upstreams\.docker\.io\.revalidate\.timeout: /, about: /above 0/ },
    { fixture: 'missing-url.yaml', key: /upstreams\.ghcr\.io(\.url)?: /, about: /url/ },
    { fixture: 'bad-listen-port.yaml', key: /(^|\s)listen: /m, about: /70000/ },
    { fixture: 'password-without-username.yaml', key: /upstreams\.ghcr\.io(\.username)?: /, about: /username/, env: { GHCR_PASSWORD: 'x' } },
    // An upstream keyed by URL instead of host: one problem, about the name, and nothing about durations.
    { fixture: 'bad-upstream-name.yaml', key: /(^|\s)upstreams: /m, about: /registry hosts.*https:\/\/ghcr\.io/, misleading: /duration/ },
  ]
  for (const c of cases) {
    const file = fixture(c.fixture)
    const err = configError(() => loadConfig({ file, env: c.env ?? {} }))
    t.ok(err, `${c.fixture}: ConfigError thrown`)
    if (!err) continue
    t.ok(err.message.includes(file), `${c.fixture}: the message names the file`)
    t.match(err.message, c.key, `${c.fixture}: the message names the key`)
    if (c.about) t.match(err.message, c.about, `${c.fixture}: the message says what is wrong`)
    if (c.misleading) t.notMatch(err.message, c.misleading, `${c.fixture}: no misleading problem reported`)
    t.equal(err.code, 'REGCACHE_CONFIG_INVALID', `${c.fixture}: code`)
  }
})

t.test('passwordEnv is read from the env passed in, not process.env', async (t) => {
  const file = fixture('password-env-unset.yaml')
  const cfg = loadConfig({ file, env: { REGCACHE_TEST_PASSWORD_NOT_SET: 'from-env' } })
  t.equal(cfg.upstreams['ghcr.io'].password, 'from-env')
})

t.test('invalid YAML: ConfigError naming the file and where', async (t) => {
  const file = fixture('invalid-yaml.yaml')
  const err = configError(() => loadConfig({ file, env: {} }))
  t.ok(err, 'ConfigError thrown')
  t.ok(err?.message.includes(file), 'names the file')
  t.match(err?.message, /YAML/)
  t.match(err?.message, /line \d+/, 'says where in the file')
})

t.test('a YAML scalar instead of a mapping: ConfigError naming the file', async (t) => {
  const file = fixture('scalar.yaml')
  const err = configError(() => loadConfig({ file, env: {} }))
  t.ok(err, 'ConfigError thrown')
  t.ok(err?.message.includes(file), 'names the file')
  t.match(err?.message, /mapping/)
})

t.test('every violation is reported at once', async (t) => {
  const file = fixture('multiple-errors.yaml')
  const err = configError(() => loadConfig({ file, env: {} }))
  t.ok(err, 'ConfigError thrown')
  t.match(err?.message, /(^|\s)logLevel: /m)
  t.match(err?.message, /upstreams\.docker\.io\.onRollback: /)
  t.match(err?.message, /upstreams\.docker\.io\.timeouts\.connect: /)
  t.ok((err?.problems.length ?? 0) >= 3, 'one problem per violation')
})

t.test('parseListen', async (t) => {
  const cases: [string, { host: string; port: number }][] = [
    ['0.0.0.0:5000', { host: '0.0.0.0', port: 5000 }],
    ['127.0.0.1:80', { host: '127.0.0.1', port: 80 }],
    ['[::]:5000', { host: '::', port: 5000 }],
    ['[::1]:6000', { host: '::1', port: 6000 }],
    [':5000', { host: '0.0.0.0', port: 5000 }],
    ['mirror.internal:443', { host: 'mirror.internal', port: 443 }],
  ]
  for (const [value, expect] of cases) t.strictSame(parseListen(value), expect, value)
})

t.test('durations a Node timer cannot hold and non-finite values are refused, naming the key', async (t) => {
  const dir = tempDir(t)
  const cases: { yaml: string; key: RegExp }[] = [
    // 2^31 ms is one past the longest timer; 25d is above it too.
    { yaml: 'upstreams:\n  docker.io:\n    url: https://registry-1.docker.io\n    timeouts:\n      body: 2147484s\n', key: /upstreams\.docker\.io\.timeouts\.body: / },
    { yaml: 'upstreams:\n  docker.io:\n    url: https://registry-1.docker.io\n    down:\n      probeInterval: 25d\n', key: /upstreams\.docker\.io\.down\.probeInterval: / },
    { yaml: 'shutdownGrace: 30d\n', key: /(^|\s)shutdownGrace: /m },
    { yaml: 'upstreams:\n  docker.io:\n    url: https://registry-1.docker.io\n    revalidate:\n      timeout: .inf\n', key: /upstreams\.docker\.io\.revalidate\.timeout: / },
    { yaml: 'upstreams:\n  docker.io:\n    url: https://registry-1.docker.io\n    stale:\n      maxAge: .nan\n', key: /upstreams\.docker\.io\.stale\.maxAge: / },
    { yaml: 'cache:\n  maxAge: -.inf\n', key: /(^|\s)cache\.maxAge: /m },
  ]
  for (const [i, c] of cases.entries()) {
    const file = join(dir, `case-${i}.yaml`)
    writeFileSync(file, c.yaml)
    const err = configError(() => loadConfig({ file, env: {} }))
    t.ok(err, `${JSON.stringify(c.yaml)}: refused`)
    t.match(err?.message, c.key, `${JSON.stringify(c.yaml)}: names the key`)
  }
  // The longest timer itself is fine, and long non-timer durations (stale.maxAge) are too.
  const ok = join(dir, 'ok.yaml')
  writeFileSync(ok, 'upstreams:\n  docker.io:\n    url: https://registry-1.docker.io\n    timeouts:\n      body: 2147483s\n    stale:\n      maxAge: 365d\n')
  const cfg = loadConfig({ file: ok, env: {} })
  t.equal(cfg.upstreams['docker.io'].timeouts.bodyMs, 2_147_483_000)
  t.equal(cfg.upstreams['docker.io'].stale.maxAgeMs, 365 * DAY)
})

t.test('a password inside an upstream url is refused without echoing it', async (t) => {
  const dir = tempDir(t)
  const file = join(dir, 'config.yaml')
  writeFileSync(file, 'upstreams:\n  ghcr.io:\n    url: https://robot:hunter2-secret@ghcr.io\ndefaultUpstream: ghcr.io\n')
  const err = configError(() => loadConfig({ file, env: {} }))
  t.ok(err, 'refused')
  t.match(err?.message, /upstreams\.ghcr\.io\.url: /)
  t.match(err?.message, /passwordFile/, 'says what to use instead')
  t.notMatch(err?.message, /hunter2-secret/, 'the password is not repeated in the message')
})

t.test('token realms: auth.docker.io for Docker Hub by default, configurable, validated', async (t) => {
  t.strictSame(loadConfig({ env: {} }).upstreams['docker.io'].tokenRealms, ['auth.docker.io'], 'built-in default upstream')
  t.equal(loadConfig({ env: {} }).upstreams['docker.io'].allowPrivateRedirects, false)
  const dir = tempDir(t)
  const write = (name: string, yaml: string) => {
    const file = join(dir, name)
    writeFileSync(file, yaml)
    return file
  }
  const hub = loadConfig({ file: write('hub.yaml', 'upstreams:\n  docker.io:\n    url: https://registry-1.docker.io\n'), env: {} })
  t.strictSame(hub.upstreams['docker.io'].tokenRealms, ['auth.docker.io'], 'derived for registry-1.docker.io written out')
  const ghcr = loadConfig({
    file: write('ghcr.yaml', 'defaultUpstream: ghcr.io\nupstreams:\n  ghcr.io:\n    url: https://ghcr.io\n    tokenRealms: [Auth.Example.com]\n    allowPrivateRedirects: true\n'),
    env: {},
  })
  t.strictSame(ghcr.upstreams['ghcr.io'].tokenRealms, ['auth.example.com'])
  t.equal(ghcr.upstreams['ghcr.io'].allowPrivateRedirects, true)
  const none = loadConfig({ file: write('none.yaml', 'upstreams:\n  docker.io:\n    url: https://registry-1.docker.io\n    tokenRealms: []\n'), env: {} })
  t.strictSame(none.upstreams['docker.io'].tokenRealms, [], 'an explicit empty list wins over the derived default')
  const err = configError(() => loadConfig({ file: write('bad.yaml', 'upstreams:\n  docker.io:\n    url: https://registry-1.docker.io\n    tokenRealms: ["https://auth.docker.io/token"]\n'), env: {} }))
  t.match(err?.message, /upstreams\.docker\.io\.tokenRealms\.0: expected a host name/)
})
