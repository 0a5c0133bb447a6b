// On-disk layout of a regcache data directory:
//
//   <dataDir>/
//     regcache.db            SQLite metadata (WAL mode): tags, content, history
//     blobs/
//       sha256/ab/ab12…ef    content named by its digest: layers, configs and manifests alike
//       sha512/…
//     tmp/
//       <random>.partial     fills in progress; renamed into blobs/ only after the digest
//                            verifies, and deleted at start-up (a crash never leaves a blob)

import { join } from 'node:path'

export function dbPath(dataDir: string): string {
  return join(dataDir, 'regcache.db')
}

export function blobsDir(dataDir: string): string {
  return join(dataDir, 'blobs')
}

export function tmpDir(dataDir: string): string {
  return join(dataDir, 'tmp')
}

export function blobPath(dataDir: string, digest: string): string {
  const [algorithm, encoded] = digest.split(':')
  return join(dataDir, 'blobs', algorithm, encoded.slice(0, 2), encoded)
}
