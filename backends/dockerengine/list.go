package dockerengine

import (
	"context"
	"fmt"
	"strings"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/api/types/volume"

	"github.com/berthci/berth/backends"
)

// ListBackendJobs lists the runner's jobs that have containers, networks,
// volumes or built images of the named backend on this daemon, by label.
// It is [backends.JobLister] for the backends built on this engine.
func (e *Engine) ListBackendJobs(ctx context.Context, runner, backend string) ([]backends.JobRecord, error) {
	args := filters.NewArgs(filters.Arg("label", backends.LabelRunner+"="+runner), filters.Arg("label", backends.LabelBackend+"="+backend))
	records := map[int64]*backends.JobRecord{}
	cs, err := e.api.ContainerList(ctx, container.ListOptions{All: true, Filters: args})
	if err != nil {
		return nil, fmt.Errorf("list containers: %w", err)
	}
	for _, c := range cs {
		backends.AddRecord(records, backend, "container "+strings.TrimPrefix(strings.Join(c.Names, ","), "/"), c.Labels)
	}
	ns, err := e.api.NetworkList(ctx, network.ListOptions{Filters: args})
	if err != nil {
		return nil, fmt.Errorf("list networks: %w", err)
	}
	for _, n := range ns {
		backends.AddRecord(records, backend, "network "+n.Name, n.Labels)
	}
	vs, err := e.api.VolumeList(ctx, volume.ListOptions{Filters: args})
	if err != nil {
		return nil, fmt.Errorf("list volumes: %w", err)
	}
	for _, v := range vs.Volumes {
		backends.AddRecord(records, backend, "volume "+v.Name, v.Labels)
	}
	imgs, err := e.api.ImageList(ctx, image.ListOptions{All: true, Filters: args})
	if err != nil {
		return nil, fmt.Errorf("list images: %w", err)
	}
	for _, img := range imgs {
		backends.AddRecord(records, backend, "image "+shortID(img.ID), img.Labels)
	}
	return backends.SortedRecords(records), nil
}
