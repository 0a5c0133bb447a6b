// The per-upstream circuit breaker: consecutive failures mark it down, a timeout at once, and a
// background probe brings it back.
import t from 'tap'
import { UpstreamHealth } from '../../core/upstream-health.js'

function health(t: { teardown(fn: () => void): void }, probe: () => Promise<boolean>, failures = 3) {
  const h = new UpstreamHealth('fake.test', { failures, probeIntervalMs: 10, probe })
  t.teardown(() => h.close())
  const changes: string[] = []
  h.on('change', (s: string) => changes.push(s))
  return { h, changes }
}

const never = () => new Promise<boolean>(() => {})
const waitFor = async (cond: () => boolean) => {
  for (let i = 0; i < 500 && !cond(); i++) await new Promise((r) => setTimeout(r, 5))
}

t.test('failures below the threshold leave it up; reaching it marks it down', async (t) => {
  const { h, changes } = health(t, never)
  h.failure('status 500')
  h.failure('refused')
  t.equal(h.state, 'up')
  h.failure('reset')
  t.equal(h.state, 'down')
  t.ok(h.isDown)
  t.same(changes, ['down'])
  t.equal(h.lastFailure?.reason, 'reset')
})

t.test('a success resets the count', async (t) => {
  const { h } = health(t, never)
  h.failure('refused')
  h.failure('refused')
  h.success()
  h.failure('refused')
  h.failure('refused')
  t.equal(h.state, 'up')
})

t.test('a timeout marks it down at once', async (t) => {
  const { h, changes } = health(t, never)
  h.failure('timeout')
  t.equal(h.state, 'down')
  t.same(changes, ['down'])
})

t.test('the probe brings it back once upstream answers', async (t) => {
  let answers = false
  let probes = 0
  const { h, changes } = health(t, async () => {
    probes++
    return answers
  }, 1)
  h.failure('refused')
  await waitFor(() => probes >= 2)
  t.equal(h.state, 'down', 'still down while the probe fails')
  answers = true
  await waitFor(() => h.state === 'up')
  t.equal(h.state, 'up')
  t.same(changes, ['down', 'up'])
  const after = probes
  await new Promise((r) => setTimeout(r, 40))
  t.equal(probes, after, 'no probing while up')
})

t.test('a throwing probe counts as down; close stops probing', async (t) => {
  let probes = 0
  const { h } = health(t, async () => {
    probes++
    throw new Error('probe failed')
  }, 1)
  h.failure('refused')
  await waitFor(() => probes >= 2)
  t.equal(h.state, 'down')
  h.close()
  const at = probes
  await new Promise((r) => setTimeout(r, 40))
  t.ok(probes <= at + 1, 'at most the probe already running')
})
