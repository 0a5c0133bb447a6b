// The configuration file's schema, written with TypeBox so the file's TypeScript type is derived
// from it (ConfigFile below) and the two cannot drift. Defaults live here, next to the types they
// fill, so `config.example.yaml`, `--help` and the validator cannot disagree about them.

import { Type, type Static, type TSchema } from '@sinclair/typebox'
import { DOCKER_HUB_API } from '../oci/reference.js'

/** A value given as "2s"/"5m"/"7d" or a number of seconds; validated by pattern, parsed later. */
const Duration = (opts: { default?: string } = {}) =>
  Type.Unsafe<string | number>({ type: ['string', 'number'], pattern: '^(0|(\\d+(\\.\\d+)?(ms|s|m|h|d|w))+)$', ...opts })
/** A size given as "50GiB"/"500MB" or a number of bytes. */
const Size = () => Type.Unsafe<string | number>({ type: ['string', 'number'], pattern: '^\\s*\\d+(\\.\\d+)?\\s*([kKmMgGtT]i?[bB]|[bB])?\\s*$' })
const Enum = <T extends string>(values: readonly T[], def: T) => Type.Unsafe<T>({ enum: [...values], default: def })
const Section = <T extends Record<string, TSchema>>(properties: T) => Type.Object(properties, { additionalProperties: false, default: {} })
const NonEmpty = () => Type.String({ minLength: 1 })

export const upstreamSchema = Type.Object(
  {
    url: Type.String({ pattern: '^https?://[^/\\s?#]+(/[^\\s?#]*)?$' }),
    username: Type.Optional(NonEmpty()),
    passwordFile: Type.Optional(NonEmpty()),
    passwordEnv: Type.Optional(Type.String({ pattern: '^[A-Za-z_][A-Za-z0-9_]*$' })),
    caFile: Type.Optional(NonEmpty()),
    insecureSkipVerify: Type.Boolean({ default: false }),
    // Hosts besides the upstream's own that may receive its credentials as a token realm
    // (Docker Hub's auth.docker.io is added for registry-1.docker.io by config.ts).
    tokenRealms: Type.Optional(Type.Array(Type.String({ pattern: '^[a-zA-Z0-9]([a-zA-Z0-9.-]*[a-zA-Z0-9])?$' }), { uniqueItems: true })),
    // Follow redirects into loopback, link-local and private address space even when the
    // upstream itself is elsewhere (a CDN inside the same private network).
    allowPrivateRedirects: Type.Boolean({ default: false }),
    revalidate: Section({
      timeout: Duration({ default: '2s' }),
      minInterval: Duration({ default: '0' }),
    }),
    stale: Section({
      maxAge: Duration({ default: '7d' }),
      onNotFound: Enum(['passthrough', 'serve'] as const, 'passthrough'),
    }),
    onRollback: Enum(['follow', 'refuse'] as const, 'follow'),
    down: Section({
      failures: Type.Integer({ minimum: 1, default: 3 }),
      probeInterval: Duration({ default: '10s' }),
    }),
    timeouts: Section({
      connect: Duration({ default: '5s' }),
      headers: Duration({ default: '30s' }),
      body: Duration({ default: '60s' }),
    }),
    // mirror: the username/password above serve every client the auth rules allow.
    // client: each client's own Basic credentials go upstream (auth/client-credentials.ts).
    credentials: Enum(['mirror', 'client'] as const, 'mirror'),
    authorization: Section({
      recheck: Duration({ default: '5m' }),
      offline: Duration({ default: '24h' }),
    }),
  },
  { additionalProperties: false },
)

const authRuleSchema = Type.Object(
  {
    users: Type.Array(NonEmpty()),
    upstreams: Type.Array(NonEmpty()),
    repositories: Type.Array(Type.String()),
  },
  { additionalProperties: false },
)

/** Client authentication (auth/). Absent: every client may pull everything, as without it. */
export const authSchema = Type.Object(
  {
    htpasswd: Type.Optional(NonEmpty()),
    anonymous: Type.Boolean({ default: true }),
    rules: Type.Optional(Type.Array(authRuleSchema)),
  },
  { additionalProperties: false },
)

/** One `prefetch` entry: a tag (`image` with a tag) or a repository and a regex over its tags. */
export const prefetchSchema = Type.Object(
  {
    image: NonEmpty(),
    tags: Type.Optional(NonEmpty()),
    platforms: Type.Array(Type.String({ pattern: '^[a-z0-9]+/[a-z0-9_]+(/[a-z0-9.]+)?$' }), { minItems: 1, default: ['linux/amd64'] }),
    every: Duration({ default: '10m' }),
    switch: Enum(['immediate', 'when-cached'] as const, 'immediate'),
    maxLag: Duration({ default: '1h' }),
  },
  { additionalProperties: false },
)

export const configSchema = Type.Object(
  {
    listen: Type.String({ pattern: '^(\\[[0-9a-fA-F:.]+\\]|[^:\\s\\[\\]]*):\\d{1,5}$', default: '0.0.0.0:5000' }),
    dataDir: Type.String({ minLength: 1, default: './data' }),
    logLevel: Enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const, 'info'),
    defaultUpstream: Type.String({ minLength: 1, default: 'docker.io' }),
    // A map from registry host to its settings (additionalProperties, so ajv fills each one's defaults).
    upstreams: Type.Unsafe<Record<string, Static<typeof upstreamSchema>>>({
      type: 'object',
      minProperties: 1,
      propertyNames: { pattern: '^[a-zA-Z0-9]([a-zA-Z0-9.-]*[a-zA-Z0-9])?(:\\d+)?$' },
      additionalProperties: upstreamSchema,
      default: { 'docker.io': { url: DOCKER_HUB_API } },
    }),
    cache: Section({
      maxSize: Type.Optional(Size()),
      maxAge: Type.Optional(Duration()),
      scrub: Duration({ default: '7d' }),
    }),
    blobs: Section({
      rangeForwards: Type.Integer({ minimum: 1, default: 8 }),
      rangeOnMiss: Enum(['forward', 'wait'] as const, 'forward'),
    }),
    storage: Section({
      type: Enum(['filesystem', 's3'] as const, 'filesystem'),
      s3: Type.Optional(
        Type.Object(
          {
            endpoint: Type.Optional(Type.String({ pattern: '^https?://[^/\\s?#]+/?$' })),
            region: Type.String({ minLength: 1, default: 'us-east-1' }),
            bucket: Type.String({ pattern: '^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$' }),
            prefix: Type.String({ pattern: '^((?!\\.\\.?/)[A-Za-z0-9._-]+/)*$', default: '' }),
            forcePathStyle: Type.Boolean({ default: false }),
            accessKeyFile: Type.Optional(NonEmpty()),
            secretKeyFile: Type.Optional(NonEmpty()),
            redirect: Type.Boolean({ default: false }),
            redirectExpiry: Duration({ default: '60s' }),
            leaseTtl: Duration({ default: '30s' }),
          },
          { additionalProperties: false },
        ),
      ),
    }),
    tls: Type.Optional(Type.Object({ certFile: NonEmpty(), keyFile: NonEmpty() }, { additionalProperties: false })),
    auth: Type.Optional(authSchema),
    shutdownGrace: Duration({ default: '30s' }),
    prefetch: Type.Array(prefetchSchema, { default: [] }),
  },
  { additionalProperties: false },
)

/** The configuration file as validated, defaults filled in. */
export type ConfigFile = Static<typeof configSchema>
export type UpstreamFile = Static<typeof upstreamSchema>
export type PrefetchFile = Static<typeof prefetchSchema>
