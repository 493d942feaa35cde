package dockerengine

import (
	"context"
	"errors"
	"fmt"
	"os"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/api/types/volume"

	"github.com/berthci/berth/backends"
)

// Prepare creates the job's network, services and (stopped) job and helper
// containers. See [backends.Backend.Prepare].
func (e *Engine) Prepare(ctx context.Context, job *backends.Job) error {
	if err := e.Cleanup(ctx, job); err != nil {
		return fmt.Errorf("remove what an earlier prepare of this job left: %w", err)
	}
	for _, dir := range []string{job.BuildsDir, job.CacheDir} {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("create host directory: %w; check builds_dir and cache_dir in the berth config", err)
		}
	}
	runnerBinary, err := e.runnerBinary()
	if err != nil {
		return err
	}

	section := backends.StartSection(e.log, "prepare_images", "Pulling images")
	images, err := e.pullAll(ctx, job)
	section.End()
	if err != nil {
		return err
	}

	netName := networkName(job)
	opts := map[string]string{}
	if e.cfg.NetworkMTU > 0 {
		opts["com.docker.network.driver.mtu"] = fmt.Sprint(e.cfg.NetworkMTU)
	}
	if _, err := e.api.NetworkCreate(ctx, netName, network.CreateOptions{
		Driver:  "bridge",
		Options: opts,
		Labels:  job.Labels(RoleNetwork),
	}); err != nil {
		if cerrdefs.IsConflict(err) {
			return fmt.Errorf("job network %q already exists and was not made by berth for this job: berth does not adopt it; remove it with `docker network rm %s` and retry", netName, netName)
		}
		return fmt.Errorf("create job network %q: %w", netName, err)
	}

	volumes, err := e.createVolumes(ctx, job)
	if err != nil {
		return err
	}

	// The helper needs neither the services nor what the backend starts
	// before the job container, so it is made alongside them.
	helperDone := make(chan error, 1)
	if e.cfg.UseHelper {
		go func(bin string) { helperDone <- e.createStageContainer(ctx, job, RoleHelper, bin, volumes, images) }(runnerBinary)
		runnerBinary = ""
	} else {
		helperDone <- nil
	}
	// The services come up while the rest is made; the job container
	// exists before they are waited for, but no stage runs before.
	waitServices, err := e.startServices(ctx, job, images)
	if err == nil && e.opts.BeforeStageContainers != nil {
		err = e.opts.BeforeStageContainers(ctx, job)
	}
	if err == nil {
		err = e.createStageContainer(ctx, job, RoleBuild, runnerBinary, volumes, images)
	}
	err = errors.Join(err, waitServices.Finish(err != nil))
	return errors.Join(err, <-helperDone)
}

// runnerBinary resolves the host's gitlab-runner binary to mount, or "" for
// none.
func (e *Engine) runnerBinary() (string, error) {
	return backends.ResolveRunnerBinary(e.cfg.RunnerBinary)
}

// pullAll makes the job, helper and service images available, in parallel.
func (e *Engine) pullAll(ctx context.Context, job *backends.Job) (map[string]image.InspectResponse, error) {
	helper := ""
	if e.cfg.UseHelper {
		helper = e.cfg.HelperImage
	}
	return backends.EnsureImages(ctx, backends.JobImages(job, helper), func(ctx context.Context, img backends.Image) (image.InspectResponse, error) {
		return e.ensureImage(ctx, job, img.Name, img.PullPolicies)
	})
}

// createVolumes makes the per-job volumes for the admin's anonymous volumes
// and returns the binds of all admin volumes.
func (e *Engine) createVolumes(ctx context.Context, job *backends.Job) ([]string, error) {
	var binds []string
	for i, m := range e.mounts {
		source := m.Source
		if source == "" {
			source = volumeName(job, i)
			labels := job.Labels(RoleVolume)
			if err := CreateVolume(ctx, e.api, source, labels, backends.LabelRunner, backends.LabelJobID, backends.LabelRole, backends.LabelCreated); err != nil {
				return nil, err
			}
		}
		bind := source + ":" + m.Target
		if m.ReadOnly {
			bind += ":ro"
		}
		binds = append(binds, bind)
	}
	return binds, nil
}

