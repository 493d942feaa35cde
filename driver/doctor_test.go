package driver

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sirupsen/logrus"

	"github.com/berthci/berth/backends"
	"github.com/berthci/berth/config"
)

// doctoringBackend is a backend whose doctor returns fixed checks, or
// panics.
type doctoringBackend struct {
	backends.Backend
	checks []backends.Check
	panics bool
	opts   *backends.DoctorOptions
}

func (b doctoringBackend) Doctor(_ context.Context, opts backends.DoctorOptions) []backends.Check {
	if b.panics {
		panic("engine exploded")
	}
	if b.opts != nil {
		*b.opts = opts
	}
	return b.checks
}

// plainBackend has no doctor checks.
type plainBackend struct{ backends.Backend }

func writeDoctorConfig(t *testing.T, body string) string {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, "config.toml")
	cfg := fmt.Sprintf("builds_dir = %q\ncache_dir = %q\nrunner_name = \"doc\"\n%s", filepath.Join(dir, "builds"), filepath.Join(dir, "cache"), body)
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

const allBackendsPolicy = `
[policy]
default_backend = "socket"
allowed_backends = ["socket", "dind", "podman"]
`

func checksOf(report *DoctorReport, group string) map[string]DoctorCheck {
	out := map[string]DoctorCheck{}
	for _, c := range report.Checks {
		if c.Backend == group {
			out[c.Name] = c
		}
	}
	return out
}

func TestDoctorReport(t *testing.T) {
	path := writeDoctorConfig(t, allBackendsPolicy+`
[docker]
auth_config = '{"auths": {"registry.example.com": {"auth": "dTpw"}}}'
`)
	var socketOpts backends.DoctorOptions
	open := func(name string, cfg *config.Config, log logrus.FieldLogger) (backends.Backend, error) {
		switch name {
		case "socket":
			return doctoringBackend{checks: []backends.Check{backends.OK("engine", "Docker 27.0")}, opts: &socketOpts}, nil
		case "dind":
			return doctoringBackend{checks: []backends.Check{backends.OK("engine", "Docker 27.0"), backends.Warn("mtu", "1500 over 1400", "set docker.network_mtu = 1400")}}, nil
		}
		return nil, errors.New("this berth was built without the podman backend")
	}
	var out bytes.Buffer
	err := Doctor(context.Background(), &out, DoctorOptions{ConfigPath: path, Explicit: true, Open: open})
	if !errors.Is(err, ErrBuild) {
		t.Errorf("got %v, want a build-class error for the FAIL", err)
	}
	text := out.String()
	for _, want := range []string{
		"\nconfig\n", "\nhost\n", "\ndind\n", "\npodman\n", "\nsocket\n",
		"WARN  mtu ", "fix: set docker.network_mtu = 1400",
		"FAIL  open ", "this berth was built without the podman backend", "fix: fix the [podman] settings",
		"1 FAIL",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("got text without %q:\n%s", want, text)
		}
	}
	if strings.Index(text, "\ndind\n") > strings.Index(text, "\nsocket\n") {
		t.Errorf("got the backends out of order:\n%s", text)
	}
	if len(socketOpts.Credentials) != 1 || socketOpts.Credentials[0].Username != "u" || socketOpts.CheckTimeout != defaultCheckTimeout {
		t.Errorf("got doctor options %+v, want the auth_config login and the default timeout", socketOpts)
	}
}

func TestDoctorJSON(t *testing.T) {
	path := writeDoctorConfig(t, allBackendsPolicy)
	open := func(name string, cfg *config.Config, log logrus.FieldLogger) (backends.Backend, error) {
		return doctoringBackend{checks: []backends.Check{backends.OK("engine", name+" answers")}}, nil
	}
	var out bytes.Buffer
	if err := Doctor(context.Background(), &out, DoctorOptions{ConfigPath: path, Explicit: true, JSON: true, Open: open}); err != nil {
		t.Fatalf("got %v, want no error without a FAIL", err)
	}
	var doc map[string]any
	if err := json.Unmarshal(out.Bytes(), &doc); err != nil {
		t.Fatalf("got output that is not JSON: %v\n%s", err, out.String())
	}
	for _, key := range []string{"berth_version", "config", "checks", "summary", "ok"} {
		if _, ok := doc[key]; !ok {
			t.Errorf("got JSON without %q: %s", key, out.String())
		}
	}
	var report DoctorReport
	if err := json.Unmarshal(out.Bytes(), &report); err != nil {
		t.Fatal(err)
	}
	if !report.OK || !report.Config.Loaded || report.Config.RunnerName != "doc" || strings.Join(report.Config.Backends, ",") != "dind,podman,socket" {
		t.Errorf("got report %+v, want ok with the loaded config's backends", report)
	}
	for _, group := range []string{"dind", "podman", "socket"} {
		if c, ok := checksOf(&report, group)["engine"]; !ok || c.Detail != group+" answers" {
			t.Errorf("got %s checks %+v, want its engine check", group, checksOf(&report, group))
		}
	}
	for _, name := range []string{"file", "auth-config"} {
		if _, ok := checksOf(&report, DoctorGroupConfig)[name]; !ok {
			t.Errorf("got no config check %q", name)
		}
	}
	for _, name := range []string{"builds-dir", "cache-dir", "berth-binary"} {
		if _, ok := checksOf(&report, DoctorGroupHost)[name]; !ok {
			t.Errorf("got no host check %q", name)
		}
	}
	if report.Summary.Fail != 0 || report.Summary.OK < 6 {
		t.Errorf("got summary %+v, want no FAIL", report.Summary)
	}
}

