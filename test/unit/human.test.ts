// Sizes, rates, durations and ETAs as `regcache warm` prints them.
import t from 'tap'
import { etaSeconds, formatBytes, formatDuration, formatRate } from '../../cli/human.js'

const KiB = 1024
const MiB = 1024 * KiB
const GiB = 1024 * MiB

t.test('formatBytes', async (t) => {
  const cases: [string, number, string][] = [
    ['zero', 0, '0 B'],
    ['bytes', 512, '512 B'],
    ['just under a KiB', 1023, '1023 B'],
    ['one KiB', KiB, '1.00 KiB'],
    ['one and a half KiB', 1536, '1.50 KiB'],
    ['two significant digits', 12.34 * KiB, '12.3 KiB'],
    ['three digits, no decimals', 512 * KiB, '512 KiB'],
    ['rounds up into the next unit', 1023.99 * KiB, '1.00 MiB'],
    ['MiB', 48 * MiB, '48.0 MiB'],
    ['GiB', 2.5 * GiB, '2.50 GiB'],
    ['TiB', 3 * 1024 * GiB, '3.00 TiB'],
    ['fractional bytes rounded', 10.6, '11 B'],
    ['negative', -1, '?'],
    ['not a number', NaN, '?'],
    ['infinite', Infinity, '?'],
  ]
  for (const [name, input, want] of cases) t.equal(formatBytes(input), want, name)
})

t.test('formatRate', async (t) => {
  const cases: [number, string][] = [
    [0, '0 B/s'],
    [3.1 * MiB, '3.10 MiB/s'],
    [900, '900 B/s'],
  ]
  for (const [input, want] of cases) t.equal(formatRate(input), want, String(input))
})

t.test('formatDuration', async (t) => {
  const cases: [string, number | undefined, string][] = [
    ['unknown', undefined, '--'],
    ['infinite', Infinity, '--'],
    ['negative', -3, '--'],
    ['zero', 0, '0.0s'],
    ['under ten seconds keeps a decimal', 4.26, '4.3s'],
    ['whole seconds', 42.4, '42s'],
    ['minutes', 75, '1m15s'],
    ['minutes pad seconds', 605, '10m05s'],
    ['just under an hour', 3599, '59m59s'],
    ['hours', 3725, '1h02m'],
    ['many hours', 26 * 3600, '26h00m'],
  ]
  for (const [name, input, want] of cases) t.equal(formatDuration(input), want, name)
})

t.test('etaSeconds', async (t) => {
  const cases: [string, number, number, number | undefined][] = [
    ['nothing left', 0, 0, 0],
    ['more than needed arrived', -5, 100, 0],
    ['rate unknown', 100, 0, undefined],
    ['rate not a number', 100, NaN, undefined],
    ['rate infinite', 100, Infinity, undefined],
    ['plain division', 10 * MiB, 2 * MiB, 5],
    ['fractional', 3, 2, 1.5],
  ]
  for (const [name, remaining, rate, want] of cases) t.equal(etaSeconds(remaining, rate), want, name)
})
