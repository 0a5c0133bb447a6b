// Builds the S3 client from the settings and turns its failures into the store's error classes.

import { readFile } from 'node:fs/promises'
import { S3Client, S3ServiceException } from '@aws-sdk/client-s3'
import { StoreUnavailableError } from './store-unavailable.js'
import { S3_DEFAULTS, type S3StoreSettings, type S3StoreTuning } from './s3-settings.js'

export async function createS3Client(settings: S3StoreSettings, tuning: S3StoreTuning): Promise<S3Client> {
  if ((settings.accessKeyFile === undefined) !== (settings.secretKeyFile === undefined)) {
    throw new Error('storage.s3: accessKeyFile and secretKeyFile go together (or neither, for the default credential chain)')
  }
  const credentials =
    settings.accessKeyFile !== undefined && settings.secretKeyFile !== undefined
      ? {
          accessKeyId: await readSecretFile(settings.accessKeyFile, 'accessKeyFile'),
          secretAccessKey: await readSecretFile(settings.secretKeyFile, 'secretKeyFile'),
        }
      : undefined
  const requestTimeout = tuning.requestTimeoutMs ?? S3_DEFAULTS.requestTimeoutMs
  return new S3Client({
    endpoint: settings.endpoint,
    region: settings.region,
    forcePathStyle: settings.forcePathStyle ?? false,
    credentials,
    // Checksums only where S3 demands them: servers such as Ceph RGW 16 reject the streamed
    // aws-chunked trailers the SDK sends by default. Content is verified by its digest anyway.
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
    maxAttempts: tuning.maxAttempts ?? S3_DEFAULTS.maxAttempts,
    requestHandler: {
      connectionTimeout: tuning.connectTimeoutMs ?? S3_DEFAULTS.connectTimeoutMs,
      requestTimeout,
      throwOnRequestTimeout: true,
      socketTimeout: requestTimeout,
    },
  })
}

async function readSecretFile(path: string, setting: string): Promise<string> {
  let text: string
  try {
    text = await readFile(path, 'utf8')
  } catch (err) {
    // The path is configuration, not a secret; the content never appears in a message.
    throw new Error(`storage.s3.${setting}: cannot read ${path}: ${(err as NodeJS.ErrnoException).code ?? 'error'}`)
  }
  const value = text.trim()
  if (value === '') throw new Error(`storage.s3.${setting}: ${path} is empty`)
  return value
}

/** HTTP status of a failed S3 call, when the store answered. */
export function s3Status(err: unknown): number | undefined {
  if (err instanceof S3ServiceException) return err.$metadata.httpStatusCode
  return undefined
}

export function isNotFound(err: unknown): boolean {
  return s3Status(err) === 404
}

export function isPreconditionFailed(err: unknown): boolean {
  return s3Status(err) === 412
}

/** Any failure talking to the store, as StoreUnavailableError (already converted ones pass through). */
export function unavailable(err: unknown, action: string): StoreUnavailableError {
  if (err instanceof StoreUnavailableError) return err
  if (err instanceof S3ServiceException) {
    const status = err.$metadata.httpStatusCode
    return new StoreUnavailableError(`object store: ${action} failed: ${status ?? '?'} ${err.name}`, status, err.name, { cause: err })
  }
  const e = err as NodeJS.ErrnoException
  const reason = typeof e?.code === 'string' ? e.code : typeof e?.name === 'string' ? e.name : 'Error'
  return new StoreUnavailableError(`object store: ${action} failed: ${reason}`, undefined, reason, { cause: err })
}
