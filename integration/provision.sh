#!/usr/bin/env bash
# Provision a bare Debian 12 test host for berth's integration tests.
#
# Run as root. Idempotent: every step checks first and only does work that is
# missing, so a re-run on a provisioned host takes a few seconds and needs no
# network. Concurrent runs are serialised with a lock.
#
# What it sets up (see ../shared/spec/test-hosts.md, beside the project, for
# the background):
#   1. apt packages (docker.io podman uidmap slirp4netns runc debootstrap
#      docker-registry busybox-static apache2-utils curl git ca-certificates)
#   2. dockerd in the background     pid /run/berth-test/dockerd.pid
#                                    log /var/log/berth-test-dockerd.log
#   3. local test images in the docker image store, built without any
#      registry (debootstrap / busybox-static + docker import, classic
#      `docker build` FROM those only):
#        berth-test/debian:12  berth-test/busybox:latest
#        berth-test/helper:latest  berth-test/http-service:latest
#      and the local base images berth's own Dockerfile is built FROM in
#      TestDockerfile (stand-ins for golang:1.26-bookworm and
#      gitlab/gitlab-runner):
#        berth-test/golang:1.26  (berth-test/debian:12 + the host's Go)
#        berth-test/gitlab-runner:latest
#      Each image carries a label org.berthci.test.recipe=<hash of its inputs>;
#      an image is (re)built only when missing or when that hash changed.
#   4. the gitlab-runner stand-in at /usr/local/lib/berth-test/gitlab-runner
#   5. a docker-registry on 127.0.0.1:5000, htpasswd user berth/berth-secret
#                                    pid /run/berth-test/registry.pid
#                                    log /var/log/berth-test-registry.log
#   6. rootless podman service for user berthpod
#        socket /run/user/<uid>/podman/podman.sock
#                                    pid /run/berth-test/podman.pid
#                                    log /var/log/berth-test-podman.log
#      with the four test images and berth-test/podman (nested podman) loaded
#      into that user's image store.
#   7. the Go modules of this checkout in the module cache (go mod download):
#      every module of the build list for every platform, which `go mod
#      vendor` in TestDockerfile needs and a Linux `go build` never fetches.
#
# Network: only the Debian apt mirror (apt-get and debootstrap) and the Go
# module proxy (go mod download) are contacted.
# Daemons are started only when they do not already answer; nothing is ever
# stopped.
#
# Environment overrides:
#   BERTH_DEBIAN_MIRROR  Debian mirror for debootstrap (default: the one apt uses)
#   BERTH_FRESH=1        rely on nothing an earlier run left: remove every
#                        berth-test/* image (docker and the podman user's
#                        store) and the cached Debian rootfs and .debs first,
#                        so every image is built from nothing (.ci/run sets it)
set -euo pipefail

log() { printf 'provision: %s\n' "$*"; }
die() {
	printf 'provision: ERROR: %s\n' "$*" >&2
	exit 1
}

[[ ${EUID} -eq 0 ]] || die "must be run as root"

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
IMAGES_DIR=${HERE}/images

RUN_DIR=/run/berth-test
CACHE_DIR=/var/cache/berth-test
STATE_DIR=/var/lib/berth-test
ETC_DIR=/etc/berth-test
LIB_DIR=/usr/local/lib/berth-test

DOCKER_SOCK=/var/run/docker.sock
DOCKERD_PID=${RUN_DIR}/dockerd.pid
DOCKERD_LOG=/var/log/berth-test-dockerd.log

REGISTRY_ADDR=127.0.0.1:5000
REGISTRY_USER=berth
REGISTRY_PASSWORD=berth-secret
REGISTRY_CONF=${ETC_DIR}/registry.yml
REGISTRY_HTPASSWD=${ETC_DIR}/registry.htpasswd
REGISTRY_DATA=${STATE_DIR}/registry
REGISTRY_PID=${RUN_DIR}/registry.pid
REGISTRY_LOG=/var/log/berth-test-registry.log

POD_USER=berthpod
PODMAN_PID=${RUN_DIR}/podman.pid
PODMAN_LOG=/var/log/berth-test-podman.log

STANDIN_SRC=${IMAGES_DIR}/gitlab-runner-standin
STANDIN_HOST=${LIB_DIR}/gitlab-runner

IMG_DEBIAN=berth-test/debian:12
IMG_BUSYBOX=berth-test/busybox:latest
IMG_HELPER=berth-test/helper:latest
IMG_HTTP=berth-test/http-service:latest
IMG_DIND=berth-test/dind:latest
IMG_PODMAN=berth-test/podman:latest
IMG_REGISTRY=berth-test/registry:latest
IMG_GOLANG=berth-test/golang:1.26
IMG_RUNNER=berth-test/gitlab-runner:latest
ALL_IMAGES=("${IMG_DEBIAN}" "${IMG_BUSYBOX}" "${IMG_HELPER}" "${IMG_HTTP}")
RECIPE_LABEL=org.berthci.test.recipe

