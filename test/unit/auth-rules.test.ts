// The access rules: one row per case, each naming what it shows.
import t from 'tap'
import { effectiveRules, type Rule } from '../../auth/config.js'
import { ANONYMOUS, decideAccess, matchesRepository, patternProblem, refusalFor, rulesProblems, type Identity } from '../../auth/rules.js'

const user = (name: string): Identity => ({ kind: 'user', name })

t.test('repository patterns', async (t) => {
  const rows: Array<[pattern: string, repository: string, matches: boolean, why: string]> = [
    ['team-a/*', 'team-a/app', true, 'one level below'],
    ['team-a/*', 'team-a/x/y', true, '`*` spans "/": the whole subtree'],
    ['team-a/*', 'team-a', false, 'not the namespace itself'],
    ['team-a/*', 'team-ab/app', false, 'the "/" is literal: no prefix confusion'],
    ['team-a/*', 'other/team-a/app', false, 'anchored at the start'],
    ['*', 'library/nginx', true, '`*` alone matches everything'],
    ['*', 'a', true, 'single component'],
    ['library/nginx', 'library/nginx', true, 'exact'],
    ['library/nginx', 'library/nginx2', false, 'exact is exact'],
    ['library/nginx', 'library/ngin', false, 'exact is exact'],
    ['*/app', 'team-a/app', true, 'suffix'],
    ['*/app', 'a/b/app', true, 'suffix across levels'],
    ['*/app', 'team-a/app2', false, 'anchored at the end'],
    ['team-*/app', 'team-a/app', true, 'inner wildcard'],
    ['team-*/app', 'team-a/x/app', true, 'inner wildcard spans "/"'],
    ['team-*/app', 'teamx/app', false, 'literal prefix required'],
    ['a*b*c', 'abc', true, '`*` may be empty'],
    ['a*b*c', 'a-b-b-c', true, 'several wildcards'],
    ['a*b*c', 'acb', false, 'order of literals'],
    ['a*bc*bc', 'abcbc', true, 'middle literal overlapping the suffix'],
    ['a*bc*bc', 'abc', false, 'too short for prefix + middle + suffix'],
    ['**', 'x/y', true, '"**" is the same as "*"'],
    ['a.b', 'aXb', false, '"." is literal'],
  ]
  for (const [pattern, repository, matches, why] of rows) t.equal(matchesRepository(pattern, repository), matches, `${pattern} vs ${repository}: ${why}`)
})

const rules: Rule[] = [
  { users: ['carol'], upstreams: ['docker.io'], repositories: ['team-a/*', 'library/*'] },
  { users: ['dave'], upstreams: ['*'], repositories: ['*'] },
  { users: ['anonymous'], upstreams: ['docker.io'], repositories: ['library/*'] },
  { users: ['*'], upstreams: ['ghcr.io'], repositories: ['shared/*'] },
]

t.test('decisions', async (t) => {
  const rows: Array<[name: string, identity: Identity, upstream: string, repository: string, rule: number | undefined]> = [
    ['carol on her team', user('carol'), 'docker.io', 'team-a/app', 0],
    ['carol on library', user('carol'), 'docker.io', 'library/nginx', 0],
    ['carol elsewhere on docker.io', user('carol'), 'docker.io', 'team-b/app', undefined],
    ['carol on another upstream', user('carol'), 'ghcr.io', 'team-a/app', undefined],
    ['carol under "*" users', user('carol'), 'ghcr.io', 'shared/tool', 3],
    ['dave everywhere', user('dave'), 'quay.io', 'any/thing', 1],
    ['anonymous on library', ANONYMOUS, 'docker.io', 'library/nginx', 2],
    ['anonymous on a team', ANONYMOUS, 'docker.io', 'team-a/app', undefined],
    ['"*" does not include anonymous', ANONYMOUS, 'ghcr.io', 'shared/tool', undefined],
    ['a user is not anonymous', user('erin'), 'docker.io', 'library/nginx', undefined],
    ['unknown user: nothing but "*"', user('erin'), 'ghcr.io', 'shared/tool', 3],
    ['a user called "anonymous" is not the anonymous rule', user('anonymous'), 'docker.io', 'library/nginx', undefined],
  ]
  for (const [name, identity, upstream, repository, rule] of rows) {
    const d = decideAccess(rules, { identity, upstream, repository })
    t.same(d, rule === undefined ? { allowed: false } : { allowed: true, rule }, name)
  }
})

t.test('first match wins, no match denies', async (t) => {
  const ordered: Rule[] = [
    { users: ['carol'], upstreams: ['*'], repositories: ['team-a/*'] },
    { users: ['carol'], upstreams: ['*'], repositories: ['*'] },
  ]
  t.same(decideAccess(ordered, { identity: user('carol'), upstream: 'docker.io', repository: 'team-a/x' }), { allowed: true, rule: 0 })
  t.same(decideAccess(ordered, { identity: user('carol'), upstream: 'docker.io', repository: 'team-b/x' }), { allowed: true, rule: 1 })
  t.same(decideAccess([], { identity: user('carol'), upstream: 'docker.io', repository: 'x' }), { allowed: false }, 'no rules: denied')
})

t.test('without a rules list everyone authenticated, and anonymous when on, pulls everything', async (t) => {
  const r = effectiveRules({ anonymous: true })
  t.ok(decideAccess(r, { identity: user('x'), upstream: 'docker.io', repository: 'a/b' }).allowed)
  t.ok(decideAccess(r, { identity: ANONYMOUS, upstream: 'docker.io', repository: 'a/b' }).allowed, 'the anonymous switch is applied before the rules')
  t.same(effectiveRules({ anonymous: true, rules: [] }), [], 'an empty list is kept: nothing allowed')
})

t.test('refusals', async (t) => {
  t.equal(refusalFor(ANONYMOUS), 'unauthorized', 'anonymous is asked for credentials')
  t.equal(refusalFor(user('bob')), 'denied', 'a known user is refused')
})

t.test('pattern and rule problems', async (t) => {
  t.equal(patternProblem('team-a/*'), undefined)
  t.equal(patternProblem('*'), undefined)
  for (const bad of ['', 'Team/*', 'team/[ab]', 'team/?', '/team', 'team/', 'team a']) t.type(patternProblem(bad), 'string', `"${bad}" refused`)
  const problems = rulesProblems(
    [
      { users: [], upstreams: ['nope.io'], repositories: ['ok/*', 'Bad'] },
      { users: ['x'], upstreams: ['*'], repositories: [] },
    ],
    ['docker.io'],
  )
  t.same(problems, [
    'auth.rules[0].users: empty, the rule can never match',
    'auth.rules[0].upstreams: "nope.io" is not a configured upstream',
    'auth.rules[0].repositories[1]: "Bad": use only lowercase letters, digits, ".", "_", "-", "/" and "*" (repository names are lowercase; "*" is the only wildcard)',
    'auth.rules[1].repositories: empty, the rule can never match',
  ])
})
