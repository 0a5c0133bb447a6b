// regcache serving HTTPS with a private CA: containerd pulls through it using the hosts.toml
// files `regcache client-config containerd --ca` generates, as an operator would deploy them.

import { readdir, readFile, writeFile } from 'node:fs/promises'
import { request as httpsRequest } from 'node:https'
import { join } from 'node:path'
import t from 'tap'
import { startContainerd } from '../helpers/containerd.js'
import { buildImage, pushImage } from '../helpers/images.js'
import { makeTempDir, removeTempDir, run, runOk } from '../helpers/proc.js'
import { startRegistry } from '../helpers/registry.js'
import { startRegcache } from '../helpers/regcache.js'

const CLI = new URL('../../cli/main.js', import.meta.url).pathname

/** A CA and a server certificate for 127.0.0.1 (IP SAN: clients match IP addresses only against IP SANs). */
async function makeCerts(dir: string): Promise<{ ca: string; cert: string; key: string }> {
  const p = (f: string) => join(dir, f)
  const ossl = (args: string[]) => runOk('openssl', args, { cwd: dir, timeoutMs: 30_000 })
  await ossl(['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '2', '-subj', '/CN=regcache test CA',
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign',
    '-keyout', p('ca.key'), '-out', p('ca.pem')])
  await ossl(['req', '-newkey', 'rsa:2048', '-nodes', '-subj', '/CN=127.0.0.1', '-keyout', p('server.key'), '-out', p('server.csr')])
  await writeFile(
    p('server.ext'),
    ['basicConstraints=CA:FALSE', 'keyUsage=critical,digitalSignature,keyEncipherment', 'extendedKeyUsage=serverAuth', 'subjectAltName=IP:127.0.0.1', ''].join('\n'),
  )
  await ossl(['x509', '-req', '-in', p('server.csr'), '-CA', p('ca.pem'), '-CAkey', p('ca.key'), '-CAcreateserial', '-days', '2',
    '-extfile', p('server.ext'), '-out', p('server.pem')])
  return { ca: p('ca.pem'), cert: p('server.pem'), key: p('server.key') }
}

/** GET over https trusting only `ca`; resolves the status and body. */
function httpsGet(url: string, ca: Buffer): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = httpsRequest(url, { ca, timeout: 5000 }, (res) => {
      const chunks: Buffer[] = []
      res.on('data', (c: Buffer) => chunks.push(c))
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') }))
      res.on('error', reject)
    })
    req.on('timeout', () => req.destroy(new Error('timeout')))
    req.on('error', reject)
    req.end()
  })
}

t.test('containerd pulls through regcache over https with a private CA', async (t) => {
  const certDir = await makeTempDir()
  t.teardown(() => removeTempDir(certDir))
  const certs = await makeCerts(certDir)
  const caPem = await readFile(certs.ca)

  const hub = await startRegistry()
  t.teardown(hub.stop)
  const img = await buildImage({ layers: 2, layerSize: 32 * 1024 })
  t.teardown(img.remove)
  const pushed = await pushImage(img, hub.host, 'library/secure:1')
  await hub.settle()
  hub.resetRequests() // skopeo's push is not under test

  const rc = await startRegcache({
    upstreams: { 'docker.io': { url: hub.url } },
    extra: { tls: { certFile: certs.cert, keyFile: certs.key } },
  })
  t.teardown(rc.stop)
  t.match(rc.url, /^https:\/\/127\.0\.0\.1:\d+$/, 'regcache reports an https URL')

  await t.test('the certificate verifies against the CA for 127.0.0.1', async (t) => {
    const res = await httpsGet(`${rc.url}/v2/`, caPem)
    t.equal(res.status, 200)
    t.equal(res.body, '{}')
  })

  await t.test('plain http to the TLS port does not get an answer', async (t) => {
    const plain = rc.url.replace(/^https:/, 'http:')
    let status: number | undefined
    let error: unknown
    try {
      const res = await fetch(`${plain}/v2/`, { signal: AbortSignal.timeout(5000) })
      status = res.status
      await res.arrayBuffer()
    } catch (e) {
      error = e
    }
    t.ok(error !== undefined || (status !== undefined && status >= 400), `plain http fails (status ${status}, error ${String(error)})`)
    t.not(status, 200, 'no registry answer over plain http')
  })

  await t.test('client-config containerd --ca generates what ctr pulls with', async (t) => {
    const hostsDir = await makeTempDir()
    t.teardown(() => removeTempDir(hostsDir))
    const gen = await run(process.execPath, [CLI, 'client-config', 'containerd', '--mirror', rc.url, '--ca', certs.ca, '--no-fallback',
      '--output-dir', hostsDir, '--config', rc.configFile])
    t.equal(gen.code, 0, gen.stderr)
    t.same((await readdir(hostsDir)).sort(), ['_default', 'docker.io'], 'one file per upstream plus _default')
    const hostsToml = await readFile(join(hostsDir, 'docker.io', 'hosts.toml'), 'utf8')
    t.match(hostsToml, `[host."${rc.url}"]`, 'the https mirror is the host')
    t.match(hostsToml, `ca = ${JSON.stringify(certs.ca)}`, 'with the CA')
    t.match(hostsToml, `server = "${rc.url}"`, '--no-fallback: no way around the mirror')
    t.notMatch(hostsToml, 'skip_verify', 'the certificate is verified')

    const ctd = await startContainerd()
    t.teardown(ctd.stop)
    const r = await ctd.pull('docker.io/library/secure:1', { hostsDir })
    t.equal(r.code, 0, `${r.stderr}\n${hostsToml}`)
    t.equal(await ctd.imageDigest('docker.io/library/secure:1'), pushed.digest, 'digest as upstream serves it')
    const content = await ctd.contentDigests()
    for (const d of img.layerDigests) t.ok(content.includes(d), `layer ${d.slice(0, 19)} pulled`)

    await hub.settle()
    t.ok(hub.count({ pathIncludes: '/v2/library/secure/manifests/1' }) >= 1, 'upstream was asked for the tag')
    t.same([...new Set(hub.requests().map((q) => q.userAgent))], ['regcache'], 'every upstream request came from regcache')
    const served = (await rc.logs()).filter((l) => l.msg === 'request' && String(l.url).includes('library/secure/blobs/'))
    t.ok(served.length >= img.layerDigests.length, `regcache served the blobs (${served.length} blob requests)`)
  })
})
