// What a request turned out to be, filled in by the route that served it and read by the one log
// line and the request metrics written when the response is done (server/app.ts).

import type { CacheOutcome, Target } from '../core/target.js'

export interface RequestOutcome {
  kind: 'manifest' | 'blob' | 'other'
  cache?: CacheOutcome | 'range-forwarded'
  upstream?: string
  repository?: string
  digest?: string
  stale?: string
}

declare module 'fastify' {
  interface FastifyRequest {
    /** Declared with decorateRequest in server/app.ts; null until a registry route sets it. */
    outcome: RequestOutcome | null
    /** The user name the request authenticated as (server/auth-hook.ts); null when anonymous or auth is off. Never a secret. */
    user: string | null
    /** For upstreams with `credentials: client`: the target bound to the client's credentials, set once upstream accepted them. */
    authorizedTarget: Target | null
  }
}
