// Accept normalisation (docs/protocol.md#accept-negotiation-and-tag-keys): a tag is cached per accepted set of manifest
// types regcache knows, never per raw Accept string, so varying the header cannot grow the state. And the Accept forwarded upstream is the client's.
import t from 'tap'
import { MEDIA_TYPES, acceptHeader, acceptKey, isIndexType, isSchema1, keyAccepts } from '../../oci/media-types.js'

const { dockerManifest: DM, dockerList: DL, ociManifest: OM, ociIndex: OI } = MEDIA_TYPES

t.test('acceptKey', async (t) => {
  const cases: [string, string | string[] | undefined, string][] = [
    ['no Accept header → "none"', undefined, 'none'],
    ['empty Accept → "none"', '', 'none'],
    ['only commas and spaces → "none"', ' , ,', 'none'],
    ['empty array → "none"', [], 'none'],
    ['one type', OM, OM],
    ['parameters stripped', `${OM}; charset=utf-8`, OM],
    ['q-values stripped', `${OI};q=0.9, ${OM}; q=0.5`, [OI, OM].sort().join(',')],
    ['lowercased', 'Application/VND.OCI.Image.Manifest.v1+JSON', OM],
    ['whitespace trimmed', `  ${DM} ,  ${DL}  `, [DL, DM].sort().join(',')],
    ['de-duplicated', `${OM}, ${OM};q=1, ${OM.toUpperCase()}`, OM],
    ['sorted', `${OM}, ${DM}`, [DM, OM].sort().join(',')],
    ["containerd's Accept (with */*) → any", `${DM}, ${DL}, ${OM}, ${OI}, */*`, 'any'],
    ['*/* alone → any', '*/*', 'any'],
    ['application/* → any', `application/*, ${OM}`, 'any'],
    ['unknown types do not count', `${OM}, application/json, text/html;q=0.1, x/y`, OM],
    ['only unknown types → other', 'application/json, text/plain', 'other'],
    ['a thousand different junk types → one key', Array.from({ length: 1000 }, (_, i) => `application/x-${i}`).join(', ') + `, ${OM}`, OM],
    [
      'array form (Docker sends one header per type; Node gives repeated headers as an array)',
      [OI, DM, `${DL}, ${OM}`],
      [DL, DM, OI, OM].sort().join(','),
    ],
    ['array with empty entries', ['', OM, ' '], OM],
  ]
  for (const [why, accept, expect] of cases) t.equal(acceptKey(accept), expect, why)
})

t.test('acceptKey: the order and shape of the header do not matter', async (t) => {
  const a = acceptKey(`${DM}, ${DL}, ${OM}, ${OI}`)
  const b = acceptKey(`${OI}, ${OM};q=0.5, ${DL}, ${DM}`)
  const c = acceptKey([OM, OI, DL, DM])
  const d = acceptKey([`${DL},${DM}`, `${OI}, ${OM}`])
  t.equal(a, b)
  t.equal(a, c)
  t.equal(a, d)
  t.not(acceptKey(DM), acceptKey(`${DM}, ${OM}`), 'different sets → different keys')
  t.not(acceptKey(DM), acceptKey(undefined), 'some types vs none → different keys')
})

t.test('keyAccepts: which cached media types a client kind takes', async (t) => {
  const cases: [string, string, boolean][] = [
    ['any', OI, true],
    ['none', DM, true],
    ['other', OM, false],
    [acceptKey(`${OM}, ${OI}`), OI, true],
    [acceptKey(`${OM}, ${OI}`), DM, false],
    [acceptKey(DM), DM.toUpperCase(), true],
  ]
  for (const [key, type, expect] of cases) t.equal(keyAccepts(key, type), expect, `${key} accepts ${type}: ${expect}`)
})

t.test('acceptHeader: forwarded unchanged, joined into one line', async (t) => {
  const cases: [string, string | string[] | undefined, string | undefined][] = [
    ['absent stays absent', undefined, undefined],
    ['string unchanged (parameters, q-values and case kept)', `${OM}; q=0.5, Application/JSON`, `${OM}; q=0.5, Application/JSON`],
    ['array joined with ", "', [OI, `${DM};q=0.9`], `${OI}, ${DM};q=0.9`],
    ['single-element array', [OM], OM],
  ]
  for (const [why, accept, expect] of cases) t.equal(acceptHeader(accept), expect, why)
})

t.test('isIndexType / isSchema1', async (t) => {
  t.ok(isIndexType(DL))
  t.ok(isIndexType(OI))
  t.notOk(isIndexType(DM))
  t.notOk(isIndexType(OM))
  t.ok(isSchema1(MEDIA_TYPES.schema1))
  t.ok(isSchema1(MEDIA_TYPES.schema1Signed))
  t.notOk(isSchema1(DM))
})
