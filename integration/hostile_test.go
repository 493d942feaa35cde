package integration

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/berthci/berth/integration/runner"
)

// Hostile inputs (shared/spec/hostile-inputs.md) that need a real engine.
// The pure ones are unit tests in config/ and driver/.

func TestHostileSymlinkInBuildsDirDoesNotReachTheHost(t *testing.T) {
	e := newEnv(t, options{})
	canaryDir := filepath.Join(e.root, "canary")
	if err := os.MkdirAll(canaryDir, 0o755); err != nil {
		t.Fatal(err)
	}
	canary := filepath.Join(canaryDir, "keep-me")
	if err := os.WriteFile(canary, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	job := e.job(301)
	job.Script = []string{"ln -s " + canaryDir + " escape", "ln -s / root-link", "ls -la"}
	res := e.run(job)
	requireSuccess(t, res)
	if _, err := os.Stat(canary); err != nil {
		t.Errorf("cleanup followed a symlink the job planted: %v", err)
	}
}

func TestHostileDriverEnvironmentNotForwarded(t *testing.T) {
	e := newEnv(t, options{servicesTTL: "1s"})
	t.Setenv("HOST_SECRET_FOR_TEST", "host-secret-value")
	t.Setenv("GITLAB_RUNNER_TOKEN_LIKE", "glrt-host-token")
	job := e.job(303)
	job.Services = []runner.Image{{Name: busyboxImage, Alias: "svc", Command: []string{"sh", "-c", "while true; do env; sleep 0.5; done"},
		Variables: []runner.Variable{{Key: "HEALTHCHECK_TCP_PORT", Value: "1"}}}}
	job.Variables = []runner.Variable{{Key: "CI_DEBUG_SERVICES", Value: "true", Public: true}}
	job.Script = []string{"env | sort", "sleep 2"}
	res := e.run(job)
	requireSuccess(t, res)
	if !strings.Contains(res.Log, "[service:svc] HOSTNAME=") {
		t.Fatalf("the service's environment is not in the log, so this test proves nothing:\n%s", res.Log)
	}
	for _, secret := range []string{"host-secret-value", "glrt-host-token"} {
		if strings.Contains(res.Log, secret) {
			t.Errorf("the driver's own environment (%s) reached a container:\n%s", secret, res.Log)
		}
	}
}

func TestHostileSigtermDuringPrepareServiceWait(t *testing.T) {
	e := newEnv(t, options{servicesTTL: "5m"})
	job := e.job(304)
	job.Services = []runner.Image{{Name: busyboxImage, Alias: "slow", Command: []string{"sleep", "600"},
		Variables: []runner.Variable{{Key: "HEALTHCHECK_TCP_PORT", Value: "9"}}}}
	ctx := context.Background()
	s, err := e.emu.Start(ctx, job)
	if err != nil {
		t.Fatal(err)
	}
	prepCtx, cancel := context.WithCancel(ctx)
	done := make(chan runner.StageResult, 1)
	go func() { done <- s.Prepare(prepCtx) }()
	waitFor(t, time.Minute, func() bool { return strings.Contains(s.Log(), "Starting service") })
	time.Sleep(time.Second)
	signalled := time.Now()
	cancel()
	r := <-done
	if took := time.Since(signalled); took > 10*time.Second {
		t.Errorf("prepare took %s to stop after SIGTERM", took)
	}
	if r.ExitCode == 0 {
		t.Error("a canceled prepare exited 0")
	}
	if c := s.Cleanup(ctx); c.ExitCode != 0 {
		t.Errorf("cleanup: exit %d\n%s", c.ExitCode, c.Output)
	}
	if left := e.resources(); len(left) > 0 {
		t.Errorf("left after cleanup: %v", left)
	}
}
