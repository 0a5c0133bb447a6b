// Failed attempts per address: blocked after N in a window, for a while; bounded memory.
import t from 'tap'
import { addressKey, FailureThrottle } from '../../auth/throttle.js'

function clock(start = 1_000_000) {
  const c = { now: start, tick: (ms: number) => void (c.now += ms) }
  return c
}

t.test('blocks after maxFailures within the window, then lets go', async (t) => {
  const c = clock()
  const th = new FailureThrottle({ maxFailures: 3, windowMs: 10_000, blockMs: 60_000, now: () => c.now })
  t.same(th.check('10.0.0.1'), { allowed: true })
  t.same(th.fail('10.0.0.1'), { allowed: true }, 'first failure')
  t.same(th.fail('10.0.0.1'), { allowed: true }, 'second failure')
  t.same(th.fail('10.0.0.1'), { allowed: false, retryAfterSeconds: 60 }, 'third failure blocks')
  t.same(th.check('10.0.0.2'), { allowed: true }, 'another address is not affected')
  c.tick(59_500)
  t.same(th.check('10.0.0.1'), { allowed: false, retryAfterSeconds: 1 }, 'Retry-After counts down, rounded up')
  c.tick(500)
  t.same(th.check('10.0.0.1'), { allowed: true }, 'free again after blockMs')
  t.same(th.fail('10.0.0.1'), { allowed: true }, 'and the count started over')
})

t.test('failures spread beyond the window do not block', async (t) => {
  const c = clock()
  const th = new FailureThrottle({ maxFailures: 3, windowMs: 10_000, blockMs: 60_000, now: () => c.now })
  for (let i = 0; i < 10; i++) {
    t.same(th.fail('10.0.0.1'), { allowed: true }, `failure ${i + 1}`)
    c.tick(i % 2 === 0 ? 4_000 : 7_000)
  }
})

t.test('failures while blocked extend nothing but keep it blocked', async (t) => {
  const c = clock()
  const th = new FailureThrottle({ maxFailures: 2, windowMs: 10_000, blockMs: 30_000, now: () => c.now })
  th.fail('a')
  th.fail('a')
  c.tick(10_000)
  t.same(th.fail('a'), { allowed: false, retryAfterSeconds: 20 }, 'a failure after the window does not lift the block')
})

t.test('IPv6 counted per /64, IPv4-mapped as IPv4', async (t) => {
  t.equal(addressKey('192.0.2.7'), '192.0.2.7')
  t.equal(addressKey('::ffff:192.0.2.7'), '192.0.2.7')
  t.equal(addressKey('2001:db8:1:2:aaaa::1'), addressKey('2001:db8:1:2:bbbb:cccc:dddd:eeee'))
  t.not(addressKey('2001:db8:1:2::1'), addressKey('2001:db8:1:3::1'))
  t.equal(addressKey('2001:db8:1:2::1'), '2001:db8:1:2::/64')
  t.equal(addressKey('fe80::1%eth0'), 'fe80:0:0:0::/64', 'zone dropped')
  t.equal(addressKey('not-an-ip'), 'not-an-ip', 'anything else is its own key')

  const c = clock()
  const th = new FailureThrottle({ maxFailures: 2, windowMs: 10_000, blockMs: 30_000, now: () => c.now })
  th.fail('2001:db8::1')
  t.same(th.fail('2001:db8::2'), { allowed: false, retryAfterSeconds: 30 }, 'two addresses of one /64 add up')
})

t.test('memory is bounded', async (t) => {
  const th = new FailureThrottle({ maxFailures: 5, maxAddresses: 100 })
  for (let i = 0; i < 1000; i++) th.fail(`10.0.${i >> 8}.${i & 0xff}`)
  t.equal(th.size, 100)
})
