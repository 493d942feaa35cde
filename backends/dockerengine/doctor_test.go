package dockerengine

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"syscall"
	"testing"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/api/types/registry"
	"github.com/docker/docker/api/types/system"
	"github.com/docker/docker/client"
	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/berthci/berth/backends"
	"github.com/berthci/berth/config"
)

// fakeDoctorAPI is a daemon for doctor's checks; calls a test does not set
// up panic on the nil embedded interface.
type fakeDoctorAPI struct {
	DoctorAPI

	versionErr error
	version    types.Version
	info       system.Info
	images     map[string]image.InspectResponse
	// registry maps a reference to its digest; others are unknown.
	registry  map[string]string
	distAuths map[string]string
}

func (f *fakeDoctorAPI) ServerVersion(context.Context) (types.Version, error) {
	return f.version, f.versionErr
}
func (f *fakeDoctorAPI) Info(context.Context) (system.Info, error) { return f.info, nil }
func (f *fakeDoctorAPI) ClientVersion() string                     { return f.version.APIVersion }
func (f *fakeDoctorAPI) DaemonHost() string                        { return "tcp://docker.example:2376" }
func (f *fakeDoctorAPI) NetworkInspect(context.Context, string, network.InspectOptions) (network.Inspect, error) {
	return network.Inspect{Options: map[string]string{"com.docker.network.driver.mtu": "1500"}}, nil
}
func (f *fakeDoctorAPI) ImageInspect(_ context.Context, ref string, _ ...client.ImageInspectOption) (image.InspectResponse, error) {
	if img, ok := f.images[ref]; ok {
		return img, nil
	}
	return image.InspectResponse{}, cerrdefs.ErrNotFound.WithMessage("no such image: " + ref)
}
func (f *fakeDoctorAPI) DistributionInspect(_ context.Context, ref, auth string) (registry.DistributionInspect, error) {
	if f.distAuths == nil {
		f.distAuths = map[string]string{}
	}
	f.distAuths[ref] = auth
	sum, ok := f.registry[ref]
	if !ok {
		return registry.DistributionInspect{}, errors.New("manifest unknown")
	}
	return registry.DistributionInspect{Descriptor: ocispec.Descriptor{Digest: digest.Digest("sha256:" + sum)}}, nil
}

func statuses(checks []backends.Check) map[string]backends.Status {
	out := map[string]backends.Status{}
	for _, c := range checks {
		out[c.Name] = c.Status
	}
	return out
}

func find(t *testing.T, checks []backends.Check, name string) backends.Check {
	t.Helper()
	for _, c := range checks {
		if c.Name == name {
			return c
		}
	}
	t.Fatalf("no check %q in %+v", name, checks)
	return backends.Check{}
}

func TestDoctorDeadEngineSkipsWhatNeedsIt(t *testing.T) {
	api := &fakeDoctorAPI{versionErr: syscall.ECONNREFUSED}
	cfg := config.Default().Docker
	cfg.RunnerBinary = ""
	spec := DoctorSpec{Runner: "r", Backend: "socket", Images: backends.NeededJobImages(cfg)}
	checks := Doctor(context.Background(), api, cfg, spec, backends.DoctorOptions{})
	got := statuses(checks)
	if got["engine"] != backends.StatusFail {
		t.Errorf("got engine %s, want FAIL", got["engine"])
	}
	for _, name := range []string{"api-version", "rootless", "helper-image", "job-image", "runner-binary", "mtu", "engine-disk"} {
		if got[name] != backends.StatusSkip {
			t.Errorf("got %s %s, want SKIP with the engine down", name, got[name])
		}
	}
	if fix := find(t, checks, "engine").Fix; !strings.Contains(fix, "start the Docker daemon") {
		t.Errorf("got engine fix %q, want how to start the daemon", fix)
	}
}

func TestDoctorAPIVersion(t *testing.T) {
	tests := map[string]struct {
		server string
		want   backends.Status
	}{
		"tested":        {server: "1.41", want: backends.StatusOK},
		"newer":         {server: "1.47", want: backends.StatusOK},
		"old but works": {server: "1.30", want: backends.StatusWarn},
		"too old":       {server: "1.23", want: backends.StatusFail},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			api := &fakeDoctorAPI{version: types.Version{Version: "x", APIVersion: tc.server, MinAPIVersion: "1.12"}}
			checks := Doctor(context.Background(), api, config.Default().Docker, DoctorSpec{Runner: "r", Backend: "socket"}, backends.DoctorOptions{})
			if got := find(t, checks, "api-version"); got.Status != tc.want {
				t.Errorf("got %s (%s), want %s", got.Status, got.Detail, tc.want)
			}
		})
	}
}

func TestDoctorImages(t *testing.T) {
	api := &fakeDoctorAPI{
		version:  types.Version{Version: "20.10.24", APIVersion: "1.41"},
		images:   map[string]image.InspectResponse{"present:1": {ID: "sha256:0123456789abcdef", Size: 1 << 20}},
		registry: map[string]string{"registry.example.com/pullable:1": "abc"},
	}
	images := []backends.NeededImage{
		{Check: "present", Ref: "present:1", Key: "docker.image", Policies: []string{"if-not-present"}},
		{Check: "pullable", Ref: "registry.example.com/pullable:1", Key: "docker.image", Policies: []string{"always"}},
		{Check: "unknown", Ref: "registry.example.com/unknown:1", Key: "docker.image", Policies: []string{"always"}},
		{Check: "never", Ref: "registry.example.com/pullable:1", Key: "docker.image", Policies: []string{"never"}},
		{Check: "unused", Unused: "not used"},
	}
	creds := []backends.Credential{{Registry: "registry.example.com", Username: "u", Password: "p"}}
	checks := Doctor(context.Background(), api, config.Default().Docker, DoctorSpec{Runner: "r", Backend: "socket", Images: images}, backends.DoctorOptions{Credentials: creds})
	want := map[string]backends.Status{"present": backends.StatusOK, "pullable": backends.StatusOK, "unknown": backends.StatusFail, "never": backends.StatusFail, "unused": backends.StatusOK}
	got := statuses(checks)
	for name, status := range want {
		if got[name] != status {
			t.Errorf("got %s %s (%s), want %s", name, got[name], find(t, checks, name).Detail, status)
		}
	}
	auth := api.distAuths["registry.example.com/pullable:1"]
	raw, err := base64.URLEncoding.DecodeString(auth)
	var doc registry.AuthConfig
	if err != nil || json.Unmarshal(raw, &doc) != nil || doc.Username != "u" || doc.Password != "p" {
		t.Errorf("got registry auth %q (%s), want the login of registry.example.com", auth, raw)
	}
}

func TestDoctorRootlessJudgement(t *testing.T) {
	api := &fakeDoctorAPI{
		version: types.Version{Version: "24.0.0", APIVersion: "1.43"},
		info:    system.Info{SecurityOptions: []string{"name=seccomp,profile=builtin", "name=rootless"}},
	}
	var gotRootless bool
	spec := DoctorSpec{Runner: "r", Backend: "socket", Rootless: func(name string, rootless bool, detail string) backends.Check {
		gotRootless = rootless
		return backends.OK(name, detail)
	}}
	checks := Doctor(context.Background(), api, config.Default().Docker, spec, backends.DoctorOptions{})
	if c := find(t, checks, "rootless"); !gotRootless || !strings.Contains(c.Detail, "rootless") || !strings.Contains(c.Detail, "seccomp profile=builtin") {
		t.Errorf("got rootless %v, detail %q; want rootless with the security options", gotRootless, c.Detail)
	}
}
