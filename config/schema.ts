// The configuration file's JSON schema. Defaults live here, next to the types they fill, so
// `config.example.yaml`, `--help` and the validator cannot disagree about them.

const duration = { type: ['string', 'number'], pattern: '^(0|(\\d+(\\.\\d+)?(ms|s|m|h|d|w))+)$' } as const
const size = { type: ['string', 'number'], pattern: '^\\s*\\d+(\\.\\d+)?\\s*([kKmMgGtT]i?[bB]|[bB])?\\s*$' } as const

export const upstreamSchema = {
  type: 'object',
  additionalProperties: false,
  required: ['url'],
  properties: {
    url: { type: 'string', pattern: '^https?://[^/\\s?#]+(/[^\\s?#]*)?$' },
    username: { type: 'string', minLength: 1 },
    passwordFile: { type: 'string', minLength: 1 },
    passwordEnv: { type: 'string', pattern: '^[A-Za-z_][A-Za-z0-9_]*$' },
    caFile: { type: 'string', minLength: 1 },
    insecureSkipVerify: { type: 'boolean', default: false },
    revalidate: {
      type: 'object',
      additionalProperties: false,
      default: {},
      properties: {
        timeout: { ...duration, default: '2s' },
        minInterval: { ...duration, default: '0' },
      },
    },
    stale: {
      type: 'object',
      additionalProperties: false,
      default: {},
      properties: {
        maxAge: { ...duration, default: '7d' },
        onNotFound: { enum: ['passthrough', 'serve'], default: 'passthrough' },
      },
    },
    onRollback: { enum: ['follow', 'refuse'], default: 'follow' },
    down: {
      type: 'object',
      additionalProperties: false,
      default: {},
      properties: {
        failures: { type: 'integer', minimum: 1, default: 3 },
        probeInterval: { ...duration, default: '10s' },
      },
    },
    timeouts: {
      type: 'object',
      additionalProperties: false,
      default: {},
      properties: {
        connect: { ...duration, default: '5s' },
        headers: { ...duration, default: '30s' },
        body: { ...duration, default: '60s' },
      },
    },
  },
} as const

export const configSchema = {
  type: 'object',
  additionalProperties: false,
  properties: {
    listen: { type: 'string', pattern: '^(\\[[0-9a-fA-F:.]+\\]|[^:\\s\\[\\]]*):\\d{1,5}$', default: '0.0.0.0:5000' },
    dataDir: { type: 'string', minLength: 1, default: './data' },
    logLevel: { enum: ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'], default: 'info' },
    defaultUpstream: { type: 'string', minLength: 1, default: 'docker.io' },
    upstreams: {
      type: 'object',
      minProperties: 1,
      propertyNames: { pattern: '^[a-zA-Z0-9]([a-zA-Z0-9.-]*[a-zA-Z0-9])?(:\\d+)?$' },
      additionalProperties: upstreamSchema,
      default: { 'docker.io': { url: 'https://registry-1.docker.io' } },
    },
    cache: {
      type: 'object',
      additionalProperties: false,
      default: {},
      properties: {
        maxSize: size,
        maxAge: duration,
      },
    },
    blobs: {
      type: 'object',
      additionalProperties: false,
      default: {},
      properties: {
        rangeForwards: { type: 'integer', minimum: 1, default: 8 },
        rangeOnMiss: { enum: ['forward', 'wait'], default: 'forward' },
      },
    },
    tls: {
      type: 'object',
      additionalProperties: false,
      required: ['certFile', 'keyFile'],
      properties: {
        certFile: { type: 'string', minLength: 1 },
        keyFile: { type: 'string', minLength: 1 },
      },
    },
    shutdownGrace: { ...duration, default: '30s' },
  },
} as const
