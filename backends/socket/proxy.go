package socket

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"syscall"
	"time"

	"github.com/docker/docker/api/types/container"

	"github.com/berthci/berth/backends"
	"github.com/berthci/berth/backends/dockerproxy"
)

// roleProxy is the berth.role of the job's proxy container.
const roleProxy = "docker-proxy"

// proxyReadyTimeout bounds the wait for the proxy's first answer.
const proxyReadyTimeout = 30 * time.Second

// proxyDir is the job's host directory for the proxy's socket: next to the
// builds dir, not in it, so that the job can neither replace the socket nor
// bind-mount the directory through the proxy.
func proxyDir(job *backends.Job) string { return job.BuildsDir + ".docker-proxy" }

func proxySocket(job *backends.Job) string { return filepath.Join(proxyDir(job), "docker.sock") }

func proxyName(job *backends.Job) string { return job.Name() + "-docker-proxy" }

// Paths inside the proxy container.
const (
	proxyBinaryPath  = "/berth"
	proxySocketDir   = "/run/berth-docker"
	proxyHostSocket  = "/var/run/host-docker.sock"
	proxyListenerArg = proxySocketDir + "/docker.sock"
)

// startProxy runs the job's guarding proxy: berth's own static binary in a
// container with no network, no capabilities and a read-only root, holding
// the host socket and serving the job's socket in proxyDir. It returns once
// the job's socket answers /_ping.
func (b *Backend) startProxy(ctx context.Context, job *backends.Job) error {
	self, err := b.ProxyBinary, error(nil)
	if self == "" {
		self, err = os.Executable()
	}
	if err == nil {
		self, err = filepath.EvalSymlinks(self)
	}
	if err != nil {
		return fmt.Errorf("find berth's own binary for the guarded Docker socket: %w", err)
	}
	image := b.cfg.Socket.ProxyImage
	if image == "" {
		image = b.cfg.Docker.HelperImage
	}
	if _, err := b.EnsureImage(ctx, job, image, []string{"if-not-present"}); err != nil {
		return fmt.Errorf("the guarded Docker socket's image: %w; set socket.proxy_image or docker.helper_image in the berth config", err)
	}
	dir := proxyDir(job)
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("remove the job's old guarded socket directory: %w", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create the job's guarded socket directory: %w", err)
	}

	labels := job.Labels(dockerproxy.RoleJobCreated)
	keys := make([]string, 0, len(labels))
	for k := range labels {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	cmd := []string{"docker-proxy", "--listen", proxyListenerArg, "--upstream", "unix://" + proxyHostSocket, "--builds-dir", job.BuildsDir}
	for _, k := range keys {
		cmd = append(cmd, "--label", k+"="+labels[k])
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
	created, err := api.ContainerCreate(ctx, &container.Config{
		Image:      image,
		User:       user,
		Entrypoint: []string{proxyBinaryPath},
		Cmd:        cmd,
		Labels:     job.Labels(roleProxy),
	}, &container.HostConfig{
		NetworkMode: "none",
		Binds: []string{
			self + ":" + proxyBinaryPath + ":ro",
			b.cfg.Socket.HostSocket + ":" + proxyHostSocket,
			dir + ":" + proxySocketDir,
			job.BuildsDir + ":" + job.BuildsDir + ":ro",
		},
		GroupAdd:       groups,
		CapDrop:        []string{"ALL"},
		SecurityOpt:    []string{"no-new-privileges"},
		ReadonlyRootfs: true,
	}, nil, nil, proxyName(job))
	if err != nil {
		return fmt.Errorf("create the guarded Docker socket's proxy container: %w", err)
	}
	if err := api.ContainerStart(ctx, created.ID, container.StartOptions{}); err != nil {
		return fmt.Errorf("start the guarded Docker socket's proxy container: %w", err)
	}
	ready, cancel := context.WithTimeout(ctx, proxyReadyTimeout)
	defer cancel()
	if err := dockerproxy.WaitReady(ready, proxySocket(job)); err != nil {
		return fmt.Errorf("%w; see `docker logs %s`", err, proxyName(job))
	}
	b.Log().Infof("Guarded Docker socket ready (set [socket] guard = false for the host socket)")
	return nil
}
