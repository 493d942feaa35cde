package dockerproxy

import (
	"context"
	"errors"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
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

// On Podman a new localhost/x would take over the short name x, which
// Podman resolves to localhost/ first: refused when x names an image the
// job may not move.
func TestPodmanLocalhostNameCannotShadowAShortName(t *testing.T) {
	f, err := NewFilter(Config{BuildsDir: testBuildsDir(t), Labels: jobLabels, Podman: true}, fakeUpstream{})
	if err != nil {
		t.Fatal(err)
	}
	err = f.Check(context.Background(), httptest.NewRequest("POST", "/v1.41/images/busybox/tag?repo=localhost/foreignbuilt&tag=1", nil))
	var refusal *Refusal
	if !errors.As(err, &refusal) || !strings.Contains(refusal.Message, "is taken") {
		t.Fatalf("got %v, want the shadowing name refused", err)
	}
	if err := f.Check(context.Background(), httptest.NewRequest("POST", "/v1.41/images/busybox/tag?repo=localhost/brandnew&tag=1", nil)); err != nil {
		t.Fatalf("got %v, want a new name allowed", err)
	}
}

// Podman starts the containers a container shares namespaces with when it
// starts it, unchecked: container: modes are refused there.
func TestPodmanRefusesContainerNamespaceModes(t *testing.T) {
	f, err := NewFilter(Config{BuildsDir: testBuildsDir(t), Labels: jobLabels, Podman: true}, fakeUpstream{})
	if err != nil {
		t.Fatal(err)
	}
	for _, hc := range []string{`{"NetworkMode":"container:own"}`, `{"PidMode":"container:own"}`, `{"IpcMode":"container:own"}`} {
		req := httptest.NewRequest("POST", "/v1.41/containers/create", strings.NewReader(`{"Image":"busybox","HostConfig":`+hc+`}`))
		req.Header.Set("Content-Type", "application/json")
		var refusal *Refusal
		if err := f.Check(context.Background(), req); !errors.As(err, &refusal) || !strings.Contains(refusal.Message, "Podman would start") {
			t.Errorf("%s: got %v, want a refusal", hc, err)
		}
	}
}

// The engine host's own name resolves to its loopback address there, as
// localhost does: a pull from it or an ADD of it is refused.
func TestTheEngineHostsNameIsLocal(t *testing.T) {
	f, err := NewFilter(Config{BuildsDir: testBuildsDir(t), Labels: jobLabels, SpoolDir: t.TempDir(), HostNames: []string{"VM"}}, fakeUpstream{})
	if err != nil {
		t.Fatal(err)
	}
	var refusal *Refusal
	if err := f.Check(context.Background(), httptest.NewRequest("POST", "/v1.41/images/create?fromImage=vm:5999/p&tag=1", nil)); !errors.As(err, &refusal) {
		t.Errorf("pull from the host's name: got %v, want a refusal", err)
	}
	req := httptest.NewRequest("POST", "/v1.41/build", strings.NewReader(dockerfileTar("FROM busybox\nADD http://vm.:5999/x /x\n")))
	req.Header.Set("Content-Type", "application/x-tar")
	if _, err := f.CheckHold(context.Background(), req); !errors.As(err, &refusal) {
		t.Errorf("ADD from the host's name: got %v, want a refusal", err)
	}
}
