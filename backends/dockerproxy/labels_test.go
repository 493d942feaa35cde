package dockerproxy

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/mount"

	"github.com/berthci/berth/backends"
)

func checkedCreate(t *testing.T, f *Filter, body string) container.CreateRequest {
	t.Helper()
	req := httptest.NewRequest("POST", "/v1.41/containers/create", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	if err := f.Check(context.Background(), req); err != nil {
		t.Fatal(err)
	}
	data, _ := io.ReadAll(req.Body)
	var cr container.CreateRequest
	if err := json.Unmarshal(data, &cr); err != nil {
		t.Fatal(err)
	}
	return cr
}

// The labels on volumes the engine makes for a container are the job's,
// never the job's choice, and anonymous volumes get them too.
func TestVolumesMadeForAContainerGetTheJobsLabels(t *testing.T) {
	f := newTestFilter(t, testBuildsDir(t))
	cr := checkedCreate(t, f, `{"Image":"busybox","HostConfig":{"Binds":["/anon"],"Mounts":[{"Type":"volume","Target":"/v","VolumeOptions":{"Labels":{"berth.job.id":"99","berth.created":"2000-01-01T00:00:00Z","keep":"1"}}},{"Type":"volume","Target":"/w"}]}}`)
	if len(cr.HostConfig.Binds) != 0 {
		t.Errorf("got binds %q, want the anonymous volume turned into a mount", cr.HostConfig.Binds)
	}
	if len(cr.HostConfig.Mounts) != 3 {
		t.Fatalf("got mounts %+v, want 3", cr.HostConfig.Mounts)
	}
	for _, m := range cr.HostConfig.Mounts {
		if m.Type != mount.TypeVolume || m.VolumeOptions == nil {
			t.Fatalf("got mount %+v, want a volume with options", m)
		}
		for k, v := range jobLabels {
			if m.VolumeOptions.Labels[k] != v {
				t.Errorf("mount %s: got label %s=%q, want %q", m.Target, k, m.VolumeOptions.Labels[k], v)
			}
		}
		if m.VolumeOptions.Labels[backends.LabelCreated] == "2000-01-01T00:00:00Z" {
			t.Errorf("mount %s kept the job's forged %s", m.Target, backends.LabelCreated)
		}
	}
	if cr.HostConfig.Mounts[0].VolumeOptions.Labels["keep"] != "1" {
		t.Error("the job's own label was dropped")
	}
}

func TestRemovingAContainerRemovesItsAnonymousVolumes(t *testing.T) {
	f := newTestFilter(t, testBuildsDir(t))
	req := httptest.NewRequest("DELETE", "/v1.41/containers/own?force=1", nil)
	if err := f.Check(context.Background(), req); err != nil {
		t.Fatal(err)
	}
	if got := req.URL.Query().Get("v"); got != "1" {
		t.Errorf("got v=%q, want v=1", got)
	}
}

// A list answer keeps only the job's own objects, whatever the engine did
// with the label filters (Podman 4.3 ORs them).
func TestListAnswersKeepOnlyTheJobsOwn(t *testing.T) {
	f := newTestFilter(t, testBuildsDir(t))
	own, _ := json.Marshal(jobLabels)
	other, _ := json.Marshal(otherJob)
	for name, tc := range map[string]struct{ body, want string }{
		"containers": {`[{"Id":"a","Labels":` + string(own) + `},{"Id":"b","Labels":` + string(other) + `},{"Id":"c"}]`, `"a"`},
		"volumes":    {`{"Volumes":[{"Name":"a","Labels":` + string(other) + `},{"Name":"b","Labels":` + string(own) + `}],"Warnings":null}`, `"b"`},
		"no volumes": {`{"Volumes":null,"Warnings":null}`, `"Volumes":[]`},
	} {
		t.Run(name, func(t *testing.T) {
			resp := &http.Response{StatusCode: 200, Header: http.Header{}, Body: io.NopCloser(strings.NewReader(tc.body))}
			if err := f.keepOwn(resp); err != nil {
				t.Fatal(err)
			}
			got, _ := io.ReadAll(resp.Body)
			if !bytes.Contains(got, []byte(tc.want)) || bytes.Contains(got, []byte(`"c"`)) || strings.Count(string(got), `"Labels"`) > 1 {
				t.Errorf("got %s, want only the job's own entry (%s)", got, tc.want)
			}
			if resp.ContentLength != int64(len(got)) {
				t.Errorf("got Content-Length %d for %d bytes", resp.ContentLength, len(got))
			}
		})
	}
}

// An image list leaves out the images other projects' jobs built, which
// the job may not inspect, and keeps its project's and shared ones.
func TestImageListLeavesOutOtherProjectsImages(t *testing.T) {
	f := newTestFilter(t, testBuildsDir(t))
	req := httptest.NewRequest("GET", "/v1.41/images/json", nil)
	release, rewrite, err := f.checkForward(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	release()
	if rewrite == nil {
		t.Fatal("the image list answer is forwarded as the engine gives it")
	}
	body := `[{"Id":"own","Labels":{"berth.project.id":"3","berth.runner":"r1","berth.role":"job-created"}},` +
		`{"Id":"foreign","Labels":{"berth.project.id":"4","berth.runner":"r1","berth.role":"job-created"}},` +
		`{"Id":"shared","Labels":null,"RepoTags":["busybox:latest"]},` +
		`{"Id":"stepimage","Labels":{"maintainer":"x"},"RepoTags":[],"RepoDigests":[]}]`
	resp := &http.Response{StatusCode: 200, Header: http.Header{}, Body: io.NopCloser(strings.NewReader(body))}
	if err := rewrite(resp); err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	if !bytes.Contains(got, []byte(`"own"`)) || !bytes.Contains(got, []byte(`"shared"`)) || bytes.Contains(got, []byte(`"foreign"`)) || bytes.Contains(got, []byte(`"stepimage"`)) {
		t.Errorf("got %s, want own and shared only (no other project's image, no unnamed step)", got)
	}
}
