package dockerproxy

import (
	"context"
	"errors"
	"net/http/httptest"
	"strings"
	"testing"
)

// A build removes its intermediate containers, also on failure, and takes
// cached steps only from the images this job's builds made and the
// cachefrom images it may use; on Podman it runs without the cache. An
// image labelled as the project's, or even as the job's, that no build of
// the job reported is not a cache source: labels can be forged.
func TestBuildCacheIsBoundedToTheJobsBuilds(t *testing.T) {
	tests := map[string]struct {
		built             []string // what the job's builds reported
		podman            bool
		query             string
		wantCache, wantNo string // cachefrom, nocache
		wantMsg           string
	}{
		"the job's own build":                      {built: []string{"10b0b0b0b0b0"}, query: "rm=0", wantCache: `["sha256:10b0b0b0b0b0aaaa"]`},
		"and a shared cachefrom image":             {built: []string{"10b0b0b0b0b0"}, query: `cachefrom=["busybox"]`, wantCache: `["busybox","sha256:10b0b0b0b0b0aaaa"]`},
		"another project's image refused":          {query: `cachefrom=["foreignbuilt:1"]`, wantMsg: "another project's job"},
		"the job's labels, not built by the job":   {wantNo: "1"},
		"reported built, without the job's labels": {built: []string{"own"}, wantNo: "1"},
		"podman: no cache":                         {podman: true, query: `cachefrom=["busybox"]`, wantNo: "1"},
	}
	// And on Podman no RUN step, which runs in the host's network there.
	t.Run("podman: RUN refused", func(t *testing.T) {
		f, err := NewFilter(Config{BuildsDir: testBuildsDir(t), Labels: jobLabels, SpoolDir: t.TempDir(), Podman: true}, fakeUpstream{})
		if err != nil {
			t.Fatal(err)
		}
		req := httptest.NewRequest("POST", "/v1.41/build", strings.NewReader(dockerfileTar("FROM busybox\nRUN true\n")))
		req.Header.Set("Content-Type", "application/x-tar")
		var refusal *Refusal
		if _, err := f.CheckHold(context.Background(), req); !errors.As(err, &refusal) || !strings.Contains(refusal.Message, "RUN in a build is not available on this Podman") {
			t.Fatalf("got %v, want RUN refused", err)
		}
	})
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			f, err := NewFilter(Config{BuildsDir: testBuildsDir(t), Labels: jobLabels, SpoolDir: t.TempDir(), Podman: tc.podman}, fakeUpstream{})
			if err != nil {
				t.Fatal(err)
			}
			for _, id := range tc.built {
				f.noteBuilt(id)
			}
			target := "/v1.41/build"
			if tc.query != "" {
				target += "?" + strings.ReplaceAll(strings.ReplaceAll(tc.query, `"`, "%22"), " ", "%20")
			}
			req := httptest.NewRequest("POST", target, strings.NewReader(dockerfileTar("FROM busybox\nCOPY Dockerfile /d\n")))
			req.Header.Set("Content-Type", "application/x-tar")
			release, err := f.CheckHold(context.Background(), req)
			if tc.wantMsg != "" {
				var refusal *Refusal
				if !errors.As(err, &refusal) || !strings.Contains(refusal.Message, tc.wantMsg) {
					t.Fatalf("got %v, want a refusal containing %q", err, tc.wantMsg)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer release()
			q := req.URL.Query()
			if q.Get("rm") != "1" || q.Get("forcerm") != "1" {
				t.Errorf("rm=%q forcerm=%q, want both 1", q.Get("rm"), q.Get("forcerm"))
			}
			if got := q.Get("cachefrom"); got != tc.wantCache {
				t.Errorf("cachefrom=%q, want %q", got, tc.wantCache)
			}
			if got := q.Get("nocache"); got != tc.wantNo {
				t.Errorf("nocache=%q, want %q", got, tc.wantNo)
			}
		})
	}
}

// On Podman a base image's ONBUILD triggers would run with RUN steps in
// the host's network: the base must be in the store, and have none. On
// any engine a FROM by id is checked as a FROM by name.
func TestBuildBaseImages(t *testing.T) {
	full := "sha256:" + strings.Repeat("f", 64)
	for name, tc := range map[string]struct {
		podman     bool
		dockerfile string
		wantMsg    string
	}{
		"podman: a base not in the store":   {podman: true, dockerfile: "FROM notpulled:1\nCOPY Dockerfile /d\n", wantMsg: "pull it first"},
		"podman: a base with ONBUILD":       {podman: true, dockerfile: "FROM onbuild:1\nCOPY Dockerfile /d\n", wantMsg: "has ONBUILD triggers"},
		"podman: a plain base":              {podman: true, dockerfile: "FROM busybox\nCOPY Dockerfile /d\n"},
		"docker: a base not in the store":   {dockerfile: "FROM notpulled:1\n"},
		"docker: a base with ONBUILD":       {dockerfile: "FROM onbuild:1\nCOPY Dockerfile /d\n", wantMsg: "has ONBUILD triggers"},
		"podman: ONBUILD in the history":    {podman: true, dockerfile: "FROM onbuildhistory:1\nCOPY Dockerfile /d\n", wantMsg: "has ONBUILD triggers"},
		"a base the guard cannot pull":      {dockerfile: "FROM unpullable:1\n", wantMsg: "the pull failed: manifest unknown"},
		"another project's image by its id": {dockerfile: "FROM " + full + "\n", wantMsg: "another project's job"},
	} {
		t.Run(name, func(t *testing.T) {
			f, err := NewFilter(Config{BuildsDir: testBuildsDir(t), Labels: jobLabels, SpoolDir: t.TempDir(), Podman: tc.podman}, fakeUpstream{})
			if err != nil {
				t.Fatal(err)
			}
			req := httptest.NewRequest("POST", "/v1.41/build", strings.NewReader(dockerfileTar(tc.dockerfile)))
			req.Header.Set("Content-Type", "application/x-tar")
			release, err := f.CheckHold(context.Background(), req)
			if tc.wantMsg == "" {
				if err != nil {
					t.Fatalf("got %v, want the build forwarded", err)
				}
				release()
				return
			}
			var refusal *Refusal
			if !errors.As(err, &refusal) || !strings.Contains(refusal.Message, tc.wantMsg) {
				t.Fatalf("got %v, want a refusal containing %q", err, tc.wantMsg)
			}
		})
	}
}
