package dockerengine

import (
	"context"
	"errors"
	"fmt"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/api/types/volume"

	"github.com/berthci/berth/backends"
)

// Cleanup removes the job's containers, then its network, then its volumes,
// all found by label. See [backends.Backend.Cleanup].
func (e *Engine) Cleanup(ctx context.Context, job *backends.Job) error {
	args := selectorFilter(job)
	var errs []error

	containers, err := e.api.ContainerList(ctx, container.ListOptions{All: true, Filters: args})
	if err != nil {
		return fmt.Errorf("list job containers: %w", err)
	}
	errs = append(errs, backends.Parallel(len(containers), func(i int) error {
		c := containers[i]
		err := e.api.ContainerRemove(ctx, c.ID, container.RemoveOptions{Force: true, RemoveVolumes: true})
		// A conflict here means another removal is already under way.
		if gone(err) || cerrdefs.IsConflict(err) {
			return nil
		}
		return fmt.Errorf("remove container %s: %w", c.Names, err)
	}))

	networks, err := e.api.NetworkList(ctx, network.ListOptions{Filters: args})
	if err != nil {
		errs = append(errs, fmt.Errorf("list job networks: %w", err))
	}
	errs = append(errs, backends.Parallel(len(networks), func(i int) error {
		err := e.api.NetworkRemove(ctx, networks[i].ID)
		if gone(err) {
			return nil
		}
		return fmt.Errorf("remove network %s: %w", networks[i].Name, err)
	}))

	volumes, err := e.api.VolumeList(ctx, volume.ListOptions{Filters: args})
	if err != nil {
		errs = append(errs, fmt.Errorf("list job volumes: %w", err))
	}
	errs = append(errs, backends.Parallel(len(volumes.Volumes), func(i int) error {
		err := e.api.VolumeRemove(ctx, volumes.Volumes[i].Name, true)
		if gone(err) {
			return nil
		}
		return fmt.Errorf("remove volume %s: %w", volumes.Volumes[i].Name, err)
	}))
	return errors.Join(errs...)
}

// gone reports whether a removal succeeded or found the object already gone.
func gone(err error) bool {
	return err == nil || cerrdefs.IsNotFound(err)
}
