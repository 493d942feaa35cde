#!/usr/bin/env bash
# Provisions this Debian 12 machine (engines, test images), builds berth, and
# runs the sample job of integration/demo/ with `berth exec` from a sample git
# repository, printing its job log.
# Usage: integration/demo.sh [--backend socket|dind|podman] [--keep]
#   --keep  leave the temporary directory (config, repository, artifacts)
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="/usr/local/go/bin:$PATH"

backend=socket
keep=
while [ $# -gt 0 ]; do
	case $1 in
	--backend) backend=${2:?--backend needs socket, dind or podman}; shift 2 ;;
	--backend=*) backend=${1#--backend=}; shift ;;
	--keep) keep=1; shift ;;
	-h | --help) sed -n '2,6p' "$0"; exit 0 ;;
	*) echo "demo: unknown argument $1 (see --help)" >&2; exit 2 ;;
	esac
done
case $backend in
socket | dind | podman) ;;
*) echo "demo: --backend $backend: use socket, dind or podman" >&2; exit 2 ;;
esac

bash integration/provision.sh

root=$(mktemp -d /tmp/berth-demo-XXXXXX)
if [ -z "$keep" ]; then
	trap 'rm -rf "$root"' EXIT
fi
# The rootless podman user (uid 1001) mounts the job's builds dir from under it.
chmod 0755 "$root"

CGO_ENABLED=0 go build -tags 'remote exclude_graphdriver_btrfs exclude_graphdriver_devicemapper containers_image_openpgp' \
	-o "$root/berth" ./cmd/berth

# The dind sidecar in the capability form these hosts need
# (shared/spec/test-hosts.md: privileged containers fail here).
cat >"$root/config.toml" <<EOF
builds_dir = "$root/builds"
cache_dir = "$root/cache"
runner_name = "demo"

[policy]
default_backend = "socket"
allowed_backends = ["socket", "dind", "podman"]

[docker]
helper_image = "berth-test/helper:latest"
runner_binary = "/usr/local/lib/berth-test/gitlab-runner"
pull_policy = ["if-not-present"]
wait_for_services_timeout = "30s"

[podman]
socket = "unix:///run/user/1001/podman/podman.sock"

[dind]
image = "berth-test/dind:latest"
privileged = false
cap_add = ["ALL"]
cap_drop = ["SYS_RESOURCE"]
security_opt = ["seccomp=unconfined", "apparmor=unconfined", "systempaths=unconfined"]
ready_timeout = "60s"
EOF

project="$root/project"
mkdir -p "$project"
cp -R integration/demo/. "$project/"
mv "$project/gitlab-ci.yml" "$project/.gitlab-ci.yml"
git -C "$project" init -q -b main
git -C "$project" add -A
git -C "$project" -c user.name=berth-demo -c user.email=demo@localhost commit -q -m "Sample project"

echo "berth config ($root/config.toml):"
sed 's/^/    /' "$root/config.toml"
echo "sample project ($project), .gitlab-ci.yml:"
sed 's/^/    /' "$project/.gitlab-ci.yml"
echo "---- berth --config $root/config.toml exec --backend $backend demo ----"
status=0
(cd "$project" && "$root/berth" --config "$root/config.toml" exec --backend "$backend" demo) || status=$?
echo "---- berth exec exited $status ----"
if [ -f "$project/.berth-exec/artifacts/demo/report.txt" ]; then
	echo "the job's artifact, copied to $project/.berth-exec/artifacts/demo/report.txt:"
	sed 's/^/    /' "$project/.berth-exec/artifacts/demo/report.txt"
fi
if [ -n "$keep" ]; then
	echo "kept $root"
fi
exit "$status"
