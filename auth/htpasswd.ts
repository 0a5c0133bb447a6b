// Users and bcrypt password hashes from an htpasswd file, as `htpasswd -B` writes them
// (`name:$2y$05$...`; $2a$ and $2b$ too). The file is re-read when it changes; a version that
// cannot be read or parsed is reported and ignored, and the last good set stays in force.
//
// bcrypt costs tens of milliseconds by design, and one image pull is dozens of requests with the
// same credentials: successful checks are remembered for a short while under an HMAC of the
// credentials (random key per process, so neither the password nor a plain hash of it sits in
// memory), and concurrent checks of the same credentials share one bcrypt.

import { createHmac, createSecretKey, randomBytes } from 'node:crypto'
import { watch, type FSWatcher } from 'node:fs'
import { readFile, stat } from 'node:fs/promises'
import { dirname, resolve } from 'node:path'
import bcrypt from 'bcryptjs'
import { LRUCache } from 'lru-cache'

/** The part of a pino logger used here. */
export interface WarnLogger {
  warn(obj: object, msg: string): void
  info(obj: object, msg: string): void
}

export interface HtpasswdOptions {
  readonly log: WarnLogger
  /** How long after the last change event the file is looked at. */
  readonly debounceMs?: number
  /** A stat every so often, in case a change event was missed (e.g. the directory was replaced). */
  readonly pollMs?: number
  /** How long a successful check is remembered. */
  readonly cacheTtlMs?: number
  readonly cacheMax?: number
}

export const DEFAULT_HTPASSWD = Object.freeze({ debounceMs: 200, pollMs: 30_000, cacheTtlMs: 60_000, cacheMax: 1_000 })

/** Names a rule gives a meaning of its own; an htpasswd user may not take them. */
export const RESERVED_USER_NAMES: readonly string[] = ['anonymous', '*']

export class HtpasswdError extends Error {
  readonly code = 'REGCACHE_HTPASSWD_INVALID'
  constructor(
    readonly file: string,
    readonly problems: readonly string[],
  ) {
    super(`htpasswd file ${file}: ${problems.join('; ')}`)
  }
}

// bcrypt modular crypt format: $2a$/$2b$/$2y$, two-digit cost 04-31, 53 characters of salt and hash.
const BCRYPT = /^\$2[aby]\$(0[4-9]|[12][0-9]|3[01])\$[./A-Za-z0-9]{53}$/

export interface ParsedHtpasswd {
  readonly users: ReadonlyMap<string, string>
  /** Problems found, each naming the line (never its hash). Empty when the file is usable. */
  readonly problems: readonly string[]
}

export function parseHtpasswd(text: string): ParsedHtpasswd {
  const users = new Map<string, string>()
  const problems: string[] = []
  const lines = text.split('\n')
  lines.forEach((raw, i) => {
    const line = raw.endsWith('\r') ? raw.slice(0, -1) : raw
    const n = i + 1
    if (line.trim() === '' || line.trimStart().startsWith('#')) return
    const colon = line.indexOf(':')
    if (colon <= 0) return void problems.push(`line ${n}: expected "name:hash"`)
    const name = line.slice(0, colon)
    const hash = line.slice(colon + 1).trim()
    if (name !== name.trim() || /[\u0000-\u001f\u007f]/.test(name)) return void problems.push(`line ${n}: user name with spaces or control characters`)
    if (RESERVED_USER_NAMES.includes(name)) return void problems.push(`line ${n}: "${name}" is reserved for the access rules`)
    if (!BCRYPT.test(hash)) return void problems.push(`line ${n} (${name}): not a bcrypt hash; create entries with "htpasswd -B"`)
    if (users.has(name)) return void problems.push(`line ${n}: user "${name}" appears twice`)
    users.set(name, hash)
  })
  return { users, problems }
}

interface FileSignature {
  mtimeMs: number
  size: number
  ino: number
}

export class Htpasswd {
  private users: ReadonlyMap<string, string> = new Map()
  /** A hash of a random secret at the cost most entries use, checked for unknown users so their answer takes as long. */
  private dummyHash = ''
  private signature: FileSignature | undefined
  private readonly verified: LRUCache<string, true>
  private readonly inflight = new Map<string, { users: ReadonlyMap<string, string>; check: Promise<boolean> }>()
  private readonly hmacKey = createSecretKey(randomBytes(32))
  private watcher: FSWatcher | undefined
  private debounce: NodeJS.Timeout | undefined
  private poll: NodeJS.Timeout | undefined
  private reloading: Promise<void> | undefined
  private reloadAgain = false
  private lastProblems: string | undefined
  private closed = false
  private comparisonCount = 0
  private readonly file: string
  private readonly opts: Required<Omit<HtpasswdOptions, 'log'>> & { log: WarnLogger }

  private constructor(file: string, opts: HtpasswdOptions) {
    this.file = resolve(file)
    this.opts = { ...DEFAULT_HTPASSWD, ...opts }
    this.verified = new LRUCache({ max: this.opts.cacheMax, ttl: this.opts.cacheTtlMs })
  }

  /** Reads the file (an HtpasswdError if it is unusable) and starts watching it. */
  static async open(file: string, opts: HtpasswdOptions): Promise<Htpasswd> {
    const h = new Htpasswd(file, opts)
    const problems = await h.load()
    if (problems !== undefined) throw new HtpasswdError(h.file, problems)
    h.startWatching()
    return h
  }

  has(user: string): boolean {
    return this.users.has(user)
  }

