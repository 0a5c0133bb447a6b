// --help texts: the overview (`regcache --help`) and one per command (`regcache CMD --help`).
// Keep in step with README.md and config.example.yaml.

export const USAGE = `regcache: a pull-through caching proxy for container registries

Usage:
  regcache serve   [--config FILE]                 run the mirror
  regcache history IMAGE [--json] [--config FILE]  show a tag's digest history
  regcache fsck    [--repair] [--config FILE]      verify every stored blob
  regcache client-config containerd|docker|podman --mirror URL
                   [--upstreams a,b] [--output-dir DIR] [--no-fallback]
                   [--ca FILE] [--skip-verify] [--config FILE]
                   [--username NAME --password-file FILE]
                                                   print client configuration
  regcache warm    [IMAGE...] [--from-file FILE] [--from-kubernetes FILE|-]
                   [--mirror URL] [--platform OS/ARCH]... [--all-platforms]
                   [--concurrency N] [--config FILE]
                                                   pull images through the mirror now
  regcache invalidate IMAGE [--config FILE]        forget a cached tag
  regcache --help | --version

Run 'regcache COMMAND --help' for what a command does and its options.

Options every command takes:
  -c, --config FILE  YAML configuration; see config.example.yaml for every key
  -h, --help         this text, or the command's own

Exit status: 0 ok, 1 runtime error, 2 bad usage or invalid configuration.
`

export const SERVE_USAGE = `Usage: regcache serve [--config FILE]

Runs the mirror. Listens on 0.0.0.0:5000, keeps data in ./data and mirrors Docker Hub unless a
config file says otherwise. REGCACHE_LISTEN and REGCACHE_DATA_DIR override the file.

Logs go to standard output: readable lines when it is a terminal, JSON lines otherwise (or
always with REGCACHE_LOG_FORMAT=json).

Blob bodies go from file to socket outside JavaScript when the native addon is built:
REGCACHE_SENDFILE=copy (the default: a copy loop in C), kernel (sendfile(2)) or off (Node
streams). See the README's "Sending blob bodies".

SIGTERM or SIGINT lets requests and downloads in flight finish (shutdownGrace); a second signal
exits at once.

Options:
  -c, --config FILE  YAML configuration; see config.example.yaml for every key
`

export const HISTORY_USAGE = `Usage: regcache history IMAGE [--json] [--config FILE]

Every digest IMAGE's tag pointed at and the events recorded for it (first_seen, changed,
rollback, rollback_refused, stale_served, upstream_not_found). IMAGE is a reference like
docker.io/library/alpine:3.20 or ghcr.io/org/app:latest. Reads the database directly, so it
works whether or not the server runs.

Options:
  --json             print JSON instead of a table
  -c, --config FILE  YAML configuration (for dataDir and the upstream names)
`

export const FSCK_USAGE = `Usage: regcache fsck [--repair] [--config FILE]

Re-hashes every stored blob and compares the database with the files. Reports corrupt blobs
(bytes do not match the name), orphaned files (no record) and missing files (a record, no
file).

Options:
  --repair           remove what is corrupt, orphaned or missing, so the next request fetches
                     it again
  -c, --config FILE  YAML configuration (for dataDir)

Exit status: 1 when problems were found and not repaired.
`

export const CLIENT_CONFIG_USAGE = `Usage: regcache client-config containerd|docker|podman --mirror URL [options]

Prints (or writes) the configuration that points a container runtime at this mirror.
  containerd  certs.d/<registry>/hosts.toml for each configured upstream and
              certs.d/_default/hosts.toml (capabilities pull and resolve; "server" is the
              registry itself as a fallback, or the mirror with --no-fallback)
  docker      a daemon.json with registry-mirrors (Docker Hub only)
  podman      registries.conf with path-prefix mirrors

Options:
  --mirror URL       the mirror as the nodes reach it, e.g. http://regcache.internal:5000
  --upstreams a,b    only these configured upstreams (default: all)
  --output-dir DIR   write the files under DIR instead of printing them
  --no-fallback      containerd: never fall back to the registry itself
  --ca FILE          containerd: path, on the node, of the CA that signed the mirror's certificate
  --skip-verify      containerd: do not verify the mirror's certificate
  --username NAME    credentials for a mirror with an auth: section, with --password-file:
  --password-file F  containerd: an Authorization header in hosts.toml; podman: an auth.json;
                     docker: a note (daemon.json cannot hold credentials; use docker login)
                     Files holding credentials are written readable by their owner only.
  -c, --config FILE  YAML configuration (for the upstreams)
`

export const WARM_USAGE = `Usage: regcache warm [IMAGE...] [options]

Makes the requests a node's pull makes (tag, manifests, config and layers) through a running
mirror, so a rollout's pulls are cache hits. Each blob is checked against its digest. Images
may be given by tag or by digest (name@sha256:...); an image named twice is warmed once.

On a terminal it shows a live line per image (bytes of total, rate, ETA); otherwise it prints
one line when an image starts and one when it finishes. A summary lists every image's result.

Where the images come from (any combination):
  IMAGE...                 references on the command line
  --from-file FILE         one reference per line; blank lines and # comments are ignored
  --from-kubernetes FILE   kubectl JSON: '-' reads standard input, e.g.
                             kubectl get pods -A -o json | regcache warm --from-kubernetes -
                           A List of Pods, Deployments, DaemonSets, StatefulSets, ReplicaSets,
                           Jobs or CronJobs; every container, init container and ephemeral
                           container image. A pod whose nodeSelector names kubernetes.io/arch
                           gets that platform instead of --platform.

Options:
  --mirror URL             the mirror (default: this config's listen address)
  --platform OS/ARCH       platform to warm from multi-platform images; repeatable
                           (default linux/amd64)
  --all-platforms          every platform of multi-platform images
  --concurrency N          blob downloads (and images) at a time, 1-64 (default 4)
  -c, --config FILE        YAML configuration (for the listen address and default upstream)

Exit status: 0 every image warmed, 1 any image failed, 2 bad usage or unreadable input.
`

export const INVALIDATE_USAGE = `Usage: regcache invalidate IMAGE [--config FILE]

Forgets a cached tag (every Accept variant); its history is kept. The next request asks
upstream, and an outage will not be answered from cache for it. Content by digest never
changes, so IMAGE must name a tag.

Options:
  -c, --config FILE  YAML configuration (for dataDir and the upstream names)
`

/** Per-command help, for `regcache help COMMAND`. */
export const COMMAND_USAGE: Readonly<Record<string, string>> = {
  serve: SERVE_USAGE,
  history: HISTORY_USAGE,
  fsck: FSCK_USAGE,
  'client-config': CLIENT_CONFIG_USAGE,
  warm: WARM_USAGE,
  invalidate: INVALIDATE_USAGE,
}
