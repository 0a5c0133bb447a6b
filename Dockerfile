# regcache container image.
#
# (No `# syntax=` line on purpose: it makes BuildKit fetch a frontend image from Docker Hub at
# build time, which fails in closed networks; nothing here needs a newer syntax.)
#
#   docker build -t regcache:0.1.0 .
#   docker run -d -p 5000:5000 -v regcache-data:/data regcache:0.1.0
#   docker run -d -p 5000:5000 -v regcache-data:/data \
#     -v "$PWD/config.yaml:/etc/regcache/config.yaml:ro" \
#     regcache:0.1.0 serve --config /etc/regcache/config.yaml
#
# Give it the time to drain on stop: Docker's default stop timeout (10s) is shorter than
# shutdownGrace (30s), so use `docker run --stop-timeout 35 ...` or `docker stop -t 35`.
#
# Without --config regcache runs on its built-in defaults (mirror of Docker Hub). Whatever the
# config says, REGCACHE_DATA_DIR and REGCACHE_LISTEN below win, so the data always lands in the
# /data volume and the port is always 5000 inside the container.
#
# Build arguments:
#   NODE_IMAGE    base image of both stages: pin a digest, or use your own mirror of it.
#   NPM_REGISTRY  npm registry for the build (a private registry or proxy).
#   NPM_CA_FILE   name of a CA certificate in deploy/docker/build-ca/ to trust during the
#                 build (TLS-intercepting proxies, private registries). See the README there.

# Both stages use the same image, so the native addon (better-sqlite3) is built against exactly
# the Node.js and libc it runs on.
ARG NODE_IMAGE=node:20-bookworm-slim

# ---------------------------------------------------------------------------------------------
FROM ${NODE_IMAGE} AS build

ARG NPM_REGISTRY=
ARG NPM_CA_FILE=ca.crt

WORKDIR /app

