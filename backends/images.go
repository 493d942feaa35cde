package backends

import (
	"context"
	"errors"
	"sync"

	"golang.org/x/sync/errgroup"

	"github.com/berthci/berth/config"
)

// JobImages are the images a job needs, once each: its own, the helper's
// (when helperImage is set) and its services'. The first mention of a name
// decides its pull policies. The helper image is the admin's and versioned:
// it is pulled only when missing, whatever the job asks for its own image.
func JobImages(job *Job, helperImage string) []Image {
	wanted := []Image{job.Image}
	if helperImage != "" {
		wanted = append(wanted, Image{Name: helperImage, PullPolicies: []string{config.PullIfNotPresent}})
	}
	for _, s := range job.Services {
		wanted = append(wanted, s.Image)
	}
	seen := map[string]bool{}
	var out []Image
	for _, img := range wanted {
		if !seen[img.Name] {
			seen[img.Name] = true
			out = append(out, img)
		}
	}
	return out
}

// EnsureImages runs ensure for every image at once and returns the results
// by image name; the first error cancels the others' context.
func EnsureImages[T any](ctx context.Context, images []Image, ensure func(ctx context.Context, img Image) (T, error)) (map[string]T, error) {
	results := make([]T, len(images))
	g, gctx := errgroup.WithContext(ctx)
	for i, img := range images {
		g.Go(func() error {
			r, err := ensure(gctx, img)
			results[i] = r
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	found := make(map[string]T, len(images))
	for i, img := range images {
		found[img.Name] = results[i]
	}
	return found, nil
}

// Parallel runs fn for 0..n-1 at once and joins the errors.
func Parallel(n int, fn func(i int) error) error {
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = fn(i)
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}