func TestDoctorExitsNonZeroOnlyOnFail(t *testing.T) {
	tests := map[string]struct {
		checks   []backends.Check
		wantFail bool
	}{
		"all OK":  {checks: []backends.Check{backends.OK("engine", "up")}},
		"a WARN":  {checks: []backends.Check{backends.Warn("mtu", "big", "lower it")}},
		"a SKIP":  {checks: []backends.Check{backends.Skip("images", "no engine")}},
		"a FAIL":  {checks: []backends.Check{backends.Fail("engine", "down", "start it")}, wantFail: true},
		"mixed":   {checks: []backends.Check{backends.OK("engine", "up"), backends.Fail("images", "gone", "pull")}, wantFail: true},
		"nothing": {},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			path := writeDoctorConfig(t, "")
			open := func(string, *config.Config, logrus.FieldLogger) (backends.Backend, error) {
				return doctoringBackend{checks: tc.checks}, nil
			}
			var out bytes.Buffer
			err := Doctor(context.Background(), &out, DoctorOptions{ConfigPath: path, Explicit: true, Open: open})
			if (err != nil) != tc.wantFail || err != nil && !errors.Is(err, ErrBuild) {
				t.Errorf("got %v, want a build-class error: %v\n%s", err, tc.wantFail, out.String())
			}
		})
	}
}

func TestDoctorBrokenConfig(t *testing.T) {
	tests := map[string]struct {
		body    string
		wantKey string
	}{
		"unparseable":  {body: "[docker]\nimage = [1\n", wantKey: "docker.image"},
		"bad value":    {body: "[dind]\nmtu = 70000\n", wantKey: "dind.mtu"},
		"unknown key":  {body: "[docker]\nimagee = \"x\"\n", wantKey: "docker.imagee"},
		"wrong type":   {body: "[docker]\npids_limit = \"many\"\n", wantKey: "docker.pids_limit"},
		"bad duration": {body: "[dind]\nready_timeout = \"soon\"\n", wantKey: "dind.ready_timeout"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			path := writeDoctorConfig(t, tc.body)
			open := func(string, *config.Config, logrus.FieldLogger) (backends.Backend, error) {
				t.Error("got a backend opened for a config that does not load")
				return nil, errors.New("unexpected")
			}
			report := RunDoctor(context.Background(), DoctorOptions{ConfigPath: path, Explicit: true, Open: open})
			if report.OK || report.Config.Loaded || len(report.Checks) != 1 {
				t.Fatalf("got %+v, want one failed check and no loaded config", report)
			}
			c := report.Checks[0]
			if c.Backend != DoctorGroupConfig || c.Name != "file" || c.Status != backends.StatusFail || !strings.Contains(c.Detail, tc.wantKey) || c.Fix == "" {
				t.Errorf("got %+v, want a config file FAIL naming %q with a fix", c, tc.wantKey)
			}
		})
	}
}

func TestDoctorMissingConfig(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "none.toml")
	explicit := RunDoctor(context.Background(), DoctorOptions{ConfigPath: missing, Explicit: true})
	if explicit.OK || explicit.Checks[0].Status != backends.StatusFail || !strings.Contains(explicit.Checks[0].Fix, "--config") {
		t.Errorf("named but missing: got %+v, want a FAIL saying how to name the config", explicit.Checks[0])
	}
	open := func(string, *config.Config, logrus.FieldLogger) (backends.Backend, error) {
		return doctoringBackend{checks: []backends.Check{backends.OK("engine", "up")}}, nil
	}
	implicit := RunDoctor(context.Background(), DoctorOptions{ConfigPath: missing, Open: open})
	if c := implicit.Checks[0]; c.Status != backends.StatusWarn || !strings.Contains(c.Detail, "built-in defaults") {
		t.Errorf("default path missing: got %+v, want a WARN about the built-in defaults", c)
	}
}

func TestDoctorOneBackendFailingDoesNotStopTheOthers(t *testing.T) {
	path := writeDoctorConfig(t, allBackendsPolicy)
	open := func(name string, cfg *config.Config, log logrus.FieldLogger) (backends.Backend, error) {
		switch name {
		case "dind":
			return doctoringBackend{panics: true}, nil
		case "podman":
			return plainBackend{}, nil
		}
		return doctoringBackend{checks: []backends.Check{backends.OK("engine", "up")}}, nil
	}
	report := RunDoctor(context.Background(), DoctorOptions{ConfigPath: path, Explicit: true, Open: open})
	if c := checksOf(report, "dind")["checks"]; c.Status != backends.StatusFail || !strings.Contains(c.Detail, "engine exploded") {
		t.Errorf("got dind %+v, want a FAIL naming the crash", c)
	}
	if c := checksOf(report, "podman")["checks"]; c.Status != backends.StatusWarn {
		t.Errorf("got podman %+v, want a WARN for a backend without checks", c)
	}
	if c := checksOf(report, "socket")["engine"]; c.Status != backends.StatusOK {
		t.Errorf("got socket %+v, want its checks despite dind's crash", c)
	}
}