# better-sqlite3 first tries a prebuilt binary from the internet, then compiles with node-gyp.
# Closed networks (and this project's CI) only reach the npm registry, so compiling is the
# normal path: it needs python3, make and g++. Installed only when missing, so images that
# already have them (or that are not Debian-based) still work. Stays in this stage only.
RUN set -eu; \
    if command -v python3 >/dev/null 2>&1 && command -v make >/dev/null 2>&1 && command -v g++ >/dev/null 2>&1; then \
      echo "build tools present"; \
    elif command -v apt-get >/dev/null 2>&1; then \
      apt-get update; \
      DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3 make g++; \
      rm -rf /var/lib/apt/lists/*; \
    elif command -v apk >/dev/null 2>&1; then \
      apk add --no-cache python3 make g++; \
    else \
      echo "warning: no python3/make/g++ and no known package manager; better-sqlite3 will need a prebuilt binary" >&2; \
    fi

# Optional build-time CA. The directory always exists in the repository (it holds a README), so
# this COPY never fails; the certificate itself is optional.
COPY deploy/docker/build-ca/ /tmp/build-ca/

# Only the manifest, lockfile and the in-repository addon (an optional dependency npm ci builds)
# first: the slow dependency install is then cached by Docker until they change, not invalidated
# by every source edit.
COPY package.json package-lock.json ./
COPY native/ ./native/

# npm ci: exactly the lockfile's versions. Dev dependencies are needed here (TypeScript).
# - The CA is added to Node's own root certificates (NODE_EXTRA_CA_CERTS) and given to npm as a
#   full bundle (public roots + the CA), because npm's `cafile` replaces rather than extends.
# - The sendfile addon (native/sendfile) is an optional dependency: npm versions that hold back
#   install scripts of local packages skip its build, so it is built explicitly when missing.
# - node-gyp normally downloads Node's headers; official node images ship them under the
#   install prefix, and pointing nodedir there keeps the build offline-capable.
RUN set -eu; \
    if [ -n "$NPM_REGISTRY" ]; then npm config set registry "$NPM_REGISTRY"; fi; \
    if [ -f "/tmp/build-ca/$NPM_CA_FILE" ]; then \
      export NODE_EXTRA_CA_CERTS="/tmp/build-ca/$NPM_CA_FILE"; \
      node -p "require('tls').rootCertificates.join('\n')" > /tmp/build-ca/npm-bundle.pem; \
      cat "/tmp/build-ca/$NPM_CA_FILE" >> /tmp/build-ca/npm-bundle.pem; \
      npm config set cafile /tmp/build-ca/npm-bundle.pem; \
    fi; \
    prefix="$(dirname "$(dirname "$(command -v node)")")"; \
    if [ -f "$prefix/include/node/node.h" ]; then export npm_config_nodedir="$prefix"; fi; \
    npm ci --no-audit --no-fund; \
    node -e "require('better-sqlite3')(':memory:').prepare('select 1').get()"; \
    if [ ! -f native/sendfile/build/Release/sendfile.node ]; then \
      npm --prefix native/sendfile run install || echo "warning: the sendfile addon did not build" >&2; \
    fi

# Sources (what .dockerignore lets through: no tests, no local node_modules or dist).
COPY . .

# Compile, then drop the dev dependencies so the runtime stage copies production ones only
# (npm prune can take the sendfile addon's build with the link it removes: it is built again),
# and better-sqlite3's compile leftovers (SQLite sources, object files, the static sqlite3.a):
# only the .node binary is loaded. The npm settings (registry, CA) live in the build stage's
# ~/.npmrc and are not copied on.
RUN set -eu; \
    npm run build; \
    rm -rf dist/test dist/bench; \
    test -f dist/cli/main.js; \
    npm prune --omit=dev --no-audit --no-fund; \
    prefix="$(dirname "$(dirname "$(command -v node)")")"; \
    if [ -f "$prefix/include/node/node.h" ]; then export npm_config_nodedir="$prefix"; fi; \
    if [ ! -f native/sendfile/build/Release/sendfile.node ]; then \
      npm --prefix native/sendfile run install || echo "warning: the sendfile addon did not build" >&2; \
    fi; \
    b=node_modules/better-sqlite3; \
    rm -rf "$b/deps" "$b/src" "$b/build/deps" "$b/build/Release/obj" "$b/build/Release/obj.target" \
      "$b/build/Release/.deps" "$b/build/Release/test_extension.node" "$b/build/Release/sqlite3.a"; \
    node -e "require('better-sqlite3')(':memory:').prepare('select 1').get()"; \
    s=native/sendfile/build; \
    rm -rf "$s/Release/obj.target" "$s/Release/.deps" "$s/Makefile" "$s/config.gypi" "$s"/*.mk; \
    node -e "require('./native/sendfile')" || echo "warning: the sendfile addon did not build; blob bodies will be streamed" >&2

# ---------------------------------------------------------------------------------------------
FROM ${NODE_IMAGE} AS runtime

# A fixed uid/gid, not the image's "node" user (1000): Kubernetes manifests and volume
# ownership (fsGroup, chown of host directories) refer to 10001.
RUN set -eu; \
    if command -v useradd >/dev/null 2>&1; then \
      groupadd --system --gid 10001 regcache; \
      useradd --system --uid 10001 --gid 10001 --home-dir /data --no-create-home --shell /usr/sbin/nologin regcache; \
    else \
      addgroup -S -g 10001 regcache; \
      adduser -S -D -H -u 10001 -G regcache -h /data -s /sbin/nologin regcache; \
    fi; \
    mkdir -p /data /etc/regcache; \
    chown 10001:10001 /data

WORKDIR /app

# Code and dependencies stay owned by root: the service user can read but not modify them.
COPY --from=build /app/package.json /app/package-lock.json ./
COPY --from=build /app/node_modules ./node_modules
# The sendfile addon, when it built (regcache loads it from here if npm prune dropped its link).
COPY --from=build /app/native ./native
COPY --from=build /app/dist ./dist
# Every key with its default, for reference: docker run --rm --entrypoint cat regcache /app/config.example.yaml
COPY --from=build /app/config.example.yaml ./config.example.yaml

ENV NODE_ENV=production \
    REGCACHE_DATA_DIR=/data \
    REGCACHE_LISTEN=0.0.0.0:5000

USER 10001:10001

# The cache: blobs, manifests and the SQLite database. Keep it on a persistent volume; losing it
# only costs re-downloads, but also the tag history and the ability to serve during outages.
VOLUME ["/data"]
EXPOSE 5000

# Slim images have no curl or wget; Node's fetch does the same. Follows the port in
# REGCACHE_LISTEN. With tls configured, replace this check or run with --no-healthcheck.
# (Kubernetes ignores HEALTHCHECK and uses the probes in deploy/kubernetes.)
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
  CMD ["node", "-e", "const p=(process.env.REGCACHE_LISTEN||'').split(':').pop()||'5000';fetch('http://127.0.0.1:'+p+'/healthz',{signal:AbortSignal.timeout(4000)}).then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"]

# Exec form: node is PID 1 and receives SIGTERM directly, which starts the graceful drain
# (shutdownGrace). Arguments after the image name replace CMD: `serve --config FILE`.
ENTRYPOINT ["node", "/app/dist/cli/main.js"]
CMD ["serve"]
