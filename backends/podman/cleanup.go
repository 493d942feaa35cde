//go:build remote

package podman

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"github.com/containers/podman/v5/pkg/bindings/containers"
	"github.com/containers/podman/v5/pkg/bindings/images"
	"github.com/containers/podman/v5/pkg/bindings/network"
	"github.com/containers/podman/v5/pkg/bindings/volumes"
	"github.com/distribution/reference"

	"github.com/berthci/berth/backends"
	"github.com/berthci/berth/backends/dockerproxy"
)

// Cleanup removes the job's containers, then its network, then its volumes,
// all found by label. See [backends.Backend.Cleanup].
func (b *Backend) Cleanup(ctx context.Context, job *backends.Job) error {
	ctx, err := b.conn(ctx)
	if err != nil {
		return err
	}
	filters := selectorFilters(job)
	var errs []error

	list, err := containers.List(ctx, new(containers.ListOptions).WithAll(true).WithFilters(filters))
	if err != nil {
		return fmt.Errorf("list job containers: %w", err)
	}
	var ids, names []string
	for _, c := range list {
		if b.owns(job, c.Labels) {
			ids, names = append(ids, c.ID), append(names, fmt.Sprint(c.Names))
		}
	}
	errs = append(errs, backends.Parallel(len(ids), func(i int) error {
		_, err := containers.Remove(ctx, ids[i], new(containers.RemoveOptions).WithForce(true).WithVolumes(true).WithTimeout(0))
		// Podman answers 500 where Docker answers 409 when another removal
		// is already under way; a container that is gone after it is fine.
		if gone(err) || (code(err) == http.StatusInternalServerError && !b.exists(ctx, ids[i])) {
			return nil
		}
		return fmt.Errorf("remove container %s: %w", names[i], err)
	}))

	nets, err := network.List(ctx, new(network.ListOptions).WithFilters(filters))
	if err != nil {
		errs = append(errs, fmt.Errorf("list job networks: %w", err))
	}
	var netNames []string
	for _, n := range nets {
		if b.owns(job, n.Labels) {
			netNames = append(netNames, n.Name)
		}
	}
	errs = append(errs, backends.Parallel(len(netNames), func(i int) error {
		_, err := network.Remove(ctx, netNames[i], new(network.RemoveOptions).WithForce(true))
		if gone(err) {
			return nil
		}
		return fmt.Errorf("remove network %s: %w", netNames[i], err)
	}))

	vols, err := volumes.List(ctx, new(volumes.ListOptions).WithFilters(filters))
	if err != nil {
		errs = append(errs, fmt.Errorf("list job volumes: %w", err))
	}
	var volNames []string
	for _, v := range vols {
		if b.owns(job, v.Labels) {
			volNames = append(volNames, v.Name)
		}
	}
	errs = append(errs, backends.Parallel(len(volNames), func(i int) error {
		err := volumes.Remove(ctx, volNames[i], new(volumes.RemoveOptions).WithForce(true))
		if gone(err) {
			return nil
		}
		return fmt.Errorf("remove volume %s: %w", volNames[i], err)
	}))
	// The guard's socket directory, with its record of given names that
	// other backends' cleanups may still read, goes with the builds dir
	// (driver.Cleanup, berth gc).
	errs = append(errs, b.removeBuiltImages(ctx, job))
	return errors.Join(errs...)
}

// removeBuiltImages removes the images the job built through its guarded
// socket, which carry its labels. An image that another container still
// uses stays.
func (b *Backend) removeBuiltImages(ctx context.Context, job *backends.Job) error {
	// One label filter: Podman 4.3 lists no image for two (it wants
	// each image to match all of them in one label); owns checks the rest.
	byJob := map[string][]string{"label": {backends.LabelJobID + "=" + strconv.FormatInt(job.ID, 10)}}
	list, err := images.List(ctx, new(images.ListOptions).WithAll(true).WithFilters(byJob))
	if err != nil {
		return fmt.Errorf("list the images the job built: %w", err)
	}
	// By name, so that an image with several tags goes without force:
	// Podman's force would also remove containers of other jobs that use it.
	var refs []string
	for _, img := range list {
		if b.owns(job, img.Labels) {
			if len(img.RepoTags) > 0 {
				refs = append(refs, img.RepoTags...)
			} else {
				refs = append(refs, img.ID)
			}
		}
	}
	// The names it gave by tag and load through the guard, which may
	// carry no labels, as Podman's Docker API stores them: a tag
	// normalised (docker.io/library/x:latest for x), a loaded short name
	// under localhost/. The guard let the job give the name only when
	// the engine resolved it to nothing, so neither form was another's.
	given, err := dockerproxy.GivenNames(job, dockerproxy.EnginePodman)
	if err != nil {
		return err
	}
	// A form a pull has replaced since stays, as pulled names do.
	for _, g := range given {
		named, err := reference.ParseNormalizedNamed(g.Name)
		if err != nil {
			continue
		}
		tagged := reference.TagNameOnly(named)
		forms := []string{tagged.String()}
		if reference.Domain(named) == "docker.io" && !strings.HasPrefix(g.Name, "docker.io/") && !strings.HasPrefix(g.Name, "index.docker.io/") {
			forms = append(forms, "localhost/"+reference.FamiliarString(tagged))
		}
		for _, ref := range forms {
			if data, err := images.GetImage(ctx, ref, nil); err == nil && g.PointsAt(data.ID) {
				refs = append(refs, ref)
			}
		}
	}
	// The images its given names left when it moved them: those with no
	// name now (a loaded image that lost its only name), unless berth
	// labelled them as another job's.
	left, err := dockerproxy.LeftImages(job, dockerproxy.EnginePodman)
	if err != nil {
		return err
	}
	for _, id := range left {
		data, err := images.GetImage(ctx, id, nil)
		if err != nil || len(data.RepoTags) > 0 {
			continue
		}
		if owner, ok := data.Labels[backends.LabelJobID]; ok && owner != strconv.FormatInt(job.ID, 10) {
			continue
		}
		refs = append(refs, data.ID)
	}
	if len(refs) == 0 {
		return nil
	}
	_, errs := images.Remove(ctx, refs, new(images.RemoveOptions).WithIgnore(true))
	for i, err := range errs {
		if code(err) == http.StatusConflict {
			errs[i] = nil
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("remove the images the job built: %w", err)
	}
	return nil
}

// owns checks a listed resource's labels against the job's selector, since
// Podman versions differ in how they combine several label filters.
func (b *Backend) owns(job *backends.Job, labels map[string]string) bool {
	for k, v := range job.Selector() {
		if labels[k] != v {
			return false
		}
	}
	return true
}

func (b *Backend) exists(ctx context.Context, id string) bool {
	ok, err := containers.Exists(ctx, id, nil)
	return err != nil || ok
}
