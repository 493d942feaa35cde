package dind

import (
	"context"
	"fmt"
	"strings"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"

	"github.com/berthci/berth/backends"
	"github.com/berthci/berth/backends/dockerengine"
	"github.com/berthci/berth/config"
)

// Doctor checks the host daemon for dind jobs: the checks every Docker
// backend shares, the sidecar image, and whether a sidecar with the
// configured privileges can do what a nested dockerd does. See
// [backends.Doctor].
func (b *Backend) Doctor(ctx context.Context, opts backends.DoctorOptions) []backends.Check {
	images := append(backends.NeededJobImages(b.cfg.Docker),
		backends.NeededImage{Check: "dind-image", Ref: b.cfg.Dind.Image, Key: "dind.image", Policies: b.cfg.Dind.PullPolicy})
	spec := dockerengine.DoctorSpec{
		Runner:    b.cfg.RunnerName,
		Backend:   Name,
		Images:    images,
		NestedMTU: b.cfg.Dind.MTU,
	}
	forms := []bool{b.cfg.Dind.Privileged}
	var ruleNames []string
	for _, r := range b.cfg.Policy.Rules {
		if r.DindPrivileged != nil && *r.DindPrivileged != b.cfg.Dind.Privileged {
			ruleNames = append(ruleNames, r.Name)
		}
	}
	spec.Extra = append(spec.Extra, dockerengine.DoctorStep{Name: "dind-sidecar", Run: func(ctx context.Context) backends.Check {
		return b.probeSidecar(ctx, "dind-sidecar", forms[0], "[dind]")
	}})
	if len(ruleNames) > 0 {
		// Some rules run the sidecar in the other form: it is tried too.
		spec.Extra = append(spec.Extra, dockerengine.DoctorStep{Name: "dind-sidecar-rules", Run: func(ctx context.Context) backends.Check {
			return b.probeSidecar(ctx, "dind-sidecar-rules", !forms[0], "the rules "+strings.Join(ruleNames, ", "))
		}})
	}
	return dockerengine.Doctor(ctx, b.cli, b.cfg.Docker, spec, opts)
}

// sidecarPrivileges gives a container the privileges of the DinD sidecar:
// --privileged, or the [dind] capability settings, and the admin's
// devices.
func sidecarPrivileges(hc *container.HostConfig, dcfg config.Dind, privileged bool) error {
	devices, err := parseDevices(dcfg.Devices)
	if err != nil {
		return err
	}
	hc.Privileged = privileged
	hc.CapAdd, hc.CapDrop = dcfg.CapAdd, dcfg.CapDrop
	hc.Devices = devices
	dockerengine.ApplySecurityOpt(hc, dcfg.SecurityOpt)
	return nil
}

// sidecarProbeScript does, in a container with the sidecar's privileges,
// the privileged things a nested dockerd needs at its start: mount file
// systems, create cgroups (remounting them read-write first, as the
// capability form's entrypoint does) and set up NAT with iptables. Only
// POSIX sh and busybox-style tools, which every dind image has.
const sidecarProbeScript = `fail() { echo "berth-doctor: $*" >&2; exit 1; }
id=$(cat /etc/hostname 2>/dev/null || echo $$)
dir=/tmp/berth-doctor-$id
mkdir -p "$dir" || fail "cannot create $dir"
out=$(mount -t tmpfs berth-doctor "$dir" 2>&1) || fail "cannot mount a tmpfs (dockerd mounts its layers): $out"
umount "$dir"
rmdir "$dir"
cg=/sys/fs/cgroup
target=
if [ -f "$cg/cgroup.controllers" ]; then
	target=$cg
else
	for c in memory pids cpuset; do
		if [ -d "$cg/$c" ] && [ ! -L "$cg/$c" ] && grep -q " $cg/$c " /proc/mounts; then
			target=$cg/$c
			break
		fi
	done
fi
if [ -n "$target" ]; then
	probe=$target/berth-doctor-$id
	if ! mkdir "$probe" 2>/dev/null; then
		if [ "$target" = "$cg" ]; then
			out=$(mount -o remount,rw "$cg" 2>&1) || fail "cannot remount the cgroup file system read-write: $out"
		else
			mount -o remount,rw "$cg" 2>/dev/null
			c=${target##*/}
			out=$(umount "$target" 2>&1 && mount -t cgroup -o "rw,$c" cgroup "$target" 2>&1) || fail "cannot remount the $c cgroup controller read-write: $out"
		fi
		out=$(mkdir "$probe" 2>&1) || fail "cannot create a cgroup (dockerd puts each container in one): $out"
	fi
	rmdir "$probe"
fi
if command -v iptables >/dev/null 2>&1; then
	out=$(iptables -t nat -n -L 2>&1) || fail "iptables cannot list the nat table (dockerd sets up NAT for its containers): $(echo "$out" | tail -n 1)"
fi
echo "berth-doctor: mount, cgroups and iptables work"
`

