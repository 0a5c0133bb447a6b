// Where an upstream's requests and credentials may go: the pure decisions, table-driven, and the
// guard's lookup refusing a name that resolves into refused address space before any connection.
import t from 'tap'
import {
  DestinationGuard,
  addressAllowed,
  classifyAddress,
  classifyHostText,
  credentialsAllowed,
  schemeAllowed,
  type AddressClass,
} from '../../upstream/destination-guard.js'
import { DestinationRefusedError } from '../../upstream/errors.js'

t.test('classifyAddress', async (t) => {
  const cases: [string, AddressClass][] = [
    ['127.0.0.1', 'loopback'],
    ['127.255.255.254', 'loopback'],
    ['::1', 'loopback'],
    ['::ffff:127.0.0.1', 'loopback'],
    ['169.254.169.254', 'link-local'],
    ['fe80::1', 'link-local'],
    ['10.255.255.1', 'private'],
    ['172.16.0.1', 'private'],
    ['172.31.255.255', 'private'],
    ['192.168.1.1', 'private'],
    ['100.64.0.1', 'private'],
    ['fd00::1', 'private'],
    ['::ffff:10.0.0.1', 'private'],
    ['::ffff:7f00:1', 'loopback'],
    ['0.0.0.0', 'unspecified'],
    ['::', 'unspecified'],
    ['172.32.0.1', 'public'],
    ['8.8.8.8', 'public'],
    ['2606:4700::1111', 'public'],
    ['::ffff:8.8.8.8', 'public'],
  ]
  for (const [ip, cls] of cases) t.equal(classifyAddress(ip), cls, ip)
})

t.test('classifyHostText: literals and localhost only', async (t) => {
  t.equal(classifyHostText('127.0.0.1'), 'loopback')
  t.equal(classifyHostText('[::1]'), 'loopback')
  t.equal(classifyHostText('localhost'), 'loopback')
  t.equal(classifyHostText('cdn.localhost'), 'loopback')
  t.equal(classifyHostText('10.1.2.3'), 'private')
  t.equal(classifyHostText('registry-1.docker.io'), undefined, 'a name says nothing until resolved')
})

t.test('addressAllowed: same class as the upstream, or allowed by config', async (t) => {
  const rows: [AddressClass, AddressClass | undefined, boolean, boolean][] = [
    // target, upstream, allowPrivateRedirects, allowed
    ['public', 'public', false, true],
    ['public', 'loopback', false, true],
    ['loopback', 'public', false, false],
    ['loopback', undefined, false, false],
    ['link-local', 'public', false, false],
    ['private', 'public', false, false],
    ['loopback', 'loopback', false, true],
    ['private', 'private', false, true],
    ['private', 'loopback', false, false],
    ['loopback', 'private', false, false],
    ['link-local', 'private', false, false],
    ['private', 'public', true, true],
    ['loopback', 'public', true, true],
    ['unspecified', 'public', true, false],
    ['unspecified', 'loopback', false, false],
  ]
  for (const [target, upstream, allow, expected] of rows) {
    t.equal(addressAllowed(target, upstream, allow), expected, `${target} from a ${upstream ?? 'unknown'} upstream, allowPrivateRedirects=${allow}`)
  }
})

t.test('schemeAllowed', async (t) => {
  t.equal(schemeAllowed('https:', 'https:'), true)
  t.equal(schemeAllowed('http:', 'https:'), false, 'no downgrade from an https upstream')
  t.equal(schemeAllowed('http:', 'http:'), true)
  t.equal(schemeAllowed('https:', 'http:'), true)
  for (const s of ['file:', 'ftp:', 'data:', 'gopher:', 'javascript:']) t.equal(schemeAllowed(s, 'http:'), false, s)
})

