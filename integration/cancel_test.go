package integration

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/berthci/berth/integration/runner"
)

// stallRegistry is a registry address on loopback that accepts connections
// and never answers, so a pull from it hangs until it is canceled.
func stallRegistry(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	return ln.Addr().String()
}

// userProcesses lists the host processes whose command line holds marker.
func userProcesses(marker string) []string {
	var found []string
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		data, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || !strings.Contains(string(data), marker) {
			continue
		}
		found = append(found, e.Name()+": "+strings.ReplaceAll(string(data), "\x00", " "))
	}
	return found
}

// cleanupLeavesNothing runs the runner's cleanup and checks that nothing
// labelled is left in Docker or, for podman, in the podman service.
func cleanupLeavesNothing(t *testing.T, e *env, s *runner.Session, backend string) {
	t.Helper()
	if c := s.Cleanup(context.Background()); c.ExitCode != 0 {
		t.Errorf("cleanup: exit %d\n%s", c.ExitCode, c.Output)
	}
	if left := e.resources(); len(left) > 0 {
		t.Errorf("left in Docker after cleanup: %v", left)
	}
	if backend == "podman" {
		if left := podmanResources(t, requirePodman(t), e.runner); len(left) > 0 {
			t.Errorf("left in podman after cleanup: %v", left)
		}
	}
}

// backendEnv is a test env whose default backend is the named one.
func backendEnv(t *testing.T, backend string) *env {
	t.Helper()
	switch backend {
	case "socket":
		return newEnv(t, options{servicesTTL: "5m"})
	case "dind":
		e := newEnv(t, options{servicesTTL: "5m", policyTOML: "default_backend = \"dind\"\nallowed_backends = [\"dind\"]\n", extraTOML: dindCapabilityCfg})
		return e
	case "podman":
		return newPodmanEnv(t, options{servicesTTL: "5m"})
	}
	t.Fatalf("no backend %q", backend)
	return nil
}

