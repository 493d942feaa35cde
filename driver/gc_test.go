package driver

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/berthci/berth/backends"
	"github.com/berthci/berth/config"
)

// listingBackend is a fakeBackend that also lists jobs for gc.
type listingBackend struct {
	*fakeBackend
	records []backends.JobRecord
	listErr error
}

func (b listingBackend) ListJobs(_ context.Context, runner string) ([]backends.JobRecord, error) {
	return b.records, b.listErr
}

func newGCDriver(t *testing.T, lists map[string]listingBackend) (*Driver, *bytes.Buffer) {
	t.Helper()
	log, _, _ := newTestLogger(t, "text")
	cfg := config.Default()
	cfg.BuildsDir = t.TempDir()
	cfg.Policy.AllowedBackends = []string{"socket"}
	cfg.Policy.Rules = []config.Rule{{Name: "pods", AllowedBackends: []string{"podman"}}}
	var out bytes.Buffer
	d := &Driver{Config: cfg, Log: log, Stdout: &out, Stderr: &bytes.Buffer{},
		Open: func(name string, _ *config.Config, _ logrus.FieldLogger) (backends.Backend, error) {
			b, ok := lists[name]
			if !ok {
				return nil, errors.New("no such fake backend")
			}
			return b, nil
		}}
	return d, &out
}

func mkdirs(t *testing.T, dirs ...string) {
	t.Helper()
	for _, dir := range dirs {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
}

func TestGCRemovesOnlyExpiredJobs(t *testing.T) {
	now := time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)
	socket := listingBackend{fakeBackend: &fakeBackend{}, records: []backends.JobRecord{
		{ID: 1, ProjectID: 7, Backend: "socket", Created: now.Add(-3 * time.Hour), Timeout: time.Hour, Resources: []string{"container berth-berth-1-build"}},
		{ID: 2, ProjectID: 7, Backend: "socket", Created: now.Add(-90 * time.Minute), Timeout: time.Hour, Resources: []string{"container berth-berth-2-build"}},
	}}
	podman := listingBackend{fakeBackend: &fakeBackend{}, records: []backends.JobRecord{
		{ID: 3, Backend: "podman", Created: now.Add(-3 * time.Hour), Timeout: 4 * time.Hour, Resources: []string{"network berth-berth-3"}},
	}}
	d, out := newGCDriver(t, map[string]listingBackend{"socket": socket, "podman": podman})
	root := filepath.Join(d.Config.BuildsDir, "berth")
	mkdirs(t, filepath.Join(root, "1"), filepath.Join(root, "1.docker-proxy"), filepath.Join(root, "4"), filepath.Join(root, "5"), filepath.Join(root, "notes"))
	old := now.Add(-2 * time.Hour)
	for _, dir := range []string{"1", "1.docker-proxy", "4", "notes"} {
		if err := os.Chtimes(filepath.Join(root, dir), old, old); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chtimes(filepath.Join(root, "5"), now, now); err != nil {
		t.Fatal(err)
	}
	// Jobs 2 and 3 are live: their prepare markers, written 1.5 h and 3 h
	// ago with 1 h and 4 h timeouts, say so.
	writeTestMarker(t, filepath.Join(root, "2.prepare"), time.Hour, now.Add(-90*time.Minute))
	writeTestMarker(t, filepath.Join(root, "3.prepare"), 4*time.Hour, now.Add(-3*time.Hour))

	// Dry run: a table, nothing removed.
	if err := d.GC(context.Background(), GCOptions{DryRun: true, Now: now}); err != nil {
		t.Fatal(err)
	}
	if len(socket.calls) != 0 || len(podman.calls) != 0 {
		t.Fatalf("dry run cleaned up: %v %v", socket.calls, podman.calls)
	}
	if _, err := os.Stat(filepath.Join(root, "4")); err != nil {
		t.Fatalf("dry run removed a directory: %v", err)
	}
	for _, want := range []string{"JOB", "expired", "live", "dry run: 2 of 5 jobs would be removed (grace 1h0m0s)"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, out.String())
		}
	}

	out.Reset()
	if err := d.GC(context.Background(), GCOptions{Now: now}); err != nil {
		t.Fatal(err)
	}
	// Job 1: 3 h old with a 1 h timeout and 1 h grace: removed, with its
	// directories. Job 2 (1.5 h) and job 3 (4 h timeout) are within their
	// time. Job 4 is an old directory with nothing in any engine; job 5's
	// directory is fresh; "notes" is not a job's.
	if len(socket.jobs) != 1 || socket.jobs[0].ID != 1 || socket.jobs[0].ProjectID != 7 || socket.jobs[0].BuildsDir != filepath.Join(root, "1") {
		t.Errorf("socket cleanups: %+v, want job 1 only", socket.jobs)
	}
	if len(podman.calls) != 0 {
		t.Errorf("podman cleanups: %v, want none", podman.calls)
	}
	for dir, want := range map[string]bool{"1": false, "1.docker-proxy": false, "4": false, "5": true, "notes": true} {
		_, err := os.Stat(filepath.Join(root, dir))
		if exists := err == nil; exists != want {
			t.Errorf("directory %s exists %v, want %v", dir, exists, want)
		}
	}
	if !strings.Contains(out.String(), "removed 2 of 5 jobs") {
		t.Errorf("summary:\n%s", out.String())
	}
}

