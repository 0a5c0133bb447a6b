// Client authentication in front of the registry API: every /v2/ request is decided here, before
// any route looks at the cache, so that neither an answer nor its timing nor a HEAD tells a
// client what is cached. Upstreams with `credentials: mirror` are judged by the htpasswd users
// and the access rules; upstreams with `credentials: client` by upstream itself (core/client-access.ts),
// which also hands back the target the route must use (it speaks upstream with the client's credentials).

import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import type { Logger } from 'pino'
import type { Config } from '../config/config.js'
import { Authenticator, type Authentication } from '../auth/authenticate.js'
import type { AuthRefusal } from '../auth/challenge.js'
import { effectiveRules, type AuthConfig, type Rule } from '../auth/config.js'
import { Htpasswd } from '../auth/htpasswd.js'
import { decideAccess, refusalFor } from '../auth/rules.js'
import { FailureThrottle } from '../auth/throttle.js'
import { denied, unauthorized } from '../auth/challenge.js'
import { CredentialsRejectedError } from '../core/client-access.js'
import { RegistryError } from '../core/errors.js'
import type { Mirror } from '../core/mirror.js'
import { parseApiPath } from '../oci/reference.js'
import { resolveTarget } from './registry/target.js'
import './request-outcome.js'

export interface ClientAuth {
  readonly authenticator: Authenticator
  readonly rules: readonly Rule[]
  readonly config: AuthConfig
  /** Some upstream takes each client's own credentials: then `/v2/` asks for credentials. */
  readonly anyClientMode: boolean
  close(): void
}

/** Reads the htpasswd file (failing when it is unusable) and says what operators must know. */
export async function openClientAuth(config: Config, log: Logger): Promise<ClientAuth | undefined> {
  const auth = config.auth
  if (auth === undefined) return undefined
  const htpasswd = auth.htpasswd !== undefined ? await Htpasswd.open(auth.htpasswd, { log }) : undefined
  if (config.tls === undefined) {
    log.warn('client authentication is on but regcache serves plain HTTP: Basic credentials cross the network readable; configure tls or put a TLS proxy in front')
  }
  const clientModes = Object.values(config.upstreams).filter((u) => u.credentials === 'client').map((u) => u.name)
  if (htpasswd === undefined && clientModes.length < Object.keys(config.upstreams).length) {
    log.info('auth.htpasswd is not set: through upstreams with credentials: mirror only anonymous requests can pass the rules')
  }
  return {
    authenticator: new Authenticator({ passwords: htpasswd, anonymous: auth.anonymous, throttle: new FailureThrottle() }),
    rules: effectiveRules(auth),
    config: auth,
    anyClientMode: clientModes.length > 0,
    close: () => htpasswd?.close(),
  }
}

export interface AuthHookOptions {
  auth: ClientAuth
  mirror: Mirror
  log: Logger
}

/** Adds the hook to the app (not encapsulated: it must see every /v2/ route). */
export function installAuthHook(app: FastifyInstance, { auth, mirror, log }: AuthHookOptions): void {
  const anyClientMode = auth.anyClientMode

  const refuse = (refusal: AuthRefusal) => new RegistryError(refusal.code, refusal.message, { headers: { ...refusal.headers } })

  const failed = (req: FastifyRequest, a: Extract<Authentication, { ok: false }>) => {
    // A request without credentials while anonymous pulls are off is a client's first probe, not a failed login.
    if (a.reason !== 'anonymous-off') {
      mirror.metrics.authFailures.inc({ reason: a.reason })
      log.info({ user: a.user, address: req.ip, reason: a.reason, url: req.url.split('?')[0] }, 'authentication failed')
    }
    return refuse(a.refusal)
  }

  app.addHook('onRequest', async (req: FastifyRequest, reply: FastifyReply) => {
    if (req.url !== '/v2' && !req.url.startsWith('/v2/') && !req.url.startsWith('/v2?')) return
    const header = req.headers.authorization
    const params = req.params as { '*'?: string } | undefined
    const wildcard = params?.['*']
    const api = wildcard === undefined ? parseApiPath(req.url.split('?')[0]) : parseApiPath(`/v2/${wildcard}`)

    if (api.endpoint === 'base') {
      // The login probe. Through upstreams with client credentials the credentials are judged per
      // repository by upstream, so here they are only parsed; elsewhere checked against htpasswd.
      const a = anyClientMode ? await auth.authenticator.identify(header, req.ip) : await auth.authenticator.authenticate(header, req.ip)
      if (!a.ok) throw failed(req, a)
      req.user = a.identity.kind === 'user' ? a.identity.name : null
      // Without credentials: 401 when they would matter, so that podman, skopeo and Docker send theirs.
      if (a.identity.kind === 'anonymous' && anyClientMode) throw refuse(unauthorized())
      return
    }
    if (api.endpoint !== 'manifests' && api.endpoint !== 'blobs' && api.endpoint !== 'tags' && api.endpoint !== 'referrers') {
      // Writes are refused by the routes whoever asks; unknown paths are 404 for everyone.
      return
    }

    const { target } = resolveTarget(mirror, api.name, req, reply)
    const mode = mirror.credentialMode(target.upstream.name)
    const a = mode === 'client' ? await auth.authenticator.identify(header, req.ip) : await auth.authenticator.authenticate(header, req.ip)
    if (!a.ok) throw failed(req, a)
    req.user = a.identity.kind === 'user' ? a.identity.name : null

    if (mode === 'mirror') {
      const decision = decideAccess(auth.rules, { identity: a.identity, upstream: target.upstream.name, repository: target.repository })
      if (!decision.allowed) {
        const refusal = refusalFor(a.identity) === 'unauthorized' ? unauthorized() : denied()
        log.debug({ user: req.user, address: req.ip, upstream: target.upstream.name, repository: target.repository }, 'access denied by the rules')
        throw refuse(refusal)
      }
      return
    }
    try {
      req.authorizedTarget = await mirror.authorize(target, a.credentials)
    } catch (err) {
      if (err instanceof CredentialsRejectedError) {
        auth.authenticator.failed(req.ip)
        mirror.metrics.authFailures.inc({ reason: 'upstream-rejected' })
        log.info({ user: req.user, address: req.ip, reason: 'upstream-rejected', upstream: target.upstream.name }, 'authentication failed')
      }
      throw err
    }
  })
}