DEBIAN_SUITE=bookworm
DEBIAN_INCLUDE=bash,git,ca-certificates,docker.io,iptables,procps,iproute2,netcat-openbsd,curl,tar,gzip
STD_PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
# Daemons get a PATH without /usr/local so they use the Debian-packaged
# containerd/runc/docker-proxy etc.
DAEMON_PATH=/usr/sbin:/usr/bin:/sbin:/bin

PACKAGES=(docker.io podman uidmap slirp4netns runc debootstrap docker-registry
	busybox-static apache2-utils curl git ca-certificates)

START_TS=$(date +%s)
SUMMARY=()
note() { SUMMARY+=("$*"); }

mkdir -p "${RUN_DIR}" "${CACHE_DIR}" "${STATE_DIR}" "${ETC_DIR}" "${LIB_DIR}"

# Serialise concurrent runs. Every daemon is started with fd 9 closed so it
# does not hold the lock after we exit.
exec 9>"${RUN_DIR}/provision.lock"
if ! flock -n 9; then
	log "another provision.sh is running; waiting for it"
	flock -w 1800 9 || die "timed out waiting for the provision lock"
fi

# ---------------------------------------------------------------- helpers

# write_if_changed FILE MODE: write stdin to FILE only when the content differs.
# Returns 0 when it wrote, 1 when unchanged.
write_if_changed() {
	local file=$1 mode=$2 tmp
	tmp=$(mktemp "${file}.XXXXXX")
	cat >"${tmp}"
	chmod "${mode}" "${tmp}"
	if [[ -f ${file} ]] && cmp -s "${tmp}" "${file}"; then
		rm -f "${tmp}"
		return 1
	fi
	mv -f "${tmp}" "${file}"
	return 0
}

# wait_until DESCRIPTION TIMEOUT_S PID LOG CHECK_CMD...: poll CHECK_CMD every
# 0.2 s until it succeeds; fail with the log tail on timeout or when PID dies.
wait_until() {
	local what=$1 timeout=$2 pid=$3 logf=$4
	shift 4
	local deadline=$(($(date +%s) + timeout))
	until "$@"; do
		if [[ -n ${pid} ]] && ! kill -0 "${pid}" 2>/dev/null; then
			log "${what}: process ${pid} exited; last lines of ${logf}:"
			tail -n 30 "${logf}" >&2 || true
			die "${what} did not come up"
		fi
		if (($(date +%s) >= deadline)); then
			log "${what}: not answering after ${timeout}s; last lines of ${logf}:"
			tail -n 30 "${logf}" >&2 || true
			die "${what} did not come up"
		fi
		sleep 0.2
	done
}

# start_daemon PIDFILE LOG CMD...: start CMD detached in its own session, cwd /,
# stdin /dev/null, output appended to LOG. Sets STARTED_PID. The subshell execs
# setsid, which (not being a process group leader) execs CMD without forking,
# so $! is the daemon's own PID.
start_daemon() {
	local pidfile=$1 logf=$2
	shift 2
	printf '\n==== %s provision.sh starting: %s\n' "$(date -Is)" "$*" >>"${logf}"
	(cd / && exec setsid "$@" </dev/null >>"${logf}" 2>&1 9>&-) &
	STARTED_PID=$!
	echo "${STARTED_PID}" >"${pidfile}"
}

# Unmount anything below DIR (a failed debootstrap can leave proc/sys mounted)
# and remove it without crossing filesystems.
remove_tree() {
	local dir=$1 mnt
	[[ -e ${dir} ]] || return 0
	while read -r mnt; do
		umount -l "${mnt}" 2>/dev/null || true
	done < <(awk -v d="${dir}/" 'index($5, d) == 1 { print $5 }' /proc/self/mountinfo | sort -r)
	rm -rf --one-file-system "${dir}"
}

sha() { sha256sum | cut -c1-64; }

# ---------------------------------------------------------------- 1. packages

missing=()
for p in "${PACKAGES[@]}"; do
	if [[ $(dpkg-query -W -f='${db:Status-Status}' "${p}" 2>/dev/null || true) != installed ]]; then
		missing+=("${p}")
	fi
