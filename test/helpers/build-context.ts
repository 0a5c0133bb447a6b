// A copy of the Docker build context in a temp dir, so a test can add files the Dockerfile
// expects (the build-time CA in deploy/docker/build-ca/) without touching the working tree.
//
// The copy honours .dockerignore with Docker's own rules (moby/patternmatcher, as the docker
// CLI applies them to the classic builder's context): `*` `?` `**`, `!` exceptions, the last
// matching pattern wins, a pattern also matches everything under a matching directory, and an
// excluded directory is still entered when an exception pattern names something inside it.
// Docker applies .dockerignore again to this copy when it builds, so the copy only has to
// avoid leaving out what Docker would send; it keeps node_modules and .git from being copied.

import { copyFile, lstat, mkdir, readdir, readFile, readlink, symlink } from 'node:fs/promises'
import { join, posix } from 'node:path'

export interface IgnorePattern {
  /** The cleaned pattern text (no leading `!` or `/`). */
  text: string
  exception: boolean
  regex: RegExp
}

const REGEX_SPECIAL = new Set(['.', '+', '(', ')', '|', '{', '}', '[', ']', '^', '$', '\\'])

/** One pattern to a regex, as patternmatcher's compile(): `*` and `?` never match `/`. */
function compile(pattern: string): RegExp {
  let re = '^'
  for (let i = 0; i < pattern.length; i++) {
    const ch = pattern[i]!
    if (ch === '*') {
      if (pattern[i + 1] === '*') {
        i++
        if (pattern[i + 1] === '/') i++
        re += i + 1 >= pattern.length ? '.*' : '(.*/)?'
      } else {
        re += '[^/]*'
      }
    } else if (ch === '?') {
      re += '[^/]'
    } else if (ch === '\\' && i + 1 < pattern.length) {
      i++
      re += '\\' + pattern[i]
    } else if (ch === '[') {
      // Character class: copied through (filepath.Match syntax, `^` as negation).
      const end = pattern.indexOf(']', i + 1)
      if (end === -1) {
        re += '\\['
      } else {
        let cls = pattern.slice(i + 1, end)
        if (cls.startsWith('^') || cls.startsWith('!')) cls = '^' + cls.slice(1)
        re += `[${cls}]`
        i = end
      }
    } else if (REGEX_SPECIAL.has(ch)) {
      re += '\\' + ch
    } else {
      re += ch
    }
  }
  return new RegExp(re + '$')
}

export function parseDockerignore(text: string): IgnorePattern[] {
  const out: IgnorePattern[] = []
  for (const raw of text.split(/\r?\n/)) {
    let line = raw.trim()
    if (line === '' || line.startsWith('#')) continue
    let exception = false
    if (line.startsWith('!')) {
      exception = true
      line = line.slice(1).trim()
    }
    let p = posix.normalize(line)
    while (p.startsWith('/')) p = p.slice(1)
    if (p.endsWith('/')) p = p.slice(0, -1)
    if (p === '' || p === '.') continue
    out.push({ text: p, exception, regex: compile(p) })
  }
  return out
}

/** patternmatcher MatchesOrParentMatches: is this context-relative path excluded? */
export function isExcluded(patterns: IgnorePattern[], rel: string): boolean {
  const parents = posix.dirname(rel) === '.' ? [] : posix.dirname(rel).split('/')
  let matched = false
  for (const p of patterns) {
    // An exclusion only matters while not matched, an exception only once matched.
    if (p.exception !== matched) continue
    let m = p.regex.test(rel)
    for (let i = 0; !m && i < parents.length; i++) m = p.regex.test(parents.slice(0, i + 1).join('/'))
    if (m) matched = !p.exception
  }
  return matched
}

/**
 * Copy the build context at `src` into the empty directory `dest`. Returns the copied files
 * (context-relative). The Dockerfile and .dockerignore are always copied, as the docker CLI
 * always sends them.
 */
export async function copyBuildContext(src: string, dest: string): Promise<string[]> {
  const ignoreText = await readFile(join(src, '.dockerignore'), 'utf8').catch(() => '')
  const patterns = parseDockerignore(ignoreText)
  const exceptions = patterns.filter((p) => p.exception)
  const always = new Set(['Dockerfile', '.dockerignore'])
  const copied: string[] = []

  const walk = async (rel: string): Promise<void> => {
    const entries = await readdir(join(src, rel), { withFileTypes: true })
    entries.sort((a, b) => a.name.localeCompare(b.name))
    for (const e of entries) {
      const r = rel === '' ? e.name : `${rel}/${e.name}`
      const from = join(src, r)
      const to = join(dest, r)
      const excluded = !always.has(r) && isExcluded(patterns, r)
      if (e.isDirectory()) {
        // An excluded directory is entered only when an exception may re-include something in it.
        if (excluded && !exceptions.some((p) => (p.text + '/').startsWith(r + '/'))) continue
        // Docker sends included directories even when empty.
        if (!excluded) await mkdir(to, { recursive: true })
        await walk(r)
        continue
      }
      if (excluded) continue
      await mkdir(join(dest, rel), { recursive: true })
      if (e.isSymbolicLink()) await symlink(await readlink(from), to)
      else if (e.isFile()) await copyFile(from, to)
      else continue // sockets, fifos: Docker would not send them either
      copied.push(r)
    }
  }
  if (!(await lstat(src)).isDirectory()) throw new Error(`build context ${src} is not a directory`)
  await walk('')
  return copied
}
