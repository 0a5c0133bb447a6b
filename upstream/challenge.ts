// WWW-Authenticate parsing (RFC 9110 §11.6.1, Docker token auth). Tolerant on purpose:
// gcr.io sends unquoted values, quay.io may omit scope, error="insufficient_scope" may appear.

export interface Challenge {
  scheme: 'bearer' | 'basic' | string
  params: Record<string, string>
}

export function parseChallenges(header: string | string[] | undefined): Challenge[] {
  if (header === undefined) return []
  const values = Array.isArray(header) ? header : [header]
  const out: Challenge[] = []
  for (const value of values) {
    // auth-param: token "=" ( token / quoted-string ); a new challenge starts at "<scheme> <token>=".
    const re = /\s*([A-Za-z][A-Za-z0-9!#$%&'*+.^_`|~-]*)(?:\s+(?=[A-Za-z0-9!#$%&'*+.^_`|~-]+\s*=)|\s*$|\s*,)|\s*,?\s*([A-Za-z0-9!#$%&'*+.^_`|~-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^,\s]*))\s*,?/gy
    let current: Challenge | undefined
    let m: RegExpExecArray | null
    for (;;) {
      // RFC 9110 §5.6.1: empty list elements (", ,") are ignored.
      while (re.lastIndex < value.length && /[\s,]/.test(value[re.lastIndex])) re.lastIndex++
      if (re.lastIndex >= value.length || (m = re.exec(value)) === null) break
      if (m[1] !== undefined) {
        current = { scheme: m[1].toLowerCase(), params: {} }
        out.push(current)
      } else if (m[2] !== undefined && current) {
        current.params[m[2].toLowerCase()] = m[3] !== undefined ? m[3].replace(/\\(.)/g, '$1') : (m[4] ?? '')
      }
      if (m[0] === '') break
    }
  }
  return out
}