t.test('credentialsAllowed', async (t) => {
  const hub = new URL('https://registry-1.docker.io')
  const plain = new URL('http://registry.lan:5000')
  const rows: [string, URL, string[], boolean][] = [
    ['https://auth.docker.io/token', hub, ['auth.docker.io'], true],
    ['https://AUTH.docker.io./token', hub, ['auth.docker.io'], true],
    ['https://auth.docker.io/token', hub, [], false],
    ['http://auth.docker.io/token', hub, ['auth.docker.io'], false],
    ['https://registry-1.docker.io:8443/token', hub, [], true],
    ['https://evil.example/token', hub, ['auth.docker.io'], false],
    ['https://auth.docker.io.evil.example/token', hub, ['auth.docker.io'], false],
    ['http://registry.lan:5001/token', plain, [], true],
    ['https://registry.lan/token', plain, [], true],
    ['http://other.lan/token', plain, [], false],
    ['ftp://registry.lan/token', plain, [], false],
  ]
  for (const [realm, upstream, realms, expected] of rows) {
    const d = credentialsAllowed(new URL(realm), upstream, realms)
    t.equal(d.send, expected, `${realm} for ${upstream.origin} [${realms.join(',')}]`)
    if (!d.send) t.type(d.reason, 'string')
  }
})

const guardFor = (url: string, more: Partial<{ tokenRealms: string[]; allowPrivateRedirects: boolean }> = {}) =>
  new DestinationGuard({ name: 'test', url, tokenRealms: more.tokenRealms ?? [], allowPrivateRedirects: more.allowPrivateRedirects ?? false })

t.test('checkUrl: schemes and address literals, before any request', async (t) => {
  const refused = (g: DestinationGuard, url: string) => t.throws(() => g.checkUrl(new URL(url), 'redirect'), { code: 'REGCACHE_DESTINATION_REFUSED' }, `${url} refused`)
  const allowed = (g: DestinationGuard, url: string) => t.doesNotThrow(() => g.checkUrl(new URL(url), 'redirect'), `${url} allowed`)
  const pub = guardFor('https://registry.example')
  allowed(pub, 'https://cdn.example/blob')
  allowed(pub, 'https://93.184.216.34/blob')
  refused(pub, 'http://cdn.example/blob')
  refused(pub, 'https://127.0.0.1/blob')
  refused(pub, 'https://[::1]/blob')
  refused(pub, 'https://localhost/blob')
  refused(pub, 'https://169.254.169.254/latest/meta-data')
  refused(pub, 'https://10.0.0.5/blob')
  refused(pub, 'https://[::ffff:192.168.0.1]/blob')
  refused(pub, 'https://0.0.0.0/blob')
  refused(pub, 'file:///etc/passwd')
  const loop = guardFor('http://localhost:5000')
  allowed(loop, 'http://127.0.0.1:9999/blob')
  refused(loop, 'http://10.255.255.1/blob')
  refused(loop, 'http://169.254.169.254/')
  const open = guardFor('https://registry.example', { allowPrivateRedirects: true })
  allowed(open, 'https://10.0.0.5/blob')
  refused(open, 'http://10.0.0.5/blob')
  // A configured realm host is the operator's choice, wherever it is.
  const realms = guardFor('https://registry.example', { tokenRealms: ['10.1.1.1'] })
  allowed(realms, 'https://10.1.1.1/token')
  // Only the origin goes into the error: a CDN URL's query may carry a signature.
  try {
    pub.checkUrl(new URL('https://127.0.0.1/blob?X-Amz-Signature=topsecret'), 'redirect')
  } catch (err) {
    t.notMatch((err as Error).message, /topsecret/)
    t.equal((err as DestinationRefusedError).code, 'REGCACHE_DESTINATION_REFUSED')
  }
})

t.test('lookup: a name resolving into refused address space fails before connecting', async (t) => {
  const lookup = (g: DestinationGuard, host: string, all: boolean) =>
    new Promise<{ err: Error | null; address: unknown }>((resolve) => g.lookup(host, { all }, (err, address) => resolve({ err, address })))
  const pub = guardFor('https://registry.example')
  for (const all of [false, true]) {
    const r = await lookup(pub, 'localhost', all)
    t.type(r.err, DestinationRefusedError, `localhost refused for a public upstream (all=${all})`)
  }
  const loop = guardFor('http://localhost:5000')
  const single = await lookup(loop, 'localhost', false)
  t.equal(single.err, null)
  t.match(single.address, /^(127\.|::1)/)
  const many = await lookup(loop, 'localhost', true)
  t.equal(many.err, null)
  t.ok(Array.isArray(many.address) && many.address.length > 0, 'all: an array of addresses')
  // The upstream's own host is never refused, whatever it resolves to.
  const own = guardFor('https://localhost:5000')
  t.equal((await lookup(own, 'localhost', false)).err, null)
})