func writeTestMarker(t *testing.T, path string, timeout time.Duration, at time.Time) {
	t.Helper()
	if err := writeMarker(path, prepareDone, timeout); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(path, at, at); err != nil {
		t.Fatal(err)
	}
}

// Labels on images can be forged: a pulled or loaded image carries what
// its maker wrote. gc judges a job with a prepare marker (berth's record,
// out of the job's reach) by the marker alone, and one without by its
// labels' time plus the grace, never by a timeout or a time to come.
func TestGCTrustsThePrepareMarkerOverLabels(t *testing.T) {
	now := time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)
	socket := listingBackend{fakeBackend: &fakeBackend{}, records: []backends.JobRecord{
		// a live job that another job's forged image names as ancient
		{ID: 11, ProjectID: 7, Backend: "socket", Created: time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC), Timeout: time.Second, Resources: []string{"image 0123456789ab"}},
		// no marker: labels from the future, and a ten-year timeout
		{ID: 12, Backend: "socket", Created: now.Add(24 * time.Hour), Timeout: time.Hour, Resources: []string{"image 1123456789ab"}},
		{ID: 13, Backend: "socket", Created: now.Add(-2 * time.Hour), Timeout: 10 * 365 * 24 * time.Hour, Resources: []string{"image 2123456789ab"}},
		// no marker, within the grace of its labels' time
		{ID: 14, Backend: "socket", Created: now.Add(-30 * time.Minute), Timeout: time.Hour, Resources: []string{"container c14"}},
	}}
	d, out := newGCDriver(t, map[string]listingBackend{"socket": socket, "podman": {fakeBackend: &fakeBackend{}}})
	root := filepath.Join(d.Config.BuildsDir, "berth")
	mkdirs(t, filepath.Join(root, "11"))
	writeTestMarker(t, filepath.Join(root, "11.prepare"), time.Hour, now.Add(-10*time.Minute))
	if err := d.GC(context.Background(), GCOptions{Now: now}); err != nil {
		t.Fatal(err)
	}
	var removed []int64
	for _, j := range socket.jobs {
		removed = append(removed, j.ID)
	}
	if len(removed) != 2 || removed[0] != 12 || removed[1] != 13 {
		t.Errorf("removed jobs %v, want 12 and 13:\n%s", removed, out.String())
	}
	if _, err := os.Stat(filepath.Join(root, "11.prepare")); err != nil {
		t.Errorf("the live job's marker went: %v", err)
	}
}

func TestGCRemovesNothingWhenABackendCannotBeAsked(t *testing.T) {
	now := time.Now()
	socket := listingBackend{fakeBackend: &fakeBackend{}, records: []backends.JobRecord{
		{ID: 1, Backend: "socket", Created: now.Add(-24 * time.Hour), Resources: []string{"container c"}},
	}}
	podman := listingBackend{fakeBackend: &fakeBackend{}, listErr: errors.New("podman socket /run/user/1000/podman/podman.sock: no such file")}
	d, _ := newGCDriver(t, map[string]listingBackend{"socket": socket, "podman": podman})
	err := d.GC(context.Background(), GCOptions{Now: now})
	if !errors.Is(err, ErrSystem) || !strings.Contains(err.Error(), "podman.sock") || !strings.Contains(err.Error(), "nothing was removed") {
		t.Errorf("got %v, want a system error naming the backend and saying nothing was removed", err)
	}
	if len(socket.calls) != 0 {
		t.Errorf("cleaned up %v with an incomplete picture", socket.calls)
	}
}
