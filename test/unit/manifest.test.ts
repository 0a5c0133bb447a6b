// Manifest inspection: media type (header, or the body when the header is generic:
// docs/protocol.md#generic-content-types) and every digest a client may fetch next.
import t from 'tap'
import { MEDIA_TYPES } from '../../oci/media-types.js'
import { ManifestError, inspectManifest, type ManifestInfo } from '../../oci/manifest.js'

const d = (c: string) => `sha256:${c.repeat(64)}`
const CONFIG = d('c')
const L1 = d('1')
const L2 = d('2')
const M1 = d('3')
const M2 = d('4')
const SUBJECT = d('5')

const ociImage = {
  schemaVersion: 2,
  mediaType: MEDIA_TYPES.ociManifest,
  config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: CONFIG, size: 100 },
  layers: [
    { mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: L1, size: 10 },
    { mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: L2, size: 20 },
  ],
}
const dockerImage = { ...ociImage, mediaType: MEDIA_TYPES.dockerManifest }
const ociIndex = {
  schemaVersion: 2,
  mediaType: MEDIA_TYPES.ociIndex,
  manifests: [
    { mediaType: MEDIA_TYPES.ociManifest, digest: M1, size: 500, platform: { os: 'linux', architecture: 'amd64' } },
    { mediaType: MEDIA_TYPES.ociManifest, digest: M2, size: 500, platform: { os: 'linux', architecture: 'arm64' } },
  ],
}
const { mediaType: _omit, ...ociImageNoType } = ociImage
const { mediaType: _omit2, ...ociIndexNoType } = ociIndex
const schema1 = {
  schemaVersion: 1,
  name: 'library/alpine',
  tag: 'latest',
  architecture: 'amd64',
  fsLayers: [{ blobSum: L1 }, { blobSum: L2 }, { blobSum: L1 }],
  history: [],
  signatures: [{ header: {}, signature: 'x', protected: 'y' }],
}
const artifactWithSubject = {
  schemaVersion: 2,
  mediaType: MEDIA_TYPES.ociManifest,
  artifactType: 'application/vnd.example.sbom',
  config: { mediaType: 'application/vnd.oci.empty.v1+json', digest: CONFIG, size: 2 },
  layers: [{ mediaType: 'application/spdx+json', digest: L1, size: 10 }],
  subject: { mediaType: MEDIA_TYPES.ociManifest, digest: SUBJECT, size: 500 },
}

const buf = (doc: unknown) => Buffer.from(JSON.stringify(doc, null, 3))

