// Response headers as undici gives them (a string, or an array when repeated).

export type ResponseHeaders = Record<string, string | string[] | undefined>

/** The first value of a response header. */
export function headerValue(v: string | string[] | undefined): string | undefined {
  return Array.isArray(v) ? v[0] : v
}
