// Client credentials for `credentials: client` upstreams: what is remembered, for how long it lets
// cached content out (online and during an outage), revocation, public repositories, coalescing.
import t from 'tap'
import { ANONYMOUS_KEY, ClientCredentials, mayServe, mayServeOffline, type RecheckOutcome } from '../../auth/client-credentials.js'

const MIN = 60_000
const windows = { recheckMs: 5 * MIN, offlineMs: 24 * 60 * MIN }
const alice = { username: 'alice', password: 'a-secret' }
const aliceWrong = { username: 'alice', password: 'guess' }
const bob = { username: 'bob', password: 'b-secret' }

function setup(opts: Partial<ConstructorParameters<typeof ClientCredentials>[0]> = {}) {
  const clock = { now: 1_700_000_000_000 }
  const cc = new ClientCredentials({ authorization: windows, now: () => clock.now, ...opts })
  return { cc, clock, tick: (ms: number) => void (clock.now += ms) }
}

const answer = (o: RecheckOutcome) => async () => o

t.test('the windows, as pure functions', async (t) => {
  const now = 1_000_000_000
  const rows: Array<[name: string, acceptedAt: number | undefined, serve: boolean, offline: boolean]> = [
    ['never accepted', undefined, false, false],
    ['just now', now, true, true],
    ['within recheck', now - 5 * MIN + 1, true, true],
    ['recheck reached', now - 5 * MIN, false, true],
    ['within offline', now - 24 * 60 * MIN + 1, false, true],
    ['offline reached', now - 24 * 60 * MIN, false, false],
    ['from the future (clock set back)', now + 1, false, false],
  ]
  for (const [name, at, serve, offline] of rows) {
    t.equal(mayServe(at, now, windows), serve, `${name}: serve without asking`)
    t.equal(mayServeOffline(at, now, windows), offline, `${name}: serve during an outage`)
  }
  t.equal(mayServe(now, now, { recheckMs: 0, offlineMs: 0 }), false, 'recheck 0: always ask')
})

t.test('keys', async (t) => {
  const { cc } = setup()
  const other = setup().cc
  t.equal(cc.keyOf(alice), cc.keyOf({ ...alice }), 'same credentials, same key')
  t.not(cc.keyOf(alice), cc.keyOf(aliceWrong), 'another password, another key')
  t.not(cc.keyOf(alice), cc.keyOf(bob))
  t.not(cc.keyOf({ username: 'a', password: 'b:c' }), cc.keyOf({ username: 'a:b', password: 'c' }), 'no ambiguity at the separator')
  t.not(cc.keyOf(alice), other.keyOf(alice), 'a random key per instance: nothing stable to guess or carry over')
  t.equal(cc.keyOf(undefined), ANONYMOUS_KEY)
  t.notOk(cc.keyOf(alice).includes('alice') || cc.keyOf(alice).includes('a-secret'), 'neither name nor password in the key')
})

t.test('granted: served within recheck, then asked again; offline within offline', async (t) => {
  const { cc, tick } = setup()
  const a = cc.keyOf(alice)
  t.same(cc.access(a, 'team-a/app'), { serve: false }, 'nothing known: ask upstream')
  t.same(cc.accessOffline(a, 'team-a/app'), { serve: false }, 'and nothing during an outage')
  t.equal(await cc.recheck(a, 'team-a/app', answer('granted')), 'granted')
  t.same(cc.access(a, 'team-a/app'), { serve: true, public: false })
  t.same(cc.access(a, 'team-a/other'), { serve: false }, 'per repository')
  t.same(cc.access(cc.keyOf(aliceWrong), 'team-a/app'), { serve: false }, 'alice with a wrong password gets nothing')
  t.same(cc.access(cc.keyOf(bob), 'team-a/app'), { serve: false }, 'bob gets nothing')
  t.same(cc.access(ANONYMOUS_KEY, 'team-a/app'), { serve: false }, 'anonymous gets nothing')
  tick(5 * MIN)
  t.same(cc.access(a, 'team-a/app'), { serve: false }, 'recheck reached: ask again')
  t.same(cc.accessOffline(a, 'team-a/app'), { serve: true, public: false }, 'but during an outage the older yes still counts')
  t.same(cc.accessOffline(cc.keyOf(aliceWrong), 'team-a/app'), { serve: false }, 'wrong password: nothing during the outage')
  t.same(cc.accessOffline(cc.keyOf(bob), 'team-a/app'), { serve: false }, 'bob: nothing during the outage')
  t.same(cc.accessOffline(ANONYMOUS_KEY, 'team-a/app'), { serve: false }, 'anonymous: nothing during the outage')
  t.equal(await cc.recheck(a, 'team-a/app', answer('unreachable')), 'unreachable')
  t.same(cc.accessOffline(a, 'team-a/app'), { serve: true, public: false }, 'an unreachable upstream takes nothing away')
  tick(24 * 60 * MIN)
  t.same(cc.accessOffline(a, 'team-a/app'), { serve: false }, 'offline window over')
})