done
if ((${#missing[@]})); then
	log "installing packages: ${missing[*]}"
	# Keep package maintainer scripts from starting daemons (docker, a
	# registry on :5000) behind our back; we start what we need ourselves.
	policy_rc_added=
	if [[ ! -e /usr/sbin/policy-rc.d ]]; then
		printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
		chmod 0755 /usr/sbin/policy-rc.d
		policy_rc_added=1
		trap 'rm -f /usr/sbin/policy-rc.d' EXIT
	fi
	apt_rc=0
	{
		DEBIAN_FRONTEND=noninteractive apt-get update -q &&
			DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"
	} 2>&1 | sed 's/^/provision: apt: /' || apt_rc=$?
	if [[ -n ${policy_rc_added} ]]; then
		rm -f /usr/sbin/policy-rc.d
		trap - EXIT
	fi
	((apt_rc == 0)) || die "apt-get failed"
	note "packages: installed ${missing[*]}"
else
	log "packages: all installed"
	note "packages: all already installed"
fi

# ---------------------------------------------------------------- 2. dockerd

# Always talk to the host dockerd, whatever the caller's environment says.
export DOCKER_HOST=unix://${DOCKER_SOCK}
unset DOCKER_CONTEXT DOCKER_TLS_VERIFY DOCKER_CERT_PATH

docker_ping() { curl -sf --max-time 3 --unix-socket "${DOCKER_SOCK}" http://localhost/_ping >/dev/null 2>&1; }

if docker_ping; then
	log "dockerd: already answering on ${DOCKER_SOCK}"
	note "dockerd: already running"
else
	# dockerd 20.10 starts and supervises its own containerd when it is not
	# given --containerd, so containerd is not started separately.
	log "dockerd: starting (log ${DOCKERD_LOG})"
	start_daemon "${DOCKERD_PID}" "${DOCKERD_LOG}" env PATH="${DAEMON_PATH}" nohup dockerd
	wait_until dockerd 60 "${STARTED_PID}" "${DOCKERD_LOG}" docker_ping
	log "dockerd: up, pid ${STARTED_PID}"
	note "dockerd: started (pid ${STARTED_PID})"
fi

# The docker.io CLI (/usr/bin/docker, 20.10, API 1.41) matches the daemon.
# Fall back to whatever `docker` is on PATH.
DOCKER_BIN=
for c in /usr/bin/docker "$(command -v docker || true)"; do
	if [[ -n ${c} && -x ${c} ]] && "${c}" version --format '{{.Server.APIVersion}}' >/dev/null 2>&1; then
		DOCKER_BIN=${c}
		break
	fi
done
[[ -n ${DOCKER_BIN} ]] || die "no working docker CLI found"
docker() { "${DOCKER_BIN}" "$@"; }

# ---------------------------------------------------------------- 3. images

# BERTH_FRESH=1: build every image from nothing. All berth-test/* references
# go in one rmi, so a base (berth-test/debian) that children still use is
# only untagged at first and pruned with its last child.
if [[ ${BERTH_FRESH:-0} == 1 ]]; then
	mapfile -t stale < <(docker image ls --format '{{.Repository}}:{{.Tag}}' --filter 'reference=berth-test/*' | grep -v ':<none>$' || true)
	if ((${#stale[@]})); then
		log "fresh: removing ${#stale[@]} berth-test images: ${stale[*]}"
		docker rmi -f "${stale[@]}" >/dev/null || die "fresh: could not remove the berth-test images"
	fi
	[[ -z $(docker image ls -q --filter 'reference=berth-test/*') ]] || die "fresh: berth-test images are left after removal"
	remove_tree "${CACHE_DIR}"
	mkdir -p "${CACHE_DIR}"
	note "fresh: no berth-test image or cached rootfs was reused"
fi

image_id() { docker image inspect -f '{{.Id}}' "$1" 2>/dev/null || true; }
image_recipe() { docker image inspect -f "{{index .Config.Labels \"${RECIPE_LABEL}\"}}" "$1" 2>/dev/null || true; }

# ensure_image IMAGE KEY BUILD_FUNC: build IMAGE unless it exists with
# label RECIPE_LABEL=KEY. A replaced old image is removed when untagged.
ensure_image() {
	local img=$1 key=$2 build=$3 old have t0
	have=$(image_recipe "${img}")
	if [[ ${have} == "${key}" ]]; then
		log "image ${img}: present"
		return 0
	fi
	old=$(image_id "${img}")
	if [[ -n ${old} ]]; then
		log "image ${img}: recipe changed, rebuilding"
	else
		log "image ${img}: missing, building"
	fi
	t0=$(date +%s)
	"${build}" "${img}" "${key}"
	[[ $(image_recipe "${img}") == "${key}" ]] || die "image ${img}: build did not produce the expected label"
	if [[ -n ${old} && ${old} != "$(image_id "${img}")" ]]; then
		docker rmi "${old}" >/dev/null 2>&1 || true
	fi
	log "image ${img}: built in $(($(date +%s) - t0))s"
	note "image ${img}: built"
}

# The Debian mirror apt already uses for the main suite (deb822 or one-line
# format; security and third-party suites are skipped).
debian_mirror() {
	if [[ -n ${BERTH_DEBIAN_MIRROR:-} ]]; then
		echo "${BERTH_DEBIAN_MIRROR}"
		return
	fi
	local m
	m=$(cat /etc/apt/sources.list.d/*.sources 2>/dev/null | awk -v suite="${DEBIAN_SUITE}" '
		function check() {
			if (uri != "" && types ~ /(^| )deb( |$)/ && suites ~ ("(^| )" suite "( |$)") && uri !~ /security/) { print uri; found = 1; exit }
		}
		/^[ \t]*$/ { check(); uri = ""; suites = ""; types = ""; next }
		/^URIs:/ { uri = $2 }
		/^Suites:/ { $1 = ""; suites = $0 " " }
		/^Types:/ { $1 = ""; types = $0 " " }
		END { if (!found) check() }' || true)
	if [[ -z ${m} ]]; then
		m=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null | awk -v suite="${DEBIAN_SUITE}" '
			$1 == "deb" { for (i = 2; i < NF; i++) if ($i ~ /^[a-z]+:\/\//) { if ($(i + 1) == suite && $i !~ /security/) { print $i; exit } break } }' || true)
	fi
	echo "${m:-http://deb.debian.org/debian}"
}

DEBIAN_KEY=$(printf 'debian v1 suite=%s variant=minbase include=%s\n' "${DEBIAN_SUITE}" "${DEBIAN_INCLUDE}" | sha)
DEBIAN_TAR=${CACHE_DIR}/debian-${DEBIAN_SUITE}-minbase-${DEBIAN_KEY:0:12}.tar

# Build (or reuse) the cached debootstrap rootfs tarball.
debian_rootfs_tar() {
	if [[ -s ${DEBIAN_TAR} ]]; then
		log "debian rootfs: using cached ${DEBIAN_TAR}"
		return 0
	fi
	local work=${CACHE_DIR}/work/debian-rootfs dlog=${CACHE_DIR}/work/debootstrap.log mirror t0
	mirror=$(debian_mirror)
	mkdir -p "${CACHE_DIR}/work" "${CACHE_DIR}/debootstrap-debs"
	remove_tree "${work}"
	log "debian rootfs: debootstrap ${DEBIAN_SUITE} from ${mirror} (a couple of minutes; log ${dlog})"
	t0=$(date +%s)
	if ! debootstrap --variant=minbase --components=main --include="${DEBIAN_INCLUDE}" \
		--cache-dir="${CACHE_DIR}/debootstrap-debs" \
		"${DEBIAN_SUITE}" "${work}" "${mirror}" >"${dlog}" 2>&1; then
		tail -n 30 "${dlog}" >&2 || true
		remove_tree "${work}"
		die "debootstrap failed (log ${dlog})"
	fi
	log "debian rootfs: debootstrap done in $(($(date +%s) - t0))s"
	rm -f "${work}"/var/cache/apt/archives/*.deb "${work}"/var/cache/apt/*.bin
	tar -C "${work}" --numeric-owner -cf "${DEBIAN_TAR}.tmp" \
		--exclude='./dev/*' --exclude='./proc/*' --exclude='./sys/*' --exclude='./run/*' .
	mv -f "${DEBIAN_TAR}.tmp" "${DEBIAN_TAR}"
	remove_tree "${work}"
	# Drop rootfs tarballs of older recipes.
	find "${CACHE_DIR}" -maxdepth 1 -name "debian-${DEBIAN_SUITE}-minbase-*.tar" ! -path "${DEBIAN_TAR}" -delete
}

build_debian() {
	local img=$1 key=$2
	debian_rootfs_tar
	log "image ${img}: docker import"
	docker import \
		--change "ENV PATH=${STD_PATH}" \
		--change 'ENV LANG=C.UTF-8' \
		--change 'CMD ["bash"]' \
		--change "LABEL ${RECIPE_LABEL}=${key}" \
		"${DEBIAN_TAR}" "${img}" >/dev/null
}

BUSYBOX_BIN=/bin/busybox
BUSYBOX_KEY=$({
	echo "busybox v1"
	sha256sum <"${BUSYBOX_BIN}"
} | sha)

build_busybox() {
	local img=$1 key=$2 work=${CACHE_DIR}/work/busybox-rootfs a
	remove_tree "${work}"
	mkdir -p "${work}"/{bin,etc,tmp,root,usr/bin,var/tmp}
	cp "${BUSYBOX_BIN}" "${work}/bin/busybox"
	chmod 0755 "${work}/bin/busybox"
	for a in $("${BUSYBOX_BIN}" --list); do
		case ${a} in busybox | bash) continue ;; esac
		ln -sf busybox "${work}/bin/${a}"
	done
	# For scripts with a #!/usr/bin/env shebang.
	ln -sf /bin/busybox "${work}/usr/bin/env"
	chmod 1777 "${work}/tmp" "${work}/var/tmp"
	chmod 0700 "${work}/root"
	printf '%s\n' 'root:x:0:0:root:/root:/bin/sh' 'nobody:x:65534:65534:nobody:/nonexistent:/bin/false' >"${work}/etc/passwd"
	printf '%s\n' 'root:x:0:' 'nogroup:x:65534:' >"${work}/etc/group"
	tar -C "${work}" --numeric-owner --owner=0 --group=0 -cf - . |
		docker import \
			--change "ENV PATH=${STD_PATH}" \
			--change 'CMD ["sh"]' \
			--change "LABEL ${RECIPE_LABEL}=${key}" \
			- "${img}" >/dev/null
	remove_tree "${work}"
}

# docker_build IMAGE KEY DOCKERFILE: classic builder, context integration/images.
# Only FROM of local berth-test images; the classic builder does not pull
# base images that exist locally.
docker_build() {
	local img=$1 key=$2 dockerfile=$3 blog
	blog=$(mktemp)
	if ! DOCKER_BUILDKIT=0 docker build --pull=false --label "${RECIPE_LABEL}=${key}" \
		-f "${IMAGES_DIR}/${dockerfile}" -t "${img}" "${IMAGES_DIR}" >"${blog}" 2>&1; then
		sed 's/^/provision: build: /' "${blog}" >&2
		rm -f "${blog}"
		die "docker build of ${img} failed"
	fi
	rm -f "${blog}"
}
build_helper() { docker_build "$1" "$2" helper.Dockerfile; }
build_http() { docker_build "$1" "$2" http-service.Dockerfile; }
build_dind() { docker_build "$1" "$2" dind.Dockerfile; }
# The registry service image needs the host's registry binary in its context.
build_registry() {
	local img=$1 key=$2 ctx blog
	ctx=$(mktemp -d)
	cp /usr/bin/docker-registry "${IMAGES_DIR}/registry.Dockerfile" "${IMAGES_DIR}/registry-service.yml" "${ctx}/"
	blog=$(mktemp)
	if ! DOCKER_BUILDKIT=0 docker build --pull=false --label "${RECIPE_LABEL}=${key}" \
		-f "${ctx}/registry.Dockerfile" -t "${img}" "${ctx}" >"${blog}" 2>&1; then
		sed 's/^/provision: build: /' "${blog}" >&2
		rm -rf "${blog}" "${ctx}"
		die "docker build of ${img} failed"
	fi
	rm -rf "${blog}" "${ctx}"
}

ensure_image "${IMG_DEBIAN}" "${DEBIAN_KEY}" build_debian
ensure_image "${IMG_BUSYBOX}" "${BUSYBOX_KEY}" build_busybox

HELPER_KEY=$({
	echo "helper v1"
	image_id "${IMG_DEBIAN}"
	sha256sum <"${IMAGES_DIR}/helper.Dockerfile"
	sha256sum <"${STANDIN_SRC}"
} | sha)
ensure_image "${IMG_HELPER}" "${HELPER_KEY}" build_helper

HTTP_KEY=$({
	echo "http-service v1"
	image_id "${IMG_BUSYBOX}"
	sha256sum <"${IMAGES_DIR}/http-service.Dockerfile"
} | sha)
ensure_image "${IMG_HTTP}" "${HTTP_KEY}" build_http

DIND_KEY=$({
	echo "dind v1"
	image_id "${IMG_DEBIAN}"
	sha256sum <"${IMAGES_DIR}/dind.Dockerfile"
	sha256sum <"${IMAGES_DIR}/dind-entrypoint.sh"
} | sha)
ensure_image "${IMG_DIND}" "${DIND_KEY}" build_dind

# The podman backend's nested mode runs podman inside a job: an image with
# podman, buildah and crun (apt from the Debian mirror), loaded into the
# rootless user's store with the others below.
build_podman() { docker_build "$1" "$2" podman.Dockerfile; }
PODMAN_IMG_KEY=$({
	echo "podman v1"
	image_id "${IMG_DEBIAN}"
	sha256sum <"${IMAGES_DIR}/podman.Dockerfile"
} | sha)
ensure_image "${IMG_PODMAN}" "${PODMAN_IMG_KEY}" build_podman

REGISTRY_IMG_KEY=$({
	echo "registry v1"
	image_id "${IMG_DEBIAN}"
	sha256sum </usr/bin/docker-registry
	sha256sum <"${IMAGES_DIR}/registry.Dockerfile"
	sha256sum <"${IMAGES_DIR}/registry-service.yml"
} | sha)
ensure_image "${IMG_REGISTRY}" "${REGISTRY_IMG_KEY}" build_registry

# The bases of berth's own Dockerfile in TestDockerfile: GO_IMAGE is the
# Debian image plus the host's Go toolchain, RUNNER_IMAGE the Debian image
# plus the gitlab-runner stand-in, in place of the official images.
GO_BIN=
for c in /usr/local/go/bin/go "$(command -v go || true)"; do
	if [[ -n ${c} && -x ${c} ]]; then
		GO_BIN=${c}
		break
	fi
done
# go_host CMD...: the host's go, from /, never switching toolchains.
go_host() { (cd / && GOTOOLCHAIN=local "${GO_BIN}" "$@"); }

# The context is streamed: this Dockerfile plus GOROOT renamed to go/, so
# the ~250 MB toolchain is not copied to a temporary directory first.
build_golang() {
	local img=$1 key=$2 goroot base blog
	goroot=$(go_host env GOROOT)
	base=$(basename "${goroot}")
	blog=$(mktemp)
	if ! tar -C "${IMAGES_DIR}" -cf - golang.Dockerfile \
		-C "$(dirname "${goroot}")" --numeric-owner --owner=0 --group=0 \
		--transform "s|^${base}/|go/|;s|^${base}\$|go|" "${base}" |
		DOCKER_BUILDKIT=0 docker build --pull=false --label "${RECIPE_LABEL}=${key}" \
			-f golang.Dockerfile -t "${img}" - >"${blog}" 2>&1; then
		sed 's/^/provision: build: /' "${blog}" >&2
		rm -f "${blog}"
		die "docker build of ${img} failed"
	fi
	rm -f "${blog}"
}
if [[ -n ${GO_BIN} ]]; then
	# `go version` names the toolchain cheaply; hashing its files would not.
	GOLANG_KEY=$({
		echo "golang v1"
		image_id "${IMG_DEBIAN}"
		go_host version
		go_host env GOROOT
		sha256sum <"${IMAGES_DIR}/golang.Dockerfile"
	} | sha)
	ensure_image "${IMG_GOLANG}" "${GOLANG_KEY}" build_golang
else
	log "image ${IMG_GOLANG}: WARNING: no Go toolchain (/usr/local/go/bin/go or go on PATH); not built, so TestDockerfile fails"
	note "image ${IMG_GOLANG}: not built (no Go toolchain)"
fi

build_runner() { docker_build "$1" "$2" gitlab-runner.Dockerfile; }
RUNNER_IMG_KEY=$({
	echo "gitlab-runner v1"
	image_id "${IMG_DEBIAN}"
	sha256sum <"${IMAGES_DIR}/gitlab-runner.Dockerfile"
	sha256sum <"${STANDIN_SRC}"
} | sha)
ensure_image "${IMG_RUNNER}" "${RUNNER_IMG_KEY}" build_runner

# ---------------------------------------------------------------- 4. stand-in

if [[ -x ${STANDIN_HOST} ]] && cmp -s "${STANDIN_SRC}" "${STANDIN_HOST}"; then
	log "gitlab-runner stand-in: ${STANDIN_HOST} up to date"
else
	install -m 0755 "${STANDIN_SRC}" "${STANDIN_HOST}"
	log "gitlab-runner stand-in: installed ${STANDIN_HOST}"
	note "gitlab-runner stand-in: installed ${STANDIN_HOST}"
fi

# ---------------------------------------------------------------- 5. registry

registry_status() { curl -s --max-time 3 -o /dev/null -w '%{http_code}' "http://${REGISTRY_ADDR}/v2/" 2>/dev/null || true; }
registry_up() { [[ $(registry_status) == 401 ]]; }

mkdir -p "${REGISTRY_DATA}"
if ! htpasswd -vb "${REGISTRY_HTPASSWD}" "${REGISTRY_USER}" "${REGISTRY_PASSWORD}" >/dev/null 2>&1; then
	htpasswd -Bbn "${REGISTRY_USER}" "${REGISTRY_PASSWORD}" | write_if_changed "${REGISTRY_HTPASSWD}" 0644 || true
	log "registry: wrote ${REGISTRY_HTPASSWD}"
fi
if write_if_changed "${REGISTRY_CONF}" 0644 <<EOF; then
# Written by berth integration/provision.sh; local test registry only.
version: 0.1
log:
  level: info
  accesslog:
    disabled: false
storage:
  filesystem:
    rootdirectory: ${REGISTRY_DATA}
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: ${REGISTRY_ADDR}
  secret: berth-test-registry-not-a-secret
  headers:
    X-Content-Type-Options: [nosniff]
auth:
  htpasswd:
    realm: berth-test-registry
    path: ${REGISTRY_HTPASSWD}
EOF
	log "registry: wrote ${REGISTRY_CONF}"
fi

if registry_up; then
	log "registry: already answering on ${REGISTRY_ADDR}"
	note "registry: already running on ${REGISTRY_ADDR}"
else
	code=$(registry_status)
	if [[ -n ${code} && ${code} != 000 ]]; then
		die "something else answers on ${REGISTRY_ADDR} (HTTP ${code} for /v2/, expected 401)"
	fi
	log "registry: starting on ${REGISTRY_ADDR} (log ${REGISTRY_LOG})"
	start_daemon "${REGISTRY_PID}" "${REGISTRY_LOG}" env PATH="${DAEMON_PATH}" nohup docker-registry serve "${REGISTRY_CONF}"
	wait_until registry 60 "${STARTED_PID}" "${REGISTRY_LOG}" registry_up
	log "registry: up, pid ${STARTED_PID}"
	note "registry: started on ${REGISTRY_ADDR} (pid ${STARTED_PID})"
fi

# ---------------------------------------------------------------- 6. rootless podman

if ! id -u "${POD_USER}" >/dev/null 2>&1; then
	useradd -m -s /bin/bash "${POD_USER}"
	log "podman: created user ${POD_USER}"
	note "podman: created user ${POD_USER}"
fi
POD_UID=$(id -u "${POD_USER}")
POD_GID=$(id -g "${POD_USER}")
POD_HOME=$(getent passwd "${POD_USER}" | cut -d: -f6)
POD_XDG=/run/user/${POD_UID}
POD_SOCK=${POD_XDG}/podman/podman.sock

# Subordinate id ranges (useradd adds them on Debian 12; make sure).
for f in /etc/subuid /etc/subgid; do
	if ! grep -q "^${POD_USER}:" "${f}" 2>/dev/null; then
		start=$(awk -F: 'BEGIN { m = 100000 } { e = $2 + $3; if (e > m) m = e } END { print m }' "${f}" 2>/dev/null || echo 100000)
		printf '%s:%s:65536\n' "${POD_USER}" "${start}" >>"${f}"
		log "podman: added ${f} range ${start}+65536 for ${POD_USER}"
	fi
done

# slirp4netns needs /dev/net/tun usable by the user.
if [[ ! -c /dev/net/tun ]]; then
	mkdir -p /dev/net
	mknod -m 0666 /dev/net/tun c 10 200
fi
if [[ $(stat -c %a /dev/net/tun) != 666 ]]; then
	chmod 0666 /dev/net/tun
	log "podman: chmod 0666 /dev/net/tun"
fi

# No journald without systemd: log events to a file then.
events_logger=file
if [[ -S /run/systemd/journal/socket ]]; then
	events_logger=journald
fi
install -d -o "${POD_USER}" -g "${POD_GID}" -m 0755 "${POD_HOME}/.config" "${POD_HOME}/.config/containers"
if write_if_changed "${POD_HOME}/.config/containers/containers.conf" 0644 <<EOF; then
# Written by berth integration/provision.sh.
[containers]
# The built-in defaults exceed this host's hard limits.
default_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]

[engine]
# crun refuses this host's hybrid cgroups; no systemd here.
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "${events_logger}"
EOF
	chown "${POD_USER}:${POD_GID}" "${POD_HOME}/.config/containers/containers.conf"
	log "podman: wrote ${POD_HOME}/.config/containers/containers.conf"
fi
# Debian ships no storage.conf, and without one rootless podman 4.3 falls back
# to vfs (a full copy of every layer for every container: ~560 MB per
# berth-test/debian container). The kernel supports native rootless overlay.
if write_if_changed "${POD_HOME}/.config/containers/storage.conf" 0644 <<EOF; then
# Written by berth integration/provision.sh.
[storage]
driver = "overlay"
EOF
	chown "${POD_USER}:${POD_GID}" "${POD_HOME}/.config/containers/storage.conf"
	log "podman: wrote ${POD_HOME}/.config/containers/storage.conf"
fi
# The local test registry speaks plain HTTP. dockerd trusts 127.0.0.0/8 by
# itself; podman (and so the job's docker CLI through the podman socket)
# must be told.
if write_if_changed "${POD_HOME}/.config/containers/registries.conf" 0644 <<EOF; then
# Written by berth integration/provision.sh.
[[registry]]
location = "${REGISTRY_ADDR}"
insecure = true

# podman's Docker-compatible /auth (docker login) only skips TLS for
# "localhost:" addresses, so jobs log in to the test registry by that name.
[[registry]]
location = "localhost:${REGISTRY_ADDR##*:}"
insecure = true
EOF
	chown "${POD_USER}:${POD_GID}" "${POD_HOME}/.config/containers/registries.conf"
	log "podman: wrote ${POD_HOME}/.config/containers/registries.conf"
	# A running service read the registries at start: restart it below.
	PODMAN_RELOAD=1
fi
POD_STORE=${POD_HOME}/.local/share/containers/storage

install -d -o "${POD_USER}" -g "${POD_GID}" -m 0700 "${POD_XDG}" "${POD_XDG}/podman"

# as_pod CMD...: run CMD as the podman user with a clean environment.
as_pod() {
	setpriv --reuid="${POD_UID}" --regid="${POD_GID}" --init-groups \
		env -i HOME="${POD_HOME}" USER="${POD_USER}" LOGNAME="${POD_USER}" \
		PATH="${DAEMON_PATH}" XDG_RUNTIME_DIR="${POD_XDG}" "$@"
}
podman_ping() { curl -sf --max-time 3 --unix-socket "${POD_SOCK}" http://d/_ping >/dev/null 2>&1; }

if [[ ${PODMAN_RELOAD:-0} == 1 ]] && podman_ping; then
	old_pid=$(cat "${PODMAN_PID}" 2>/dev/null || true)
	if [[ -n ${old_pid} ]] && kill "${old_pid}" 2>/dev/null; then
		log "podman: stopping the service (pid ${old_pid}) to load the new registries.conf"
		for _ in $(seq 1 100); do
			podman_ping || break
			sleep 0.2
		done
	fi
fi
if podman_ping; then
	log "podman: service already answering on ${POD_SOCK}"
	note "podman: service already running (${POD_SOCK})"
	if [[ -d ${POD_STORE}/vfs-images ]]; then
		log "podman: WARNING: ${POD_USER}'s store uses vfs while the service runs; stop pid $(cat "${PODMAN_PID}" 2>/dev/null || echo '?') and re-run to switch to overlay"
	fi
else
	# A store created before storage.conf existed uses vfs; podman refuses
	# to open it with another driver. It only holds our test images: reset.
	if [[ -d ${POD_STORE}/vfs-images ]]; then
		log "podman: resetting ${POD_USER}'s vfs image store (switching to overlay)"
		as_pod podman system reset -f >/dev/null 2>&1 || true
		remove_tree "${POD_STORE}"
		note "podman: reset vfs store to overlay"
	fi
	log "podman: starting service as ${POD_USER} on ${POD_SOCK} (log ${PODMAN_LOG})"
	touch "${PODMAN_LOG}"
	start_daemon "${PODMAN_PID}" "${PODMAN_LOG}" nohup \
		setpriv --reuid="${POD_UID}" --regid="${POD_GID}" --init-groups \
		env -i HOME="${POD_HOME}" USER="${POD_USER}" LOGNAME="${POD_USER}" \
		PATH="${DAEMON_PATH}" XDG_RUNTIME_DIR="${POD_XDG}" \
		podman system service --time=0 "unix://${POD_SOCK}"
	wait_until "podman service" 60 "${STARTED_PID}" "${PODMAN_LOG}" podman_ping
	# Rootless podman re-executes itself inside the user namespace; the
	# child serves the socket and outlives a SIGTERM to the parent, while
	# the parent exits when the child does. Record the child.
	svc_pid=$(ps -o pid=,comm= --ppid "${STARTED_PID}" 2>/dev/null | awk '$2 == "podman" { print $1; exit }' || true)
	if [[ -n ${svc_pid} ]]; then
		echo "${svc_pid}" >"${PODMAN_PID}"
	else
		svc_pid=${STARTED_PID}
	fi
	log "podman: up, pid ${svc_pid}"
	note "podman: service started (pid ${svc_pid}, ${POD_SOCK})"
fi

if [[ ${BERTH_FRESH:-0} == 1 ]]; then
	mapfile -t stale < <(as_pod podman image ls --format '{{.Repository}}:{{.Tag}}' --filter 'reference=berth-test/*' 2>/dev/null | grep -v ':<none>$' | sort -u || true)
	if ((${#stale[@]})); then
		log "fresh: removing ${#stale[@]} berth-test images from ${POD_USER}'s store: ${stale[*]}"
		as_pod podman rmi -f "${stale[@]}" >/dev/null || die "fresh: could not remove the berth-test images from ${POD_USER}'s store"
	fi
fi

# Load the test images into the user's store when missing or different
# (docker save/podman load keeps the image ID, so compare IDs).
for img in "${ALL_IMAGES[@]}" "${IMG_PODMAN}"; do
	want=$(image_id "${img}")
	want=${want#sha256:}
	have=$(as_pod podman image inspect --format '{{.Id}}' "${img}" 2>/dev/null || true)
	if [[ ${have} == "${want}" ]]; then
		log "podman image ${img}: present"
		continue
	fi
	log "podman image ${img}: loading from docker"
	docker save "${img}" | as_pod podman load -q >/dev/null ||
		die "podman load of ${img} failed"
	got=$(as_pod podman image inspect --format '{{.Id}}' "${img}" 2>/dev/null || true)
	[[ ${got} == "${want}" ]] || die "podman image ${img}: id ${got:-<none>} after load, expected ${want}"
	if [[ -n ${have} ]]; then
		as_pod podman rmi "${have}" >/dev/null 2>&1 || true
	fi
	note "podman image ${img}: loaded"
done

# ---------------------------------------------------------------- 7. Go modules

# TestDockerfile vendors this checkout's modules offline (go mod vendor with
# GOPROXY=off). Vendoring wants every module of the build list, Windows-only
# and untagged-build imports included, where a Linux `go build` downloads only
# part; `go mod download` fetches the whole list (every module go.mod
# requires). Against a filled cache it only checks, in about a second.
REPO_ROOT=$(cd "${HERE}/.." && pwd)
if [[ -n ${GO_BIN} && -f ${REPO_ROOT}/go.mod ]]; then
	t0=$(date +%s)
	if ! (cd "${REPO_ROOT}" && GOTOOLCHAIN=local GOFLAGS=-mod=mod "${GO_BIN}" mod download -x 2>"${RUN_DIR}/go-mod-download.log"); then
		tail -n 30 "${RUN_DIR}/go-mod-download.log" >&2 || true
		die "go mod download in ${REPO_ROOT} failed (is the Go module proxy reachable? log ${RUN_DIR}/go-mod-download.log)"
	fi
	fetched=$(grep -c '^# get .*200 OK' "${RUN_DIR}/go-mod-download.log" || true)
	log "go modules: $(cd "${REPO_ROOT}" && GOTOOLCHAIN=local "${GO_BIN}" env GOMODCACHE) holds the build list (${fetched} files fetched, $(($(date +%s) - t0))s)"
	note "go modules: ${fetched} files fetched"
else
	log "go modules: WARNING: no Go toolchain or no go.mod in ${REPO_ROOT}; not downloaded, so TestDockerfile fails"
	note "go modules: not downloaded"
fi

# ---------------------------------------------------------------- 8. summary

log "---- summary ($(($(date +%s) - START_TS))s) ----"
for s in "${SUMMARY[@]}"; do
	log "  ${s}"
done
log "  docker CLI: ${DOCKER_BIN}; dockerd ${DOCKER_SOCK} (pid file ${DOCKERD_PID})"
log "  registry: ${REGISTRY_ADDR} user ${REGISTRY_USER} password ${REGISTRY_PASSWORD}"
log "  podman: user ${POD_USER} uid ${POD_UID} socket ${POD_SOCK}"
log "  images:"
for img in "${ALL_IMAGES[@]}"; do
	log "    $(docker image ls --format '{{.Repository}}:{{.Tag}}  {{.ID}}  {{.Size}}' "${img}")"
done
