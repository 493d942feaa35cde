# berth-test/podman:latest: a nested-podman job image in the style of
# quay.io/podman/stable, from the local Debian test image. Built by
# provision.sh and loaded into the rootless user's store.
FROM berth-test/debian:12
RUN apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
		podman buildah crun fuse-overlayfs uidmap slirp4netns >/dev/null && \
	rm -rf /var/lib/apt/lists/*
# Inside the job container podman runs as the container's root, within the
# rootless service's user namespace: vfs storage and chroot isolation need
# no mounts the kernel refuses there. The cgroup tree is read-only, so inner
# containers get no cgroups, which crun supports and runc does not.
RUN mkdir -p /etc/containers && \
	printf '%s\n' '[storage]' 'driver = "vfs"' 'runroot = "/run/containers/storage"' 'graphroot = "/var/lib/containers/storage"' \
		>/etc/containers/storage.conf && \
	printf '%s\n' '[containers]' 'netns = "host"' 'userns = "host"' 'ipcns = "host"' 'utsns = "host"' 'cgroupns = "host"' 'cgroups = "disabled"' 'log_driver = "k8s-file"' 'default_ulimits = []' \
		'[engine]' 'runtime = "crun"' 'cgroup_manager = "cgroupfs"' 'events_logger = "file"' >/etc/containers/containers.conf
ENV BUILDAH_ISOLATION=chroot
