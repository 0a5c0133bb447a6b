// What a 401 from regcache carries so that every client answers it with the user's credentials.
//
// How the clients treat a Basic challenge (read from their sources):
// - containerd (ctr --user, CRI): tries the request, and on a 401 whose WWW-Authenticate names
//   `Basic` retries with `Authorization: Basic` when it has both a username and a secret; it has no
//   `/v2/` probe, so each 401 on a manifest or blob must carry the challenge. A hosts.toml
//   `[header] authorization = "Basic ..."` is sent up front and needs no challenge at all.
// - containers/image (podman, skopeo --creds, podman login): probes `GET /v2/` once and uses the
//   challenges of that answer for every later request; a `basic` challenge makes it send
//   `Authorization: Basic` on each request, and when it has no credentials it still sends one, with
//   an empty user and password (see auth/basic.ts). A `/v2/` answered 200 means "no auth": it then
//   never sends credentials, so a 200 there would lock logged-in users out of private content.
// - Docker (docker login, dockerd pulls, also through `registry-mirrors`): probes `GET /v2/`, keeps
//   the challenges, and adds Basic credentials when the challenge is `basic` and it has credentials;
//   `docker login` succeeds when `/v2/` then answers 200. As for containers/image, credentials are
//   only sent after a challenge on `/v2/`.
// Hence: with auth on, `GET /v2/` without credentials should answer 401 with this challenge even
// when anonymous pulls are allowed (anonymous clients still pull: Docker sends nothing, podman
// sends the empty Basic, containerd never probes). Which credentials dockerd sends to a
// `registry-mirrors` mirror (those of docker.io, as far as its source shows) is still to be
// confirmed against the test-started dockerd.

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
