// Settings of the S3 content store. The key names are those of the `storage.s3` section of the
// configuration file.

export interface S3StoreSettings {
  /** Endpoint URL; omit for AWS, where the region picks it. */
  endpoint?: string
  region: string
  bucket: string
  /** Prepended to every key, e.g. `prod/`. */
  prefix?: string
  /** Bucket in the path instead of the host name (most S3-compatible servers need this). */
  forcePathStyle?: boolean
  /** Files holding the access key id and secret; without them the SDK's default credential chain applies. */
  accessKeyFile?: string
  secretKeyFile?: string
  /** Send clients a short-lived presigned URL for blobs instead of streaming them through. */
  redirect?: boolean
}

/** How the store behaves, beyond where it is: not part of the configuration file's contract. */
export interface S3StoreTuning {
  /** Local directory for the spool files of fills in progress. */
  spoolDir: string
  /** Names this process in fill leases; random when omitted. */
  owner?: string
  /** Multipart part size in bytes (at least 5 MiB, S3's minimum for all parts but the last). */
  partSize?: number
  /** Parts uploading at once per fill before write() waits. */
  partsInFlight?: number
  /** TCP connect timeout. */
  connectTimeoutMs?: number
  /** Longest wait for a response, and longest silence on a connection. */
  requestTimeoutMs?: number
  /** Attempts per request (1 = no retry). */
  maxAttempts?: number
  /** How long a fill lease lasts without renewal. */
  leaseTtlMs?: number
  /** Multipart uploads older than this with no live lease are leftovers of a crash. */
  abandonedUploadAgeMs?: number
}

export const S3_DEFAULTS = {
  partSize: 8 * 1024 * 1024,
  partsInFlight: 2,
  connectTimeoutMs: 2000,
  requestTimeoutMs: 30_000,
  maxAttempts: 2,
  leaseTtlMs: 30_000,
  abandonedUploadAgeMs: 15 * 60_000,
} as const

export const MIN_PART_SIZE = 5 * 1024 * 1024
