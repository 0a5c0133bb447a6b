// Requests Node's HTTP parser refuses before fastify sees them (headers too large, a malformed
// request line, a request that never finished arriving) still get an OCI error body, written
// straight to the socket since there is no request object to answer through.

import type { Socket } from 'node:net'
import { STATUS_CODES } from 'node:http'
import { RegistryError } from '../core/errors.js'
import { ociErrorBody } from './error-handler.js'

export function errorForClientError(err: NodeJS.ErrnoException): RegistryError {
  switch (err.code) {
    case 'HPE_HEADER_OVERFLOW':
      return new RegistryError('HEADERS_TOO_LARGE')
    case 'ERR_HTTP_REQUEST_TIMEOUT':
      return new RegistryError('REQUEST_TIMEOUT')
    default:
      return new RegistryError('REQUEST_INVALID')
  }
}

/** fastify's `clientErrorHandler`: one OCI error response, then the connection is closed. */
export function clientErrorHandler(err: NodeJS.ErrnoException, socket: Socket): void {
  // A reset connection has no one left to answer.
  if (err.code === 'ECONNRESET' || socket.destroyed) return
  if (socket.writable) {
    const e = errorForClientError(err)
    const body = ociErrorBody(e)
    socket.write(
      `HTTP/1.1 ${e.status} ${STATUS_CODES[e.status] ?? 'Error'}\r\n` +
        'Content-Type: application/json\r\n' +
        'X-Content-Type-Options: nosniff\r\n' +
        'Docker-Distribution-Api-Version: registry/2.0\r\n' +
        `Content-Length: ${body.length}\r\n` +
        'Connection: close\r\n\r\n',
    )
    socket.write(body)
  }
  socket.destroy()
}
