# berth-test/golang:1.26: the Debian test image plus the host's Go toolchain,
# a local stand-in for golang:1.26-bookworm that berth's Dockerfile builds
# FROM in the integration tests (TestDockerfile); no registry is contacted.
# Built by integration/provision.sh with the classic builder (DOCKER_BUILDKIT=0)
# from a context of this file and the host's GOROOT as go/.
FROM berth-test/debian:12
COPY go /usr/local/go
# As in the official image: modules and binaries under /go, and no toolchain
# downloads.
ENV GOPATH=/go \
    GOTOOLCHAIN=local \
    PATH=/go/bin:/usr/local/go/bin:${PATH}
WORKDIR /go