// probeSidecar starts a short-lived container from the dind image with the
// sidecar's privileges and runs sidecarProbeScript in it.
func (b *Backend) probeSidecar(ctx context.Context, name string, privileged bool, source string) backends.Check {
	dcfg := b.cfg.Dind
	form := "privileged"
	fix := "privileged containers fail on this host (often a capability missing from the VM's bounding set): set [dind] privileged = false with cap_add = [\"ALL\"], cap_drop = [\"SYS_RESOURCE\"], security_opt = [\"seccomp=unconfined\", \"apparmor=unconfined\", \"systempaths=unconfined\"] and an image whose entrypoint remounts the cgroups read-write (README: the dind backend)"
	if !privileged {
		form = fmt.Sprintf("not privileged, cap_add %v, cap_drop %v, security_opt %v", dcfg.CapAdd, dcfg.CapDrop, dcfg.SecurityOpt)
		if len(dcfg.Devices) > 0 {
			form += fmt.Sprintf(", devices %v", dcfg.Devices)
		}
		fix = "grant what the message above names: add the capability to dind.cap_add (or cap_add = [\"ALL\"]), or relax dind.security_opt (\"apparmor=unconfined\", \"seccomp=unconfined\", \"systempaths=unconfined\"); or set privileged = true where privileged containers work"
	}
	form += " (" + source + ")"
	hc := &container.HostConfig{NetworkMode: "none"}
	if err := sidecarPrivileges(hc, dcfg, privileged); err != nil {
		return backends.Fail(name, err.Error(), "fix dind.devices in the berth config")
	}
	if _, err := b.cli.ImageInspect(ctx, dcfg.Image); cerrdefs.IsNotFound(err) {
		return backends.Warn(name, fmt.Sprintf("not tried: dind.image %s is not on the host yet", dcfg.Image),
			fmt.Sprintf("docker pull %s on the host, then run berth doctor again", dcfg.Image))
	} else if err != nil {
		return backends.Fail(name, fmt.Sprintf("inspect dind.image %s: %v", dcfg.Image, err), "check the Docker daemon (see the engine check)")
	}
	code, output, err := dockerengine.RunProbe(ctx, b.cli, dockerengine.ProbeSpec{
		Runner: b.cfg.RunnerName, Backend: Name, What: "dind",
		Config:     &container.Config{Image: dcfg.Image, Entrypoint: []string{"sh", "-c", sidecarProbeScript}, Cmd: []string{"berth-doctor"}},
		HostConfig: hc,
	})
	switch {
	case dockerengine.IsProbeStartError(err):
		return backends.Fail(name, fmt.Sprintf("a container from %s, %s, does not start: %v", dcfg.Image, form, err), fix)
	case err != nil:
		return backends.Fail(name, fmt.Sprintf("a container from %s, %s: %v", dcfg.Image, form, err), "check the Docker daemon (see the engine check)")
	case code != 0:
		return backends.Fail(name, fmt.Sprintf("a container from %s, %s, exited %d: %s", dcfg.Image, form, code, lastLine(output)), fix)
	}
	return backends.OK(name, fmt.Sprintf("a container from %s, %s, started: %s", dcfg.Image, form, strings.TrimPrefix(lastLine(output), "berth-doctor: ")))
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return s[i+1:]
	}
	return s
}
