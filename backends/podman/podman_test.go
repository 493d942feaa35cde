//go:build remote

package podman

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containers/podman/v5/pkg/errorhandling"
	"github.com/sirupsen/logrus"

	"github.com/berthci/berth/backends"
	"github.com/berthci/berth/config"
)

func TestErrorClassificationByCode(t *testing.T) {
	cases := map[string]struct {
		err      error
		notFound bool
		gone     bool
	}{
		"nil":             {err: nil, gone: true},
		"404 pointer":     {err: fmt.Errorf("remove: %w", &errorhandling.ErrorModel{ResponseCode: http.StatusNotFound, Message: "x"}), notFound: true, gone: true},
		"404 value":       {err: fmt.Errorf("remove: %w", errorhandling.ErrorModel{ResponseCode: http.StatusNotFound}), notFound: true, gone: true},
		"500 in progress": {err: &errorhandling.ErrorModel{ResponseCode: http.StatusInternalServerError, Message: "no such container"}},
		"plain error":     {err: errors.New("no such container")},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			if got := isNotFound(tc.err); got != tc.notFound {
				t.Errorf("isNotFound: got %v, want %v", got, tc.notFound)
			}
			if got := gone(tc.err); got != tc.gone {
				t.Errorf("gone: got %v, want %v", got, tc.gone)
			}
		})
	}
}

func TestFactoryDoesNotConnectAndMissingSocketSaysWhatToStart(t *testing.T) {
	cfg := config.Default()
	cfg.Podman.Socket = "unix://" + filepath.Join(t.TempDir(), "absent.sock")
	b, err := backends.Open(Name, cfg, logrus.New())
	if err != nil {
		t.Fatalf("factory: %v", err)
	}
	err = b.Cleanup(context.Background(), &backends.Job{ID: 1, Runner: "r"})
	if err == nil || !strings.Contains(err.Error(), "systemctl --user enable --now podman.socket") {
		t.Errorf("missing socket: got %v, want the command to start the service", err)
	}
}

func TestDefaultSocketIsTheUsersRootlessOne(t *testing.T) {
	t.Setenv("XDG_RUNTIME_DIR", "/run/user/4242")
	b, err := New(config.Default(), logrus.New())
	if err != nil {
		t.Fatal(err)
	}
	if want := "/run/user/4242/podman/podman.sock"; b.socketPath != want {
		t.Errorf("socket: got %q, want %q", b.socketPath, want)
	}
}

func TestEnvMapLaterWins(t *testing.T) {
	got := envMap([]string{"A=1", "B=2"}, []string{"A=3", "C=x=y", "=bad"})
	want := map[string]string{"A": "3", "B": "2", "C": "x=y"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("got %v, want %v", got, want)
	}
}

func TestStageContainerSpec(t *testing.T) {
	cfg := config.Default()
	cfg.Docker.Memory = "512m"
	cfg.Docker.CPUs = "2"
	cfg.Docker.PidsLimit = 100
	cfg.Docker.Ulimits = []string{"nofile=1024:2048"}
	cfg.Docker.SecurityOpt = []string{"no-new-privileges"}
	cfg.Podman.Nested = true
	b, err := New(cfg, logrus.New())
	if err != nil {
		t.Fatal(err)
	}
	job := &backends.Job{ID: 7, Runner: "r", Image: backends.Image{Name: "img", Entrypoint: []string{""}}}
	s := b.containerSpec(job, "n", "img", roleBuild, []string{"a"})
	b.applyLimits(s, backends.JobPolicy{NanoCPUs: 1_500_000_000})
	b.nested(s)
	if s.Privileged == nil || *s.Privileged {
		t.Error("container spec is not explicitly unprivileged")
	}
	if got := *s.ResourceLimits.Memory.Limit; got != 512<<20 {
		t.Errorf("memory: got %d, want %d", got, 512<<20)
	}
	if got := *s.ResourceLimits.CPU.Quota; got != 150000 {
		t.Errorf("cpu quota: got %d, want 150000", got)
	}
	if got := s.ResourceLimits.Pids.Limit; got != 100 {
		t.Errorf("pids: got %d, want 100", got)
	}
	if len(s.Rlimits) != 1 || s.Rlimits[0].Type != "nofile" || s.Rlimits[0].Hard != 2048 {
		t.Errorf("rlimits: got %+v", s.Rlimits)
	}
	if s.NoNewPrivileges == nil || !*s.NoNewPrivileges {
		t.Error("no-new-privileges not set")
	}
	if len(s.Devices) != 1 || s.Devices[0].Path != "/dev/fuse" {
		t.Errorf("nested devices: got %+v", s.Devices)
	}
	if aliases := s.Networks[networkName(job)].Aliases; len(aliases) != 1 || aliases[0] != "a" {
		t.Errorf("aliases: got %v", aliases)
	}
}
