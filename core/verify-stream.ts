// A pass-through that re-hashes a whole stored blob while it is served and holds its last chunk
// back until the bytes proved to be the digest: a file damaged on disk is never delivered
// complete, and the caller learns of the damage so it can drop the file.

import { createHash } from 'node:crypto'
import { Transform, type TransformCallback } from 'node:stream'
import { digestAlgorithm } from '../oci/reference.js'

export class DamagedContentError extends Error {
  readonly code = 'CONTENT_DAMAGED'
  constructor(
    readonly digest: string,
    readonly actual: string,
  ) {
    super(`stored content for ${digest} hashes to ${actual}: damaged on disk`)
  }
}

export function verifyingStream(digest: string, onResult: (ok: boolean) => void): Transform {
  const hash = createHash(digestAlgorithm(digest))
  let held: Buffer | undefined
  return new Transform({
    transform(chunk: Buffer, _enc, cb: TransformCallback) {
      hash.update(chunk)
      const out = held
      held = chunk
      cb(null, out)
    },
    flush(cb: TransformCallback) {
      const actual = `${digestAlgorithm(digest)}:${hash.digest('hex')}`
      const ok = actual === digest
      onResult(ok)
      if (!ok) return cb(new DamagedContentError(digest, actual))
      cb(null, held)
    },
  })
}
