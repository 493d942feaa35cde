package dockerproxy

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/berthci/berth/backends"
)

func TestJobSocketIsOutsideTheBuildsDir(t *testing.T) {
	job := &backends.Job{BuildsDir: "/builds/r1/42"}
	if got := JobSocket(job); strings.HasPrefix(got, job.BuildsDir+"/") || got != "/builds/r1/42.docker-proxy/docker.sock" {
		t.Errorf("got %q, want /builds/r1/42.docker-proxy/docker.sock, next to the builds dir", got)
	}
}

func TestCommandCarriesTheJobLabelsInOrder(t *testing.T) {
	job := &backends.Job{ID: 42, ProjectID: 7, Runner: "r1", BuildsDir: "/builds/r1/42", Backend: "podman"}
	cmd := Command(job, Ceilings{Memory: 1 << 30, PidsLimit: 100}, Settings{LocalRegistries: []string{"127.0.0.1:5000"}, PublicPorts: true})
	if cmd[0] != "docker-proxy" || !slices.Contains(cmd, "--builds-dir") || !slices.Contains(cmd, "berth.role="+RoleJobCreated) || !slices.Contains(cmd, "berth.job.id=42") {
		t.Fatalf("command lacks the job's settings: %q", cmd)
	}
	if !slices.Contains(cmd, "--memory") || !slices.Contains(cmd, "1073741824") || !slices.Contains(cmd, "--pids-limit") {
		t.Errorf("command lacks the ceilings: %q", cmd)
	}
	if again := Command(job, Ceilings{Memory: 1 << 30, PidsLimit: 100}, Settings{LocalRegistries: []string{"127.0.0.1:5000"}, PublicPorts: true}); !slices.Equal(cmd, again) {
		t.Errorf("command is not stable: %q then %q", cmd, again)
	}
}

func TestHostsLocalNames(t *testing.T) {
	path := filepath.Join(t.TempDir(), "hosts")
	data := "127.0.0.1\tlocalhost\n127.0.1.1 vm VM.example # the host\n::1 ip6-localhost runsc\n192.0.2.7 public\n# 127.0.0.1 commented\n169.254.169.254 metadata.internal\n"
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
	got := HostsLocalNames(path)
	want := []string{"vm", "vm.example", "ip6-localhost", "runsc", "metadata.internal"}
	if !slices.Equal(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}
	if HostsLocalNames(filepath.Join(t.TempDir(), "none")) != nil {
		t.Error("a missing file gave names")
	}
}
