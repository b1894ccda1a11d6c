# The quarantine-watch image, for builders that can pull from a container
# registry:
#
#   docker build --build-arg BASE=<registry>/distroless/static-debian12:nonroot \
#     --build-arg VERSION="$(git describe --tags --always --dirty)" -t quarantine-watch .
#   docker buildx build --platform linux/amd64,linux/arm64 -t REPO/quarantine-watch:TAG --push .
#
# It cannot be built on a machine that reaches no container registry (both
# base images below are pulled). There, deploy/image/build-scratch.sh builds
# an equivalent image with the local Go toolchain and `docker import`,
# pulling nothing. See deploy/README.md.
#
# The result is one static binary on distroless/static: no shell, no package
# manager, CA certificates for TLS to the brokers, and the nonroot user
# (65532:65532) that deploy/kubernetes expects.

# The runtime base: Google's distroless static image, nonroot variant
# (distroless/static-debian12:nonroot on Google's container registry), or
# your organisation's mirror of it, passed explicitly:
#   --build-arg BASE=<registry>/distroless/static-debian12:nonroot
ARG BASE

# The builder runs on the build machine's platform and cross-compiles, so a
# multi-platform build needs no emulation.
FROM --platform=$BUILDPLATFORM golang:1.26 AS build
# Build with the image's toolchain (go.mod asks for go 1.26.x) or fail;
# never download another one in the middle of a build.
ENV GOTOOLCHAIN=local CGO_ENABLED=0
WORKDIR /src
# Modules first, so that a source change does not download them again.
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
ARG VERSION=devel
ARG TARGETOS TARGETARCH
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    GOOS=$TARGETOS GOARCH=$TARGETARCH go build -trimpath \
      -ldflags "-s -w -X main.version=${VERSION}" \
      -o /out/quarantine-watch ./cmd/quarantine-watch

FROM ${BASE}
COPY --from=build /out/quarantine-watch /quarantine-watch
# nonroot, by number: Kubernetes' runAsNonRoot can verify a numeric user
# without the pod spelling out runAsUser.
USER 65532:65532
# Metrics, /healthz and /readyz (--metrics-addr, QW_METRICS_ADDR).
EXPOSE 9090
ENTRYPOINT ["/quarantine-watch"]
CMD ["run"]