  get size(): number {
    return this.users.size
  }

  /** bcrypt comparisons run so far (the rest were answered from memory): for metrics. */
  get comparisons(): number {
    return this.comparisonCount
  }

  /**
   * Whether `password` is `user`'s. An unknown user costs one bcrypt too, so the time taken does
   * not tell which users exist.
   */
  async verify(user: string, password: string): Promise<boolean> {
    const key = createHmac('sha256', this.hmacKey).update(user).update('\0').update(password).digest('base64')
    if (this.verified.get(key) === true) return true
    const users = this.users
    let p = this.inflight.get(key)
    if (p === undefined || p.users !== users) {
      const check = this.check(users, user, password).finally(() => {
        if (this.inflight.get(key)?.check === check) this.inflight.delete(key)
      })
      p = { users, check }
      this.inflight.set(key, p)
    }
    const ok = await p.check
    // A reload while bcrypt ran may have changed this user's password: answer for the set now in force.
    if (users !== this.users) return this.verify(user, password)
    if (ok) this.verified.set(key, true)
    return ok
  }

  private async check(users: ReadonlyMap<string, string>, user: string, password: string): Promise<boolean> {
    const hash = users.get(user)
    this.comparisonCount++
    const ok = await bcrypt.compare(password, hash ?? this.dummyHash)
    return hash !== undefined && ok
  }

  /** Re-reads the file now (normally done on change). Resolves once done; never rejects. */
  async reload(): Promise<void> {
    // A change noticed while reading may not be in what is being read: read once more afterwards.
    if (this.reloading !== undefined) {
      this.reloadAgain = true
      return this.reloading
    }
    this.reloading = (async () => {
      do {
        this.reloadAgain = false
        let problems: string[] | undefined
        try {
          problems = await this.load()
        } catch (err) {
          problems = [`cannot load it (${(err as Error).name})`]
        }
        // Said once per distinct problem, not on every periodic check while the file stays broken.
        const said = problems === undefined ? undefined : problems.join('\n')
        if (problems !== undefined && said !== this.lastProblems) this.opts.log.warn({ file: this.file, problems }, 'htpasswd file not usable; keeping the users read before')
        this.lastProblems = said
      } while (this.reloadAgain && !this.closed)
    })().finally(() => {
      this.reloading = undefined
    })
    return this.reloading
  }

  close(): void {
    this.closed = true
    this.watcher?.close()
    this.watcher = undefined
    clearTimeout(this.debounce)
    clearInterval(this.poll)
  }

  /** Returns the problems when the file is unusable, undefined when loaded or unchanged. */
  private async load(): Promise<string[] | undefined> {
    let sig: FileSignature
    let text: string
    try {
      const s = await stat(this.file)
      sig = { mtimeMs: s.mtimeMs, size: s.size, ino: s.ino }
      if (this.signature !== undefined && sameSignature(sig, this.signature)) return undefined
      text = await readFile(this.file, 'utf8')
    } catch (err) {
      return [`cannot read it (${(err as NodeJS.ErrnoException).code ?? 'error'})`]
    }
    const parsed = parseHtpasswd(text)
    if (parsed.problems.length > 0) {
      // Remember the bad version so it is reported once, not on every poll.
      this.signature = sig
      return [...parsed.problems]
    }
    const cost = commonCost(parsed.users)
    const dummyHash = cost === (this.dummyHash ? bcrypt.getRounds(this.dummyHash) : -1) ? this.dummyHash : await bcrypt.hash(randomBytes(16).toString('hex'), cost)
    this.users = parsed.users
    this.dummyHash = dummyHash
    this.signature = sig
    this.verified.clear()
    this.opts.log.info({ file: this.file, users: parsed.users.size }, 'htpasswd file loaded')
    return undefined
  }

  private startWatching(): void {
    const onChange = () => {
      if (this.closed) return
      clearTimeout(this.debounce)
      this.debounce = setTimeout(() => void this.reload(), this.opts.debounceMs)
      this.debounce.unref()
    }
    // The directory, not the file: editors and Kubernetes secret volumes replace the file (or a
    // symlink to it), and a watch on the old inode would never fire again. Any event in the
    // directory leads to a stat, which is cheap; the signature decides whether to read.
    try {
      this.watcher = watch(dirname(this.file), { persistent: false }, onChange)
      this.watcher.on('error', (err) => {
        this.opts.log.warn({ file: this.file, err: (err as NodeJS.ErrnoException).code }, 'htpasswd directory watch failed; relying on periodic checks')
        this.watcher?.close()
        this.watcher = undefined
      })
    } catch (err) {
      this.opts.log.warn({ file: this.file, err: (err as NodeJS.ErrnoException).code }, 'cannot watch the htpasswd directory; relying on periodic checks')
    }
    this.poll = setInterval(onChange, this.opts.pollMs)
    this.poll.unref()
  }
}

function sameSignature(a: FileSignature, b: FileSignature): boolean {
  return a.mtimeMs === b.mtimeMs && a.size === b.size && a.ino === b.ino
}

/** The cost most entries use (htpasswd -B writes 5 unless told otherwise). */
function commonCost(users: ReadonlyMap<string, string>): number {
  const counts = new Map<number, number>()
  for (const hash of users.values()) {
    const c = Number(hash.slice(4, 6))
    counts.set(c, (counts.get(c) ?? 0) + 1)
  }
  let best = 5
  let bestCount = 0
  for (const [c, n] of counts) if (n > bestCount) [best, bestCount] = [c, n]
  return best
}
