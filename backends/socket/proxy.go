package socket

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"syscall"

	"github.com/docker/docker/api/types/container"

	"github.com/berthci/berth/backends"
	"github.com/berthci/berth/backends/dockerengine"
	"github.com/berthci/berth/backends/dockerproxy"
)

// guardPids bounds the proxy container's processes and threads.
var guardPids int64 = dockerproxy.ContainerPids

// startProxy runs the job's guarding proxy: berth's own static binary in a
// container with no network, no capabilities and a read-only root, holding
// the host socket and serving the job's socket (see package dockerproxy for
// the layout). It returns once the job's socket answers /_ping.
func (b *Backend) startProxy(ctx context.Context, job *backends.Job) error {
	self, err := backends.SelfBinary(b.ProxyBinary, b.cfg.Docker.BerthBinary, "the guarded Docker socket")
	if err != nil {
		return err
	}
	image := b.cfg.Socket.ProxyImage
	if image == "" {
		image = b.cfg.Docker.HelperImage
	}
	inspect, err := b.EnsureImage(ctx, job, image, []string{"if-not-present"})
	if err != nil {
		return fmt.Errorf("the guarded Docker socket's image: %w; set socket.proxy_image or docker.helper_image in the berth config", err)
	}
	if err := dockerproxy.MakeJobDir(job, -1, -1); err != nil {
		return err
	}
	var binds []string
	for _, m := range dockerproxy.Binds(job, self, b.cfg.Socket.HostSocket) {
		bind := m.Source + ":" + m.Target
		if m.ReadOnly {
			bind += ":ro"
		}
		binds = append(binds, bind)
	}
	// The proxy runs as berth's own user, with the host socket's group, so
	// it needs no capabilities to use the socket or create its own.
	user := strconv.Itoa(os.Getuid()) + ":" + strconv.Itoa(os.Getgid())
	var groups []string
	if st, err := os.Stat(b.cfg.Socket.HostSocket); err == nil {
		if sys, ok := st.Sys().(*syscall.Stat_t); ok {
			groups = append(groups, strconv.FormatUint(uint64(sys.Gid), 10))
		}
	}
	api := b.API()
	name := dockerproxy.ContainerName(job)
	created, err := api.ContainerCreate(ctx, &container.Config{
		// By the id just resolved, never a name a job could move since,
		// and without the image's HEALTHCHECK.
		Image:       inspect.ID,
		Healthcheck: dockerengine.NoHealthcheck,
		User:        user,
		Entrypoint:  []string{dockerproxy.BinaryPath},
		Cmd:         dockerproxy.Command(job, dockerproxy.JobCeilings(b.Limits(), job), dockerproxy.SettingsFrom(b.cfg.Docker)),
		Labels:      job.Labels(dockerproxy.RoleProxy),
	}, &container.HostConfig{
		NetworkMode: "none",
		Binds:       binds,
		GroupAdd:    groups,
		CapDrop:     []string{"ALL"},
		// The guard's own bounds (see dockerproxy's maxConnections).
		Resources:      container.Resources{Memory: dockerproxy.ContainerMemory, PidsLimit: &guardPids},
		SecurityOpt:    []string{"no-new-privileges"},
		ReadonlyRootfs: true,
	}, nil, nil, name)
	if err != nil {
		return fmt.Errorf("create the guarded Docker socket's proxy container: %w", err)
	}
	if err := api.ContainerStart(ctx, created.ID, container.StartOptions{}); err != nil {
		return fmt.Errorf("start the guarded Docker socket's proxy container: %w", err)
	}
	if err := dockerproxy.WaitJobReady(ctx, job, "docker logs "+name); err != nil {
		return err
	}
	b.Log().Infof("Guarded Docker socket ready (set [socket] guard = false for the host socket)")
	return nil
}
