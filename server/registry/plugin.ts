// The OCI distribution pull API under /v2/ as a fastify plugin. Names contain '/', so the path
// after /v2/ is split from the right (oci/reference.ts parseApiPath), then each endpoint has its
// own handler. A read-only mirror: every write method is refused without reading the body.

import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import type { Mirror } from '../../core/mirror.js'
import { RegistryError } from '../../core/errors.js'
import { isValidDigest, parseApiPath } from '../../oci/reference.js'
import { serveBlob } from './blob-route.js'
import type { SendfileAddon } from './blob-sendfile.js'
import { serveManifest } from './manifest-route.js'
import { servePassthrough } from './passthrough-route.js'

export interface RegistryPluginOptions {
  mirror: Mirror
  /** Sends cached blob bodies with sendfile(2); absent: they are streamed. */
  sendfile?: SendfileAddon
}

export async function registryPlugin(app: FastifyInstance, { mirror, sendfile }: RegistryPluginOptions): Promise<void> {
  const base = async (req: FastifyRequest, reply: FastifyReply) =>
    reply.header('content-type', 'application/json').send(req.method === 'HEAD' ? undefined : Buffer.from('{}'))

  const endpoint = async (req: FastifyRequest<{ Params: { '*': string } }>, reply: FastifyReply) => {
    const api = parseApiPath(`/v2/${req.params['*']}`)
    switch (api.endpoint) {
      case 'base':
        return base(req, reply)
      case 'manifests':
        return serveManifest(mirror, api.name, api.reference, req, reply)
      case 'blobs':
        return serveBlob(mirror, api.name, api.reference, req, reply, sendfile)
      case 'tags':
        return servePassthrough(mirror, api.name, 'tags/list', req, reply)
      case 'referrers':
        if (!isValidDigest(api.reference)) throw new RegistryError('DIGEST_INVALID', `invalid digest ${JSON.stringify(api.reference)}`)
        return servePassthrough(mirror, api.name, `referrers/${api.reference}`, req, reply)
      case 'uploads':
        throw new RegistryError('UNSUPPORTED', 'regcache is a read-only mirror: pushing is not supported')
      default:
        throw new RegistryError('NOT_FOUND', `no such endpoint: ${req.url.split('?')[0]}`)
    }
  }

  app.route({ method: ['GET', 'HEAD'], url: '/v2', handler: base })
  app.route({ method: ['GET', 'HEAD'], url: '/v2/', handler: base })
  app.route({ method: ['GET', 'HEAD'], url: '/v2/*', handler: endpoint })
  app.route({
    method: ['POST', 'PUT', 'PATCH', 'DELETE'],
    url: '/v2/*',
    handler: async () => {
      throw new RegistryError('UNSUPPORTED', 'regcache is a read-only mirror: pushing and deleting are not supported')
    },
  })
}
