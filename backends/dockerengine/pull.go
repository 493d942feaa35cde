package dockerengine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/api/types/registry"
	"github.com/docker/docker/pkg/jsonmessage"

	"github.com/berthci/berth/backends"
	"github.com/berthci/berth/backends/dockerproxy"
	"github.com/berthci/berth/config"
)

// EnsureImage makes an image available on the daemon, like the job's own
// images. It honours ctx.
func (e *Engine) EnsureImage(ctx context.Context, job *backends.Job, name string, policies []string) (image.InspectResponse, error) {
	return e.ensureImage(ctx, job, name, policies)
}

// ensureImage makes image available on the daemon following the job's pull
// policies, tried in order, and returns its inspect data.
func (e *Engine) ensureImage(ctx context.Context, job *backends.Job, name string, policies []string) (image.InspectResponse, error) {
	var lastErr error
	for i, policy := range policies {
		if i > 0 {
			e.log.Warnf("%v; trying the next pull policy %q", lastErr, policy)
		}
		if policy == config.PullNever || policy == config.PullIfNotPresent {
			inspect, err := e.api.ImageInspect(ctx, name)
			var other string
			given := false
			if err == nil {
				other, given = dockerproxy.GivenByAnotherJob(job, dockerproxy.EngineDocker, name, inspect.ID)
			}
			if given {
				// What that job tagged or loaded there, not a pull's.
				lastErr = fmt.Errorf("image %q on the host is a name job %s gave through its guarded socket, so it is not used; pull it (pull_policy \"always\" or \"if-not-present\")", name, other)
				if policy == config.PullNever {
					continue
				}
				e.log.Warnf("Image %s on the host is a name job %s gave through its guarded socket; pulling it instead", name, other)
			} else if err == nil {
				e.log.Infof("Using locally found image %s (%s)", name, shortID(inspect.ID))
				return inspect, nil
			}
			if err != nil && !cerrdefs.IsNotFound(err) {
				return image.InspectResponse{}, fmt.Errorf("inspect image %q: %w", name, err)
			}
			if policy == config.PullNever && err != nil {
				lastErr = fmt.Errorf("image %q is not on the host and the pull policy is \"never\"; pull it on the host or allow another pull_policy", name)
				continue
			}
		}
		if err := e.pull(ctx, job, name); err != nil {
			lastErr = err
			if ctx.Err() != nil {
				return image.InspectResponse{}, err
			}
			continue
		}
		inspect, err := e.api.ImageInspect(ctx, name)
		if err != nil {
			return image.InspectResponse{}, fmt.Errorf("inspect pulled image %q: %w", name, err)
		}
		e.log.Infof("Using docker image %s for %s", shortID(inspect.ID), name)
		return inspect, nil
	}
	if lastErr == nil {
		lastErr = fmt.Errorf("no pull policy for image %q", name)
	}
	return image.InspectResponse{}, lastErr
}

func (e *Engine) pull(ctx context.Context, job *backends.Job, name string) error {
	opts := image.PullOptions{}
	cred, ok := job.CredentialFor(name)
	if ok {
		auth, err := registry.EncodeAuthConfig(registry.AuthConfig{
			Username:      cred.Username,
			Password:      cred.Password,
			ServerAddress: cred.Registry,
		})
		if err != nil {
			return fmt.Errorf("encode registry credentials for %q: %w", name, err)
		}
		opts.RegistryAuth = auth
		e.log.Infof("Pulling docker image %s (credentials for %s) ...", name, backends.RegistryOf(name))
	} else {
		e.log.Infof("Pulling docker image %s ...", name)
	}
	body, err := e.api.ImagePull(ctx, name, opts)
	if err != nil {
		return fmt.Errorf("pull image %q: %w; check the image name and the job's registry credentials", name, err)
	}
	defer body.Close()
	if err := e.showPullProgress(body); err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("pull image %q: %w", name, ctx.Err())
		}
		return fmt.Errorf("pull image %q: %w; check the image name and the job's registry credentials", name, err)
	}
	return nil
}

// showPullProgress prints one line per layer state change, never the
// progress bars, and returns the error the stream ends with.
func (e *Engine) showPullProgress(body io.Reader) error {
	dec := json.NewDecoder(body)
	layers := map[string]string{}
	for {
		var msg jsonmessage.JSONMessage
		if err := dec.Decode(&msg); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		if msg.Error != nil {
			return errors.New(msg.Error.Message)
		}
		if msg.ID == "" {
			if msg.Status != "" {
				e.log.Info("  " + msg.Status)
			}
			continue
		}
		if layers[msg.ID] == msg.Status {
			continue
		}
		layers[msg.ID] = msg.Status
		e.log.Infof("  %s: %s", msg.ID, msg.Status)
	}
}

func shortID(id string) string {
	if len(id) > 19 {
		return id[:19]
	}
	return id
}
