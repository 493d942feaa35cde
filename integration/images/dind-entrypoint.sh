#!/bin/sh
# Entrypoint of berth-test/dind:latest, a local stand-in for the official
# docker:dind image (no registry is reachable on test hosts). It behaves like
# the official dockerd-entrypoint.sh for the calls berth makes:
#   - arguments that start with '-' are flags for dockerd, which gets the
#     official default listeners (2376 with TLS from $DOCKER_TLS_CERTDIR, else
#     plain 2375);
#   - a first argument "dockerd" runs dockerd with exactly those arguments;
#   - anything else is executed as given.
# Before dockerd starts it remounts cgroup v1 controllers read-write, which a
# container that is not --privileged (the capability form berth's [dind]
# settings allow) needs for a nested dockerd; see shared/spec/test-hosts.md.
set -eu

if [ "$#" -eq 0 ] || [ "${1#-}" != "$1" ]; then
	if [ -n "${DOCKER_TLS_CERTDIR:-}" ]; then
		certs=$DOCKER_TLS_CERTDIR/server
		set -- dockerd --host=unix:///var/run/docker.sock --host=tcp://0.0.0.0:2376 \
			--tlsverify --tlscacert "$certs/ca.pem" --tlscert "$certs/cert.pem" --tlskey "$certs/key.pem" "$@"
	else
		set -- dockerd --host=unix:///var/run/docker.sock --host=tcp://0.0.0.0:2375 "$@"
	fi
fi

remount_cgroups() {
	[ -f /sys/fs/cgroup/cgroup.controllers ] && return 0 # cgroup v2: nothing to do
	mount -o remount,rw /sys/fs/cgroup 2>/dev/null || true
	for dir in /sys/fs/cgroup/*; do
		[ -d "$dir" ] && [ ! -L "$dir" ] || continue
		name=${dir##*/}
		grep -q " $dir " /proc/mounts || continue
		case $name in
		unified) fstype=cgroup2 opts=rw ;;
		systemd) fstype=cgroup opts=rw,none,name=systemd ;;
		*) fstype=cgroup opts=rw,$name ;;
		esac
		umount "$dir" 2>/dev/null || continue
		mount -t "$fstype" -o "$opts" "$fstype" "$dir" || echo "dind-entrypoint: cannot remount $dir" >&2
	done
}

if [ "$1" = dockerd ]; then
	if [ "$(id -u)" = 0 ]; then
		remount_cgroups
	fi
	find /run /var/run -iname 'docker*.pid' -delete 2>/dev/null || :
fi
exec "$@"