t.test('the window counts from when upstream was asked', async (t) => {
  const { cc, tick } = setup()
  const a = cc.keyOf(alice)
  await cc.recheck(a, 'r', async () => {
    tick(4 * MIN)
    return 'granted'
  })
  tick(MIN)
  t.same(cc.access(a, 'r'), { serve: false }, '5 minutes after asking, although 1 after the answer')
})

t.test('revocation', async (t) => {
  const { cc } = setup()
  const a = cc.keyOf(alice)
  await cc.recheck(a, 'team-a/app', answer('granted'))
  await cc.recheck(a, 'team-a/lib', answer('granted'))
  cc.revoke(a, 'team-a/app')
  t.same(cc.access(a, 'team-a/app'), { serve: false }, 'upstream 401/403: no longer served')
  t.same(cc.accessOffline(a, 'team-a/app'), { serve: false }, 'not even during an outage')
  t.same(cc.access(a, 'team-a/lib'), { serve: true, public: false }, 'other repositories keep their yes')

  await cc.recheck(a, 'team-a/lib', answer('denied'))
  t.same(cc.access(a, 'team-a/lib'), { serve: false }, 'a recheck that is refused revokes too')
  t.same(cc.accessOffline(a, 'team-a/lib'), { serve: false })
})

t.test('a revocation during a recheck wins over its older yes', async (t) => {
  const { cc } = setup()
  const a = cc.keyOf(alice)
  let release!: () => void
  const gate = new Promise<void>((r) => (release = r))
  const p = cc.recheck(a, 'r', async () => {
    await gate
    return 'granted'
  })
  cc.revoke(a, 'r')
  release()
  t.equal(await p, 'granted')
  t.same(cc.access(a, 'r'), { serve: false }, 'the 401 seen meanwhile stands')
  await cc.recheck(a, 'r', answer('granted'))
  t.same(cc.access(a, 'r'), { serve: true, public: false }, 'a recheck started after it counts')
})

t.test('public repositories are shared by all', async (t) => {
  const { cc, tick } = setup()
  t.equal(await cc.recheck(ANONYMOUS_KEY, 'public/app', answer('granted')), 'granted', 'an anonymous yes')
  for (const [name, key] of [['anonymous', ANONYMOUS_KEY], ['alice', cc.keyOf(alice)], ['bob', cc.keyOf(bob)]] as const) {
    t.same(cc.access(key, 'public/app'), { serve: true, public: true }, `${name} served`)
  }
  await cc.recheck(cc.keyOf(bob), 'public/lib', answer('public'))
  t.same(cc.access(ANONYMOUS_KEY, 'public/lib'), { serve: true, public: true }, 'found public while checking bob: public for everyone')
  tick(5 * MIN)
  t.same(cc.access(ANONYMOUS_KEY, 'public/app'), { serve: false }, 'public status is rechecked too')
  t.same(cc.accessOffline(ANONYMOUS_KEY, 'public/app'), { serve: true, public: true }, 'and lasts through an outage like any yes')
  await cc.recheck(ANONYMOUS_KEY, 'public/app', answer('denied'))
  t.same(cc.accessOffline(cc.keyOf(alice), 'public/app'), { serve: false }, 'refused to anonymous: public no longer')
  t.same(cc.stats().publicRepositories, 1)
})

