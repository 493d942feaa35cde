//go:build remote

package podman

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"

	"github.com/containers/podman/v5/pkg/bindings/containers"
	"github.com/containers/podman/v5/pkg/bindings/network"
	"github.com/containers/podman/v5/pkg/bindings/volumes"
	"github.com/containers/podman/v5/pkg/domain/entities/types"
	"github.com/containers/podman/v5/pkg/specgen"
	spec "github.com/opencontainers/runtime-spec/specs-go"
	nettypes "go.podman.io/common/libnetwork/types"

	"github.com/berthci/berth/backends"
)

// jobSocketPath is where the job's docker CLI looks without DOCKER_HOST.
const jobSocketPath = "/var/run/docker.sock"

// Prepare creates the job's network, services and (stopped) job and helper
// containers. See [backends.Backend.Prepare].
//
// The job gets its own network, not a pod: on a network each service has
// its own network namespace, so two services may listen on the same port,
// and aliases are real DNS names (aardvark-dns) exactly as with the docker
// executor. A pod shares one namespace and could only fake aliases through
// /etc/hosts. Cleanup is as simple either way: everything carries the job's
// labels.
func (b *Backend) Prepare(ctx context.Context, job *backends.Job) error {
	if err := b.Cleanup(ctx, job); err != nil {
		return fmt.Errorf("remove what an earlier prepare of this job left: %w", err)
	}
	ctx, err := b.conn(ctx)
	if err != nil {
		return err
	}
	if err := b.checkService(ctx); err != nil {
		return err
	}
	if err := b.makeHostDirs(job); err != nil {
		return err
	}
	runnerBinary, err := backends.ResolveRunnerBinary(b.cfg.RunnerBinary)
	if err != nil {
		return err
	}
	section := backends.StartSection(b.log, "prepare_images", "Pulling images")
	images, err := b.pullAll(ctx, job)
	section.End()
	if err != nil {
		return err
	}

	netName := networkName(job)
	// Podman routes between its bridge networks unless they are
	// isolated: without this, one job reaches another's services.
	opts := map[string]string{"isolate": "true"}
	if b.cfg.NetworkMTU > 0 {
		opts["mtu"] = fmt.Sprint(b.cfg.NetworkMTU)
	}
	if _, err := network.Create(ctx, &nettypes.Network{
		Name:       netName,
		Driver:     "bridge",
		DNSEnabled: true,
		Labels:     job.Labels(roleNetwork),
		Options:    opts,
	}); err != nil {
		if code(err) == http.StatusConflict {
			return fmt.Errorf("job network %q already exists and was not made by berth for this job: berth does not adopt it; remove it with `podman network rm %s` as the service's user and retry", netName, netName)
		}
		return fmt.Errorf("create job network %q: %w", netName, err)
	}

	vols, named, err := b.createVolumes(ctx, job)
	if err != nil {
		return err
	}
	// The helper needs neither the services nor the proxy, so it is made
	// alongside them.
	helperDone := make(chan error, 1)
	if b.cfg.UseHelper {
		go func(bin string) {
			helperDone <- b.createStageContainer(ctx, job, roleHelper, bin, vols, named, images)
		}(runnerBinary)
		runnerBinary = ""
	} else {
		helperDone <- nil
	}
	// The services come up while the rest is made; the job container
	// exists before they are waited for, but no stage runs before.
	waitServices, err := b.startServices(ctx, job, images)
	if err == nil && b.podman.JobSocket && b.guarded(job) {
		err = b.startProxy(ctx, job)
	}
	if err == nil {
		err = b.createStageContainer(ctx, job, roleBuild, runnerBinary, vols, named, images)
	}
	err = errors.Join(err, waitServices.Finish(err != nil))
	return errors.Join(err, <-helperDone)
}

// makeHostDirs creates the job's builds and cache directories and gives them
// to the service's user, whose containers' root is that user on the host.
func (b *Backend) makeHostDirs(job *backends.Job) error {
	for _, dir := range []string{job.BuildsDir, job.CacheDir} {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("create host directory: %w; check builds_dir and cache_dir in the berth config", err)
		}
		if os.Getuid() != 0 || b.owner.uid == 0 {
			continue
		}
		if err := os.Lchown(dir, b.owner.uid, b.owner.gid); err != nil {
			return fmt.Errorf("give %s to the podman user (uid %d): %w; check builds_dir and cache_dir in the berth config", dir, b.owner.uid, err)
		}
	}
	return nil
}

