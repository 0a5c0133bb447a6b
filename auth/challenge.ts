// What a 401 from regcache carries so that every client answers it with the user's credentials.
//
// How the clients treat a Basic challenge:
// - containers/image (podman 4.3, skopeo 1.9; observed against a server answering like this):
//   probes `GET /v2/` without credentials; after a 401 with `Basic` it sends `Authorization: Basic`
//   on every request, and with no credentials it sends an empty one (`Basic Og==`, see
//   auth/basic.ts). When `/v2/` answers 200 it never sends credentials, not even after a 401 on a
//   manifest, so `skopeo --creds` cannot reach private content. `podman login` probes `/v2/`,
//   retries it with Basic credentials, and reports success on 200, "invalid username/password" on
//   a second 401.
// - containerd (ctr --user, the CRI plugin; from its source, remotes/docker/authorizer.go): no
//   `/v2/` probe; a 401 whose challenge is `basic` makes it retry that request with Basic
//   credentials, provided it has a non-empty username and secret. So every 401 on a manifest or a
//   blob must carry the challenge. A hosts.toml `[header] authorization = "Basic ..."` is sent up
//   front and needs no challenge.
// - Docker (docker login, dockerd pulls; from the source of moby and of the distribution client
//   it uses, registry/client/auth/session.go): probes `GET /v2/`, keeps its challenges; a `basic`
//   challenge gets the credentials it holds for that registry, and without any the request fails
//   with "no basic auth credentials" (for a `registry-mirrors` mirror, dockerd then falls back to
//   the next endpoint, i.e. goes around the mirror). `docker login` succeeds when `/v2/` answers 200
//   to the credentials. Not yet observed with a real dockerd, nor which credentials dockerd sends
//   to a mirror (its source suggests those stored for docker.io).
//
// So `GET /v2/` is a choice when anonymous pulls are allowed:
// - 401 with this challenge: podman, skopeo and Docker send their credentials and reach private
//   content; anonymous containers/image clients still pull (empty Basic, treated as anonymous),
//   containerd never probes, but an anonymous Docker client fails ("no basic auth credentials")
//   and, as a mirror user, pulls around regcache.
// - 200: every anonymous client works, containerd still answers per-request challenges, but
//   podman, skopeo and Docker never send credentials, so they see only what anonymous may.
// With anonymous pulls off, `/v2/` without credentials is always 401 with this challenge.

export const REALM = 'regcache'

/** The value of `WWW-Authenticate` on every 401 regcache sends (RFC 7617 §2). */
export function basicChallenge(realm: string = REALM): string {
  return `Basic realm="${realm.replace(/["\\]/g, "\\$&")}"`
}

export interface AuthRefusal {
  readonly status: 401 | 403 | 429
  readonly code: 'UNAUTHORIZED' | 'DENIED' | 'TOOMANYREQUESTS'
  readonly message: string
  readonly headers: Readonly<Record<string, string>>
}

/** No or wrong credentials: the client may (re)try with credentials. */
export function unauthorized(message = 'authentication required', realm: string = REALM): AuthRefusal {
  return { status: 401, code: 'UNAUTHORIZED', message, headers: { 'www-authenticate': basicChallenge(realm) } }
}

/** Authenticated, but the rules do not let this user pull this repository. */
export function denied(message = 'requested access to the resource is denied'): AuthRefusal {
  return { status: 403, code: 'DENIED', message, headers: {} }
}

/** Too many failed attempts from this address. */
export function throttled(retryAfterSeconds: number): AuthRefusal {
  return {
    status: 429,
    code: 'TOOMANYREQUESTS',
    message: 'too many failed authentication attempts',
    headers: { 'retry-after': String(Math.max(1, Math.ceil(retryAfterSeconds))) },
  }
}
