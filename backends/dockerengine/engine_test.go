package dockerengine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"sort"
	"strings"
	"sync"
	"testing"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/api/types/registry"
	"github.com/docker/docker/api/types/volume"
	"github.com/docker/docker/client"
	"github.com/docker/docker/errdefs"
	"github.com/sirupsen/logrus"
	logtest "github.com/sirupsen/logrus/hooks/test"

	"github.com/berthci/berth/backends"
	"github.com/berthci/berth/config"
)

// fakeAPI is an engine that only knows the calls a test overrides; any
// other call panics on the nil embedded interface, which flags a call the
// test did not expect.
type fakeAPI struct {
	API

	mu  sync.Mutex
	log []string // calls in order, e.g. "remove container c1"

	containers       []container.Summary
	containerListErr error
	containerRemove  map[string]error
	networks         []network.Summary
	networkListErr   error
	networkRemove    map[string]error
	volumes          []*volume.Volume
	volumeListErr    error
	volumeRemove     map[string]error
	listFilters      []string

	// images on the host, by reference.
	images     map[string]image.InspectResponse
	inspectErr error
	// pulls maps a reference to the JSON stream its pull returns, or to
	// pullErr when it is not there.
	pulls    map[string]string
	pullErr  error
	pullOpts map[string]image.PullOptions

	attachErr error
	// execErr is what exec create returns; stageMode is the stage-mode
	// label inspect reports.
	execErr   error
	stageMode string
}

func (f *fakeAPI) record(format string, args ...any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.log = append(f.log, fmt.Sprintf(format, args...))
}

func (f *fakeAPI) calls(prefix string) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, c := range f.log {
		if strings.HasPrefix(c, prefix) {
			out = append(out, c)
		}
	}
	return out
}

func (f *fakeAPI) ContainerList(ctx context.Context, opts container.ListOptions) ([]container.Summary, error) {
	f.record("list containers")
	f.mu.Lock()
	f.listFilters = append(f.listFilters, opts.Filters.Get("label")...)
	f.mu.Unlock()
	return f.containers, f.containerListErr
}

func (f *fakeAPI) ContainerRemove(ctx context.Context, id string, opts container.RemoveOptions) error {
	f.record("remove container %s force=%v", id, opts.Force)
	return f.containerRemove[id]
}

func (f *fakeAPI) NetworkList(ctx context.Context, opts network.ListOptions) ([]network.Summary, error) {
	f.record("list networks")
	return f.networks, f.networkListErr
}

func (f *fakeAPI) NetworkRemove(ctx context.Context, id string) error {
	f.record("remove network %s", id)
	return f.networkRemove[id]
}

func (f *fakeAPI) VolumeList(ctx context.Context, opts volume.ListOptions) (volume.ListResponse, error) {
	f.record("list volumes")
	return volume.ListResponse{Volumes: f.volumes}, f.volumeListErr
}

func (f *fakeAPI) VolumeRemove(ctx context.Context, id string, force bool) error {
	f.record("remove volume %s", id)
	return f.volumeRemove[id]
}

