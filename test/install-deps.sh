#!/bin/sh
# Installs the real programs the integration tests drive, from Debian's packages, when they are
# missing: an upstream registry (distribution), htpasswd, containerd's ctr, skopeo, podman, a Docker engine,
# Prometheus (promtool), Chromium and debootstrap (the image test's base). Runs before `npm test`.
# As root it uses apt-get; otherwise it only says what is missing.
set -eu

need=""
have() { command -v "$1" >/dev/null 2>&1; }
have docker-registry || need="$need docker-registry"
have containerd || need="$need containerd"
have ctr || need="$need containerd"
have skopeo || need="$need skopeo"
have openssl || need="$need openssl"
have htpasswd || need="$need apache2-utils"
have podman || need="$need podman"
have dockerd || need="$need docker.io"
have prometheus || need="$need prometheus"
have promtool || need="$need prometheus"
have chromium || need="$need chromium"
have debootstrap || need="$need debootstrap"

[ -z "$need" ] && exit 0

if [ "$(id -u)" != "0" ]; then
  echo "test/install-deps.sh: missing$need; run as root (or: sudo apt-get install -y$need)" >&2
  exit 1
fi
echo "test/install-deps.sh: installing$need" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# shellcheck disable=SC2086
apt-get install -y -qq --no-install-recommends $need >/dev/null
# Debian may start the packaged services (registry on :5000, prometheus on :9090, docker); the
# tests start their own on free ports.
if have systemctl; then
  for s in docker-registry prometheus prometheus-node-exporter; do systemctl disable --now "$s" >/dev/null 2>&1 || true; done
fi
