# berth as one static binary, and a gitlab-runner image with berth installed.
#
# Needs BuildKit: the default builder of Docker 23 and later (Docker 20.10:
# DOCKER_BUILDKIT=1); podman and buildah build it as is.
#
#   docker build -t berth-runner .                       # the runner image
#   docker build --target binary -o out .                 # just out/berth
#
# A release build names itself:
#
#   docker build \
#     --build-arg VERSION=v0.3.0 \
#     --build-arg COMMIT="$(git rev-parse HEAD)" \
#     --build-arg BUILD_DATE="$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
#     -t berth-runner:v0.3.0 .
#
# Base images are build arguments (GO_IMAGE, RUNNER_IMAGE). Without network,
# give local ones and put a vendor directory in the context (go mod vendor):
# the build then uses -mod=vendor and downloads nothing.

ARG GO_IMAGE=golang:1.26-bookworm
ARG RUNNER_IMAGE=gitlab/gitlab-runner:alpine-v19.3.1

# The build runs on the builder's platform and cross-compiles for the
# target's (docker buildx build --platform linux/arm64 ...).
FROM --platform=${BUILDPLATFORM} ${GO_IMAGE} AS build
WORKDIR /src
COPY . .
ARG TARGETOS
ARG TARGETARCH
ARG VERSION=
ARG COMMIT=
ARG BUILD_DATE=
# The Go build and module caches live in BuildKit cache mounts, so a
# rebuild after a source change recompiles only what changed.
RUN --mount=type=cache,id=berth-go-build,target=/root/.cache/go-build \
    --mount=type=cache,id=berth-go-mod,target=/go/pkg/mod \
    set -eu; \
    mod=-mod=readonly; \
    if [ -f vendor/modules.txt ]; then mod=-mod=vendor; fi; \
    pkg=github.com/berthci/berth/driver; \
    ldflags="-s -w"; \
    if [ -n "${VERSION}" ]; then ldflags="${ldflags} -X ${pkg}.Version=${VERSION}"; fi; \
    if [ -n "${COMMIT}" ]; then ldflags="${ldflags} -X ${pkg}.Commit=${COMMIT}"; fi; \
    if [ -n "${BUILD_DATE}" ]; then ldflags="${ldflags} -X ${pkg}.BuildDate=${BUILD_DATE}"; fi; \
    CGO_ENABLED=0 GOOS="${TARGETOS:-linux}" GOARCH="${TARGETARCH:-$(go env GOARCH)}" GOFLAGS= \
    GOCACHE=/root/.cache/go-build GOMODCACHE=/go/pkg/mod \
    go build "${mod}" -trimpath -buildvcs=false \
      -tags 'remote exclude_graphdriver_btrfs exclude_graphdriver_devicemapper containers_image_openpgp' \
      -ldflags "${ldflags}" -o /out/berth ./cmd/berth

# `docker build --target binary -o DIR .` writes the static binary to DIR.
FROM scratch AS binary
COPY --from=build /out/berth /berth

# The runner image: the base's gitlab-runner, entrypoint and command stay as
# they are; berth and its configs are added. Nothing runs in this stage, so
# any gitlab-runner image (alpine, ubuntu, ubi) works as the base.
FROM ${RUNNER_IMAGE} AS runner
ARG VERSION=
ARG COMMIT=
ARG BUILD_DATE=
LABEL org.opencontainers.image.title="berth-runner" \
      org.opencontainers.image.description="gitlab-runner with berth, a custom executor that runs jobs in containers (dind, socket, podman)" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${COMMIT}" \
      org.opencontainers.image.created="${BUILD_DATE}"
COPY --from=build /out/berth /usr/local/bin/berth
COPY config/example.toml /etc/berth/config.toml
COPY config/gitlab-runner-template.toml /etc/berth/gitlab-runner-template.toml
