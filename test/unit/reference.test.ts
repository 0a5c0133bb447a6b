// Names, tags and digests as the distribution spec defines them (docs/protocol.md#names-tags-and-digests), /v2/ path
// parsing (matched from the right), and image references with Docker's defaulting rules.
import t from 'tap'
import {
  DOCKER_HUB_ALIASES,
  MAX_NAME_LENGTH,
  digestAlgorithm,
  isValidDigest,
  isValidName,
  isValidTag,
  looksLikeDigest,
  parseApiPath,
  parseImageRef,
  repositoryFor,
  type ApiPath,
} from '../../oci/reference.js'

const HEX64 = '0123456789abcdef'.repeat(4)
const HEX128 = HEX64.repeat(2)
const SHA256 = `sha256:${HEX64}`
const SHA512 = `sha512:${HEX128}`

/** A valid name of exactly `length` characters built from several path components. */
function nameOfLength(length: number): string {
  let name = 'a'
  while (name.length + 2 <= length) name += '/b'
  if (name.length < length) name += 'c'
  return name
}

t.test('isValidName', async (t) => {
  const valid: [string, string][] = [
    ['single component', 'alpine'],
    ['single character', 'a'],
    ['digits only', '0123'],
    ['two components', 'library/alpine'],
    ['several slashes', 'a/b/c/d/e'],
    ['period separator', 'foo.bar'],
    ['underscore separator', 'foo_bar'],
    ['double underscore separator', 'foo__bar'],
    ['dash separator', 'foo-bar'],
    ['several dashes', 'foo---bar'],
    ['registry-like first component', 'ghcr.io/org/app'],
    ['mixed separators', 'my-org/my_app.v2/sub__x'],
    [`exactly ${MAX_NAME_LENGTH} characters`, nameOfLength(255)],
  ]
  const invalid: [string, string][] = [
    ['empty', ''],
    ['uppercase', 'Alpine'],
    ['uppercase in a later component', 'library/Alpine'],
    ['leading separator', '-foo'],
    ['leading period', '.foo'],
    ['trailing separator', 'foo-'],
    ['trailing period', 'foo.'],
    ['double period', 'foo..bar'],
    ['triple underscore', 'foo___bar'],
    ['underscore then dash', 'foo_-bar'],
    ['leading slash', '/foo'],
    ['trailing slash', 'foo/'],
    ['empty component', 'foo//bar'],
    ['space', 'foo bar'],
    ['colon', 'foo:bar'],
    ['at sign', 'foo@bar'],
    ['port-like component', 'localhost:5000/foo'],
    [`${MAX_NAME_LENGTH + 1} characters`, nameOfLength(256)],
    ['a single component over the limit', 'a'.repeat(300)],
  ]
  t.equal(nameOfLength(255).length, 255)
  t.equal(nameOfLength(256).length, 256)
  t.equal(MAX_NAME_LENGTH, 255)
  for (const [why, name] of valid) t.ok(isValidName(name), `valid: ${why}`)
  for (const [why, name] of invalid) t.notOk(isValidName(name), `invalid: ${why}`)
})

t.test('isValidTag', async (t) => {
  const valid: [string, string][] = [
    ['latest', 'latest'],
    ['dotted version', '1.2.3'],
    ['leading underscore', '_internal'],
    ['leading digit', '3.19'],
    ['uppercase', 'V1-RC'],
    ['128 characters (the limit)', 'a'.repeat(128)],
    ['single character', 'x'],
  ]
  const invalid: [string, string][] = [
    ['empty', ''],
    ['129 characters', 'a'.repeat(129)],
    ['leading period', '.hidden'],
    ['leading dash', '-rc'],
    ['slash', 'foo/bar'],
    ['colon', 'foo:bar'],
    ['plus', '1.0+build'],
    ['space', 'foo bar'],
    ['trailing newline', 'latest\n'],
  ]
  for (const [why, tag] of valid) t.ok(isValidTag(tag), `valid: ${why}`)
  for (const [why, tag] of invalid) t.notOk(isValidTag(tag), `invalid: ${why}`)
})