t.test('inspectManifest', async (t) => {
  const cases: [string, Buffer, string | undefined, ManifestInfo][] = [
    ['OCI image manifest: config then layers', buf(ociImage), MEDIA_TYPES.ociManifest, { mediaType: MEDIA_TYPES.ociManifest, references: [CONFIG, L1, L2] }],
    ['Docker schema2 manifest', buf(dockerImage), MEDIA_TYPES.dockerManifest, { mediaType: MEDIA_TYPES.dockerManifest, references: [CONFIG, L1, L2] }],
    ['index: its child manifests', buf(ociIndex), MEDIA_TYPES.ociIndex, { mediaType: MEDIA_TYPES.ociIndex, references: [M1, M2] }],
    [
      'Docker manifest list',
      buf({ ...ociIndex, mediaType: MEDIA_TYPES.dockerList }),
      MEDIA_TYPES.dockerList,
      { mediaType: MEDIA_TYPES.dockerList, references: [M1, M2] },
    ],
    ['subject is a reference too', buf(artifactWithSubject), MEDIA_TYPES.ociManifest, { mediaType: MEDIA_TYPES.ociManifest, references: [CONFIG, L1, SUBJECT] }],
    [
      'header media type with parameters: the type without them',
      buf(ociImage),
      `${MEDIA_TYPES.ociManifest}; charset=utf-8`,
      { mediaType: MEDIA_TYPES.ociManifest, references: [CONFIG, L1, L2] },
    ],
    [
      'a specific header wins over the body (the upstream type, byte for byte)',
      buf(dockerImage),
      MEDIA_TYPES.ociManifest,
      { mediaType: MEDIA_TYPES.ociManifest, references: [CONFIG, L1, L2] },
    ],
    ['text/plain header: the body mediaType decides', buf(dockerImage), 'text/plain', { mediaType: MEDIA_TYPES.dockerManifest, references: [CONFIG, L1, L2] }],
    [
      'text/plain; charset=utf-8 header: the body mediaType decides',
      buf(ociIndex),
      'text/plain; charset=utf-8',
      { mediaType: MEDIA_TYPES.ociIndex, references: [M1, M2] },
    ],
    ['application/json header: the body mediaType decides', buf(ociIndex), 'application/json', { mediaType: MEDIA_TYPES.ociIndex, references: [M1, M2] }],
    ['application/octet-stream header: the body mediaType decides', buf(ociImage), 'application/octet-stream', { mediaType: MEDIA_TYPES.ociManifest, references: [CONFIG, L1, L2] }],
    ['missing header: the body mediaType decides', buf(dockerImage), undefined, { mediaType: MEDIA_TYPES.dockerManifest, references: [CONFIG, L1, L2] }],
    ['generic header, no body mediaType, "manifests" → OCI index', buf(ociIndexNoType), 'application/json', { mediaType: MEDIA_TYPES.ociIndex, references: [M1, M2] }],
    ['generic header, no body mediaType, "config" → OCI manifest', buf(ociImageNoType), 'text/plain', { mediaType: MEDIA_TYPES.ociManifest, references: [CONFIG, L1, L2] }],
    ['schema1 detected from a generic header (schemaVersion 1)', buf(schema1), 'application/json', { mediaType: MEDIA_TYPES.schema1Signed, references: [L1, L2] }],
    ['schema1 detected with no header', buf(schema1), undefined, { mediaType: MEDIA_TYPES.schema1Signed, references: [L1, L2] }],
    ['schema1 header: fsLayers blobSums, de-duplicated', buf(schema1), MEDIA_TYPES.schema1, { mediaType: MEDIA_TYPES.schema1, references: [L1, L2] }],
    // A body mediaType that is not a manifest type never becomes the Content-Type clients see.
    ['text/html header and body mediaType: inferred from "config"', buf({ ...ociImage, mediaType: 'text/html' }), 'text/html', { mediaType: MEDIA_TYPES.ociManifest, references: [CONFIG, L1, L2] }],
    ['generic header, body mediaType text/html: inferred from "manifests"', buf({ ...ociIndex, mediaType: 'text/html' }), 'application/json', { mediaType: MEDIA_TYPES.ociIndex, references: [M1, M2] }],
    ['known types are matched without regard to case', buf(ociImageNoType), 'Application/VND.oci.image.manifest.v1+json', { mediaType: MEDIA_TYPES.ociManifest, references: [CONFIG, L1, L2] }],
    [
      'duplicate layer digests listed once',
      buf({ ...ociImage, layers: [...ociImage.layers, ociImage.layers[0]] }),
      MEDIA_TYPES.ociManifest,
      { mediaType: MEDIA_TYPES.ociManifest, references: [CONFIG, L1, L2] },
    ],
    [
      'malformed digests are not references',
      buf({ ...ociImage, layers: [{ digest: 'sha256:nothex' }, { digest: 42 }, { digest: L2 }] }),
      MEDIA_TYPES.ociManifest,
      { mediaType: MEDIA_TYPES.ociManifest, references: [CONFIG, L2] },
    ],
  ]
  for (const [why, bytes, contentType, expect] of cases) t.strictSame(inspectManifest(bytes, contentType), expect, why)
})

t.test('inspectManifest: invalid manifests throw ManifestError (MANIFEST_INVALID)', async (t) => {
  const cases: [string, Buffer, string | undefined][] = [
    ['not JSON', Buffer.from('{"schemaVersion": 2,'), MEDIA_TYPES.ociManifest],
    ['empty body', Buffer.alloc(0), MEDIA_TYPES.ociManifest],
    ['HTML error page', Buffer.from('<html>502 Bad Gateway</html>'), 'text/html'],
    ['JSON null', Buffer.from('null'), MEDIA_TYPES.ociManifest],
    ['JSON array', Buffer.from('[]'), MEDIA_TYPES.ociManifest],
    ['JSON string', Buffer.from('"manifest"'), MEDIA_TYPES.ociManifest],
    ['generic header and no hint in the body', Buffer.from('{"schemaVersion": 2}'), 'application/json'],
    ['text/html body mediaType and no manifest structure', Buffer.from('{"schemaVersion": 2, "mediaType": "text/html"}'), 'text/html'],
  ]
  for (const [why, bytes, contentType] of cases) {
    let caught: unknown
    try {
      inspectManifest(bytes, contentType)
    } catch (err) {
      caught = err
    }
    t.ok(caught instanceof ManifestError, `${why}: throws ManifestError`)
    t.equal((caught as ManifestError)?.code, 'MANIFEST_INVALID', `${why}: code MANIFEST_INVALID`)
  }
})
