// Which images `regcache warm --from-kubernetes` finds in kubectl's JSON, and how references
// from anywhere are merged into one target per image.
import { readFileSync } from 'node:fs'
import t from 'tap'
import { imagesFromKubernetes, KubernetesInputError, parseKubernetesJson } from '../../cli/warm/kubernetes.js'
import { canonicalRef, InvalidReferenceError, planTargets, referencesFromText, type WarmRequest } from '../../cli/warm/targets.js'

const DIGEST = `sha256:${'ab'.repeat(32)}`
const AMD = ['linux/amd64']
const req = (ref: string, platforms: string[] = []): WarmRequest => ({ ref, platforms, defaultPlatforms: platforms.length === 0 })
const podSpec = (images: string[], extra: Record<string, unknown> = {}) => ({ containers: images.map((image, i) => ({ name: `c${i}`, image })), ...extra })

t.test('the pods fixture: every distinct image once, in order, with its platforms', async (t) => {
  const text = readFileSync('test/fixtures/kubernetes/pods.json', 'utf8').replaceAll('API_DIGEST', DIGEST)
  const targets = planTargets(parseKubernetesJson(text), 'docker.io', AMD)
  t.same(
    targets.map((x) => [x.image?.canonical, x.platforms]),
    [
      ['registry.k8s.io/coredns/coredns:v1.11.1', AMD],
      ['docker.io/library/busybox:1.36', AMD],
      ['docker.io/library/nginx:1.27', AMD],
      ['docker.io/acme/log-shipper:0.9', AMD],
      [`docker.io/acme/api:1.4@${DIGEST}`, AMD],
      ['docker.io/acme/agent:2.0', ['linux/arm64']],
    ],
  )
  t.equal(targets[1].name, 'busybox:1.36', 'named as first written')
})

t.test('workload kinds', async (t) => {
  const cases: [string, unknown, WarmRequest[]][] = [
    ['a single Pod', { kind: 'Pod', spec: podSpec(['a:1']) }, [req('a:1')]],
    ['a Pod without kind (items of some tools)', { items: [{ spec: podSpec(['a:1']) }] }, [req('a:1')]],
    ['PodList', { kind: 'PodList', items: [{ kind: 'Pod', spec: podSpec(['a:1', 'b:2']) }] }, [req('a:1'), req('b:2')]],
    ['empty List', { kind: 'List', items: [] }, []],
    ['Deployment', { kind: 'List', items: [{ kind: 'Deployment', spec: { template: { spec: podSpec(['d:1']) } } }] }, [req('d:1')]],
    ['DaemonSet', { kind: 'DaemonSetList', items: [{ kind: 'DaemonSet', spec: { template: { spec: podSpec(['ds:1']) } } }] }, [req('ds:1')]],
    ['StatefulSet', { kind: 'List', items: [{ kind: 'StatefulSet', spec: { template: { spec: podSpec(['ss:1']) } } }] }, [req('ss:1')]],
    ['ReplicaSet', { kind: 'List', items: [{ kind: 'ReplicaSet', spec: { template: { spec: podSpec(['rs:1']) } } }] }, [req('rs:1')]],
    ['Job', { kind: 'List', items: [{ kind: 'Job', spec: { template: { spec: podSpec(['job:1']) } } }] }, [req('job:1')]],
    ['CronJob', { kind: 'List', items: [{ kind: 'CronJob', spec: { jobTemplate: { spec: { template: { spec: podSpec(['cron:1']) } } } } }] }, [req('cron:1')]],
    [
      'init, regular and ephemeral containers, init first',
      { kind: 'Pod', spec: { containers: [{ name: 'm', image: 'main:1' }], initContainers: [{ name: 'i', image: 'init:1' }], ephemeralContainers: [{ name: 'e', image: 'debug:1' }] } },
      [req('init:1'), req('main:1'), req('debug:1')],
    ],
    ['nodeSelector arch', { kind: 'Pod', spec: podSpec(['a:1'], { nodeSelector: { 'kubernetes.io/arch': 'arm64' } }) }, [req('a:1', ['linux/arm64'])]],
    ['nodeSelector arch and os', { kind: 'Pod', spec: podSpec(['a:1'], { nodeSelector: { 'kubernetes.io/arch': 'amd64', 'kubernetes.io/os': 'windows' } }) }, [req('a:1', ['windows/amd64'])]],
    ['the beta arch label', { kind: 'Pod', spec: podSpec(['a:1'], { nodeSelector: { 'beta.kubernetes.io/arch': 'arm' } }) }, [req('a:1', ['linux/arm'])]],
    ['nodeSelector without arch', { kind: 'Pod', spec: podSpec(['a:1'], { nodeSelector: { disktype: 'ssd' } }) }, [req('a:1')]],
    ['Services and ConfigMaps in a mixed list run nothing', { kind: 'List', items: [{ kind: 'Service', spec: {} }, { kind: 'ConfigMap', data: {} }, { kind: 'Pod', spec: podSpec(['a:1']) }] }, [req('a:1')]],
    ['image with spaces around it', { kind: 'Pod', spec: podSpec([' a:1 ']) }, [req('a:1')]],
  ]
  for (const [name, doc, want] of cases) t.same(imagesFromKubernetes(doc), want, name)
})

