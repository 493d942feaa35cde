package dockerproxy

import (
	"context"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/berthci/berth/backends"
)

// A name the job gives by tag is recorded for its cleanup in the job's
// socket directory; a name it pulls, or an image it may move, is not.
func TestGivenNamesAreRecordedForCleanup(t *testing.T) {
	job := &backends.Job{BuildsDir: filepath.Join(t.TempDir(), "7")}
	if err := os.MkdirAll(JobDir(job), 0o755); err != nil {
		t.Fatal(err)
	}
	if names, err := GivenNames(job, EngineDocker); err != nil || names != nil {
		t.Fatalf("no record: got %v, %v", names, err)
	}
	f, err := NewFilter(Config{BuildsDir: testBuildsDir(t), Labels: jobLabels, NamesFile: filepath.Join(JobDir(job), givenNamesFile(EngineDocker))}, fakeUpstream{})
	if err != nil {
		t.Fatal(err)
	}
	for _, target := range []string{
		"/v1.41/images/busybox/tag?repo=newname&tag=1",
		"/v1.41/images/busybox/tag?repo=newname&tag=1",  // again: recorded once
		"/v1.41/images/busybox/tag?repo=ownbuilt&tag=1", // an own image's name: not new
		"/v1.41/images/create?fromImage=pulled&tag=2",
	} {
		if err := f.Check(context.Background(), httptest.NewRequest("POST", target, nil)); err != nil {
			t.Fatalf("%s: %v", target, err)
		}
	}
	if names, _ := GivenNames(job, EnginePodman); names != nil {
		t.Errorf("the docker engine's record was read for podman: %q", names)
	}
	names, err := GivenNames(job, EngineDocker)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"newname:1"}; !slices.Equal(names, want) {
		t.Errorf("got %q, want %q", names, want)
	}
}
