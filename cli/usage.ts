// --help text. Keep in step with README.md and config.example.yaml.

export const USAGE = `regcache: a pull-through caching proxy for container registries

Usage:
  regcache serve   [--config FILE]                 run the mirror
  regcache history IMAGE [--json] [--config FILE]  show a tag's digest history
  regcache fsck    [--repair] [--config FILE]      verify every stored blob
  regcache client-config containerd|docker|podman --mirror URL
                   [--upstreams a,b] [--output-dir DIR] [--no-fallback]
                   [--ca FILE] [--skip-verify] [--config FILE]
                                                   print client configuration
  regcache warm    IMAGE... [--mirror URL] [--platform OS/ARCH]... [--all-platforms]
                   [--config FILE]                 pull images through the mirror now
  regcache invalidate IMAGE [--config FILE]        forget a cached tag
  regcache --help | --version

Commands:
  serve     Listens on 0.0.0.0:5000, keeps data in ./data and mirrors Docker Hub unless a
            config file says otherwise. REGCACHE_LISTEN and REGCACHE_DATA_DIR override the
            file. SIGTERM lets requests and downloads in flight finish (shutdownGrace), a
            second signal exits at once.
  history   Every digest IMAGE's tag pointed at and the events recorded for it (first_seen,
            changed, rollback, rollback_refused, stale_served, upstream_not_found). IMAGE is
            a reference like docker.io/library/alpine:3.20 or ghcr.io/org/app:latest. Reads
            the database directly, so it works whether or not the server runs.

  fsck      Re-hashes every stored blob and compares the database with the files. Reports
            corrupt blobs (bytes do not match the name), orphaned files (no record) and
            missing files (a record, no file); --repair removes them, so the next request
            fetches them again. Exit status 1 when problems were found and not repaired.

  client-config
            containerd: certs.d/<registry>/hosts.toml for each configured upstream and
            certs.d/_default/hosts.toml (capabilities pull and resolve; "server" is the
            registry itself as a fallback, or the mirror with --no-fallback). docker: a
            daemon.json with registry-mirrors (Docker Hub only). podman: registries.conf
            with path-prefix mirrors. --output-dir writes the files instead of printing.

  warm      Makes the requests a node's pull makes (tag, manifests, config and layers)
            through a running mirror (--mirror, default: this config's listen address), so
            a rollout's pulls are cache hits. Default platform linux/amd64.
  invalidate
            Forgets a cached tag (every Accept variant); its history is kept. The next
            request asks upstream, and an outage will not be answered from cache for it.

Options:
  --config FILE   YAML configuration; see config.example.yaml for every key
  --json          (history) print JSON instead of a table
  --repair        (fsck) remove what is corrupt, orphaned or missing

Exit status: 0 ok, 1 runtime error, 2 bad usage or invalid configuration.
`
