package driver

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/berthci/berth/backends"
)

// GCOptions are the settings of one `berth gc` run.
type GCOptions struct {
	// DryRun lists what would be removed and removes nothing.
	DryRun bool
	// Grace overrides gc_grace when positive.
	Grace time.Duration
	// Now is the time expiry is judged against; zero means time.Now().
	Now time.Time
}

// gcJob is one job of this runner that has something left.
type gcJob struct {
	id, projectID int64
	backends      []string
	created       time.Time // zero: only host directories, judged by mtime
	timeout       time.Duration
	dirs          []string
	dirsModified  time.Time
	resources     []string
	// marker: the job's prepare marker exists, written at markerTime
	// with markerTimeout (see prepareMarker).
	marker        bool
	markerTime    time.Time
	markerTimeout time.Duration
}

// What berth makes under <builds_dir>/<runner> for a job: its builds dir,
// the DinD certificates and guarded-socket dirs beside it, and the prepare
// marker.
var jobDirSuffixes = []string{"", ".dind-certs", ".docker-proxy", ".prepare"}

// GC removes what jobs of this runner left behind once they are certainly
// over: their timeout from the job response plus gc_grace have passed since
// their prepare, or, for host directories with nothing left in any engine,
// gc_grace since the directories last changed. It looks in every backend the
// config allows, touches only resources with this runner's berth labels,
// and removes each job with the backends' own cleanup, so a job is removed
// exactly as its cleanup stage would have removed it.
func (d *Driver) GC(ctx context.Context, opts GCOptions) error {
	d.tag(FieldStage, "gc")
	now := opts.Now
	if now.IsZero() {
		now = time.Now()
	}
	grace := d.Config.GCGrace.Duration
	if opts.Grace > 0 {
		grace = opts.Grace
	}
	jobs := map[int64]*gcJob{}
	opened := map[string]backends.Backend{}
	var errs []error
	for _, name := range d.Config.AllBackends() {
		backend, err := d.openBackend(name)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		lister, ok := backend.(backends.JobLister)
		if !ok {
			continue
		}
		opened[name] = backend
		records, err := lister.ListJobs(ctx, d.Config.RunnerName)
		if err != nil {
			errs = append(errs, fmt.Errorf("backend %s: %w", name, err))
			continue
		}
		for _, r := range records {
			j := jobs[r.ID]
			if j == nil {
				j = &gcJob{id: r.ID, created: r.Created}
				jobs[r.ID] = j
			}
			j.backends = append(j.backends, name)
			j.projectID = max(j.projectID, r.ProjectID)
			j.timeout = max(j.timeout, r.Timeout)
			if r.Created.Before(j.created) {
				j.created = r.Created
			}
			j.resources = append(j.resources, r.Resources...)
		}
	}
	if err := d.findJobDirs(jobs); err != nil {
		errs = append(errs, err)
	}
	// A backend that could not be asked may hold a live job's resources,
	// so nothing is removed without a complete picture.
	if err := errors.Join(errs...); err != nil {
		return systemErr(fmt.Errorf("gc: %w; nothing was removed", err))
	}

	ids := make([]int64, 0, len(jobs))
	for id := range jobs {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, k int) bool { return ids[i] < ids[k] })
	tw := tabwriter.NewWriter(d.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "JOB\tBACKENDS\tAGE\tTIMEOUT\tSTATE\tLEFT")
	var expired []*gcJob
	for _, id := range ids {
		j := jobs[id]
		state, age := "live", now.Sub(j.created)
		switch {
		case j.marker:
			// berth's own record, which labels cannot overrule: the job
			// is live until its timeout and the grace have passed.
			timeout := j.markerTimeout
			if timeout == 0 {
				timeout = j.timeout
			}
			j.timeout = timeout
			age = now.Sub(j.markerTime)
			if now.After(j.markerTime.Add(timeout + grace)) {
				state = "expired"
			}
		case !j.created.IsZero():
			// No marker: the job's cleanup has run (it removes the
			// marker last) or no prepare made these. Its labels' time
			// counts, never a timeout or a time to come that labels
			// could claim to keep them.
			if j.created.After(now) || now.After(j.created.Add(grace)) {
				state = "expired"
			}
		default:
			age = now.Sub(j.dirsModified)
			if age > grace {
				state = "expired"
			}
		}
		if state == "expired" {
			expired = append(expired, j)
		}
		left := append(append([]string{}, j.resources...), j.dirs...)
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\n", j.id, strings.Join(orNone(j.backends), ","), age.Round(time.Second), j.timeout, state, strings.Join(left, ", "))
	}
	if err := tw.Flush(); err != nil {
		return systemErr(err)
	}
	if opts.DryRun {
		fmt.Fprintf(d.Stdout, "dry run: %d of %d jobs would be removed (grace %s)\n", len(expired), len(jobs), grace)
		return nil
	}
	for _, j := range expired {
		spec := &backends.Job{ID: j.id, ProjectID: j.projectID, Runner: d.Config.RunnerName, BuildsDir: BuildsDir(d.Config, j.id)}
		if j.projectID > 0 {
			spec.CacheDir = CacheDir(d.Config, j.projectID)
		}
		for _, name := range j.backends {
			spec.Backend = name
			if err := opened[name].Cleanup(ctx, spec); err != nil {
				errs = append(errs, fmt.Errorf("job %d on %s: %w", j.id, name, err))
			}
		}
		for _, dir := range j.dirs {
			if err := os.RemoveAll(dir); err != nil {
				errs = append(errs, fmt.Errorf("job %d: %w", j.id, err))
			}
		}
	}
	fmt.Fprintf(d.Stdout, "removed %d of %d jobs (grace %s)\n", len(expired), len(jobs), grace)
	if err := errors.Join(errs...); err != nil {
		return systemErr(fmt.Errorf("gc: %w", err))
	}
	return nil
}

// findJobDirs adds what the runner's jobs left under builds_dir to jobs:
// <id>, <id>.dind-certs, <id>.docker-proxy and <id>.prepare. Entries of
// other shapes are not berth's and stay.
func (d *Driver) findJobDirs(jobs map[int64]*gcJob) error {
	root := filepath.Join(d.Config.BuildsDir, d.Config.RunnerName)
	entries, err := os.ReadDir(root)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read %s: %w", root, err)
	}
	for _, e := range entries {
		for _, suffix := range jobDirSuffixes {
			idText, ok := strings.CutSuffix(e.Name(), suffix)
			if !ok {
				continue
			}
			id, err := strconv.ParseInt(idText, 10, 64)
			if err != nil || id <= 0 || strconv.FormatInt(id, 10) != idText {
				continue
			}
			info, err := e.Info()
			if err != nil {
				continue
			}
			j := jobs[id]
			if j == nil {
				j = &gcJob{id: id}
				jobs[id] = j
			}
			path := filepath.Join(root, e.Name())
			j.dirs = append(j.dirs, path)
			if info.ModTime().After(j.dirsModified) {
				j.dirsModified = info.ModTime()
			}
			if suffix == ".prepare" {
				if _, timeout, err := readMarker(path); err == nil {
					j.marker, j.markerTime, j.markerTimeout = true, info.ModTime(), timeout
				}
			}
			break
		}
	}
	return nil
}

func orNone(list []string) []string {
	if len(list) == 0 {
		return []string{"-"}
	}
	return list
}
