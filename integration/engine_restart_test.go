package integration

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
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

// startEngines runs provision.sh, which starts what is not running. Never
// fresh: that would remove the test images under the tests still running.
func startEngines(t *testing.T) {
	t.Helper()
	_, thisFile, _, _ := runtime.Caller(0)
	cmd := exec.Command("bash", filepath.Join(filepath.Dir(thisFile), "provision.sh"))
	cmd.Env = append(os.Environ(), "BERTH_FRESH=0")
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
			cleanupLeavesNothing(t, e, s, backend)
			if t.Failed() {
				t.Logf("job log:\n%s", truncate(s.Log(), 6000))
			}
		})
	}
}

// lateSocket serves, from `after` on, a unix socket at path, owned by uid
// (-1: this process's), that forwards each connection to the engine socket
// target, as an engine that comes back from a restart.
func lateSocket(t *testing.T, path, target string, uid int, after time.Duration) {
	t.Helper()
	stop := make(chan struct{})
	done := make(chan struct{})
	t.Cleanup(func() {
		close(stop)
		<-done
	})
	go func() {
		defer close(done)
		select {
		case <-stop:
			return
		case <-time.After(after):
		}
		ln, err := net.Listen("unix", path)
		if err != nil {
			t.Errorf("listen on %s: %v", path, err)
			return
		}
		_ = os.Chmod(path, 0o666)
		if uid >= 0 {
			_ = os.Lchown(path, uid, uid)
		}
		go func() {
			<-stop
			ln.Close()
		}()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				up, err := net.Dial("unix", target)
				if err != nil {
					return
				}
				defer up.Close()
				go func() { _, _ = io.Copy(up, c) }()
				_, _ = io.Copy(c, up)
			}()
		}
	}()
}

// TestEngineBackSoonIsRetried starts jobs while the engine's socket is not
// there yet and appears 1.5 s later, within api_retries: the jobs pass.
func TestEngineBackSoonIsRetried(t *testing.T) {
	requireDocker(t)
	for _, backend := range []string{"socket", "podman"} {
		t.Run(backend, func(t *testing.T) {
			dir, err := os.MkdirTemp("", "berth-it-late-")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { os.RemoveAll(dir) })
			if err := os.Chmod(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			late := filepath.Join(dir, "engine.sock")
			var e *env
			if backend == "podman" {
				e = newPodmanEnv(t, options{}, fmt.Sprintf("socket = %q", "unix://"+late))
				lateSocket(t, late, podSocket, podUID, 1500*time.Millisecond)
			} else {
				// The guarded socket's proxy mounts the host socket itself.
				e = newEnv(t, options{extraTOML: fmt.Sprintf("host = %q\n", "unix://"+late)})
				lateSocket(t, late, "/var/run/docker.sock", -1, 1500*time.Millisecond)
			}
			job := e.job(281)
			job.Script = []string{"echo engine-was-back"}
			res := e.run(job)
			requireSuccess(t, res)
			if s, _ := res.Stage("build_script"); !strings.Contains(s.Output, "engine-was-back") {
				t.Errorf("output:\n%s", s.Output)
			}
		})
	}
}
