// From an Authorization header to an identity or a refusal: htpasswd users, anonymous on and off,
// malformed headers, and throttling of failed attempts per address.
import t from 'tap'
import { Authenticator, type PasswordCheck } from '../../auth/authenticate.js'
import { basicAuthorization } from '../../auth/basic.js'
import { FailureThrottle } from '../../auth/throttle.js'

const passwords: PasswordCheck = { verify: async (u, p) => u === 'alice' && p === 'pw' }
const alice = basicAuthorization({ username: 'alice', password: 'pw' })
const wrong = basicAuthorization({ username: 'alice', password: 'guess' })

function setup(anonymous: boolean, maxFailures = 3) {
  const clock = { now: 1_000_000 }
  const throttle = new FailureThrottle({ maxFailures, windowMs: 60_000, blockMs: 120_000, now: () => clock.now })
  return { auth: new Authenticator({ passwords, anonymous, throttle }), throttle, clock }
}

t.test('mirror mode', async (t) => {
  const { auth } = setup(true)
  t.same(await auth.authenticate(alice, '10.0.0.1'), { ok: true, identity: { kind: 'user', name: 'alice' }, credentials: { username: 'alice', password: 'pw' } })
  t.same(await auth.authenticate(undefined, '10.0.0.1'), { ok: true, identity: { kind: 'anonymous' } }, 'anonymous allowed')
  t.same(await auth.authenticate('Basic Og==', '10.0.0.1'), { ok: true, identity: { kind: 'anonymous' } }, 'the empty Basic of podman is anonymous')
  const bad = await auth.authenticate(wrong, '10.0.0.1')
  t.match(bad, { ok: false, reason: 'bad-credentials', user: 'alice', refusal: { status: 401, code: 'UNAUTHORIZED', headers: { 'www-authenticate': 'Basic realm="regcache"' } } })
  t.notOk(JSON.stringify(bad).includes('guess'), 'the password is nowhere in the result')
  t.match(await auth.authenticate('Basic !!', '10.0.0.2'), { ok: false, reason: 'invalid-bad-base64', refusal: { status: 401 } })
  t.match(await auth.authenticate('Bearer x', '10.0.0.3'), { ok: false, reason: 'unsupported-scheme', refusal: { status: 401 } })
})

t.test('anonymous off', async (t) => {
  const { auth, throttle } = setup(false, 1)
  t.match(await auth.authenticate(undefined, '10.0.0.1'), { ok: false, reason: 'anonymous-off', refusal: { status: 401, headers: { 'www-authenticate': 'Basic realm="regcache"' } } })
  t.same(throttle.check('10.0.0.1'), { allowed: true }, 'a probe without credentials is not a failed attempt')
  t.match(await auth.authenticate(alice, '10.0.0.1'), { ok: true })
})

t.test('no htpasswd: nobody logs in', async (t) => {
  const auth = new Authenticator({ anonymous: true, throttle: new FailureThrottle() })
  t.match(await auth.authenticate(alice, '10.0.0.1'), { ok: false, reason: 'bad-credentials' })
})

t.test('failed attempts are throttled per address, even with the right password', async (t) => {
  const { auth, clock } = setup(false, 3)
  t.match(await auth.authenticate(wrong, '10.0.0.1'), { ok: false, refusal: { status: 401 } })
  t.match(await auth.authenticate('Basic !!', '10.0.0.1'), { ok: false, refusal: { status: 401 } })
  t.match(await auth.authenticate(wrong, '10.0.0.1'), { ok: false, refusal: { status: 429, code: 'TOOMANYREQUESTS', headers: { 'retry-after': '120' } } }, 'the third failure blocks')
  t.match(await auth.authenticate(alice, '10.0.0.1'), { ok: false, reason: 'throttled', refusal: { status: 429 } }, 'the right password does not get through while blocked')
  t.match(await auth.authenticate(alice, '10.0.0.2'), { ok: true }, 'another address is not affected')
  clock.now += 120_000
  t.match(await auth.authenticate(alice, '10.0.0.1'), { ok: true }, 'after the block')
})

t.test('client mode: credentials pass through, upstream judges', async (t) => {
  const { auth, throttle } = setup(true, 2)
  t.same(await auth.identify(wrong, '10.0.0.1'), { ok: true, identity: { kind: 'user', name: 'alice' }, credentials: { username: 'alice', password: 'guess' } })
  auth.failed('10.0.0.1')
  auth.failed('10.0.0.1')
  t.match(throttle.check('10.0.0.1'), { allowed: false }, "upstream's refusals count too")
  t.match(await auth.identify(alice, '10.0.0.1'), { ok: false, reason: 'throttled' })
})
