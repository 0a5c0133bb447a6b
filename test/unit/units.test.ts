// Human durations and sizes used in the configuration file.
import t from 'tap'
import { parseDuration, parseSize } from '../../config/units.js'

const S = 1000
const M = 60 * S
const H = 60 * M
const D = 24 * H

t.test('parseDuration', async (t) => {
  const cases: [string, string | number, number | undefined][] = [
    ['milliseconds', '500ms', 500],
    ['seconds', '2s', 2 * S],
    ['minutes', '5m', 5 * M],
    ['hours', '1h', H],
    ['days', '7d', 7 * D],
    ['weeks', '2w', 14 * D],
    ['combined h+m', '1h30m', 90 * M],
    ['combined m+s', '1m30s', 90 * S],
    ['combined s+ms', '1s500ms', 1500],
    ['fractional', '1.5s', 1500],
    ['fractional hours', '0.5h', 30 * M],
    ['zero as a string', '0', 0],
    ['zero with a unit', '0s', 0],
    ['surrounding whitespace', ' 2s ', 2 * S],
    ['a number is seconds', 30, 30 * S],
    ['the number zero', 0, 0],
    ['a fractional number of seconds', 0.25, 250],
    ['empty', '', undefined],
    ['only spaces', '   ', undefined],
    ['no number', 's', undefined],
    ['unknown unit', '2x', undefined],
    ['unit spelt out', '2 seconds', undefined],
    ['space between number and unit', '2 s', undefined],
    ['trailing garbage', '2s3', undefined],
    ['leading garbage', 'x2s', undefined],
    ['negative string', '-1s', undefined],
    ['negative number', -1, undefined],
    ['NaN', Number.NaN, undefined],
    ['Infinity', Number.POSITIVE_INFINITY, undefined],
    ['uppercase unit', '2S', undefined],
  ]
  for (const [why, value, expect] of cases) t.equal(parseDuration(value), expect, `${why}: ${JSON.stringify(value)}`)
})

t.test('parseSize', async (t) => {
  const cases: [string, string | number, number | undefined][] = [
    ['GiB', '50GiB', 50 * 1024 ** 3],
    ['MB (decimal)', '500MB', 500e6],
    ['bare number of bytes (string)', '1024', 1024],
    ['bare number of bytes (number)', 1024, 1024],
    ['kB', '1kb', 1000],
    ['KiB', '1KiB', 1024],
    ['MiB', '10MiB', 10 * 1024 ** 2],
    ['TiB', '1TiB', 1024 ** 4],
    ['TB', '2TB', 2e12],
    ['B', '10B', 10],
    ['b', '10b', 10],
    ['fraction of a unit', '1.5GiB', Math.floor(1.5 * 1024 ** 3)],
    ['space before the unit', '10 MiB', 10 * 1024 ** 2],
    ['surrounding whitespace', ' 1GB ', 1e9],
    ['zero', '0', 0],
    ['a fractional number of bytes is floored', 1.7, 1],
    ['empty', '', undefined],
    ['unit only', 'GiB', undefined],
    ['unknown unit', '10XB', undefined],
    ['negative string', '-1', undefined],
    ['negative number', -1, undefined],
    ['NaN', Number.NaN, undefined],
    ['two numbers', '1 2', undefined],
  ]
  for (const [why, value, expect] of cases) t.equal(parseSize(value), expect, `${why}: ${JSON.stringify(value)}`)
})