// createVolumes makes the per-job volumes for the admin's anonymous volumes
// and returns the mounts of all admin volumes.
func (b *Backend) createVolumes(ctx context.Context, job *backends.Job) ([]spec.Mount, []*specgen.NamedVolume, error) {
	var binds []spec.Mount
	var named []*specgen.NamedVolume
	for i, m := range b.mounts {
		opts := []string{"rw"}
		if m.ReadOnly {
			opts = []string{"ro"}
		}
		if m.Source != "" {
			binds = append(binds, bindMount(m.Source, m.Target, opts...))
			continue
		}
		name := volumeName(job, i)
		if _, err := volumes.Create(ctx, types.VolumeCreateOptions{Name: name, Labels: job.Labels(roleVolume)}, nil); err != nil {
			// Podman 4.3 answers 500 "volume already exists".
			if code(err) == http.StatusConflict || strings.Contains(err.Error(), "already exists") {
				return nil, nil, fmt.Errorf("job volume %q already exists and was not made by berth for this job: berth does not adopt it; remove it with `podman volume rm %s` as the service's user and retry", name, name)
			}
			return nil, nil, fmt.Errorf("create job volume %q: %w", name, err)
		}
		named = append(named, &specgen.NamedVolume{Name: name, Dest: m.Target, Options: opts})
	}
	return binds, named, nil
}

func bindMount(source, target string, options ...string) spec.Mount {
	return spec.Mount{Type: "bind", Source: source, Destination: target, Options: append([]string{"rbind"}, options...)}
}

// containerSpec is what every container of the job shares: labels, the job
// network with its aliases and the admin's name resolution settings.
func (b *Backend) containerSpec(job *backends.Job, name, image, role string, aliases []string) *specgen.SpecGenerator {
	s := specgen.NewSpecGenerator(image, false)
	s.Name = name
	s.Labels = job.Labels(role)
	s.NetNS = specgen.Namespace{NSMode: specgen.Bridge}
	s.Networks = map[string]nettypes.PerNetworkOptions{networkName(job): {Aliases: aliases}}
	for _, d := range b.cfg.DNS {
		if ip := net.ParseIP(d); ip != nil {
			s.DNSServers = append(s.DNSServers, ip)
		}
	}
	s.DNSSearch = b.cfg.DNSSearch
	s.HostAdd = b.cfg.ExtraHosts
	no := false
	s.Privileged = &no
	return s
}

// envMap turns KEY=VALUE lists into Podman's map; later entries win, as
// with the docker executor.
func envMap(lists ...[]string) map[string]string {
	m := map[string]string{}
	for _, list := range lists {
		for _, kv := range list {
			k, v, _ := strings.Cut(kv, "=")
			if k != "" {
				m[k] = v
			}
		}
	}
	return m
}

// createStageContainer creates the container that stage scripts of the
// given role run in. In attach mode it stays stopped, for one start per
// stage as the docker executor does; in exec mode it is started here, to
// idle while each stage runs as an exec (see [backends.StageMode]).
func (b *Backend) createStageContainer(ctx context.Context, job *backends.Job, role, runnerBinary string, vols []spec.Mount, named []*specgen.NamedVolume, images map[string]*types.ImageInspectReport) error {
	name, img, entrypoint := buildContainerName(job), job.Image.Name, job.Image.Entrypoint
	if role == roleHelper {
		name, img, entrypoint = helperContainerName(job), b.cfg.HelperImage, nil
	}
	var imageEntrypoint []string
	if report := images[img]; report != nil && report.ImageData != nil && report.Config != nil {
		imageEntrypoint = report.Config.Entrypoint
	}
	mode := backends.StageMode(b.cfg.StageMode, len(b.limits.Ulimits) > 0, entrypoint, imageEntrypoint)
	s := b.containerSpec(job, name, img, role, nil)
	if report := images[img]; report != nil && role == roleHelper {
		// berth's own helper: by the id resolved at this prepare, never a
		// name a job could move since, and without the image's HEALTHCHECK.
		s.Image, s.HealthConfig = report.ID, noHealthcheck()
	}
	s.Labels[backends.LabelStageMode] = mode
	s.Hostname = job.Name()
	s.Entrypoint = entrypoint
	s.Command = []string{"sh", "-c", backends.DetectShell}
	if mode == backends.StageModeExec {
		// The keepalive's stdin stays open and unattached: it idles on it
		// when the image has no sleep.
		s.Command = []string{"sh", "-c", backends.StageKeepalive}
	}
	yes := true
	s.Stdin = &yes
	mounts := []spec.Mount{
		bindMount(job.BuildsDir, job.BuildsDir, "rw"),
		bindMount(job.CacheDir, job.CacheDir, "rw"),
	}
	mounts = append(mounts, vols...)
	if runnerBinary != "" {
		mounts = append(mounts, bindMount(runnerBinary, backends.RunnerBinaryPath, "ro"))
	}
	var env []string
	if role == roleBuild {
		s.User = b.cfg.User
		if b.podman.JobSocket {
			mounts = append(mounts, bindMount(b.jobSocketSource(job), jobSocketPath, "rw"))
			if !b.guarded(job) {
				// The guard serves the Docker-compatible API only.
				env = append(env, "CONTAINER_HOST=unix://"+jobSocketPath)
			}
		}
		if b.podman.Nested {
			b.nested(s)
		}
	}
	s.Mounts = mounts
	s.Volumes = named
	s.Env = envMap(env, job.Env)
	b.applyLimits(s, job.Policy)
	if _, err := containers.CreateWithSpec(ctx, s, nil); err != nil {
		return fmt.Errorf("create %s container %q from image %q: %w", role, name, img, err)
	}
	if mode == backends.StageModeExec {
		if err := containers.Start(ctx, name, nil); err != nil {
			return fmt.Errorf("start %s container %q: %w", role, name, err)
		}
	}
	return nil
}