func (f *fakeAPI) ImageInspect(ctx context.Context, ref string, _ ...client.ImageInspectOption) (image.InspectResponse, error) {
	f.record("inspect %s", ref)
	if f.inspectErr != nil {
		return image.InspectResponse{}, f.inspectErr
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	img, ok := f.images[ref]
	if !ok {
		return image.InspectResponse{}, errdefs.NotFound(fmt.Errorf("no such image: %s", ref))
	}
	return img, nil
}

func (f *fakeAPI) ImagePull(ctx context.Context, ref string, opts image.PullOptions) (io.ReadCloser, error) {
	f.record("pull %s", ref)
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.pullOpts == nil {
		f.pullOpts = map[string]image.PullOptions{}
	}
	f.pullOpts[ref] = opts
	stream, ok := f.pulls[ref]
	if !ok {
		return nil, f.pullErr
	}
	if !strings.Contains(stream, `"error"`) {
		if f.images == nil {
			f.images = map[string]image.InspectResponse{}
		}
		f.images[ref] = image.InspectResponse{ID: "sha256:pulled" + ref}
	}
	return io.NopCloser(strings.NewReader(stream)), nil
}

func (f *fakeAPI) ContainerAttach(ctx context.Context, id string, opts container.AttachOptions) (types.HijackedResponse, error) {
	f.record("attach %s", id)
	return types.HijackedResponse{}, f.attachErr
}

func (f *fakeAPI) ContainerExecCreate(ctx context.Context, id string, opts container.ExecOptions) (container.ExecCreateResponse, error) {
	f.record("exec %s", id)
	return container.ExecCreateResponse{}, f.execErr
}

func (f *fakeAPI) ContainerInspect(ctx context.Context, id string) (container.InspectResponse, error) {
	f.record("inspect container %s", id)
	return container.InspectResponse{Config: &container.Config{Labels: map[string]string{backends.LabelStageMode: f.stageMode}}}, nil
}

// newTestEngine returns an engine on api whose log entries the returned
// hook collects.
func newTestEngine(t *testing.T, api API) (*Engine, *logtest.Hook) {
	t.Helper()
	log, hook := logtest.NewNullLogger()
	log.SetLevel(logrus.DebugLevel)
	e, err := New(api, config.Default().Docker, Options{}, log)
	if err != nil {
		t.Fatal(err)
	}
	return e, hook
}

func newNullLogger() logrus.FieldLogger {
	log, _ := logtest.NewNullLogger()
	return log
}

func testJob() *backends.Job {
	return &backends.Job{ID: 101, ProjectID: 7, ProjectPath: "group/app", Runner: "ci-1", Backend: "socket"}
}

func TestCleanupTreatsGoneAsRemoved(t *testing.T) {
	api := &fakeAPI{
		containers: []container.Summary{{ID: "c-gone"}, {ID: "c-removing"}, {ID: "c-ok"}},
		containerRemove: map[string]error{
			"c-gone":     errdefs.NotFound(errors.New("no such container")),
			"c-removing": errdefs.Conflict(errors.New("removal of container c-removing is already in progress")),
		},
		networks:      []network.Summary{{ID: "n-gone", Name: "berth-ci-1-101"}, {ID: "n-ok"}},
		networkRemove: map[string]error{"n-gone": errdefs.NotFound(errors.New("no such network"))},
		volumes:       []*volume.Volume{{Name: "v-gone"}, {Name: "v-ok"}},
		volumeRemove:  map[string]error{"v-gone": errdefs.NotFound(errors.New("no such volume"))},
	}
	e, _ := newTestEngine(t, api)
	if err := e.Cleanup(context.Background(), testJob()); err != nil {
		t.Fatalf("got %v, want no error", err)
	}
	sort.Strings(api.listFilters)
	if want := []string{"berth.job.id=101", "berth.runner=ci-1"}; !reflect.DeepEqual(api.listFilters, want) {
		t.Errorf("got label filters %v, want %v", api.listFilters, want)
	}
	if got := api.calls("remove container"); len(got) != 3 {
		t.Errorf("got %v, want all three containers removed", got)
	}
	for _, c := range api.calls("remove container") {
		if !strings.HasSuffix(c, "force=true") {
			t.Errorf("got %q, want a forced removal", c)
		}
	}
}

func TestCleanupKeepsGoingAndJoinsErrors(t *testing.T) {
	containerErr := errors.New("device busy")
	networkErr := errdefs.Conflict(errors.New("network has active endpoints"))
	volumeErr := errors.New("volume in use")
	api := &fakeAPI{
		containers:      []container.Summary{{ID: "c1", Names: []string{"/berth-ci-1-101-build"}}, {ID: "c2"}},
		containerRemove: map[string]error{"c1": containerErr},
		networks:        []network.Summary{{ID: "n1", Name: "berth-ci-1-101"}, {ID: "n2"}},
		networkRemove:   map[string]error{"n1": networkErr},
		volumes:         []*volume.Volume{{Name: "v1"}, {Name: "v2"}},
		volumeRemove:    map[string]error{"v2": volumeErr},
	}
	e, _ := newTestEngine(t, api)
	err := e.Cleanup(context.Background(), testJob())
	for _, want := range []error{containerErr, networkErr, volumeErr} {
		if !errors.Is(err, want) {
			t.Errorf("got %v, want it to include %v", err, want)
		}
	}
	if !cerrdefs.IsConflict(err) {
		t.Errorf("got %v, want the network conflict reachable through errors.As", err)
	}
	for _, prefix := range []string{"remove container c2", "remove network n2", "remove volume v1"} {
		if len(api.calls(prefix)) != 1 {
			t.Errorf("got calls %v, want %q despite the other failures", api.log, prefix)
		}
	}
}

func TestCleanupRemovesContainersBeforeNetworksAndVolumes(t *testing.T) {
	api := &fakeAPI{
		containers: []container.Summary{{ID: "c1"}, {ID: "c2"}, {ID: "c3"}},
		networks:   []network.Summary{{ID: "n1"}},
		volumes:    []*volume.Volume{{Name: "v1"}},
	}
	e, _ := newTestEngine(t, api)
	if err := e.Cleanup(context.Background(), testJob()); err != nil {
		t.Fatalf("got %v, want no error", err)
	}
	lastContainer, firstNetwork, firstVolume := -1, -1, -1
	for i, c := range api.log {
		switch {
		case strings.HasPrefix(c, "remove container"):
			lastContainer = i
		case strings.HasPrefix(c, "remove network") && firstNetwork < 0:
			firstNetwork = i
		case strings.HasPrefix(c, "remove volume") && firstVolume < 0:
			firstVolume = i
		}
	}
	if lastContainer < 0 || firstNetwork < lastContainer || firstVolume < firstNetwork {
		t.Errorf("got calls %v, want containers, then networks, then volumes", api.log)
	}
}

func TestCleanupListFailures(t *testing.T) {
	listErr := errors.New("engine unreachable")
	t.Run("containers", func(t *testing.T) {
		api := &fakeAPI{containerListErr: listErr}
		e, _ := newTestEngine(t, api)
		if err := e.Cleanup(context.Background(), testJob()); !errors.Is(err, listErr) {
			t.Errorf("got %v, want the list error", err)
		}
	})
	t.Run("networks", func(t *testing.T) {
		api := &fakeAPI{networkListErr: listErr, volumes: []*volume.Volume{{Name: "v1"}}}
		e, _ := newTestEngine(t, api)
		if err := e.Cleanup(context.Background(), testJob()); !errors.Is(err, listErr) {
			t.Errorf("got %v, want the list error", err)
		}
		if len(api.calls("remove volume v1")) != 1 {
			t.Errorf("got calls %v, want volumes removed anyway", api.log)
		}
	})
}

const okPull = `{"status":"Pulling from library/alpine","id":"3"}
{"status":"Digest: sha256:abc"}
{"status":"Status: Downloaded newer image for alpine:3"}
`

func TestEnsureImage(t *testing.T) {
	pullFailed := errors.New("manifest unknown")
	local := map[string]image.InspectResponse{"alpine:3": {ID: "sha256:local"}}
	tests := map[string]struct {
		policies  []string
		images    map[string]image.InspectResponse
		pulls     map[string]string
		wantID    string
		wantPulls int
		wantErr   string
	}{
		"never, present": {
			policies: []string{config.PullNever}, images: local, wantID: "sha256:local",
		},
		"never, missing": {
			policies: []string{config.PullNever}, wantErr: `pull policy is "never"`,
		},
		"if-not-present, present": {
			policies: []string{config.PullIfNotPresent}, images: local, wantID: "sha256:local",
		},
		"if-not-present, missing": {
			policies: []string{config.PullIfNotPresent}, pulls: map[string]string{"alpine:3": okPull},
			wantID: "sha256:pulledalpine:3", wantPulls: 1,
		},
		"always pulls even when present": {
			policies: []string{config.PullAlways}, images: local, pulls: map[string]string{"alpine:3": okPull},
			wantID: "sha256:pulledalpine:3", wantPulls: 1,
		},
		"always fails": {
			policies: []string{config.PullAlways}, images: local, wantPulls: 1, wantErr: "manifest unknown",
		},
		"always then if-not-present falls back": {
			policies: []string{config.PullAlways, config.PullIfNotPresent}, images: local,
			wantID: "sha256:local", wantPulls: 1,
		},
		"never then always": {
			policies: []string{config.PullNever, config.PullAlways}, pulls: map[string]string{"alpine:3": okPull},
			wantID: "sha256:pulledalpine:3", wantPulls: 1,
		},
		"stream error": {
			policies:  []string{config.PullAlways},
			pulls:     map[string]string{"alpine:3": okPull + `{"errorDetail":{"message":"toomanyrequests: rate limit"},"error":"toomanyrequests: rate limit"}` + "\n"},
			wantPulls: 1, wantErr: "toomanyrequests: rate limit",
		},
		"no policies": {
			wantErr: "no pull policy",
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			images := map[string]image.InspectResponse{}
			for k, v := range tc.images {
				images[k] = v
			}
			api := &fakeAPI{images: images, pulls: tc.pulls, pullErr: pullFailed}
			e, _ := newTestEngine(t, api)
			got, err := e.ensureImage(context.Background(), testJob(), "alpine:3", tc.policies)
			if n := len(api.calls("pull ")); n != tc.wantPulls {
				t.Errorf("got %d pulls, want %d", n, tc.wantPulls)
			}
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Errorf("got %v, want an error containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("got %v, want no error", err)
			}
			if got.ID != tc.wantID {
				t.Errorf("got image %q, want %q", got.ID, tc.wantID)
			}
		})
	}
}

