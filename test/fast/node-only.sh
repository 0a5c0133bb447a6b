#!/bin/sh
# Runs the fast tier (after `npm run build`) with nothing but Node: an empty environment, a PATH
# holding only a link to the node binary, and Node's permission model refusing to start any
# child process. A test that needed docker-registry, containerd or any other program would fail.
set -eu
cd "$(dirname "$0")/../.."
bin=$(mktemp -d)
trap 'rm -rf "$bin"' EXIT
ln -s "$(command -v node)" "$bin/node"
exec env -i HOME="$bin" PATH="$bin" node --experimental-permission --allow-fs-read='*' --allow-fs-write='*' --allow-addons \
  --enable-source-maps dist/test/fast/all.js
