//go:build remote

package podman

import (
	"context"
	"fmt"
	"strings"

	"github.com/containers/podman/v5/pkg/bindings/containers"
	"github.com/containers/podman/v5/pkg/bindings/images"
	"github.com/containers/podman/v5/pkg/bindings/network"
	"github.com/containers/podman/v5/pkg/bindings/volumes"

	"github.com/berthci/berth/backends"
)

// ListJobs lists the runner's podman jobs in the service, by label, for
// `berth gc`. See [backends.JobLister].
func (b *Backend) ListJobs(ctx context.Context, runner string) ([]backends.JobRecord, error) {
	ctx, err := b.conn(ctx)
	if err != nil {
		return nil, err
	}
	// One label filter: Podman versions differ in how they combine
	// several (4.3 answers an image list with two by nothing, and ORs
	// them for volumes), so the rest is checked here.
	filters := map[string][]string{"label": {backends.LabelRunner + "=" + runner}}
	records := map[int64]*backends.JobRecord{}
	mine := func(labels map[string]string) bool {
		return labels[backends.LabelRunner] == runner && labels[backends.LabelBackend] == Name
	}
	cs, err := containers.List(ctx, new(containers.ListOptions).WithAll(true).WithFilters(filters))
	if err != nil {
		return nil, fmt.Errorf("list containers: %w", err)
	}
	for _, c := range cs {
		if mine(c.Labels) {
			backends.AddRecord(records, Name, "container "+strings.Join(c.Names, ","), c.Labels)
		}
	}
	ns, err := network.List(ctx, new(network.ListOptions).WithFilters(filters))
	if err != nil {
		return nil, fmt.Errorf("list networks: %w", err)
	}
	for _, n := range ns {
		if mine(n.Labels) {
			backends.AddRecord(records, Name, "network "+n.Name, n.Labels)
		}
	}
	vs, err := volumes.List(ctx, new(volumes.ListOptions).WithFilters(filters))
	if err != nil {
		return nil, fmt.Errorf("list volumes: %w", err)
	}
	for _, v := range vs {
		if mine(v.Labels) {
			backends.AddRecord(records, Name, "volume "+v.Name, v.Labels)
		}
	}
	imgs, err := images.List(ctx, new(images.ListOptions).WithAll(true).WithFilters(filters))
	if err != nil {
		return nil, fmt.Errorf("list images: %w", err)
	}
	for _, img := range imgs {
		if mine(img.Labels) {
			backends.AddRecord(records, Name, "image "+shortID(img.ID), img.Labels)
		}
	}
	return backends.SortedRecords(records), nil
}