func TestEnsureImageInspectFailureIsNotMissing(t *testing.T) {
	engineErr := errors.New("engine unreachable")
	api := &fakeAPI{inspectErr: engineErr}
	e, _ := newTestEngine(t, api)
	_, err := e.ensureImage(context.Background(), testJob(), "alpine:3", []string{config.PullIfNotPresent, config.PullAlways})
	if !errors.Is(err, engineErr) {
		t.Errorf("got %v, want the inspect error", err)
	}
	if n := len(api.calls("pull ")); n != 0 {
		t.Errorf("got %d pulls, want none", n)
	}
}

func TestEnsureImageStopsOnCancel(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	api := &fakeAPI{images: map[string]image.InspectResponse{"alpine:3": {ID: "sha256:local"}}, pullErr: context.Canceled}
	e, _ := newTestEngine(t, api)
	_, err := e.ensureImage(ctx, testJob(), "alpine:3", []string{config.PullAlways, config.PullIfNotPresent})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("got %v, want the cancel", err)
	}
	if n := len(api.calls("inspect ")); n != 0 {
		t.Errorf("got %d inspects, want the next policy not tried after cancel", n)
	}
}

func TestPullSendsTheRegistryCredential(t *testing.T) {
	job := testJob()
	job.Credentials = []backends.Credential{
		{Registry: "quay.io", Username: "other", Password: "x"},
		{Registry: "https://registry.example.com/", Username: "ci", Password: "s3cret"},
	}
	ref := "registry.example.com/group/app:1"
	api := &fakeAPI{pulls: map[string]string{ref: okPull, "alpine:3": okPull}}
	e, hook := newTestEngine(t, api)
	if err := e.pull(context.Background(), job, ref); err != nil {
		t.Fatalf("got %v, want no error", err)
	}
	auth, err := registry.DecodeAuthConfig(api.pullOpts[ref].RegistryAuth)
	if err != nil {
		t.Fatal(err)
	}
	if auth.Username != "ci" || auth.Password != "s3cret" {
		t.Errorf("got %+v, want the registry.example.com login", auth)
	}
	if err := e.pull(context.Background(), job, "alpine:3"); err != nil {
		t.Fatalf("got %v, want no error", err)
	}
	if got := api.pullOpts["alpine:3"].RegistryAuth; got != "" {
		t.Errorf("got auth %q for docker.io, want none", got)
	}
	for _, entry := range hook.AllEntries() {
		if strings.Contains(entry.Message, "s3cret") {
			t.Errorf("got log %q, want no password", entry.Message)
		}
	}
}

