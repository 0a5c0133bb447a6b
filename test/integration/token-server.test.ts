// The token service test helper, as later tests rely on it: users with passwords and pull rights
// on repository patterns, anonymous pull on public/*, and rights or passwords changed while it
// runs; first at the token endpoint, then through a real token-auth docker-registry with skopeo.
import t from 'tap'
import { buildImage } from '../helpers/images.js'
import { run } from '../helpers/proc.js'
import { pushWithCreds, startAuthRegistry } from '../helpers/token-registry.js'
import { matchesPattern, startTokenServer, teamUsers, type Access, type TokenServer } from '../helpers/token-server.js'

const ISSUER = 'regcache-test-issuer'
const SERVICE = 'regcache-test-registry'

interface Creds {
  username: string
  password: string
}

async function tokenFor(ts: TokenServer, scope: string, creds?: Creds): Promise<{ status: number; access?: Access[] }> {
  const url = `${ts.realm}?service=${SERVICE}&scope=${encodeURIComponent(scope)}`
  const headers: Record<string, string> = {}
  if (creds) headers.authorization = `Basic ${Buffer.from(`${creds.username}:${creds.password}`).toString('base64')}`
  const res = await fetch(url, { headers, signal: AbortSignal.timeout(10_000) })
  const body = (await res.json()) as { token?: string }
  if (res.status !== 200 || body.token === undefined) return { status: res.status }
  const claims = JSON.parse(Buffer.from(body.token.split('.')[1], 'base64url').toString('utf8')) as { access: Access[] }
  return { status: 200, access: claims.access }
}

const pull = (name: string): Access[] => [{ type: 'repository', name, actions: ['pull'] }]

t.test('patterns', async (t) => {
  t.ok(matchesPattern('team-a/*', 'team-a/app'))
  t.ok(matchesPattern('team-a/*', 'team-a/x/y'))
  t.notOk(matchesPattern('team-a/*', 'team-ab/app'))
  t.notOk(matchesPattern('team.a/*', 'teamXa/app'), 'regex characters are literal')
  t.ok(matchesPattern('*', 'anything/at/all'))
})

t.test('grants at the token endpoint', async (t) => {
  const users = teamUsers()
  const ts = await startTokenServer({ issuer: ISSUER, users: { ...users, legacy: 'legacy-pw' } })
  t.teardown(ts.stop)
  const { alice, bob, seeder } = { alice: { username: 'alice', ...users.alice }, bob: { username: 'bob', ...users.bob }, seeder: { username: 'seeder', ...users.seeder } }

  t.same(await tokenFor(ts, 'repository:team-a/app:pull', alice), { status: 200, access: pull('team-a/app') }, 'alice pulls team-a')
  t.same(await tokenFor(ts, 'repository:team-a/x/y:pull', alice), { status: 200, access: pull('team-a/x/y') }, 'and below')
  t.same(await tokenFor(ts, 'repository:team-b/app:pull', alice), { status: 200, access: [] }, 'alice gets a token without access for team-b')
  t.same(await tokenFor(ts, 'repository:team-a/app:pull,push', alice), { status: 200, access: pull('team-a/app') }, 'alice may not push')
  t.same(await tokenFor(ts, 'repository:team-b/app:pull', bob), { status: 200, access: pull('team-b/app') }, 'bob pulls team-b')
  t.same(await tokenFor(ts, 'repository:team-a/app:pull', bob), { status: 200, access: [] }, 'bob gets nothing on team-a')
  t.same(await tokenFor(ts, 'repository:public/app:pull', alice), { status: 200, access: [] }, 'rights are exactly what is listed')
  t.same(await tokenFor(ts, 'repository:public/app:pull'), { status: 200, access: pull('public/app') }, 'anonymous pulls public/*')
  t.same(await tokenFor(ts, 'repository:team-a/app:pull'), { status: 200, access: [] }, 'anonymous gets nothing on team-a')
  t.same(await tokenFor(ts, 'repository:team-a/app:push,pull', seeder), { status: 200, access: [{ type: 'repository', name: 'team-a/app', actions: ['push', 'pull'] }] }, 'the seeder pushes anywhere')
  t.same(await tokenFor(ts, 'repository:team-a/app:pull', { username: 'alice', password: 'wrong' }), { status: 401 }, 'a wrong password: 401')
  t.same(await tokenFor(ts, 'repository:x/y:push,pull', { username: 'legacy', password: 'legacy-pw' }), { status: 200, access: [{ type: 'repository', name: 'x/y', actions: ['push', 'pull'] }] }, 'a user given by password alone keeps every right')

  ts.setRights('alice', { pull: [] })
  t.same(await tokenFor(ts, 'repository:team-a/app:pull', alice), { status: 200, access: [] }, 'rights taken away: a token without access')
  ts.setRights('alice', { pull: ['team-a/*'] })
  ts.setPassword('alice', 'new-Pa55')
  t.same(await tokenFor(ts, 'repository:team-a/app:pull', alice), { status: 401 }, 'the old password: 401')
  t.same(await tokenFor(ts, 'repository:team-a/app:pull', { username: 'alice', password: 'new-Pa55' }), { status: 200, access: pull('team-a/app') }, 'the new one works')
  ts.removeUser('bob')
  t.same(await tokenFor(ts, 'repository:team-b/app:pull', bob), { status: 401 }, 'a removed user: 401')
  ts.setUser('carol', { password: 'c', pull: ['team-b/*'] })
  t.same(await tokenFor(ts, 'repository:team-b/app:pull', { username: 'carol', password: 'c' }), { status: 200, access: pull('team-b/app') }, 'a user added while running')
  t.throws(() => ts.setPassword('nobody', 'x'), /no user nobody/)
})

t.test('through a real token-auth registry', async (t) => {
  const users = teamUsers()
  const ts = await startTokenServer({ issuer: ISSUER, users })
  t.teardown(ts.stop)
  const reg = await startAuthRegistry({ auth: { token: { realm: ts.realm, service: SERVICE, issuer: ISSUER, rootcertbundle: ts.certFile } } })
  t.teardown(reg.stop)
  const img = await buildImage({ layers: 1, layerSize: 4 * 1024 })
  t.teardown(img.remove)
  const seeder = { username: 'seeder', password: users.seeder.password }
  for (const repo of ['team-a/app', 'team-b/app', 'public/app']) await pushWithCreds(img, reg.host, `${repo}:1`, seeder)

  const inspect = async (repo: string, creds?: Creds) => {
    const args = ['inspect', '--raw', '--tls-verify=false', '--retry-times', '0']
    args.push(...(creds ? ['--creds', `${creds.username}:${creds.password}`] : ['--no-creds']))
    args.push(`docker://${reg.host}/${repo}:1`)
    return (await run('skopeo', args, { timeoutMs: 60_000 })).code === 0
  }
  const alice = { username: 'alice', password: users.alice.password }
  const bob = { username: 'bob', password: users.bob.password }
  t.ok(await inspect('team-a/app', alice), 'alice reads team-a/app')
  t.notOk(await inspect('team-b/app', alice), 'alice cannot read team-b/app')
  t.ok(await inspect('team-b/app', bob), 'bob reads team-b/app')
  t.notOk(await inspect('team-a/app', bob), 'bob cannot read team-a/app')
  t.ok(await inspect('public/app'), 'anonymous reads public/app')
  t.notOk(await inspect('team-a/app'), 'anonymous cannot read team-a/app')
  ts.setRights('alice', { pull: [] })
  t.notOk(await inspect('team-a/app', alice), 'alice, her rights taken away, cannot read team-a/app any more')
})
