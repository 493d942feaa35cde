package integration

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/berthci/berth/integration/runner"
)

// stageModeEnvs are the backends whose stage containers the stage-mode
// tests look at: the Docker engine code (socket and dind share it) and
// podman.
func stageModeEnvs(mode string) map[string]func(t *testing.T) *env {
	docker := ""
	if mode != "" {
		docker = "stage_mode = \"" + mode + "\"\n"
	}
	return map[string]func(t *testing.T) *env{
		"socket": func(t *testing.T) *env { return newEnv(t, options{extraTOML: docker}) },
		"podman": func(t *testing.T) *env { return newPodmanEnv(t, options{extraTOML: docker}) },
	}
}

// TestStageModesKeepDockerExecutorSemantics runs the same job in exec mode
// (the default) and attach mode on socket and podman. In both, the job
// container's filesystem lasts from stage to stage, and what a stage
// leaves running in the background is gone when the next one starts, as
// with the docker executor, whose stage shell is the container's PID 1.
func TestStageModesKeepDockerExecutorSemantics(t *testing.T) {
	for _, mode := range []string{"", "attach"} {
		for backend, newE := range stageModeEnvs(mode) {
			name := backend + "/" + mode
			if mode == "" {
				name = backend + "/exec"
			}
			t.Run(name, func(t *testing.T) {
				e := newE(t)
				job := e.job(140)
				job.Image = runner.Image{Name: busyboxImage}
				job.Script = []string{
					"echo kept > /tmp/berth-stage-file",
					"sleep 1234 &",
					"echo background started",
				}
				job.AfterScript = []string{
					"cat /tmp/berth-stage-file",
					`if ps | grep -v grep | grep -q "sleep 1234"; then echo "background LEFT RUNNING"; exit 1; fi`,
					"echo background gone",
				}
				res := e.run(job)
				requireSuccess(t, res)
				after, _ := res.Stage("after_script")
				if !strings.Contains(after.Output, "kept") || !strings.Contains(after.Output, "background gone") {
					t.Errorf("after_script output:\n%s", after.Output)
				}
			})
		}
	}
}

// TestExecModeStageAfterACanceledStage cancels a build_script, which stops
// the exec-mode container, and then runs after_script in it: the
// container is started again and the stage runs.
func TestExecModeStageAfterACanceledStage(t *testing.T) {
	for backend, newE := range stageModeEnvs("") {
		t.Run(backend, func(t *testing.T) {
			e := newE(t)
			job := e.job(141)
			job.Image = runner.Image{Name: busyboxImage}
			job.Script = []string{"echo sleeping-now", "sleep 300"}
			job.AfterScript = []string{"echo after-cancel-ran"}
			ctx := context.Background()
			s, err := e.emu.Start(ctx, job)
			if err != nil {
				t.Fatal(err)
			}
			defer func() {
				if r := s.Cleanup(ctx); r.ExitCode != 0 {
					t.Errorf("cleanup: exit %d\n%s", r.ExitCode, r.Output)
				}
			}()
			if r := s.Prepare(ctx); r.ExitCode != 0 {
				t.Fatalf("prepare: %d\n%s", r.ExitCode, r.Output)
			}
			if r := s.RunStage(ctx, "get_sources"); r.ExitCode != 0 {
				t.Fatalf("get_sources: %d\n%s", r.ExitCode, r.Output)
			}
			runCtx, cancel := context.WithCancel(ctx)
			done := make(chan runner.StageResult, 1)
			go func() { done <- s.RunStage(runCtx, "build_script") }()
			waitFor(t, 60*time.Second, func() bool { return strings.Contains(s.Log(), "sleeping-now") })
			signalled := time.Now()
			cancel()
			if r := <-done; r.ExitCode != runner.BuildFailureExitCode {
				t.Errorf("canceled build_script exited %d, want %d\n%s", r.ExitCode, runner.BuildFailureExitCode, r.Output)
			}
			if took := time.Since(signalled); took > 10*time.Second {
				t.Errorf("canceled stage took %s to exit", took)
			}
			r := s.RunStage(ctx, "after_script")
			if r.ExitCode != 0 || !strings.Contains(r.Output, "after-cancel-ran") {
				t.Errorf("after_script after the cancel: exit %d\n%s", r.ExitCode, r.Output)
			}
		})
	}
}

// TestExecModeImageWithoutSleep runs a job in an image with a shell but no
// sleep: the exec-mode keepalive idles on its open stdin instead (a busy
// loop would show as a keepalive using the CPU).
func TestExecModeImageWithoutSleep(t *testing.T) {
	e := newEnv(t, options{})
	tag := fmt.Sprintf("berth-it-nosleep:%d", os.Getpid())
	buildImage(t, tag, map[string]string{"Dockerfile": "FROM " + busyboxImage + "\nRUN rm /bin/sleep\n"})
	job := e.job(142)
	job.Image = runner.Image{Name: tag}
	job.Script = []string{"test ! -e /bin/sleep && echo no-sleep-here", "cat /proc/1/stat | cut -d' ' -f14 > /tmp/utime-1", "echo stage-ran"}
	job.AfterScript = []string{"echo utime=$(( $(cut -d' ' -f14 /proc/1/stat) - $(cat /tmp/utime-1) ))"}
	res := e.run(job)
	requireSuccess(t, res)
	s, _ := res.Stage("build_script")
	if !strings.Contains(s.Output, "no-sleep-here") || !strings.Contains(s.Output, "stage-ran") {
		t.Errorf("build_script output:\n%s", s.Output)
	}
	after, _ := res.Stage("after_script")
	var ticks int
	if i := strings.LastIndex(after.Output, "utime="); i < 0 {
		t.Fatalf("after_script output:\n%s", after.Output)
	} else if _, err := fmt.Sscanf(after.Output[i:], "utime=%d", &ticks); err != nil || ticks > 5 {
		t.Errorf("the keepalive (PID 1) used %d clock ticks of CPU between two stages (err %v), want it idle", ticks, err)
	}
}
