package backends

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	logtest "github.com/sirupsen/logrus/hooks/test"

	"github.com/berthci/berth/config"
)

func TestNormalizeRegistry(t *testing.T) {
	tests := map[string]struct{ in, want string }{
		"docker hub v1 URL":      {in: "https://index.docker.io/v1/", want: "docker.io"},
		"docker hub registry-1":  {in: "registry-1.docker.io", want: "docker.io"},
		"docker hub web name":    {in: "registry.hub.docker.com", want: "docker.io"},
		"docker.io":              {in: "docker.io", want: "docker.io"},
		"host with port, slash":  {in: "registry.example.com:5000/", want: "registry.example.com:5000"},
		"http URL with path":     {in: "http://registry.example.com/v2/", want: "registry.example.com"},
		"upper case and spaces":  {in: "  HTTPS://Registry.Example.COM ", want: "registry.example.com"},
		"empty":                  {in: "", want: ""},
		"localhost":              {in: "localhost:5000", want: "localhost:5000"},
		"gitlab container regis": {in: "registry.gitlab.com", want: "registry.gitlab.com"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if got := NormalizeRegistry(tc.in); got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}

func TestRegistryOf(t *testing.T) {
	tests := map[string]struct{ in, want string }{
		"official image":   {in: "busybox", want: "docker.io"},
		"hub user image":   {in: "someone/tool:1", want: "docker.io"},
		"explicit hub":     {in: "docker.io/library/busybox", want: "docker.io"},
		"private registry": {in: "registry.example.com/group/app:1", want: "registry.example.com"},
		"registry port":    {in: "localhost:5000/app", want: "localhost:5000"},
		"invalid name":     {in: "--privileged", want: ""},
		"empty":            {in: "", want: ""},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if got := RegistryOf(tc.in); got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}

func TestCredentialFor(t *testing.T) {
	job := &Job{Credentials: []Credential{
		{Registry: "https://index.docker.io/v1/", Username: "hub-first"},
		{Registry: "registry.example.com", Username: "private-first"},
		{Registry: "docker.io", Username: "hub-second"},
		{Registry: "registry.example.com", Username: "private-second"},
		{Registry: "registry.example.com:5000", Username: "private-port"},
	}}
	tests := map[string]struct {
		image    string
		wantUser string
		wantOK   bool
	}{
		"docker hub, first match wins": {image: "busybox", wantUser: "hub-first", wantOK: true},
		"private registry":             {image: "registry.example.com/a/b:1", wantUser: "private-first", wantOK: true},
		"port is part of the registry": {image: "registry.example.com:5000/a/b", wantUser: "private-port", wantOK: true},
		"other registry":               {image: "quay.io/a/b", wantOK: false},
		"invalid image":                {image: "Not An Image", wantOK: false},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got, ok := job.CredentialFor(tc.image)
			if ok != tc.wantOK || got.Username != tc.wantUser {
				t.Errorf("got (%+v, %v), want user %q and %v", got, ok, tc.wantUser, tc.wantOK)
			}
		})
	}
}

type nopBackend struct{}

func (nopBackend) Prepare(context.Context, *Job) error           { return nil }
func (nopBackend) Run(context.Context, *Job, Stage) (int, error) { return 0, nil }
func (nopBackend) Cleanup(context.Context, *Job) error           { return nil }

var errFactory = errors.New("factory refused")

var registerOnce sync.Once

// registerTestBackends registers the test backends once per process, since
// the registry is global and refuses duplicates.
func registerTestBackends(t *testing.T) {
	t.Helper()
	registerOnce.Do(func() {
		Register("test-zeta", func(*config.Config, logrus.FieldLogger) (Backend, error) { return nopBackend{}, nil })
		Register("test-alpha", func(*config.Config, logrus.FieldLogger) (Backend, error) { return nil, errFactory })
	})
}

func TestRegistry(t *testing.T) {
	registerTestBackends(t)
	cfg := config.Default()
	log := logrus.New()

	b, err := Open("test-zeta", cfg, log)
	if err != nil || b == nil {
		t.Errorf("Open(test-zeta): got (%v, %v), want a backend", b, err)
	}
	if _, err := Open("test-alpha", cfg, log); !errors.Is(err, errFactory) {
		t.Errorf("Open(test-alpha): got %v, want the factory's error", err)
	}

	_, err = Open("dind", cfg, log)
	if err == nil {
		t.Fatal("Open(dind): got no error, want one for an unknown backend")
	}
	for _, w := range []string{`"dind"`, "test-alpha", "test-zeta"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("got %q, want it to name %s", err, w)
		}
	}

	names := Names()
	var ours []string
	for _, n := range names {
		if strings.HasPrefix(n, "test-") {
			ours = append(ours, n)
		}
	}
	if want := []string{"test-alpha", "test-zeta"}; !reflect.DeepEqual(ours, want) {
		t.Errorf("got %v, want %v in sorted order", names, want)
	}
}

func TestRegisterTwicePanics(t *testing.T) {
	registerTestBackends(t)
	defer func() {
		if recover() == nil {
			t.Error("got no panic, want one for a duplicate name")
		}
	}()
	Register("test-zeta", func(*config.Config, logrus.FieldLogger) (Backend, error) { return nopBackend{}, nil })
}

