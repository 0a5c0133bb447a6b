// Upstream selection (docs/protocol.md#upstream-selection): `ns` first, then a leading path component naming a
// configured upstream, then the default. Only configured upstreams are ever chosen.
import t from 'tap'
import { RegistryError } from '../../core/errors.js'
import { selectUpstream, type Selection } from '../../core/select-upstream.js'

const upstreams: ReadonlySet<string> = new Set(['docker.io', 'ghcr.io', 'quay.io', 'registry.k8s.io', 'localhost:5001'])

t.test('selectUpstream: choices', async (t) => {
  const cases: { name: string; path: string; ns?: string; set?: ReadonlySet<string>; def?: string; expect: Selection }[] = [
    // (1) ns
    {
      name: 'ns picks the configured upstream and is echoed as OCI-Namespace',
      path: 'org/app',
      ns: 'ghcr.io',
      expect: { upstream: 'ghcr.io', repository: 'org/app', clientName: 'org/app', namespace: 'ghcr.io' },
    },
    {
      name: 'ns with a port',
      path: 'app',
      ns: 'localhost:5001',
      expect: { upstream: 'localhost:5001', repository: 'app', clientName: 'app', namespace: 'localhost:5001' },
    },
    {
      name: 'ns docker.io: library/ added for a single-component name',
      path: 'alpine',
      ns: 'docker.io',
      expect: { upstream: 'docker.io', repository: 'library/alpine', clientName: 'alpine', namespace: 'docker.io' },
    },
    {
      name: 'ns registry-1.docker.io (a Docker Hub alias) maps to the configured docker.io',
      path: 'alpine',
      ns: 'registry-1.docker.io',
      expect: { upstream: 'docker.io', repository: 'library/alpine', clientName: 'alpine', namespace: 'registry-1.docker.io' },
    },
    {
      name: 'ns index.docker.io (a Docker Hub alias) maps to the configured docker.io',
      path: 'myorg/app',
      ns: 'index.docker.io',
      expect: { upstream: 'docker.io', repository: 'myorg/app', clientName: 'myorg/app', namespace: 'index.docker.io' },
    },
    {
      name: 'ns docker.io maps to a Docker Hub upstream configured under another alias',
      path: 'alpine',
      ns: 'docker.io',
      set: new Set(['registry-1.docker.io']),
      def: 'registry-1.docker.io',
      expect: { upstream: 'registry-1.docker.io', repository: 'library/alpine', clientName: 'alpine', namespace: 'docker.io' },
    },
    {
      name: 'ns is a host name: case-insensitive',
      path: 'org/app',
      ns: 'GHCR.IO',
      expect: { upstream: 'ghcr.io', repository: 'org/app', clientName: 'org/app', namespace: 'GHCR.IO' },
    },
    {
      name: 'library/ is only for Docker Hub: ns ghcr.io keeps a single-component name',
      path: 'app',
      ns: 'ghcr.io',
      expect: { upstream: 'ghcr.io', repository: 'app', clientName: 'app', namespace: 'ghcr.io' },
    },
    {
      name: 'ns wins over a path prefix',
      path: 'quay.io/org/app',
      ns: 'ghcr.io',
      expect: { upstream: 'ghcr.io', repository: 'quay.io/org/app', clientName: 'quay.io/org/app', namespace: 'ghcr.io' },
    },
    // (2) path prefix
    {
      name: 'path prefix picks the upstream and is stripped; no OCI-Namespace',
      path: 'ghcr.io/org/app',
      expect: { upstream: 'ghcr.io', repository: 'org/app', clientName: 'ghcr.io/org/app' },
    },
    {
      name: 'path prefix with a deep name',
      path: 'registry.k8s.io/sig/team/app',
      expect: { upstream: 'registry.k8s.io', repository: 'sig/team/app', clientName: 'registry.k8s.io/sig/team/app' },
    },
    {
      name: 'path prefix docker.io with library/ as written (podman)',
      path: 'docker.io/library/alpine',
      expect: { upstream: 'docker.io', repository: 'library/alpine', clientName: 'docker.io/library/alpine' },
    },
    {
      name: 'path prefix docker.io with a single-component name: library/ added',
      path: 'docker.io/alpine',
      expect: { upstream: 'docker.io', repository: 'library/alpine', clientName: 'docker.io/alpine' },
    },
    {
      name: 'path prefix naming a Docker Hub alias maps to docker.io',
      path: 'registry-1.docker.io/myorg/app',
      expect: { upstream: 'docker.io', repository: 'myorg/app', clientName: 'registry-1.docker.io/myorg/app' },
    },
    // (3) default
    {
      name: 'a Docker Hub namespace (myorg/app) goes to the default upstream',
      path: 'myorg/app',
      expect: { upstream: 'docker.io', repository: 'myorg/app', clientName: 'myorg/app' },
    },
    {
      name: 'single-component name on the Docker Hub default: library/ added',
      path: 'alpine',
      expect: { upstream: 'docker.io', repository: 'library/alpine', clientName: 'alpine' },
    },
    {
      name: 'library/alpine on the default stays as it is',
      path: 'library/alpine',
      expect: { upstream: 'docker.io', repository: 'library/alpine', clientName: 'library/alpine' },
    },
    {
      name: 'a namespace equal to a configured host without its dot is not a prefix (quay/app)',
      path: 'quay/app',
      expect: { upstream: 'docker.io', repository: 'quay/app', clientName: 'quay/app' },
    },
    {
      name: 'a non-Docker-Hub default does not add library/',
      path: 'app',
      def: 'ghcr.io',
      expect: { upstream: 'ghcr.io', repository: 'app', clientName: 'app' },
    },
  ]
  for (const c of cases) {
    t.strictSame(selectUpstream(c.path, c.ns, c.set ?? upstreams, c.def ?? 'docker.io'), c.expect, c.name)
  }
})

t.test('selectUpstream: only configured upstreams', async (t) => {
  const cases: { name: string; path: string; ns?: string; set?: ReadonlySet<string> }[] = [
    { name: 'unknown ns', path: 'org/app', ns: 'evil.example.com' },
    { name: 'unknown ns that is a prefix of a configured one', path: 'org/app', ns: 'ghcr' },
    { name: 'ns docker.io when no Docker Hub upstream is configured', path: 'alpine', ns: 'docker.io', set: new Set(['ghcr.io']) },
    { name: 'a path prefix that looks like a host (dot) but is not configured', path: 'gcr.io/project/image' },
    { name: 'a path prefix with a port that is not configured', path: 'localhost:5002/app' },
    { name: 'a path prefix "localhost" that is not configured', path: 'localhost/app' },
  ]
  for (const c of cases) {
    let caught: unknown
    try {
      selectUpstream(c.path, c.ns, c.set ?? upstreams, c.set ? [...c.set][0] : 'docker.io')
    } catch (err) {
      caught = err
    }
    t.ok(caught instanceof RegistryError, `${c.name}: throws RegistryError`)
    t.equal((caught as RegistryError)?.code, 'DENIED', `${c.name}: code DENIED`)
    t.equal((caught as RegistryError)?.status, 403, `${c.name}: status 403`)
  }
})
