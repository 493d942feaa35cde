package dockerproxy

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/berthci/berth/backends"
)

// A name the job gives or moves by tag is recorded for its cleanup in the
// job's socket directory (and for other jobs' guards); a name it pulls is
// not.
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
		"/v1.41/images/busybox/tag?repo=ownbuilt&tag=1", // an own image's name, moved
		"/v1.41/images/create?fromImage=pulled&tag=2",
	} {
		if err := f.Check(context.Background(), httptest.NewRequest("POST", target, nil)); err != nil {
			t.Fatalf("%s: %v", target, err)
		}
	}
	if names, _ := GivenNames(job, EnginePodman); names != nil {
		t.Errorf("the docker engine's record was read for podman: %q", names)
	}
	given, err := GivenNames(job, EngineDocker)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, g := range given {
		names = append(names, g.Name)
	}
	if want := []string{"newname:1", "ownbuilt:1"}; !slices.Equal(names, want) {
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

// A name another job of the runner gave through its guard, while that job
// runs (its record is there), is not seen by this job's guard as long as
// it points at what that job put there: a create, inspect or tag of it
// answers as for a missing image (the docker CLI pulls then), and a build
// from it is refused. Once the name points elsewhere (a pull replaced
// it), or the other job is cleaned up, it is an image as any other.
func TestAnotherJobsGivenNameIsNotSeen(t *testing.T) {
	peers := t.TempDir()
	// Job 8 of another runner that shares the builds directory.
	other := filepath.Join(peers, "r2", "8.docker-proxy")
	if err := os.MkdirAll(other, 0o755); err != nil {
		t.Fatal(err)
	}
	record := filepath.Join(other, givenNamesFile(EngineDocker))
	write := func(lines ...string) {
		t.Helper()
		if err := os.WriteFile(record, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	self := filepath.Join(peers, "r1", "7")
	if err := os.MkdirAll(filepath.Join(self, "project"), 0o755); err != nil {
		t.Fatal(err)
	}
	f, err := NewFilter(Config{BuildsDir: self, Labels: jobLabels, SpoolDir: t.TempDir(), PeersDir: peers}, fakeUpstream{})
	if err != nil {
		t.Fatal(err)
	}
	create := func() *http.Request {
		req := httptest.NewRequest("POST", "/v1.41/containers/create", strings.NewReader(`{"Image":"busybox:latest"}`))
		req.Header.Set("Content-Type", "application/json")
		return req
	}
	build := func() *http.Request {
		req := httptest.NewRequest("POST", "/v1.41/build", strings.NewReader(dockerfileTar("FROM busybox:latest\n")))
		req.Header.Set("Content-Type", "application/x-tar")
		return req
	}
	requests := map[string]func() *http.Request{
		"create":  create,
		"inspect": func() *http.Request { return httptest.NewRequest("GET", "/v1.41/images/busybox:latest/json", nil) },
		"tag": func() *http.Request {
			return httptest.NewRequest("POST", "/v1.41/images/busybox:latest/tag?repo=mine&tag=1", nil)
		},
		"build": build,
	}
	for _, tc := range []struct {
		name  string
		lines []string
		seen  bool
	}{
		{"given, not settled yet", []string{"busybox"}, false},
		{"given, settled on it", []string{"busybox", "docker.io/library/busybox:latest\tsha256:shared"}, false},
		{"given, settled on it, id without its algorithm", []string{"busybox:latest\tshared"}, false},
		{"given, then replaced by a pull", []string{"busybox", "busybox\tsha256:evil"}, true},
		{"given, then the request failed", []string{"busybox", "busybox\t-"}, true},
		{"moved back onto it later", []string{"busybox\tsha256:evil", "busybox"}, false},
		{"another name", []string{"busybox2", "busybox2\tsha256:shared"}, true},
	} {
		write(tc.lines...)
		for what, req := range requests {
			err := f.Check(context.Background(), req())
			var refusal *Refusal
			switch {
			case tc.seen && err != nil:
				t.Errorf("%s: %s: got %v, want it allowed", tc.name, what, err)
			case !tc.seen && !errors.As(err, &refusal):
				t.Errorf("%s: %s: got %v, want it refused", tc.name, what, err)
			case !tc.seen && what != "build" && (refusal.Status != http.StatusNotFound || !strings.Contains(refusal.Message, "No such image: busybox:latest")):
				t.Errorf("%s: %s: got %+v, want 404 No such image, so that the CLI pulls", tc.name, what, refusal)
			case !tc.seen && what == "build" && !strings.Contains(refusal.Message, "docker pull busybox:latest"):
				t.Errorf("%s: %s: got %+v, want a refusal saying to pull", tc.name, what, refusal)
			}
		}
	}
	// Nor by the id of the image such a name points at.
	write("planted", "planted\tsha256:abc123")
	for _, ref := range []string{"sha256:abc123", "abc123", "abc1"} {
		if !f.othersName(ref, "sha256:abc123") {
			t.Errorf("%s: the image another job's name points at, by its id, was seen", ref)
		}
	}
	if f.othersName("otherimage:1", "sha256:abc123") {
		t.Errorf("another name of that image was hidden")
	}
	// Its own record does not hide a name from the job itself.
	write()
	own := filepath.Join(self+".docker-proxy", givenNamesFile(EngineDocker))
	if err := os.MkdirAll(filepath.Dir(own), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(own, []byte("busybox:latest\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := f.Check(context.Background(), create()); err != nil {
		t.Errorf("the job's own given name: got %v, want it allowed", err)
	}
	// The same for prepare, which asks with the id it found.
	job := &backends.Job{BuildsDir: self}
	write("busybox", "busybox\tsha256:shared")
	if other, given := GivenByAnotherJob(job, EngineDocker, "busybox:latest", "shared"); !given || other != "r2/8" {
		t.Errorf("prepare: got %q, %v, want job 8's", other, given)
	}
	if _, given := GivenByAnotherJob(job, EngineDocker, "busybox:latest", "sha256:pulled"); given {
		t.Errorf("prepare: a name a pull replaced counts as another job's")
	}
	if _, given := GivenByAnotherJob(job, EnginePodman, "busybox:latest", "shared"); given {
		t.Errorf("prepare: the docker record was read for podman")
	}
}

// Once the engine has answered, a name the job gave is settled on the
// image it points at, or on none.
func TestGivenNamesSettleOnTheirImage(t *testing.T) {
	dir := testBuildsDir(t)
	names := filepath.Join(t.TempDir(), givenNamesFile(EngineDocker))
	f, err := NewFilter(Config{BuildsDir: dir, Labels: jobLabels, NamesFile: names}, fakeUpstream{})
	if err != nil {
		t.Fatal(err)
	}
	// The fake engine does not tag: the new name stays missing.
	if err := f.Check(context.Background(), httptest.NewRequest("POST", "/v1.41/images/busybox/tag?repo=newname&tag=1", nil)); err != nil {
		t.Fatal(err)
	}
	if err := f.Check(context.Background(), httptest.NewRequest("POST", "/v1.41/images/busybox/tag?repo=ownbuilt&tag=1", nil)); err != nil {
		t.Fatal(err)
	}
	lines, err := readLines(names)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"newname:1", "newname:1\t-", "ownbuilt:1", "ownbuilt:1\tsha256:own"}; !slices.Equal(lines, want) {
		t.Errorf("got %q, want %q", lines, want)
	}
}

// Buildah preprocesses a Dockerfile named *.in with cpp, whose #include
// the guard cannot follow: refused on Podman.
func TestPodmanRefusesPreprocessedDockerfiles(t *testing.T) {
	for _, podman := range []bool{true, false} {
		f, err := NewFilter(Config{BuildsDir: testBuildsDir(t), Labels: jobLabels, SpoolDir: t.TempDir(), Podman: podman}, fakeUpstream{})
		if err != nil {
			t.Fatal(err)
		}
		req := httptest.NewRequest("POST", "/v1.41/build?dockerfile=Dockerfile.IN", strings.NewReader(dockerfileTar("FROM busybox\n")))
		req.Header.Set("Content-Type", "application/x-tar")
		_, err = f.CheckHold(context.Background(), req)
		var refusal *Refusal
		refused := errors.As(err, &refusal) && strings.Contains(refusal.Message, "C preprocessor")
		if refused != podman {
			t.Errorf("podman=%v: got %v", podman, err)
		}
	}
}
