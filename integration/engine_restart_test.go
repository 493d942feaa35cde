package integration

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/berthci/berth/integration/runner"
)

// stopEngine stops the engine daemon that provision.sh started, by the pid
// it recorded, and waits for it to exit.
func stopEngine(t *testing.T, pidFile string) {
	t.Helper()
	data, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatalf("read %s: %v (run integration/provision.sh)", pidFile, err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil || pid <= 1 {
		t.Fatalf("%s holds %q, not a pid", pidFile, data)
	}
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		t.Fatalf("stop pid %d from %s: %v", pid, pidFile, err)
	}
	waitFor(t, 90*time.Second, func() bool { return errors.Is(syscall.Kill(pid, 0), syscall.ESRCH) })
}

// startEngines runs provision.sh, which starts what is not running.
func startEngines(t *testing.T) {
	t.Helper()
	_, thisFile, _, _ := runtime.Caller(0)
	cmd := exec.Command("bash", filepath.Join(filepath.Dir(thisFile), "provision.sh"))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("restart the engines with provision.sh: %v\n%s", err, out)
	}
}

// TestEngineRestartDuringBuildScript stops the engine under a running
// build_script, on each backend: the stage is a system failure within a
// bound, never a success or a hang; once the engine is back, cleanup
// leaves nothing.
func TestEngineRestartDuringBuildScript(t *testing.T) {
	requireDocker(t)
	for _, backend := range []string{"socket", "dind", "podman"} {
		t.Run(backend, func(t *testing.T) {
			e := backendEnv(t, backend)
			job := e.job(280)
			job.Script = []string{"echo script-started", "sleep 600"}
			ctx := context.Background()
			s, err := e.emu.Start(ctx, job)
			if err != nil {
				t.Fatal(err)
			}
			restarted := false
			t.Cleanup(func() {
				if !restarted {
					startEngines(t)
				}
			})
			if p := s.Prepare(ctx); p.ExitCode != 0 {
				t.Fatalf("prepare: %d\n%s", p.ExitCode, p.Output)
			}
			if g := s.RunStage(ctx, "get_sources"); g.ExitCode != 0 {
				t.Fatalf("get_sources: %d\n%s", g.ExitCode, g.Output)
			}
			done := make(chan runner.StageResult, 1)
			go func() { done <- s.RunStage(ctx, "build_script") }()
			waitFor(t, 2*time.Minute, func() bool { return strings.Contains(s.Log(), "script-started\n") })

			pidFile := "/run/berth-test/dockerd.pid"
			if backend == "podman" {
				pidFile = "/run/berth-test/podman.pid"
			}
			stopEngine(t, pidFile)
			select {
			case r := <-done:
				if r.ExitCode != runner.SystemFailureExitCode {
					t.Errorf("build_script with its engine gone: exit %d, want the system-failure code %d\n%s", r.ExitCode, runner.SystemFailureExitCode, r.Output)
				}
			case <-time.After(2 * time.Minute):
				t.Fatal("build_script hung with its engine gone")
			}

			startEngines(t)
			restarted = true
			if c := s.Cleanup(ctx); c.ExitCode != 0 {
				t.Errorf("cleanup after the engine came back: exit %d\n%s", c.ExitCode, c.Output)
			}
			if left := e.resources(); len(left) > 0 {
				t.Errorf("left in Docker: %v", left)
			}
			if backend == "podman" {
				if left := podmanResources(t, requirePodman(t), e.runner); len(left) > 0 {
					t.Errorf("left in podman: %v", left)
				}
			}
			if t.Failed() {
				t.Logf("job log:\n%s", truncate(s.Log(), 6000))
			}
		})
	}
}