// nested grants what podman or buildah inside the job container need to run
// there, in the style of quay.io/podman/stable, and nothing more:
//   - CAP_SYS_ADMIN, which the container holds only inside the rootless
//     service's user namespace: the nested runtime mounts (chroot isolation,
//     image layers) and sets up its own namespaces with it. Rootless
//     containers already have SETUID and SETGID.
//   - /dev/fuse, for images whose storage uses fuse-overlayfs.
//   - AppArmor unconfined and SELinux labels disabled, on hosts that enforce
//     them: their container profiles forbid those mounts.
//
// Seccomp stays on: Podman's default profile allows mount and unshare to a
// container with CAP_SYS_ADMIN. Never privileged, and no host devices but
// fuse.
func (b *Backend) nested(s *specgen.SpecGenerator) {
	s.Devices = append(s.Devices, spec.LinuxDevice{Path: "/dev/fuse"})
	s.ApparmorProfile = "unconfined"
	s.SelinuxOpts = append(s.SelinuxOpts, "disable")
	s.CapAdd = append(s.CapAdd, "SYS_ADMIN")
}

// applyLimits sets the admin's limits and security options that Podman
// supports, with what the job asked for within the policy's ceilings.
func (b *Backend) applyLimits(s *specgen.SpecGenerator, asked backends.JobPolicy) {
	l := b.limits
	if asked.Memory > 0 {
		l.Memory = asked.Memory
	}
	if asked.NanoCPUs > 0 {
		l.NanoCPUs = asked.NanoCPUs
	}
	res := &spec.LinuxResources{}
	set := false
	if l.Memory > 0 || l.MemorySwap != 0 {
		mem := &spec.LinuxMemory{}
		if l.Memory > 0 {
			mem.Limit = &l.Memory
		}
		if l.MemorySwap != 0 {
			mem.Swap = &l.MemorySwap
		}
		res.Memory, set = mem, true
	}
	if l.NanoCPUs > 0 {
		period := uint64(100000)
		quota := l.NanoCPUs * int64(period) / 1e9
		res.CPU, set = &spec.LinuxCPU{Period: &period, Quota: &quota}, true
	}
	if l.PidsLimit > 0 {
		res.Pids, set = &spec.LinuxPids{Limit: l.PidsLimit}, true
	}
	if set {
		s.ResourceLimits = res
	}
	if l.ShmSize > 0 {
		s.ShmSize = &l.ShmSize
	}
	s.Rlimits = append(s.Rlimits, rlimits(l.Ulimits)...)
	s.CapAdd = append(s.CapAdd, b.cfg.CapAdd...)
	s.CapDrop = append(s.CapDrop, b.cfg.CapDrop...)
	for _, opt := range b.cfg.SecurityOpt {
		key, value, _ := strings.Cut(strings.Replace(opt, ":", "=", 1), "=")
		switch key {
		case "no-new-privileges":
			yes := value == "" || value == "true"
			s.NoNewPrivileges = &yes
		case "seccomp":
			s.SeccompProfilePath = value
		case "apparmor":
			s.ApparmorProfile = value
		case "label":
			s.SelinuxOpts = append(s.SelinuxOpts, value)
		}
	}
}