t.test('isValidDigest', async (t) => {
  const valid: [string, string][] = [
    ['sha256 with 64 lowercase hex', SHA256],
    ['sha512 with 128 lowercase hex', SHA512],
  ]
  const invalid: [string, string][] = [
    ['empty', ''],
    ['uppercase hex', `sha256:${HEX64.toUpperCase()}`],
    ['uppercase algorithm', `SHA256:${HEX64}`],
    ['sha256 with 63 hex', `sha256:${HEX64.slice(1)}`],
    ['sha256 with 65 hex', `sha256:${HEX64}0`],
    ['sha256 with 128 hex', `sha256:${HEX128}`],
    ['sha512 with 64 hex', `sha512:${HEX64}`],
    ['non-hex character', `sha256:${HEX64.slice(1)}g`],
    ['unknown algorithm', `md5:${HEX64}`],
    ['no algorithm', HEX64],
    ['empty encoded part', 'sha256:'],
    ['trailing newline', `${SHA256}\n`],
    ['leading space', ` ${SHA256}`],
  ]
  for (const [why, d] of valid) t.ok(isValidDigest(d), `valid: ${why}`)
  for (const [why, d] of invalid) t.notOk(isValidDigest(d), `invalid: ${why}`)
})

t.test('digestAlgorithm', async (t) => {
  t.equal(digestAlgorithm(SHA256), 'sha256')
  t.equal(digestAlgorithm(SHA512), 'sha512')
})

t.test('looksLikeDigest: a reference with ":" is a digest, even a malformed one', async (t) => {
  const cases: [string, boolean][] = [
    [SHA256, true],
    [SHA512, true],
    [`sha256:${HEX64.toUpperCase()}`, true],
    ['sha256:abc', true],
    ['sha256:', true],
    ['md5:abc', true],
    ['latest', false],
    ['v1.2.3', false],
    ['_x', false],
    [HEX64, false],
  ]
  for (const [ref, expect] of cases) t.equal(looksLikeDigest(ref), expect, `${ref} → ${expect}`)
})

t.test('parseApiPath', async (t) => {
  const cases: [string, string, ApiPath][] = [
    ['base with slash', '/v2/', { endpoint: 'base' }],
    ['base without slash', '/v2', { endpoint: 'base' }],
    ['manifest by tag', '/v2/alpine/manifests/latest', { endpoint: 'manifests', name: 'alpine', reference: 'latest' }],
    ['manifest by digest', `/v2/library/alpine/manifests/${SHA256}`, { endpoint: 'manifests', name: 'library/alpine', reference: SHA256 }],
    ['name with several slashes', '/v2/a/b/c/d/manifests/v1', { endpoint: 'manifests', name: 'a/b/c/d', reference: 'v1' }],
    ['path-prefix name', '/v2/ghcr.io/org/app/manifests/v1', { endpoint: 'manifests', name: 'ghcr.io/org/app', reference: 'v1' }],
    [
      'matched from the right: a name containing a "manifests" component',
      '/v2/org/manifests/app/manifests/latest',
      { endpoint: 'manifests', name: 'org/manifests/app', reference: 'latest' },
    ],
    [
      'matched from the right: a name containing a "blobs" component',
      `/v2/org/blobs/app/blobs/${SHA256}`,
      { endpoint: 'blobs', name: 'org/blobs/app', reference: SHA256 },
    ],
    ['blob', `/v2/library/alpine/blobs/${SHA256}`, { endpoint: 'blobs', name: 'library/alpine', reference: SHA256 }],
    ['blob uploads with trailing slash', '/v2/library/alpine/blobs/uploads/', { endpoint: 'uploads', name: 'library/alpine' }],
    ['blob uploads without trailing slash', '/v2/library/alpine/blobs/uploads', { endpoint: 'uploads', name: 'library/alpine' }],
    ['blob upload session', '/v2/org/app/blobs/uploads/3f2a-11ee', { endpoint: 'uploads', name: 'org/app' }],
    ['tags list', '/v2/org/team/app/tags/list', { endpoint: 'tags', name: 'org/team/app' }],
    ['referrers', `/v2/org/app/referrers/${SHA256}`, { endpoint: 'referrers', name: 'org/app', reference: SHA256 }],
    ['unknown: catalog', '/v2/_catalog', { endpoint: 'unknown' }],
    ['unknown: name only', '/v2/library/alpine', { endpoint: 'unknown' }],
    ['unknown: empty reference', '/v2/alpine/manifests/', { endpoint: 'unknown' }],
    ['unknown: trailing slash after reference', '/v2/alpine/manifests/latest/', { endpoint: 'unknown' }],
    ['unknown: no name', '/v2/manifests/latest', { endpoint: 'unknown' }],
    ['unknown: tags without list', '/v2/alpine/tags', { endpoint: 'unknown' }],
    ['unknown: tags/list with more after it', '/v2/alpine/tags/list/extra', { endpoint: 'unknown' }],
    ['unknown: other API version', '/v1/alpine/manifests/latest', { endpoint: 'unknown' }],
    ['unknown: not under /v2', '/metrics', { endpoint: 'unknown' }],
  ]
  for (const [why, path, expect] of cases) t.strictSame(parseApiPath(path), expect, `${why}: ${path}`)
})

