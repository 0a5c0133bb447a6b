// The when-cached switch policy: one table row per rule.
import t from 'tap'
import { decideSwitch, type SwitchDecision, type SwitchInput } from '../../core/switch-policy.js'

const NOW = 1_700_000_000_000
const LAG = 3_600_000

const base: SwitchInput = { policy: 'when-cached', move: undefined, previousServable: true, maxLagMs: LAG, now: NOW }

const rows: { name: string; input: Partial<SwitchInput>; expect: SwitchDecision }[] = [
  { name: 'a tag not listed in prefetch switches at once', input: { policy: undefined }, expect: { action: 'switch', reason: 'not-listed' } },
  { name: 'switch: immediate switches at once', input: { policy: 'immediate' }, expect: { action: 'switch', reason: 'immediate' } },
  { name: 'a move not seen before is held', input: {}, expect: { action: 'hold' } },
  { name: 'a move being prefetched is held', input: { move: { since: NOW - 1000, stored: false, switched: false } }, expect: { action: 'hold' } },
  { name: 'a move whose image is stored switches', input: { move: { since: NOW - 1000, stored: true, switched: false } }, expect: { action: 'switch', reason: 'stored' } },
  { name: 'maxLag reached switches, stored or not', input: { move: { since: NOW - LAG, stored: false, switched: false } }, expect: { action: 'switch', reason: 'max-lag' } },
  { name: 'just under maxLag still holds', input: { move: { since: NOW - LAG + 1, stored: false, switched: false } }, expect: { action: 'hold' } },
  { name: 'maxLag 0 never holds a known move', input: { maxLagMs: 0, move: { since: NOW, stored: false, switched: false } }, expect: { action: 'switch', reason: 'max-lag' } },
  { name: 'a previous digest that is gone is never held', input: { previousServable: false }, expect: { action: 'switch', reason: 'previous-gone' } },
  {
    name: 'a previous digest gone during the prefetch switches',
    input: { previousServable: false, move: { since: NOW - 1000, stored: false, switched: false } },
    expect: { action: 'switch', reason: 'previous-gone' },
  },
  {
    name: 'once switched, other client kinds are switched too',
    input: { move: { since: NOW - 1000, stored: false, switched: true } },
    expect: { action: 'switch', reason: 'switched' },
  },
  { name: 'immediate ignores a gone previous digest the same way', input: { policy: 'immediate', previousServable: false }, expect: { action: 'switch', reason: 'immediate' } },
]

for (const row of rows) {
  t.test(row.name, async (t) => {
    t.same(decideSwitch({ ...base, ...row.input }), row.expect)
  })
}