t.test('malformed input: a clear KubernetesInputError', async (t) => {
  const cases: [string, unknown, RegExp][] = [
    ['not an object', [1, 2], /Kubernetes object or List/],
    ['null', null, /Kubernetes object or List/],
    ['a lone Service', { kind: 'Service', metadata: { name: 'web' } }, /Service web: not a Pod, a workload or a List/],
    ['items not a list', { kind: 'List', items: {} }, /items is not a list/],
    ['List without items', { kind: 'PodList' }, /items is not a list/],
    ['an item not an object', { kind: 'List', items: ['x'] }, /an item is not an object/],
    ['container without image', { kind: 'Pod', metadata: { namespace: 'ns', name: 'p' }, spec: { containers: [{ name: 'app' }] } }, /Pod ns\/p: containers "app" has no image/],
    ['image not a string', { kind: 'Pod', spec: { containers: [{ name: 'app', image: 7 }] } }, /has no image/],
    ['containers not a list', { kind: 'Pod', spec: { containers: 'nginx' } }, /spec.containers is not a list/],
    ['Deployment without template', { kind: 'List', items: [{ kind: 'Deployment', metadata: { name: 'd' }, spec: {} }] }, /Deployment d: has no pod spec/],
    ['hostile arch', { kind: 'Pod', spec: podSpec(['a:1'], { nodeSelector: { 'kubernetes.io/arch': '../../x' } }) }, /invalid platform/],
    ['arch not a string', { kind: 'Pod', spec: podSpec(['a:1'], { nodeSelector: { 'kubernetes.io/arch': 64 } }) }, /invalid platform/],
  ]
  for (const [name, doc, message] of cases) t.throws(() => imagesFromKubernetes(doc), { constructor: KubernetesInputError, message }, name)
  t.throws(() => parseKubernetesJson('NAME READY STATUS\nweb 1/1 Running\n'), { constructor: KubernetesInputError, message: /not JSON/ }, 'kubectl table output')
})

t.test('canonicalRef', async (t) => {
  const cases: [string, string, string | RegExp, string?][] = [
    ['alpine', 'docker.io', 'docker.io/library/alpine:latest'],
    ['alpine:3.20', 'docker.io', 'docker.io/library/alpine:3.20'],
    ['library/alpine:3.20', 'docker.io', 'docker.io/library/alpine:3.20'],
    ['docker.io/library/alpine:3.20', 'docker.io', 'docker.io/library/alpine:3.20'],
    ['ghcr.io/org/app:v1', 'docker.io', 'ghcr.io/org/app:v1'],
    ['app:v1', 'ghcr.io', 'ghcr.io/app:v1'],
    ['localhost:5000/app', 'docker.io', 'localhost:5000/app:latest'],
    [`alpine@${DIGEST}`, 'docker.io', `docker.io/library/alpine@${DIGEST}`, `docker.io/library/alpine@${DIGEST}`],
    [`alpine:3.20@${DIGEST}`, 'docker.io', `docker.io/library/alpine:3.20@${DIGEST}`, `docker.io/library/alpine@${DIGEST}`],
    ['', 'docker.io', /not an image reference/],
    ['two words', 'docker.io', /not an image reference/],
    ['Alpine', 'docker.io', /invalid repository name/],
    ['alpine:bad/tag!', 'docker.io', /invalid/],
    ['alpine@sha256:123', 'docker.io', /invalid digest/],
    [`alpine@md5:${'a'.repeat(32)}`, 'docker.io', /invalid digest/],
  ]
  for (const [ref, registry, want, key] of cases) {
    if (want instanceof RegExp) {
      t.throws(() => canonicalRef(ref, registry), { constructor: InvalidReferenceError, message: want }, JSON.stringify(ref))
      continue
    }
    const got = canonicalRef(ref, registry)
    t.equal(got.canonical, want, ref)
    t.equal(got.key, key ?? want, `${ref} key`)
  }
})

t.test('planTargets merges duplicates and their platforms; invalid references fail alone', async (t) => {
  const targets = planTargets(
    [req('nginx:1.27'), req('docker.io/library/nginx:1.27', ['linux/arm64']), req('Bad Ref'), req(`alpine@${DIGEST}`), req(`alpine:3@${DIGEST}`), req('Bad Ref')],
    'docker.io',
    AMD,
  )
  t.same(
    targets.map((x) => [x.name, x.image?.canonical, x.platforms, x.error !== undefined]),
    [
      ['nginx:1.27', 'docker.io/library/nginx:1.27', ['linux/amd64', 'linux/arm64'], false],
      ['Bad Ref', undefined, [], true],
      [`alpine@${DIGEST}`, `docker.io/library/alpine@${DIGEST}`, AMD, false],
    ],
  )
})

t.test('referencesFromText', async (t) => {
  const cases: [string, string, string[]][] = [
    ['empty', '', []],
    ['one per line', 'a:1\nb:2\n', ['a:1', 'b:2']],
    ['CRLF', 'a:1\r\nb:2\r\n', ['a:1', 'b:2']],
    ['comments and blanks', '# images for the rollout\n\n  a:1  \n   # indented comment\nb:2 # trailing comment\n', ['a:1', 'b:2']],
    ['no final newline', 'a:1', ['a:1']],
  ]
  for (const [name, text, want] of cases) t.same(referencesFromText(text), want, name)
})