t.test('concurrent rechecks of one (credentials, repository) are one', async (t) => {
  const { cc } = setup()
  const a = cc.keyOf(alice)
  let asked = 0
  let release!: () => void
  const gate = new Promise<void>((r) => (release = r))
  const ask = async (): Promise<RecheckOutcome> => {
    asked++
    await gate
    return 'granted'
  }
  const all = [
    ...Array.from({ length: 10 }, () => cc.recheck(a, 'r', ask)),
    cc.recheck(cc.keyOf({ ...alice }), 'r', ask),
    cc.recheck(a, 'other', ask),
    cc.recheck(cc.keyOf(bob), 'r', ask),
  ]
  t.equal(cc.stats().pendingRechecks, 3)
  release()
  t.same(await Promise.all(all), new Array(13).fill('granted'))
  t.equal(asked, 3, 'one question per (credentials, repository)')
  t.equal(cc.stats().pendingRechecks, 0)
  await cc.recheck(a, 'r', ask)
  t.equal(asked, 4, 'a later recheck asks again')
})

t.test('a failing question leaves nothing behind', async (t) => {
  const { cc } = setup()
  const a = cc.keyOf(alice)
  await t.rejects(cc.recheck(a, 'r', async () => Promise.reject(new Error('boom'))), { message: 'boom' })
  t.equal(cc.stats().pendingRechecks, 0)
  t.same(cc.access(a, 'r'), { serve: false })
  t.equal(await cc.recheck(a, 'r', answer('granted')), 'granted', 'the next one runs')
})

t.test('tokens per client and scope', async (t) => {
  const { cc, tick } = setup()
  const a = cc.keyOf(alice)
  const b = cc.keyOf(bob)
  const scope = 'repository:team-a/app:pull'
  cc.saveToken(a, scope, 'tok-a', 300_000)
  t.equal(cc.token(a, scope), 'tok-a')
  t.equal(cc.token(b, scope), undefined, "never another client's token")
  t.equal(cc.token(cc.keyOf(aliceWrong), scope), undefined, 'nor with a wrong password')
  t.equal(cc.token(a, 'repository:other:pull'), undefined, 'per scope')
  tick(290_000)
  t.equal(cc.token(a, scope), undefined, 'not handed out within the skew of its expiry')
  cc.saveToken(a, scope, 'tok-a2', 300_000)
  cc.dropToken(a, scope)
  t.equal(cc.token(a, scope), undefined, 'dropped')
})

t.test('memory is bounded', async (t) => {
  const { cc } = setup({ maxClients: 10, maxRepositoriesPerClient: 5, maxTokensPerClient: 3, maxPublicRepositories: 4 })
  for (let i = 0; i < 50; i++) await cc.recheck(cc.keyOf({ username: `u${i}`, password: 'p' }), 'r', answer('granted'))
  t.equal(cc.stats().clients, 10, 'clients')
  const a = cc.keyOf(alice)
  for (let i = 0; i < 20; i++) await cc.recheck(a, `r${i}`, answer('granted'))
  t.same(cc.access(a, 'r19'), { serve: true, public: false }, 'the latest repository kept')
  t.same(cc.access(a, 'r0'), { serve: false }, 'the oldest forgotten: asked again, never served wrongly')
  for (let i = 0; i < 10; i++) cc.saveToken(a, `s${i}`, `t${i}`, 300_000)
  t.equal(cc.token(a, 's0'), undefined)
  t.equal(cc.token(a, 's9'), 't9')
  for (let i = 0; i < 10; i++) await cc.recheck(ANONYMOUS_KEY, `p${i}`, answer('public'))
  t.equal(cc.stats().publicRepositories, 4, 'public repositories')
})
