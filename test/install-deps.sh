#!/bin/sh
# Installs the real programs the tests drive, from Debian's packages, when they are missing: an
# upstream registry (distribution), containerd's ctr, skopeo, podman, a Docker engine, Prometheus
# (promtool), Chromium, debootstrap (the image test's base), Ceph's S3 gateway with a monitor and
# an OSD to store into (the object-store tests), tmux (terminal tests), htpasswd (auth tests).
# With --bench, also what the benchmark drives: nginx (the sendfile baseline), wrk (the load
# generator) and curl (the download client).
#
#   sh test/install-deps.sh [--bench]
#
# Runs before `npm test`, `npm run test:image` and `npm run bench`. As root it uses apt-get;
# otherwise it only says what is missing. It stops and disables the services Debian starts on
# install: the tests and the benchmark start their own, on free ports.
set -eu

bench=false
for arg in "$@"; do
  case "$arg" in
    --bench) bench=true ;;
    *) echo "usage: sh test/install-deps.sh [--bench]" >&2; exit 2 ;;
  esac
done

# Daemons live in sbin, which a user's PATH may lack.
have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/sbin/$1" ]; }
need=""
# need PACKAGE COMMAND...: the package is wanted when any of its commands is missing.
need() {
  pkg=$1
  shift
  for cmd in "$@"; do
    if ! have "$cmd"; then
      case " $need " in *" $pkg "*) ;; *) need="$need $pkg" ;; esac
      return 0
    fi
  done
}

need docker-registry docker-registry
need containerd containerd ctr
need skopeo skopeo
need openssl openssl
need podman podman
need docker.io dockerd
need prometheus prometheus promtool
need chromium chromium
need debootstrap debootstrap
need tmux tmux
need apache2-utils htpasswd
need radosgw radosgw
need ceph-mon ceph-mon
need ceph-base monmaptool
need ceph-osd ceph-osd
need ceph-common ceph
if $bench; then
  need nginx nginx
  need wrk wrk
  need curl curl
fi

[ -z "$need" ] && exit 0

if [ "$(id -u)" != "0" ]; then
  echo "test/install-deps.sh: missing$need; run as root (or: sudo apt-get install -y --no-install-recommends$need)" >&2
  exit 1
fi
echo "test/install-deps.sh: installing$need" >&2
export DEBIAN_FRONTEND=noninteractive
# Wait for another apt-get (a parallel setup) instead of failing on the lock.
apt_get() { apt-get -o DPkg::Lock::Timeout=600 "$@"; }
# shellcheck disable=SC2086
if ! apt_get install -y -qq --no-install-recommends $need >/dev/null 2>&1; then
  apt_get update -qq
  # shellcheck disable=SC2086
  apt_get install -y -qq --no-install-recommends $need >/dev/null
fi

# Debian may start the packaged services (registry on :5000, prometheus on :9090, nginx on :80,
# Ceph's daemons); stop them and keep them from coming back at boot.
if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
  units=$(systemctl list-unit-files --no-legend 'docker-registry*' 'prometheus*' 'nginx*' 'ceph*' 'radosgw*' 2>/dev/null | awk '{ print $1 }')
  for u in $units; do systemctl disable --now "$u" >/dev/null 2>&1 || true; done
else
  for s in docker-registry prometheus prometheus-node-exporter nginx ceph radosgw; do
    [ -x "/etc/init.d/$s" ] || continue
    service "$s" stop >/dev/null 2>&1 || true
    update-rc.d "$s" disable >/dev/null 2>&1 || true
  done
fi
