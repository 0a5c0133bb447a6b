#!/bin/sh
# Installs the programs the benchmark drives, from Debian's packages, when they are missing:
# nginx (the sendfile baseline) and wrk (the HTTP load generator), plus what the integration
# tests already need (docker-registry, containerd/ctr, skopeo) and curl (the download client).
# As root it uses apt-get; otherwise it only says what is missing.
set -eu

need=""
have() { command -v "$1" >/dev/null 2>&1; }
have nginx || [ -x /usr/sbin/nginx ] || need="$need nginx"
have wrk || need="$need wrk"
have curl || need="$need curl"
have docker-registry || need="$need docker-registry"
have containerd || need="$need containerd"
have ctr || need="$need containerd"
have skopeo || need="$need skopeo"

[ -z "$need" ] && exit 0

if [ "$(id -u)" != "0" ]; then
  echo "bench/install-deps.sh: missing$need; run as root (or: sudo apt-get install -y$need)" >&2
  exit 1
fi
echo "bench/install-deps.sh: installing$need" >&2
export DEBIAN_FRONTEND=noninteractive
# shellcheck disable=SC2086
if ! apt-get install -y -qq --no-install-recommends $need >/dev/null 2>&1; then
  apt-get update -qq
  # shellcheck disable=SC2086
  apt-get install -y -qq --no-install-recommends $need >/dev/null
fi
# Debian starts packaged services (nginx on :80, the registry on :5000); the bench starts its own.
if have systemctl; then
  systemctl disable --now nginx >/dev/null 2>&1 || true
  systemctl disable --now docker-registry >/dev/null 2>&1 || true
fi