func TestShowPullProgress(t *testing.T) {
	var stream strings.Builder
	write := func(id, status string) {
		msg := map[string]any{"status": status}
		if id != "" {
			msg["id"] = id
		}
		if status == "Downloading" || status == "Extracting" {
			msg["progressDetail"] = map[string]int{"current": 1, "total": 10}
			msg["progress"] = "[=>   ]"
		}
		data, err := json.Marshal(msg)
		if err != nil {
			t.Fatal(err)
		}
		stream.Write(append(data, '\n'))
	}
	write("3", "Pulling from library/alpine") // 1
	for _, layer := range []string{"aaa", "bbb"} {
		write(layer, "Pulling fs layer") // 2, 3
	}
	for range 50 {
		write("aaa", "Downloading") // 4
		write("bbb", "Downloading") // 5
	}
	write("aaa", "Download complete") // 6
	for range 20 {
		write("aaa", "Extracting") // 7
	}
	write("aaa", "Pull complete")                            // 8
	write("bbb", "Download complete")                        // 9
	write("bbb", "Pull complete")                            // 10
	write("", "Digest: sha256:abc")                          // 11
	write("", "Status: Downloaded newer image for alpine:3") // 12
	write("", "")                                            // not shown
	e, hook := newTestEngine(t, &fakeAPI{})
	if err := e.showPullProgress(strings.NewReader(stream.String())); err != nil {
		t.Fatalf("got %v, want no error", err)
	}
	var lines []string
	for _, entry := range hook.AllEntries() {
		lines = append(lines, entry.Message)
	}
	if len(lines) != 12 {
		t.Errorf("got %d lines %q, want 12: one per layer state change", len(lines), lines)
	}
}