// createStageContainer creates the container that stage scripts of the
// given role run in. In attach mode it stays stopped, for one `start` per
// stage as the docker executor does; in exec mode it is started here, to
// idle while each stage runs as an exec (see [backends.StageMode]).
func (e *Engine) createStageContainer(ctx context.Context, job *backends.Job, role, runnerBinary string, volumes []string, images map[string]image.InspectResponse) error {
	name, img, entrypoint := buildContainerName(job), job.Image.Name, job.Image.Entrypoint
	if role == RoleHelper {
		name, img, entrypoint = helperContainerName(job), e.cfg.HelperImage, nil
	}
	var imageEntrypoint []string
	if inspect, ok := images[img]; ok && inspect.Config != nil {
		imageEntrypoint = inspect.Config.Entrypoint
	}
	mode := backends.StageMode(e.cfg.StageMode, len(e.limits.Ulimits) > 0, entrypoint, imageEntrypoint)
	binds := []string{
		job.BuildsDir + ":" + job.BuildsDir,
		job.CacheDir + ":" + job.CacheDir,
	}
	binds = append(binds, volumes...)
	if runnerBinary != "" {
		binds = append(binds, runnerBinary+":"+backends.RunnerBinaryPath+":ro")
	}
	var env []string
	if role == RoleBuild && e.opts.JobBinds != nil {
		binds = append(binds, e.opts.JobBinds(job)...)
	}
	if role == RoleBuild && e.opts.JobEnv != nil {
		env = append(env, e.opts.JobEnv(job)...)
	}
	env = append(env, job.Env...)

	labels := job.Labels(role)
	labels[backends.LabelStageMode] = mode
	cfg := &container.Config{
		Image:        img,
		Hostname:     job.Name(),
		Env:          env,
		Cmd:          []string{"sh", "-c", backends.DetectShell},
		Entrypoint:   entrypoint,
		Labels:       labels,
		OpenStdin:    true,
		StdinOnce:    true,
		AttachStdin:  true,
		AttachStdout: true,
		AttachStderr: true,
	}
	if inspect, ok := images[img]; ok && role == RoleHelper {
		// berth's own helper: by the id resolved at this prepare, never a
		// name a job could move since, and without the image's HEALTHCHECK.
		cfg.Image, cfg.Healthcheck = inspect.ID, NoHealthcheck
	}
	if mode == backends.StageModeExec {
		// The keepalive's stdin stays open and unattached: it idles on it
		// when the image has no sleep.
		cfg.Cmd = []string{"sh", "-c", backends.StageKeepalive}
		cfg.StdinOnce, cfg.AttachStdin, cfg.AttachStdout, cfg.AttachStderr = false, false, false, false
	}
	if role == RoleBuild {
		cfg.User = e.cfg.User
	}
	hc := e.hostConfig(job)
	hc.Binds = binds
	l := e.limits
	hc.Resources = container.Resources{
		Memory:     l.Memory,
		MemorySwap: l.MemorySwap,
		NanoCPUs:   l.NanoCPUs,
		Ulimits:    l.Ulimits,
	}
	// What the job asked for, within the policy's ceilings.
	if job.Policy.Memory > 0 {
		hc.Memory = job.Policy.Memory
	}
	if job.Policy.NanoCPUs > 0 {
		hc.NanoCPUs = job.Policy.NanoCPUs
	}
	if l.PidsLimit > 0 {
		hc.PidsLimit = &l.PidsLimit
	}
	hc.ShmSize = l.ShmSize
	hc.CapAdd = e.cfg.CapAdd
	hc.CapDrop = e.cfg.CapDrop
	ApplySecurityOpt(hc, e.cfg.SecurityOpt)
	if _, err := e.api.ContainerCreate(ctx, cfg, hc, nil, nil, name); err != nil {
		return fmt.Errorf("create %s container %q from image %q: %w", role, name, img, err)
	}
	if mode == backends.StageModeExec {
		if err := e.api.ContainerStart(ctx, name, container.StartOptions{}); err != nil {
			return fmt.Errorf("start %s container %q: %w", role, name, err)
		}
	}
	return nil
}

// hostConfig is what every container of the job shares: the job network and
// the admin's name resolution settings.
func (e *Engine) hostConfig(job *backends.Job) *container.HostConfig {
	return &container.HostConfig{
		NetworkMode: container.NetworkMode(networkName(job)),
		DNS:         e.cfg.DNS,
		DNSSearch:   e.cfg.DNSSearch,
		ExtraHosts:  e.cfg.ExtraHosts,
	}
}

// ApplySecurityOpt sets a container's security options the way the docker
// CLI does: "systempaths=unconfined" is not an engine option but a request
// for no masked or read-only /proc and /sys paths.
func ApplySecurityOpt(hc *container.HostConfig, opts []string) {
	hc.SecurityOpt = nil
	for _, o := range opts {
		if o == "systempaths=unconfined" {
			hc.MaskedPaths, hc.ReadonlyPaths = []string{}, []string{}
			continue
		}
		hc.SecurityOpt = append(hc.SecurityOpt, o)
	}
}

// CreateVolume creates a volume berth names. Docker answers a create of an
// existing name with that volume, as if it had made it, so an existing
// volume is taken only when it carries labels' values for every key of
// match: else someone made it to be adopted (and shared) by this job.
func CreateVolume(ctx context.Context, api interface {
	VolumeCreate(ctx context.Context, options volume.CreateOptions) (volume.Volume, error)
}, name string, labels map[string]string, match ...string) error {
	vol, err := api.VolumeCreate(ctx, volume.CreateOptions{Name: name, Labels: labels})
	if err != nil {
		return fmt.Errorf("create volume %q: %w", name, err)
	}
	for _, k := range match {
		if vol.Labels[k] != labels[k] {
			return fmt.Errorf("volume %q already exists and was not made by berth for this job (its %s is %q, want %q): berth does not adopt it; remove it with `docker volume rm %s` and retry", name, k, vol.Labels[k], labels[k], name)
		}
	}
	return nil
}
