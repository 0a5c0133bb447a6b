// A real docker-registry (distribution 2.8) with an arbitrary `auth:` block, e.g. token auth
// against test/helpers/token-server.ts: registry.ts's registry, ready once /v2/ answers 401.

import { copyImage, type OciIndexLayout, type OciLayout } from './images.js'
import { startRegistry, type BasicAuth, type Registry } from './registry.js'

export interface AuthRegistryOptions {
  /** The registry's `auth:` mapping, e.g. `{ token: { realm, service, issuer, rootcertbundle } }`. */
  auth: Record<string, unknown>
}

export type AuthRegistry = Registry

export function startAuthRegistry(opts: AuthRegistryOptions): Promise<AuthRegistry> {
  return startRegistry({ authConfig: opts.auth })
}

/**
 * Push with skopeo using credentials (skopeo does the token dance itself). Unlike
 * images.pushImage this does not look the digest up afterwards with Basic auth, which a
 * token-auth registry refuses; the layout is pushed unconverted, so its digest is the built one.
 */
export function pushWithCreds(layout: OciLayout | OciIndexLayout, registryHost: string, repoAndTag: string, creds: BasicAuth): Promise<void> {
  return copyImage(layout, registryHost, repoAndTag, { auth: creds })
}
