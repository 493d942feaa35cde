// Package dockerengine is the Docker Engine code that the socket and dind
// backends share: the per-job network, the job, helper and service
// containers, image pulls, stage execution and cleanup by label.
package dockerengine

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"

	"github.com/docker/docker/api/types"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/api/types/volume"
	"github.com/docker/docker/client"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/sirupsen/logrus"

	"github.com/berthci/berth/backends"
	"github.com/berthci/berth/config"
)

// API is the part of the Docker client that berth uses. Tests put fakes
// behind it to inject engine failures.
type API interface {
	ServerVersion(ctx context.Context) (types.Version, error)
	ImageInspect(ctx context.Context, imageID string, opts ...client.ImageInspectOption) (image.InspectResponse, error)
	ImagePull(ctx context.Context, ref string, options image.PullOptions) (io.ReadCloser, error)
	ImageList(ctx context.Context, options image.ListOptions) ([]image.Summary, error)
	NetworkCreate(ctx context.Context, name string, options network.CreateOptions) (network.CreateResponse, error)
	NetworkList(ctx context.Context, options network.ListOptions) ([]network.Summary, error)
	NetworkRemove(ctx context.Context, networkID string) error
	ContainerCreate(ctx context.Context, config *container.Config, hostConfig *container.HostConfig, networkingConfig *network.NetworkingConfig, platform *ocispec.Platform, containerName string) (container.CreateResponse, error)
	ContainerStart(ctx context.Context, containerID string, options container.StartOptions) error
	ContainerAttach(ctx context.Context, containerID string, options container.AttachOptions) (types.HijackedResponse, error)
	ContainerWait(ctx context.Context, containerID string, condition container.WaitCondition) (<-chan container.WaitResponse, <-chan error)
	ContainerExecCreate(ctx context.Context, containerID string, options container.ExecOptions) (container.ExecCreateResponse, error)
	ContainerExecAttach(ctx context.Context, execID string, options container.ExecAttachOptions) (types.HijackedResponse, error)
	ContainerExecInspect(ctx context.Context, execID string) (container.ExecInspect, error)
	ContainerInspect(ctx context.Context, containerID string) (container.InspectResponse, error)
	ContainerLogs(ctx context.Context, containerID string, options container.LogsOptions) (io.ReadCloser, error)
	ContainerList(ctx context.Context, options container.ListOptions) ([]container.Summary, error)
	ContainerStop(ctx context.Context, containerID string, options container.StopOptions) error
	ContainerRemove(ctx context.Context, containerID string, options container.RemoveOptions) error
	VolumeCreate(ctx context.Context, options volume.CreateOptions) (volume.Volume, error)
	VolumeList(ctx context.Context, options volume.ListOptions) (volume.ListResponse, error)
	VolumeRemove(ctx context.Context, volumeID string, force bool) error
}

// Options are what a backend adds to the shared job setup. Every field is
// optional.
type Options struct {
	// JobBinds returns extra "host:container[:mode]" binds of the job
	// container, such as the Docker socket.
	JobBinds func(job *backends.Job) []string
	// JobEnv returns extra KEY=VALUE variables of the job container. The
	// job's own variables come later, so the job can override them.
	JobEnv func(job *backends.Job) []string
	// BeforeStageContainers runs in Prepare once the network and services
	// are up, before the job and helper containers are created: the place
	// for sidecars. It must honour ctx and label what it creates with
	// job.Labels, so that Cleanup finds it.
	BeforeStageContainers func(ctx context.Context, job *backends.Job) error
}

// Engine creates and runs a job's containers on one Docker daemon.
type Engine struct {
	api    API
	cfg    config.Docker
	limits config.Limits
	mounts []config.Mount
	opts   Options
	log    logrus.FieldLogger
}

// NewClient connects lazily to the daemon at host ("" means $DOCKER_HOST or
// the default socket), negotiating the API version on first use.
func NewClient(cfg config.Docker) (*client.Client, error) {
	host := cfg.Host
	opts := []client.Opt{client.FromEnv, client.WithAPIVersionNegotiation()}
	if host != "" {
		opts = append(opts, client.WithHost(host))
	} else if host = os.Getenv(client.EnvOverrideHost); host == "" {
		host = client.DefaultDockerHost
	}
	// Connections to a local or TCP daemon are retried while it is away;
	// other schemes (ssh) keep the client's own dialer.
	if u, err := client.ParseHostURL(host); err == nil && (u.Scheme == "unix" || u.Scheme == "tcp") {
		network, addr := u.Scheme, u.Host // for unix, Host holds the path
		retry := backends.DialRetry{Attempts: cfg.APIRetries, Delay: cfg.APIRetryDelay.Duration}
		opts = append(opts, client.WithDialContext(retry.Wrap(func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, addr)
		})))
	}
	cli, err := client.NewClientWithOpts(opts...)
	if err != nil {
		return nil, fmt.Errorf("docker client for %q: %w; fix docker.host in the berth config", host, err)
	}
	return cli, nil
}

// New returns an Engine that uses api with the admin's Docker settings.
func New(api API, cfg config.Docker, opts Options, log logrus.FieldLogger) (*Engine, error) {
	limits, err := cfg.Limits()
	if err != nil {
		return nil, err
	}
	mounts, err := cfg.Mounts()
	if err != nil {
		return nil, err
	}
	return &Engine{api: api, cfg: cfg, limits: limits, mounts: mounts, opts: opts, log: log}, nil
}

// API returns the engine's client, for backends that create more than the
// shared setup.
func (e *Engine) API() API { return e.api }

// Limits are the admin's resource settings, parsed.
func (e *Engine) Limits() config.Limits { return e.limits }

// Log returns the job-log logger.
func (e *Engine) Log() logrus.FieldLogger { return e.log }

// NetworkName is the job network's name.
func NetworkName(job *backends.Job) string { return networkName(job) }

// Describe returns the daemon's version for the job log.
func (e *Engine) Describe(ctx context.Context, _ *backends.Job) (string, error) {
	v, err := e.api.ServerVersion(ctx)
	if err != nil {
		return "", fmt.Errorf("query docker version: %w", err)
	}
	return fmt.Sprintf("Docker %s, API %s", v.Version, v.APIVersion), nil
}

// Container roles, stored in the berth.role label.
const (
	RoleNetwork = "network"
	RoleBuild   = "build"
	RoleHelper  = "helper"
	RoleService = "service"
	RoleVolume  = "volume"
)

func networkName(job *backends.Job) string         { return job.Name() }
func buildContainerName(job *backends.Job) string  { return job.Name() + "-build" }
func helperContainerName(job *backends.Job) string { return job.Name() + "-helper" }
func serviceContainerName(job *backends.Job, i int) string {
	return fmt.Sprintf("%s-svc-%d", job.Name(), i)
}
func volumeName(job *backends.Job, i int) string { return fmt.Sprintf("%s-vol-%d", job.Name(), i) }

func selectorFilter(job *backends.Job) filters.Args {
	args := filters.NewArgs()
	for k, v := range job.Selector() {
		args.Add("label", k+"="+v)
	}
	return args
}

// NoHealthcheck turns off an image's HEALTHCHECK in berth's own
// containers: the engine would run it inside them, with their mounts.
var NoHealthcheck = &container.HealthConfig{Test: []string{"NONE"}}