t.test('parseImageRef', async (t) => {
  type Ref = ReturnType<typeof parseImageRef>
  const cases: [string, string, Ref][] = [
    ['bare name defaults to docker.io and latest', 'alpine', { registry: 'docker.io', repository: 'alpine', tag: 'latest', digest: undefined }],
    ['tag', 'alpine:3.19', { registry: 'docker.io', repository: 'alpine', tag: '3.19', digest: undefined }],
    ['Docker Hub namespace is not a registry', 'myorg/app:v1', { registry: 'docker.io', repository: 'myorg/app', tag: 'v1', digest: undefined }],
    ['library/ kept as written', 'library/alpine', { registry: 'docker.io', repository: 'library/alpine', tag: 'latest', digest: undefined }],
    ['explicit docker.io', 'docker.io/library/alpine:3', { registry: 'docker.io', repository: 'library/alpine', tag: '3', digest: undefined }],
    ['registry host with a dot', 'ghcr.io/org/app:v1', { registry: 'ghcr.io', repository: 'org/app', tag: 'v1', digest: undefined }],
    ['registry with port, no tag', 'registry.example.com:8443/team/app', { registry: 'registry.example.com:8443', repository: 'team/app', tag: 'latest', digest: undefined }],
    ['registry with port and tag', 'localhost:5000/app:dev', { registry: 'localhost:5000', repository: 'app', tag: 'dev', digest: undefined }],
    ['localhost without port', 'localhost/app', { registry: 'localhost', repository: 'app', tag: 'latest', digest: undefined }],
    ['digest only: no default tag', `alpine@${SHA256}`, { registry: 'docker.io', repository: 'alpine', tag: undefined, digest: SHA256 }],
    ['tag and digest', `alpine:3.19@${SHA256}`, { registry: 'docker.io', repository: 'alpine', tag: '3.19', digest: SHA256 }],
    [
      'registry with port, tag and digest',
      `localhost:5000/org/app:v2@${SHA256}`,
      { registry: 'localhost:5000', repository: 'org/app', tag: 'v2', digest: SHA256 },
    ],
    ['another default registry', 'app:v1', { registry: 'ghcr.io', repository: 'app', tag: 'v1', digest: undefined }],
  ]
  for (const [why, ref, expect] of cases) {
    const def = why === 'another default registry' ? 'ghcr.io' : 'docker.io'
    t.strictSame(parseImageRef(ref, def), expect, `${why}: ${ref}`)
  }
})

t.test('repositoryFor: library/ for single-component names on Docker Hub aliases only', async (t) => {
  const cases: [string, string, string][] = [
    ['docker.io', 'alpine', 'library/alpine'],
    ['registry-1.docker.io', 'alpine', 'library/alpine'],
    ['index.docker.io', 'alpine', 'library/alpine'],
    ['registry.hub.docker.com', 'alpine', 'library/alpine'],
    ['docker.io', 'library/alpine', 'library/alpine'],
    ['docker.io', 'myorg/app', 'myorg/app'],
    ['docker.io', 'a/b/c', 'a/b/c'],
    ['ghcr.io', 'alpine', 'alpine'],
    ['quay.io', 'app', 'app'],
    ['localhost:5000', 'alpine', 'alpine'],
    ['docker.io.example.com', 'alpine', 'alpine'],
  ]
  for (const [upstream, name, expect] of cases) t.equal(repositoryFor(upstream, name), expect, `${upstream} ${name} → ${expect}`)
  t.ok(DOCKER_HUB_ALIASES.has('docker.io'))
})
