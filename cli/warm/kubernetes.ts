// The images a cluster runs, read from `kubectl get pods -A -o json` (or a list of Deployments,
// DaemonSets, StatefulSets, ReplicaSets, Jobs or CronJobs): every container, init container and
// ephemeral container image, with the platform a pod's nodeSelector pins it to.

import type { WarmRequest } from './targets.js'

export class KubernetesInputError extends Error {}

type Json = Record<string, unknown>

const isObject = (v: unknown): v is Json => typeof v === 'object' && v !== null && !Array.isArray(v)
const field = (v: unknown, key: string): unknown => (isObject(v) ? v[key] : undefined)

/** Workload kinds whose pods are described by spec.template. */
const TEMPLATED = new Set(['Deployment', 'DaemonSet', 'StatefulSet', 'ReplicaSet', 'ReplicationController', 'Job'])
const CONTAINER_FIELDS = ['initContainers', 'containers', 'ephemeralContainers'] as const
// Kubernetes' own label; the beta one is still set on older nodes and older manifests.
const ARCH_LABELS = ['kubernetes.io/arch', 'beta.kubernetes.io/arch']
const OS_LABELS = ['kubernetes.io/os', 'beta.kubernetes.io/os']
const PLATFORM_WORD = /^[a-z0-9][a-z0-9._-]*$/

function describe(item: Json): string {
  const meta = field(item, 'metadata')
  const ns = field(meta, 'namespace')
  const name = field(meta, 'name')
  const kind = typeof item.kind === 'string' ? item.kind : 'item'
  return `${kind} ${typeof ns === 'string' ? `${ns}/` : ''}${typeof name === 'string' ? name : '(unnamed)'}`
}

/** The pod spec of a Pod or workload (possibly missing: the caller reports it); undefined for other kinds. */
function podSpecOf(item: Json): { spec: unknown } | undefined {
  const kind = item.kind
  if (kind === 'Pod' || (kind === undefined && isObject(item.spec) && Array.isArray(field(item.spec, 'containers')))) return { spec: item.spec }
  if (typeof kind === 'string' && TEMPLATED.has(kind)) return { spec: field(field(item.spec, 'template'), 'spec') }
  if (kind === 'CronJob') return { spec: field(field(field(field(item.spec, 'jobTemplate'), 'spec'), 'template'), 'spec') }
  if (kind === 'PodTemplate') return { spec: field(item.template, 'spec') }
  return undefined
}

function platformOf(spec: Json, where: string): string | undefined {
  const selector = spec.nodeSelector
  if (!isObject(selector)) return undefined
  const pick = (labels: string[]) => labels.map((l) => selector[l]).find((v) => v !== undefined)
  const arch = pick(ARCH_LABELS)
  if (arch === undefined) return undefined
  const os = pick(OS_LABELS) ?? 'linux'
  if (typeof arch !== 'string' || typeof os !== 'string' || !PLATFORM_WORD.test(arch) || !PLATFORM_WORD.test(os)) {
    throw new KubernetesInputError(`${where}: nodeSelector names an invalid platform ${JSON.stringify(`${String(os)}/${String(arch)}`)}`)
  }
  return `${os}/${arch}`
}

function collect(item: Json, out: WarmRequest[]): void {
  const workload = podSpecOf(item)
  if (workload === undefined) return // a Service or ConfigMap in a mixed list runs no image
  const spec = workload.spec
  const where = describe(item)
  if (!isObject(spec)) throw new KubernetesInputError(`${where}: has no pod spec`)
  const platform = platformOf(spec, where)
  for (const key of CONTAINER_FIELDS) {
    const list = spec[key]
    if (list === undefined) continue
    if (!Array.isArray(list)) throw new KubernetesInputError(`${where}: spec.${key} is not a list`)
    for (const c of list) {
      const image = field(c, 'image')
      if (typeof image !== 'string' || image.trim() === '') {
        const name = field(c, 'name')
        throw new KubernetesInputError(`${where}: ${key} ${typeof name === 'string' ? JSON.stringify(name) : 'entry'} has no image`)
      }
      out.push({ ref: image.trim(), platforms: platform ? [platform] : [], defaultPlatforms: platform === undefined })
    }
  }
}

/**
 * Warm requests for every container image in a kubectl JSON document, in document order
 * (duplicates are merged later, by planTargets). Throws KubernetesInputError when the document
 * is not a Kubernetes object or list, or a workload in it is malformed.
 */
export function imagesFromKubernetes(doc: unknown): WarmRequest[] {
  if (!isObject(doc)) throw new KubernetesInputError('expected a Kubernetes object or List (kubectl get ... -o json)')
  const out: WarmRequest[] = []
  const items = doc.items
  if (items !== undefined || (typeof doc.kind === 'string' && doc.kind.endsWith('List'))) {
    if (!Array.isArray(items)) throw new KubernetesInputError(`${String(doc.kind ?? 'List')}: items is not a list`)
    for (const item of items) {
      if (!isObject(item)) throw new KubernetesInputError('List: an item is not an object')
      collect(item, out)
    }
    return out
  }
  if (podSpecOf(doc) === undefined) {
    throw new KubernetesInputError(`${describe(doc)}: not a Pod, a workload or a List of them`)
  }
  collect(doc, out)
  return out
}

/** Parses kubectl's output; a clear error for anything that is not JSON. */
export function parseKubernetesJson(text: string): WarmRequest[] {
  let doc: unknown
  try {
    doc = JSON.parse(text)
  } catch (err) {
    throw new KubernetesInputError(`not JSON (${(err as Error).message}); use kubectl get ... -o json`)
  }
  return imagesFromKubernetes(doc)
}
