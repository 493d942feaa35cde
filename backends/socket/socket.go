// Package socket is the socket backend: job containers on the host's Docker
// engine with a Docker socket at /var/run/docker.sock, so the job's
// containers are siblings on the host daemon. By default the socket is
// berth's guarding proxy (see package dockerproxy), not the host's own.
package socket

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/client"
	"github.com/sirupsen/logrus"

	"github.com/berthci/berth/backends"
	"github.com/berthci/berth/backends/dockerengine"
	"github.com/berthci/berth/backends/dockerproxy"
	"github.com/berthci/berth/config"
)

// Name is the backend's name in BERTH_BACKEND and the config.
const Name = "socket"

// jobSocketPath is where the job's docker CLI looks without DOCKER_HOST.
const jobSocketPath = "/var/run/docker.sock"

func init() {
	backends.Register(Name, func(cfg *config.Config, log logrus.FieldLogger) (backends.Backend, error) {
		return New(cfg, log)
	})
}

// Backend is the socket backend. It is the shared Docker engine code with
// a Docker socket bound into the job container.
type Backend struct {
	*dockerengine.Engine
	// ProxyBinary is the static berth binary that runs the job's guarding
	// proxy; empty means the running executable.
	ProxyBinary string

	cfg *config.Config
	cli *client.Client
}

// New returns a socket backend for the admin config. It does not contact the
// engine.
func New(cfg *config.Config, log logrus.FieldLogger) (*Backend, error) {
	cli, err := dockerengine.NewClient(cfg.Docker)
	if err != nil {
		return nil, err
	}
	b := &Backend{cfg: cfg, cli: cli}
	opts := dockerengine.Options{
		JobBinds: func(job *backends.Job) []string {
			if b.guarded(job) {
				return []string{dockerproxy.JobSocket(job) + ":" + jobSocketPath}
			}
			return []string{cfg.Socket.HostSocket + ":" + jobSocketPath}
		},
		BeforeStageContainers: func(ctx context.Context, job *backends.Job) error {
			if !b.guarded(job) {
				b.Log().Warn("This job gets the host's Docker socket unguarded ([socket] guard = false or a policy rule): it is root on the host")
				return nil
			}
			return b.startProxy(ctx, job)
		},
	}
	engine, err := dockerengine.New(cli, cfg.Docker, opts, log)
	if err != nil {
		return nil, err
	}
	b.Engine = engine
	return b, nil
}

// Describe returns the host daemon's version and which socket the job gets.
func (b *Backend) Describe(ctx context.Context, job *backends.Job) (string, error) {
	v, err := b.Engine.Describe(ctx, job)
	if err != nil {
		return "", err
	}
	if b.guarded(job) {
		return v + ", guarded socket", nil
	}
	return v + ", host socket unguarded", nil
}

// guarded reports whether the job gets the guarding proxy: the policy's say
// for the job, else [socket] guard.
func (b *Backend) guarded(job *backends.Job) bool {
	if job.Policy.SocketGuard != nil {
		return *job.Policy.SocketGuard
	}
	return b.cfg.Socket.Guard
}

// Cleanup removes the job's containers (the proxy's and everything the job
// created through it, all found by label), networks, volumes and the images
// it built through the proxy, and the proxy's socket directory. See
// [backends.Backend.Cleanup].
func (b *Backend) Cleanup(ctx context.Context, job *backends.Job) error {
	// Cleanup cannot know whether prepare guarded the job, so it always
	// looks for what the proxy leaves.
	// The guard's socket directory, with its record of given names that
	// other backends' cleanups may still read, goes with the builds dir
	// (driver.Cleanup, berth gc).
	return errors.Join(b.Engine.Cleanup(ctx, job), b.removeBuiltImages(ctx, job))
}

