//go:build remote

package podman

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/containers/podman/v5/pkg/bindings/images"
	"github.com/containers/podman/v5/pkg/domain/entities/types"

	"github.com/berthci/berth/backends"
	"github.com/berthci/berth/backends/dockerproxy"
	"github.com/berthci/berth/config"
)

// pullAll makes the job, helper and service images available, in parallel,
// and returns their inspect data by name.
func (b *Backend) pullAll(ctx context.Context, job *backends.Job) (map[string]*types.ImageInspectReport, error) {
	helper := ""
	if b.cfg.UseHelper {
		helper = b.cfg.HelperImage
	}
	return backends.EnsureImages(ctx, backends.JobImages(job, helper), func(ctx context.Context, img backends.Image) (*types.ImageInspectReport, error) {
		return b.ensureImage(ctx, job, img.Name, img.PullPolicies)
	})
}

// ensureImage makes the image available following the pull policies, tried
// in order, and returns its inspect data.
func (b *Backend) ensureImage(ctx context.Context, job *backends.Job, name string, policies []string) (*types.ImageInspectReport, error) {
	var lastErr error
	for i, policy := range policies {
		if i > 0 {
			b.log.Warnf("%v; trying the next pull policy %q", lastErr, policy)
		}
		if policy == config.PullNever || policy == config.PullIfNotPresent {
			inspect, err := images.GetImage(ctx, name, nil)
			var other string
			given := false
			if err == nil {
				other, given = dockerproxy.GivenByAnotherJob(job, dockerproxy.EnginePodman, name, inspect.ID)
			}
			if given {
				// What that job tagged or loaded there, not a pull's.
				lastErr = fmt.Errorf("image %q in the podman user's store is a name job %s gave through its guarded socket, so it is not used; pull it (pull_policy \"always\" or \"if-not-present\")", name, other)
				if policy == config.PullNever {
					continue
				}
				b.log.Warnf("Image %s in the podman user's store is a name job %s gave through its guarded socket; pulling it instead", name, other)
			} else if err == nil {
				b.log.Infof("Using locally found image %s (%s)", name, shortID(inspect.ID))
				return inspect, nil
			}
			if err != nil && !isNotFound(err) {
				return nil, fmt.Errorf("inspect image %q: %w", name, err)
			}
			if policy == config.PullNever && err != nil {
				lastErr = fmt.Errorf("image %q is not in the podman user's store and the pull policy is \"never\"; pull it as that user or allow another pull_policy", name)
				continue
			}
		}
		if err := b.pull(ctx, job, name); err != nil {
			lastErr = err
			if ctx.Err() != nil {
				return nil, err
			}
			continue
		}
		inspect, err := images.GetImage(ctx, name, nil)
		if err != nil {
			return nil, fmt.Errorf("inspect pulled image %q: %w", name, err)
		}
		b.log.Infof("Using podman image %s for %s", shortID(inspect.ID), name)
		return inspect, nil
	}
	if lastErr == nil {
		lastErr = fmt.Errorf("no pull policy for image %q", name)
	}
	return nil, lastErr
}

func (b *Backend) pull(ctx context.Context, job *backends.Job, name string) error {
	opts := new(images.PullOptions).WithPolicy("always").WithProgressWriter(&progressLog{b: b})
	if cred, ok := job.CredentialFor(name); ok {
		opts = opts.WithUsername(cred.Username).WithPassword(cred.Password)
		b.log.Infof("Pulling podman image %s (credentials for %s) ...", name, backends.RegistryOf(name))
	} else {
		b.log.Infof("Pulling podman image %s ...", name)
	}
	if _, err := images.Pull(ctx, name, opts); err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("pull image %q: %w", name, ctx.Err())
		}
		return fmt.Errorf("pull image %q: %w; check the image name and the job's registry credentials", name, err)
	}
	return nil
}

// progressLog prints the pull's progress lines to the job log.
type progressLog struct{ b *Backend }

func (p *progressLog) Write(data []byte) (int, error) {
	for _, line := range strings.Split(strings.TrimRight(string(data), "\n"), "\n") {
		if line = strings.TrimSpace(line); line != "" {
			p.b.log.Info("  " + line)
		}
	}
	return len(data), nil
}

var _ io.Writer = (*progressLog)(nil)

func shortID(id string) string {
	id = strings.TrimPrefix(id, "sha256:")
	if len(id) > 12 {
		return id[:12]
	}
	return id
}
