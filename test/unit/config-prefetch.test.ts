// The `prefetch` section: defaults, both forms of entry, and every kind of mistake named by its key.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { ConfigError, loadConfig } from '../../config/config.js'

function load(t: { teardown: (fn: () => void) => void }, yaml: string) {
  const dir = mkdtempSync(join(tmpdir(), 'regcache-prefetch-config-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const file = join(dir, 'config.yaml')
  writeFileSync(file, `upstreams:\n  docker.io: { url: "https://registry-1.docker.io" }\n  ghcr.io: { url: "https://ghcr.io" }\n${yaml}`)
  return { file, load: () => loadConfig({ file, env: {} }) }
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

t.test('no prefetch section: nothing is prefetched', async (t) => {
  t.same(load(t, '').load().prefetch, [])
})

t.test('a tag entry with the defaults filled in', async (t) => {
  const [p] = load(t, 'prefetch:\n  - image: docker.io/library/nginx:1.27\n').load().prefetch
  t.equal(p.upstream, 'docker.io')
  t.equal(p.repository, 'library/nginx')
  t.equal(p.tag, '1.27')
  t.equal(p.tags, undefined)
  t.same(p.platforms, ['linux/amd64'])
  t.equal(p.everyMs, 10 * 60_000)
  t.equal(p.switch, 'immediate')
  t.equal(p.maxLagMs, 3_600_000)
})

t.test('a Docker Hub short name gets library/', async (t) => {
  const [p] = load(t, 'prefetch:\n  - image: nginx:1.27\n').load().prefetch
  t.equal(p.upstream, 'docker.io')
  t.equal(p.repository, 'library/nginx')
})

t.test('a repository with a tags pattern, platforms, switch and maxLag', async (t) => {
  const [p] = load(
    t,
    'prefetch:\n  - image: ghcr.io/org/app\n    tags: "^v[0-9]+\\\\."\n    platforms: [linux/amd64, linux/arm64/v8]\n    every: 30s\n    switch: when-cached\n    maxLag: 15m\n',
  ).load().prefetch
  t.equal(p.upstream, 'ghcr.io')
  t.equal(p.repository, 'org/app')
  t.equal(p.tag, undefined)
  t.ok(p.tags?.test('v1.2'))
  t.notOk(p.tags?.test('latest'))
  t.same(p.platforms, ['linux/amd64', 'linux/arm64/v8'])
  t.equal(p.everyMs, 30_000)
  t.equal(p.switch, 'when-cached')
  t.equal(p.maxLagMs, 15 * 60_000)
})

t.test('each mistake is reported with the key of its entry', async (t) => {
  const cases: { yaml: string; key: RegExp; about: RegExp }[] = [
    { yaml: '  - image: ghcr.io/org/app\n    tags: "v[0-9"\n', key: /^prefetch\[0\]\.tags: /, about: /regular expression/ },
    { yaml: '  - image: ghcr.io/org/app\n', key: /^prefetch\[0\]\.image: /, about: /expected a tag/ },
    { yaml: '  - image: ghcr.io/org/app:v1\n    tags: "^v"\n', key: /^prefetch\[0\]: /, about: /not both/ },
    { yaml: '  - image: quay.io/org/app:v1\n', key: /^prefetch\[0\]\.image: /, about: /quay\.io is not a configured upstream/ },
    { yaml: '  - image: ghcr.io/org/app@sha256:' + 'a'.repeat(64) + '\n', key: /^prefetch\[0\]\.image: /, about: /digest never moves/ },
    { yaml: '  - image: ghcr.io/org/app:v1\n    every: soon\n', key: /^prefetch\[0\]\.every: /, about: /duration/ },
    { yaml: '  - image: ghcr.io/org/app:v1\n    every: 100ms\n', key: /^prefetch\[0\]\.every: /, about: /at least 1s/ },
    { yaml: '  - image: ghcr.io/org/app:v1\n    maxLag: 1 hour\n', key: /^prefetch\[0\]\.maxLag: /, about: /duration/ },
    { yaml: '  - image: ghcr.io/org/app:v1\n    switch: later\n', key: /^prefetch\[0\]\.switch: /, about: /"immediate", "when-cached"/ },
    { yaml: '  - image: ghcr.io/org/app:v1\n    platforms: [amd64]\n', key: /^prefetch\[0\]\.platforms\[0\]: /, about: /linux\/amd64/ },
    { yaml: '  - image: ghcr.io/org/app:v1\n    platform: linux/amd64\n', key: /^prefetch\[0\]\.platform: /, about: /unknown key/ },
    { yaml: '  - image: ghcr.io/org/app:v1\n  - image: ghcr.io/org/other\n', key: /^prefetch\[1\]\.image: /, about: /expected a tag/ },
  ]
  for (const c of cases) {
    const found = problems(load(t, `prefetch:\n${c.yaml}`).load)
    t.ok(found.some((p) => c.key.test(p) && c.about.test(p)), `${JSON.stringify(c.yaml)}: ${c.key} ${c.about} in ${JSON.stringify(found)}`)
  }
})
