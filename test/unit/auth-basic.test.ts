// Authorization header parsing: every odd input is a clear `invalid`, never an exception and
// never mistaken for an anonymous request.
import t from 'tap'
import { basicAuthorization, MAX_HEADER_LENGTH, parseAuthorization } from '../../auth/basic.js'

const b64 = (s: string) => Buffer.from(s, 'utf8').toString('base64')

t.test('well-formed credentials', async (t) => {
  t.same(parseAuthorization(`Basic ${b64('alice:s3cret')}`), { kind: 'basic', credentials: { username: 'alice', password: 's3cret' } })
  t.same(parseAuthorization(`basic ${b64('alice:s3cret')}`), { kind: 'basic', credentials: { username: 'alice', password: 's3cret' } }, 'scheme is case-insensitive')
  t.same(parseAuthorization(`BASIC   ${b64('alice:s3cret')}  `), { kind: 'basic', credentials: { username: 'alice', password: 's3cret' } }, 'extra spaces')
  t.same(parseAuthorization(`Basic ${b64('alice:pa:ss:word')}`), { kind: 'basic', credentials: { username: 'alice', password: 'pa:ss:word' } }, 'the first colon separates')
  t.same(parseAuthorization(`Basic ${b64('alice:')}`), { kind: 'basic', credentials: { username: 'alice', password: '' } }, 'empty password')
  t.same(parseAuthorization(`Basic ${b64('zoë:pässwörd✓')}`), { kind: 'basic', credentials: { username: 'zoë', password: 'pässwörd✓' } }, 'UTF-8')
  t.same(parseAuthorization([`Basic ${b64('a:b')}`]), { kind: 'basic', credentials: { username: 'a', password: 'b' } }, 'one value in an array')
})

t.test('anonymous', async (t) => {
  t.same(parseAuthorization(undefined), { kind: 'none' })
  t.same(parseAuthorization([]), { kind: 'none' })
  t.same(parseAuthorization(`Basic ${b64(':')}`), { kind: 'none' }, 'what podman and skopeo send without credentials')
})

t.test('other schemes', async (t) => {
  t.same(parseAuthorization('Bearer abc.def.ghi'), { kind: 'other', scheme: 'bearer' })
  t.same(parseAuthorization('Digest username="x"'), { kind: 'other', scheme: 'digest' })
})

t.test('invalid', async (t) => {
  const rows: Array<[string, string | string[], string]> = [
    ['two headers', [`Basic ${b64('a:b')}`, `Basic ${b64('c:d')}`], 'repeated'],
    ['oversized', `Basic ${'A'.repeat(MAX_HEADER_LENGTH)}`, 'oversized'],
    ['empty', '', 'malformed'],
    ['scheme only', 'Basic', 'bad-base64'],
    ['scheme and spaces', 'Basic    ', 'bad-base64'],
    ['not base64', 'Basic !!!!', 'bad-base64'],
    ['base64url alphabet', 'Basic YWxpY2U6c2VjcmV0-_', 'bad-base64'],
    ['missing padding', `Basic ${b64('alice:x').replace(/=+$/, '')}`, 'bad-base64'],
    ['padding in the middle', 'Basic YQ==YQ==', 'bad-base64'],
    ['two tokens', `Basic ${b64('a:b')} ${b64('c:d')}`, 'bad-base64'],
    ['comma list', `Basic ${b64('a:b')}, Bearer x`, 'bad-base64'],
    ['no colon', `Basic ${b64('alice')}`, 'no-colon'],
    ['empty user', `Basic ${b64(':secret')}`, 'empty-username'],
    ['NUL in password', `Basic ${b64('alice:se\u0000cret')}`, 'control-character'],
    ['newline in user', `Basic ${b64('ali\nce:secret')}`, 'control-character'],
    ['DEL in password', `Basic ${b64('alice:x\u007f')}`, 'control-character'],
    ['not UTF-8', `Basic ${Buffer.from([0x61, 0x3a, 0xff, 0xfe]).toString('base64')}`, 'not-utf8'],
    ['garbage scheme', '\u0001\u0002', 'malformed'],
  ]
  for (const [name, header, reason] of rows) t.same(parseAuthorization(header), { kind: 'invalid', reason }, name)
})

t.test('never throws on random input', async (t) => {
  let seed = 42
  const rnd = () => ((seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff)
  for (let i = 0; i < 2000; i++) {
    const len = Math.floor(rnd() * 80)
    let s = rnd() < 0.5 ? 'Basic ' : ''
    for (let j = 0; j < len; j++) s += String.fromCharCode(Math.floor(rnd() * 256))
    parseAuthorization(s)
  }
  t.pass('2000 random headers parsed without an exception')
})

t.test('round trip', async (t) => {
  const credentials = { username: 'bob', password: 'p:ä s' }
  t.same(parseAuthorization(basicAuthorization(credentials)), { kind: 'basic', credentials })
})
