// A throw-away single-node Ceph cluster serving S3 on loopback: one monitor, one OSD on memstore
// and radosgw's beast frontend, with no systemd, mgr or cephx. Every path (config, data, sockets,
// logs, pid files) lives under one temp directory and every command gets that directory's own
// ceph.conf, so parallel clusters and any system Ceph never see each other.
import { randomBytes, randomUUID } from 'node:crypto'
import { mkdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { S3Client, CreateBucketCommand, ListBucketsCommand } from '@aws-sdk/client-s3'
import { ensureCommand } from './packages.js'
import { freePort } from './ports.js'
import { makeTempDir, removeTempDir, runOk, spawnDaemon, waitUntil, type Daemon } from './proc.js'

export interface Rgw {
  /** http://127.0.0.1:PORT */
  endpoint: string
  port: number
  region: string
  accessKey: string
  secretKey: string
  /** Files holding the keys, as `storage.s3.accessKeyFile` / `secretKeyFile` want them. */
  accessKeyFile: string
  secretKeyFile: string
  /** A bucket created at start. */
  bucket: string
  /** The cluster's temp directory (logs are in log/). */
  dir: string
  /** PIDs of the daemons this cluster started (monitor, OSD, gateway). */
  pids: number[]
  /** An S3 client for the test's own look-ups (path style, checksums only when required). */
  client(): S3Client
  /** Stops radosgw only (the cluster stays), so tests can watch clients meet a dead store. */
  stopGateway(): Promise<void>
  /** Stops every daemon this cluster started and removes its directory. Idempotent. */
  stop(): Promise<void>
}

const START_DEADLINE_MS = 60_000
const PACKAGES: Array<[string, string]> = [
  ['ceph-mon', 'ceph-mon'],
  ['ceph-osd', 'ceph-osd'],
  ['radosgw', 'radosgw'],
  ['ceph', 'ceph-common'],
]

/** Undefined when Ceph's programs are (or could be made) available, else why not. */
export async function rgwMissing(): Promise<string | undefined> {
  for (const [cmd, pkg] of PACKAGES) {
    const why = await ensureCommand(cmd, pkg)
    if (why) return why
  }
  return undefined
}

function cephConf(dir: string, fsid: string, monPort: number, rgwPort: number): string {
  return `[global]
fsid = ${fsid}
mon host = v2:127.0.0.1:${monPort}
public addr = 127.0.0.1
ms bind msgr1 = false
ms bind msgr2 = true
auth cluster required = none
auth service required = none
auth client required = none
# radosgw otherwise stalls at its first monitor session when cephx is off.
ms mon client mode = crc secure
# The default 1 s interval makes every monitor command take a second.
paxos propose interval = 0.01
osd pool default size = 1
osd pool default min size = 1
osd crush chooseleaf type = 0
mon warn on pool no redundancy = false
mon allow pool delete = true
osd objectstore = memstore
memstore device bytes = 1073741824
run dir = ${dir}/run
admin socket = ${dir}/run/$name.asok
pid file = ${dir}/run/$name.pid
log file = ${dir}/log/$name.log
log to stderr = false
err to stderr = true
mon data = ${dir}/mon/$cluster-$id
osd data = ${dir}/osd/$cluster-$id
keyring = ${dir}/keyring
crash dir = ${dir}/crash
exporter sock dir = ${dir}/run

[client.rgw]
rgw frontends = beast endpoint=127.0.0.1:${rgwPort}
rgw data = ${dir}/rgw
rgw dns name = 127.0.0.1
`
}

export async function startRgw(): Promise<Rgw> {
  const deadline = Date.now() + START_DEADLINE_MS
  const remaining = () => Math.max(1000, deadline - Date.now())
  const dir = await makeTempDir()
  const daemons: Daemon[] = []
  let stopped: Promise<void> | undefined
  const stopAll = () =>
    (stopped ??= (async () => {
      // Newest first: the gateway and OSD need the monitor to shut down quickly.
      for (const d of [...daemons].reverse()) await d.stop(3000)
      await removeTempDir(dir)
    })())
  try {
    const fsid = randomUUID()
    const monPort = await freePort()
    const port = await freePort()
    for (const sub of ['run', 'log', 'mon', 'osd', 'rgw', 'crash']) await mkdir(join(dir, sub))
    const conf = join(dir, 'ceph.conf')
    await writeFile(conf, cephConf(dir, fsid, monPort, port))
    await writeFile(join(dir, 'keyring'), '')
    const env = { ...process.env, CEPH_CONF: conf }
    const run = (cmd: string, args: string[]) => runOk(cmd, ['--conf', conf, ...args], { env, timeoutMs: remaining() })
    const daemon = (cmd: string, args: string[]) => {
      // -f: stay in the foreground as our own child, so stop() signals exactly this process.
      const d = spawnDaemon(cmd, ['-f', '--conf', conf, ...args], { env, cwd: dir })
      daemons.push(d)
      return d
    }

    await runOk('monmaptool', ['--create', '--fsid', fsid, '--addv', 'a', `[v2:127.0.0.1:${monPort}]`, join(dir, 'monmap')], {
      env,
      timeoutMs: remaining(),
    })
    await run('ceph-mon', ['--mkfs', '-i', 'a', '--monmap', join(dir, 'monmap')])
    const mon = daemon('ceph-mon', ['-i', 'a'])
    const ceph = (args: string[]) => run('ceph', ['--connect-timeout', String(Math.ceil(remaining() / 1000)), ...args])
    const osdUuid = randomUUID()
    const id = (await ceph(['osd', 'new', osdUuid])).stdout.trim()
    await ceph(['osd', 'crush', 'add', `osd.${id}`, '1', 'root=default'])
    await mkdir(join(dir, 'osd', `ceph-${id}`))
    await run('ceph-osd', ['--mkfs', '-i', id, '--osd-uuid', osdUuid])
    const osd = daemon('ceph-osd', ['-i', id])

    const accessKey = `AK${randomBytes(9).toString('hex').toUpperCase()}`
    const secretKey = randomBytes(24).toString('base64url')
    // Creates the zone and its pools, which waits for the OSD to come up.
    await run('radosgw-admin', ['user', 'create', '--uid', 'regcache-test', '--display-name', 'regcache test', '--access-key', accessKey, '--secret-key', secretKey])
    const gateway = daemon('radosgw', ['-n', 'client.rgw'])

    const endpoint = `http://127.0.0.1:${port}`
    const region = 'us-east-1'
    const client = () =>
      new S3Client({
        endpoint,
        region,
        forcePathStyle: true,
        credentials: { accessKeyId: accessKey, secretAccessKey: secretKey },
        requestChecksumCalculation: 'WHEN_REQUIRED',
        responseChecksumValidation: 'WHEN_REQUIRED',
        maxAttempts: 1,
        requestHandler: { connectionTimeout: 2000, requestTimeout: 5000 },
      })
    const probe = client()
    try {
      for (const d of [mon, osd]) if (d.hasExited()) throw new Error(`Ceph daemon exited early\n${d.tail()}`)
      await waitUntil('radosgw', async () => (await probe.send(new ListBucketsCommand({}))).Buckets !== undefined, {
        daemon: gateway,
        timeoutMs: remaining(),
        intervalMs: 100,
      })
      const bucket = `regcache-${randomBytes(4).toString('hex')}`
      await probe.send(new CreateBucketCommand({ Bucket: bucket }))
      const accessKeyFile = join(dir, 'access-key')
      const secretKeyFile = join(dir, 'secret-key')
      await writeFile(accessKeyFile, accessKey + '\n', { mode: 0o600 })
      await writeFile(secretKeyFile, secretKey + '\n', { mode: 0o600 })
      return {
        endpoint,
        port,
        region,
        accessKey,
        secretKey,
        accessKeyFile,
        secretKeyFile,
        bucket,
        dir,
        pids: daemons.map((d) => d.pid),
        client,
        stopGateway: async () => {
          await gateway.stop(3000)
        },
        stop: stopAll,
      }
    } finally {
      probe.destroy()
    }
  } catch (err) {
    await stopAll()
    throw err
  }
}
