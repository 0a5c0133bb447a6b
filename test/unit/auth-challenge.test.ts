// The 401 challenge regcache sends is one every client parses as Basic with realm "regcache".
import t from 'tap'
import { basicChallenge, denied, throttled, unauthorized } from '../../auth/challenge.js'
import { ERROR_CODES } from '../../core/errors.js'
import { parseChallenges } from '../../upstream/challenge.js'

t.test('the header', async (t) => {
  t.equal(basicChallenge(), 'Basic realm="regcache"')
  t.same(parseChallenges(basicChallenge()), [{ scheme: 'basic', params: { realm: 'regcache' } }])
  t.same(parseChallenges(basicChallenge('a "quoted" \\ realm')), [{ scheme: 'basic', params: { realm: 'a "quoted" \\ realm' } }], 'quotes and backslashes escaped')
})

t.test('refusals match the error registry', async (t) => {
  for (const r of [unauthorized(), denied(), throttled(3)]) t.equal(r.status, ERROR_CODES[r.code].status, r.code)
  t.equal(unauthorized().headers['www-authenticate'], 'Basic realm="regcache"')
  t.same(denied().headers, {}, 'a 403 asks for nothing')
  t.equal(throttled(2.1).headers['retry-after'], '3', 'Retry-After in whole seconds, rounded up')
  t.equal(throttled(0).headers['retry-after'], '1', 'never 0')
})