// removeBuiltImages removes the images the job built through the proxy,
// which carry its labels. An image another job's container still uses
// stays.
func (b *Backend) removeBuiltImages(ctx context.Context, job *backends.Job) error {
	args := filters.NewArgs()
	for k, v := range job.Selector() {
		args.Add("label", k+"="+v)
	}
	images, err := b.cli.ImageList(ctx, image.ListOptions{All: true, Filters: args})
	if err != nil {
		return fmt.Errorf("list the images the job built: %w", err)
	}
	var errs []error
	for _, img := range images {
		_, err := b.cli.ImageRemove(ctx, img.ID, image.RemoveOptions{Force: true, PruneChildren: true})
		if err != nil && !cerrdefs.IsNotFound(err) && !cerrdefs.IsConflict(err) {
			errs = append(errs, fmt.Errorf("remove image %s the job built: %w", img.ID, err))
		}
	}
	// The names it gave by tag and load, which may carry no labels. A
	// name a pull has replaced since stays, as pulled names do. Removed
	// with force, which for a name untags it even while a container uses
	// its image (the image itself goes only when no other name has it and
	// no container runs it): a name left because another job's container
	// held its image would be found by later jobs.
	names, err := dockerproxy.GivenNames(job, dockerproxy.EngineDocker)
	if err != nil {
		errs = append(errs, err)
	}
	for _, given := range names {
		info, err := b.cli.ImageInspect(ctx, given.Name)
		if err != nil || !given.PointsAt(info.ID) {
			continue
		}
		_, err = b.cli.ImageRemove(ctx, given.Name, image.RemoveOptions{Force: true, PruneChildren: true})
		if err != nil && !cerrdefs.IsNotFound(err) && !cerrdefs.IsConflict(err) {
			errs = append(errs, fmt.Errorf("remove the image name %s the job gave: %w", given.Name, err))
		}
	}
	// The images its given names left when it moved them: those with
	// no name now (a loaded image that lost its only name), unless berth
	// labelled them as another job's.
	left, err := dockerproxy.LeftImages(job, dockerproxy.EngineDocker)
	if err != nil {
		errs = append(errs, err)
	}
	for _, id := range left {
		info, err := b.cli.ImageInspect(ctx, id)
		if err != nil || len(info.RepoTags) > 0 || (info.Config != nil && otherJobs(job, info.Config.Labels)) {
			continue
		}
		_, err = b.cli.ImageRemove(ctx, info.ID, image.RemoveOptions{PruneChildren: true})
		if err != nil && !cerrdefs.IsNotFound(err) && !cerrdefs.IsConflict(err) {
			errs = append(errs, fmt.Errorf("remove the image %s a name the job gave left: %w", id, err))
		}
	}
	// The step images its builds made, which a failed build leaves
	// without labels: the last first, so that a child goes before its
	// parent. The record comes from the builder's progress, which a RUN
	// step's output could imitate, so only an untagged image made since
	// the job's guard started, not labelled as another job's, goes (a
	// step image carries its base image's labels).
	steps, err := dockerproxy.StepImages(job)
	if err != nil {
		errs = append(errs, err)
	}
	started, known := dockerproxy.GuardStarted(job)
	for i := len(steps) - 1; i >= 0; i-- {
		info, err := b.cli.ImageInspect(ctx, steps[i])
		if err != nil {
			continue // gone with the built image, or never there
		}
		created, _ := time.Parse(time.RFC3339Nano, info.Created)
		if len(info.RepoTags) > 0 || (info.Config != nil && otherJobs(job, info.Config.Labels)) || !known || created.Before(started.Add(-time.Second)) {
			continue
		}
		_, err = b.cli.ImageRemove(ctx, info.ID, image.RemoveOptions{PruneChildren: true})
		if err != nil && !cerrdefs.IsNotFound(err) && !cerrdefs.IsConflict(err) {
			errs = append(errs, fmt.Errorf("remove the step image %s of the job's build: %w", steps[i], err))
		}
	}
	return errors.Join(errs...)
}

// ListJobs lists the runner's socket jobs on the daemon, for `berth gc`.
// See [backends.JobLister].
func (b *Backend) ListJobs(ctx context.Context, runner string) ([]backends.JobRecord, error) {
	return b.ListBackendJobs(ctx, runner, Name)
}

// otherJobs reports whether labels are berth's for another job.
func otherJobs(job *backends.Job, labels map[string]string) bool {
	id, ok := labels[backends.LabelJobID]
	return ok && id != strconv.FormatInt(job.ID, 10)
}