func TestShowPullProgressErrors(t *testing.T) {
	tests := map[string]struct {
		stream string
		want   string
	}{
		"error message":   {stream: `{"status":"Pulling"}` + "\n" + `{"error":"pull access denied","errorDetail":{"message":"pull access denied for x"}}`, want: "pull access denied for x"},
		"truncated JSON":  {stream: `{"status":"Pull`, want: "unexpected EOF"},
		"not JSON at all": {stream: `<html>`, want: "invalid character"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			e, _ := newTestEngine(t, &fakeAPI{})
			err := e.showPullProgress(strings.NewReader(tc.stream))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

// inspectWithPorts is image inspect data whose image exposes ports.
func inspectWithPorts(t *testing.T, ports ...string) image.InspectResponse {
	t.Helper()
	exposed := map[string]struct{}{}
	for _, p := range ports {
		exposed[p] = struct{}{}
	}
	data, err := json.Marshal(map[string]any{"Config": map[string]any{"ExposedPorts": exposed}})
	if err != nil {
		t.Fatal(err)
	}
	var img image.InspectResponse
	if err := json.Unmarshal(data, &img); err != nil {
		t.Fatal(err)
	}
	return img
}

func TestHealthPorts(t *testing.T) {
	many := make([]string, 0, 30)
	want20 := make([]int, 0, 20)
	for i := range 30 {
		many = append(many, fmt.Sprintf("%d/tcp", 1000+i))
		if i < 20 {
			want20 = append(want20, 1000+i)
		}
	}
	tests := map[string]struct {
		// env is the service's Env as driver builds it: the job's public
		// variables first, then the service's own.
		env  []string
		img  image.InspectResponse
		want []int
	}{
		"service variable beats job variable": {
			env:  []string{"HEALTHCHECK_TCP_PORT=1111", "OTHER=x", "HEALTHCHECK_TCP_PORT=2222"},
			img:  inspectWithPorts(t, "5432/tcp"),
			want: []int{2222},
		},
		"job variable beats exposed ports": {
			env:  []string{"HEALTHCHECK_TCP_PORT=1111"},
			img:  inspectWithPorts(t, "5432/tcp"),
			want: []int{1111},
		},
		"exposed tcp ports only, sorted": {
			img:  inspectWithPorts(t, "8080/tcp", "53/udp", "5432/tcp", "9/sctp", "6379"),
			want: []int{5432, 6379, 8080},
		},
		"invalid variable falls back": {
			env:  []string{"HEALTHCHECK_TCP_PORT=abc", "HEALTHCHECK_TCP_PORT=70000"},
			img:  inspectWithPorts(t, "5432/tcp"),
			want: []int{5432},
		},
		"variable prefix is not the variable": {
			env:  []string{"HEALTHCHECK_TCP_PORTS=1111", "XHEALTHCHECK_TCP_PORT=2222"},
			img:  inspectWithPorts(t, "5432/tcp"),
			want: []int{5432},
		},
		"at most 20 ports": {
			img:  inspectWithPorts(t, many...),
			want: want20,
		},
		"no image config": {
			want: nil,
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got := healthPorts(backends.Service{Env: tc.env}, tc.img)
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
}

func TestRunWhenTheContainerIsGone(t *testing.T) {
	tests := map[string]*fakeAPI{
		"exec mode":   {execErr: errdefs.NotFound(errors.New("no such container"))},
		"attach mode": {execErr: errdefs.Conflict(errors.New("not running")), stageMode: backends.StageModeAttach, attachErr: errdefs.NotFound(errors.New("no such container"))},
	}
	for name, api := range tests {
		t.Run(name, func(t *testing.T) {
			e, _ := newTestEngine(t, api)
			_, err := e.Run(context.Background(), testJob(), backends.Stage{Name: "build_script"})
			if err == nil || !cerrdefs.IsNotFound(err) || !strings.Contains(err.Error(), "prepare did not finish") {
				t.Errorf("got %v, want a not-found error that points at prepare", err)
			}
			if got, want := api.calls("exec"), []string{"exec berth-ci-1-101-build"}; !reflect.DeepEqual(got, want) {
				t.Errorf("got %v, want %v", got, want)
			}
		})
	}
}

func TestRunPicksTheHelperContainer(t *testing.T) {
	api := &fakeAPI{execErr: errdefs.Conflict(errors.New("not running")), stageMode: backends.StageModeAttach, attachErr: errdefs.NotFound(errors.New("no such container"))}
	e, _ := newTestEngine(t, api)
	_, _ = e.Run(context.Background(), testJob(), backends.Stage{Name: "get_sources", Helper: true})
	e.cfg.UseHelper = false
	_, _ = e.Run(context.Background(), testJob(), backends.Stage{Name: "get_sources", Helper: true})
	want := []string{"attach berth-ci-1-101-helper", "attach berth-ci-1-101-build"}
	if got := api.calls("attach"); !reflect.DeepEqual(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
	want = []string{"exec berth-ci-1-101-helper", "exec berth-ci-1-101-build"}
	if got := api.calls("exec"); !reflect.DeepEqual(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
}