func TestJobNamesAndLabels(t *testing.T) {
	created := time.Date(2026, 1, 2, 3, 4, 5, 0, time.FixedZone("CET", 3600))
	job := &Job{ID: 101, ProjectID: 7, ProjectPath: "group/app", Runner: "ci-1", Backend: "socket", Created: created, Timeout: time.Hour}
	if got, want := job.Name(), "berth-ci-1-101"; got != want {
		t.Errorf("Name: got %q, want %q", got, want)
	}
	if got, want := JobName("ci-1", 101), job.Name(); got != want {
		t.Errorf("JobName: got %q, want %q", got, want)
	}
	wantLabels := map[string]string{
		LabelJobID:     "101",
		LabelProjectID: "7",
		LabelProject:   "group/app",
		LabelRunner:    "ci-1",
		LabelCreated:   "2026-01-02T02:04:05Z",
		LabelRole:      "build",
		LabelBackend:   "socket",
		LabelTimeout:   "3600",
	}
	if got := job.Labels("build"); !reflect.DeepEqual(got, wantLabels) {
		t.Errorf("Labels: got %v, want %v", got, wantLabels)
	}
	wantSelector := map[string]string{LabelRunner: "ci-1", LabelJobID: "101"}
	if got := job.Selector(); !reflect.DeepEqual(got, wantSelector) {
		t.Errorf("Selector: got %v, want %v", got, wantSelector)
	}
	for k := range job.Labels("x") {
		if !strings.HasPrefix(k, LabelPrefix) {
			t.Errorf("got label %q, want every label under %q", k, LabelPrefix)
		}
	}
}

func TestAddRecordGroupsByJobAndSkipsForeignLabels(t *testing.T) {
	records := map[int64]*JobRecord{}
	AddRecord(records, "socket", "container a", map[string]string{LabelJobID: "5", LabelCreated: "2026-01-02T03:00:00Z", LabelTimeout: "60"})
	AddRecord(records, "socket", "network n", map[string]string{LabelJobID: "5", LabelCreated: "2026-01-02T02:00:00Z"})
	AddRecord(records, "socket", "container forged", map[string]string{LabelJobID: "../5", LabelCreated: "2026-01-02T02:00:00Z"})
	AddRecord(records, "socket", "container undated", map[string]string{LabelJobID: "6"})
	if len(records) != 1 {
		t.Fatalf("got %d jobs, want 1: %v", len(records), records)
	}
	r := records[5]
	if !r.Created.Equal(time.Date(2026, 1, 2, 2, 0, 0, 0, time.UTC)) || r.Timeout != time.Minute || len(r.Resources) != 2 {
		t.Errorf("got %+v, want the earliest created, the timeout and both resources", r)
	}
}

func TestStageMode(t *testing.T) {
	tests := []struct {
		name                string
		configured          string
		ulimits             bool
		override, imageEntr []string
		want                string
	}{
		{"no entrypoint", StageModeExec, false, nil, nil, StageModeExec},
		{"image entrypoint", StageModeExec, false, nil, []string{"/docker-entrypoint.sh"}, StageModeAttach},
		{"job clears the image's entrypoint", StageModeExec, false, []string{""}, []string{"/docker-entrypoint.sh"}, StageModeExec},
		{"job sets an entrypoint", StageModeExec, false, []string{"/bin/tini", "--"}, nil, StageModeAttach},
		{"admin chose attach", StageModeAttach, false, nil, nil, StageModeAttach},
		{"admin ulimits", StageModeExec, true, nil, nil, StageModeAttach},
	}
	for _, tc := range tests {
		if got := StageMode(tc.configured, tc.ulimits, tc.override, tc.imageEntr); got != tc.want {
			t.Errorf("%s: got %q, want %q", tc.name, got, tc.want)
		}
	}
}

func TestServiceWait(t *testing.T) {
	log, hook := logtest.NewNullLogger()
	w := StartServiceWait(context.Background(), 2, log, func(ctx context.Context, i int) string {
		if i == 1 {
			return "service 1 did not come up"
		}
		return ""
	})
	if err := w.Finish(false); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range hook.Entries {
		got = append(got, fmt.Sprint(e.Data[FieldSectionEdge], ":", e.Message))
	}
	if len(got) != 3 || got[0] != "start:Waiting for services" || got[1] != "<nil>:service 1 did not come up" || !strings.HasPrefix(got[2], "end:done in") {
		t.Errorf("got log %q, want the one warning in the waiting section", got)
	}

	// Abort stops checks that would otherwise run to their timeout, and
	// logs nothing.
	hook.Reset()
	w = StartServiceWait(context.Background(), 1, log, func(ctx context.Context, i int) string {
		<-ctx.Done()
		return "aborted"
	})
	if err := w.Finish(true); err != nil {
		t.Fatal(err)
	}
	if len(hook.Entries) != 0 {
		t.Errorf("got log %v after abort, want none", hook.Entries)
	}
	if err := (*ServiceWait)(nil).Finish(false); err != nil {
		t.Errorf("nil wait: %v", err)
	}
}