// TestCancelAndKillMatrix interrupts a job at each point, on each backend,
// the way the runner does: SIGTERM to the driver's process group on cancel
// or time-out, SIGKILL when the runner itself is killed. A fresh cleanup
// follows, as the runner's always does. Each case asserts the interrupted
// call's exit, that it stopped within 10 s, that no process of the job's
// script is left on the host, and that nothing labelled is left.
func TestCancelAndKillMatrix(t *testing.T) {
	requireDocker(t)
	stall := stallRegistry(t)
	// get_sources stands for the stages that run in the helper container
	// (they differ only in their script); build_script and after_script
	// for those of the job container.
	points := []string{"prepare: pull", "prepare: service wait", "get_sources", "build_script", "after_script", "cleanup"}
	n := 0
	for _, backend := range []string{"socket", "dind", "podman"} {
		for _, point := range points {
			for _, kill := range []bool{false, true} {
				n++
				sig, marker := "SIGTERM", fmt.Sprintf("%d%03d", 7000+n, os.Getpid()%1000)
				if kill {
					sig = "SIGKILL"
				}
				t.Run(fmt.Sprintf("%s/%s/%s", backend, point, sig), func(t *testing.T) {
					t.Parallel()
					e := backendEnv(t, backend)
					job := e.job(240)
					job.Script = []string{"echo script-started", "sleep " + marker}
					var wait func(s *runner.Session) bool
					switch point {
					case "prepare: pull":
						job.Image = runner.Image{Name: stall + "/berth-it/stalled:latest"}
						wait = func(s *runner.Session) bool { return strings.Contains(s.Log(), "Pulling") }
					case "prepare: service wait":
						job.Services = []runner.Image{{Name: busyboxImage, Alias: "slow", Command: []string{"sleep", marker},
							Variables: []runner.Variable{{Key: "HEALTHCHECK_TCP_PORT", Value: "9"}}}}
						wait = func(s *runner.Session) bool { return strings.Contains(s.Log(), "Starting service") }
					case "get_sources", "build_script":
						wait = func(s *runner.Session) bool { return strings.Contains(s.Log(), "script-started\n") }
					case "after_script":
						job.Script = []string{"true"}
						job.AfterScript = []string{"echo after-started", "sleep " + marker}
						wait = func(s *runner.Session) bool { return strings.Contains(s.Log(), "after-started\n") }
					}
					ctx := context.Background()
					s, err := e.emu.Start(ctx, job)
					if err != nil {
						t.Fatal(err)
					}
					s.KillOnCancel = kill
					// The runner's cleanup always runs; here it also runs when
					// the case stops early.
					cleaned := false
					t.Cleanup(func() {
						if !cleaned {
							s.KillOnCancel = false
							s.Cleanup(ctx)
						}
					})

					interrupt := func(call func(ctx context.Context) runner.StageResult, started func(*runner.Session) bool) runner.StageResult {
						callCtx, cancel := context.WithCancel(ctx)
						defer cancel()
						done := make(chan runner.StageResult, 1)
						go func() { done <- call(callCtx) }()
						if started != nil {
							waitFor(t, 2*time.Minute, func() bool { return started(s) })
							time.Sleep(500 * time.Millisecond)
						} else {
							time.Sleep(300 * time.Millisecond)
						}
						signalled := time.Now()
						cancel()
						r := <-done
						if took := time.Since(signalled); took > 10*time.Second {
							t.Errorf("the driver took %s to exit after %s", took.Round(time.Millisecond), sig)
						}
						return r
					}
					var r runner.StageResult
					switch point {
					case "prepare: pull", "prepare: service wait":
						r = interrupt(s.Prepare, wait)
					case "get_sources":
						if p := s.Prepare(ctx); p.ExitCode != 0 {
							t.Fatalf("prepare: %d\n%s", p.ExitCode, p.Output)
						}
						script := "#!/usr/bin/env bash\necho script-started\nsleep " + marker + "\n"
						r = interrupt(func(ctx context.Context) runner.StageResult { return s.RunStageScript(ctx, "get_sources", script) }, wait)
					case "build_script":
						if p := s.Prepare(ctx); p.ExitCode != 0 {
							t.Fatalf("prepare: %d\n%s", p.ExitCode, p.Output)
						}
						if g := s.RunStage(ctx, "get_sources"); g.ExitCode != 0 {
							t.Fatalf("get_sources: %d\n%s", g.ExitCode, g.Output)
						}
						r = interrupt(func(ctx context.Context) runner.StageResult { return s.RunStage(ctx, "build_script") }, wait)
					case "after_script":
						if p := s.Prepare(ctx); p.ExitCode != 0 {
							t.Fatalf("prepare: %d\n%s", p.ExitCode, p.Output)
						}
						for _, stage := range []string{"get_sources", "build_script"} {
							if g := s.RunStage(ctx, stage); g.ExitCode != 0 {
								t.Fatalf("%s: %d\n%s", stage, g.ExitCode, g.Output)
							}
						}
						r = interrupt(func(ctx context.Context) runner.StageResult { return s.RunStage(ctx, "after_script") }, wait)
					case "cleanup":
						if p := s.Prepare(ctx); p.ExitCode != 0 {
							t.Fatalf("prepare: %d\n%s", p.ExitCode, p.Output)
						}
						r = interrupt(s.Cleanup, nil)
					}
					switch {
					case kill && point == "cleanup" && r.ExitCode != -1 && r.ExitCode != 0:
						t.Errorf("cleanup: exit %d, want killed, or 0 when it finished first\n%s", r.ExitCode, r.Output)
					case kill && point != "cleanup" && r.ExitCode != -1:
						t.Errorf("%s: exit %d, want killed", r.Name, r.ExitCode)
					case !kill && point != "cleanup" && r.ExitCode != runner.BuildFailureExitCode:
						t.Errorf("%s after SIGTERM: exit %d, want the build-failure code %d\n%s", r.Name, r.ExitCode, runner.BuildFailureExitCode, r.Output)
					case !kill && point == "cleanup" && r.ExitCode != 0:
						t.Errorf("cleanup finishes its work when asked to stop: exit %d\n%s", r.ExitCode, r.Output)
					}

					s.KillOnCancel = false
					cleaned = true
					cleanupLeavesNothing(t, e, s, backend)
					for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(200 * time.Millisecond) {
						procs := userProcesses("sleep " + marker)
						if len(procs) == 0 {
							break
						}
						if time.Now().After(deadline) {
							t.Errorf("processes of the job's script outlived cleanup: %v", procs)
							break
						}
					}
					if t.Failed() {
						t.Logf("job log:\n%s", truncate(s.Log(), 6000))
					}
				})
			}
		}
	}
}
