// Package backendtest is the conformance suite every backend must pass: the
// same behaviour checks, run against a real engine through the Backend
// interface.
package backendtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/berthci/berth/backends"
)

// Harness is what the suite needs from the backend under test.
type Harness struct {
	// New returns the backend under test.
	New func(t *testing.T) backends.Backend
	// Job returns a job with a fresh id whose images are on the engine. Its
	// image must have a POSIX shell.
	Job func(t *testing.T) *backends.Job
	// Remaining lists the job's resources still on the engine.
	Remaining func(t *testing.T, job *backends.Job) []string
}

// Run runs the conformance suite.
func Run(t *testing.T, h Harness) {
	t.Run("PrepareRunCleanup", func(t *testing.T) { testPrepareRunCleanup(t, h) })
	t.Run("CleanupIsIdempotent", func(t *testing.T) { testCleanupIdempotent(t, h) })
	t.Run("PrepareIsReRunnable", func(t *testing.T) { testPrepareTwice(t, h) })
	t.Run("RunAfterCleanupFails", func(t *testing.T) { testRunAfterCleanup(t, h) })
	t.Run("CancelStopsTheScript", func(t *testing.T) { testCancel(t, h) })
	t.Run("LargeScriptAndOutput", func(t *testing.T) { testLarge(t, h) })
}

func ctxFor(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// prepared prepares a fresh job and registers its cleanup and leak check.
func prepared(t *testing.T, h Harness) (backends.Backend, *backends.Job) {
	t.Helper()
	b, job := h.New(t), h.Job(t)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := b.Cleanup(ctx, job); err != nil {
			t.Errorf("cleanup: %v", err)
		}
		if left := h.Remaining(t, job); len(left) > 0 {
			t.Errorf("resources left after cleanup: %v", left)
		}
	})
	if err := b.Prepare(ctxFor(t), job); err != nil {
		t.Fatalf("prepare: %v", err)
	}
	return b, job
}

type output struct{ stdout, stderr bytes.Buffer }

func run(t *testing.T, ctx context.Context, b backends.Backend, job *backends.Job, name, script string, helper bool) (int, *output, error) {
	t.Helper()
	out := &output{}
	code, err := b.Run(ctx, job, backends.Stage{
		Name: name, Script: []byte(script), Helper: helper, Stdout: &out.stdout, Stderr: &out.stderr,
	})
	return code, out, err
}

func testPrepareRunCleanup(t *testing.T, h Harness) {
	b, job := prepared(t, h)
	ctx := ctxFor(t)
	cases := map[string]struct {
		script   string
		helper   bool
		wantCode int
		stdout   string
		stderr   string
	}{
		"success":           {script: "echo hello-out\n", stdout: "hello-out"},
		"stderr is its own": {script: "echo hello-err >&2\n", stderr: "hello-err"},
		"script failure":    {script: "echo failing\nexit 7\n", wantCode: 7, stdout: "failing"},
		"helper stage":      {script: "echo from-helper\n", helper: true, stdout: "from-helper"},
		"builds dir shared": {script: "mkdir -p " + job.BuildsDir + " && echo x > " + job.BuildsDir + "/f && cat " + job.BuildsDir + "/f\n", stdout: "x"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			code, out, err := run(t, ctx, b, job, "build_script", tc.script, tc.helper)
			if err != nil {
				t.Fatalf("run: %v", err)
			}
			if code != tc.wantCode {
				t.Errorf("exit code: got %d, want %d (stderr %q)", code, tc.wantCode, out.stderr.String())
			}
			if !strings.Contains(out.stdout.String(), tc.stdout) {
				t.Errorf("stdout: got %q, want it to contain %q", out.stdout.String(), tc.stdout)
			}
			if !strings.Contains(out.stderr.String(), tc.stderr) {
				t.Errorf("stderr: got %q, want it to contain %q", out.stderr.String(), tc.stderr)
			}
		})
	}
	// Stages of one job share the job container's filesystem.
	if code, _, err := run(t, ctx, b, job, "step_a", "echo kept > /tmp/berth-state\n", false); err != nil || code != 0 {
		t.Fatalf("write state: code %d, err %v", code, err)
	}
	code, out, err := run(t, ctx, b, job, "step_b", "cat /tmp/berth-state\n", false)
	if err != nil || code != 0 || !strings.Contains(out.stdout.String(), "kept") {
		t.Errorf("state between stages: code %d, err %v, stdout %q", code, err, out.stdout.String())
	}
}

func testCleanupIdempotent(t *testing.T, h Harness) {
	b, job := h.New(t), h.Job(t)
	ctx := ctxFor(t)
	for i := range 2 {
		if err := b.Cleanup(ctx, job); err != nil {
			t.Errorf("cleanup %d of a job that has nothing: %v", i+1, err)
		}
	}
}

func testPrepareTwice(t *testing.T, h Harness) {
	b, job := prepared(t, h)
	if err := b.Prepare(ctxFor(t), job); err != nil {
		t.Fatalf("second prepare: %v", err)
	}
	code, _, err := run(t, ctxFor(t), b, job, "build_script", "true\n", false)
	if err != nil || code != 0 {
		t.Errorf("run after two prepares: code %d, err %v", code, err)
	}
}

func testRunAfterCleanup(t *testing.T, h Harness) {
	b, job := prepared(t, h)
	if err := b.Cleanup(ctxFor(t), job); err != nil {
		t.Fatalf("cleanup: %v", err)
	}
	code, _, err := run(t, ctxFor(t), b, job, "build_script", "true\n", false)
	if err == nil {
		t.Errorf("run after cleanup: got code %d and no error, want an error", code)
	}
}

func testCancel(t *testing.T, h Harness) {
	b, job := prepared(t, h)
	ctx, cancel := context.WithCancel(ctxFor(t))
	out := &output{}
	done := make(chan error, 1)
	go func() {
		_, err := b.Run(ctx, job, backends.Stage{Name: "build_script", Script: []byte("echo started\nsleep 300\n"),
			Stdout: &out.stdout, Stderr: &out.stderr})
		done <- err
	}()
	time.Sleep(2 * time.Second)
	canceled := time.Now()
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("canceled run: got %v, want an error wrapping context.Canceled", err)
		}
		if took := time.Since(canceled); took > 10*time.Second {
			t.Errorf("canceled run returned after %s, want under 10s", took)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("canceled run did not return within 30s")
	}
	// The job environment is usable again: the stopped script left nothing
	// running. (In exec mode the container's keepalive sleeps too.)
	list := `for f in /proc/[0-9]*/cmdline; do tr '\0' ' ' <"$f"; echo; done 2>/dev/null | grep -c '^sleep 300 ' || true` + "\n"
	code, o, err := run(t, ctxFor(t), b, job, "after_script", list, false)
	if err != nil || code != 0 {
		t.Fatalf("run after cancel: code %d, err %v", code, err)
	}
	if strings.TrimSpace(o.stdout.String()) != "0" && strings.TrimSpace(o.stdout.String()) != "" {
		t.Errorf("sleep processes still running after cancel: %q", o.stdout.String())
	}
}

func testLarge(t *testing.T, h Harness) {
	b, job := prepared(t, h)
	var script strings.Builder
	const lines = 20000
	for i := range lines {
		fmt.Fprintf(&script, "echo line-%d\n", i)
	}
	code, out, err := run(t, ctxFor(t), b, job, "build_script", script.String(), false)
	if err != nil || code != 0 {
		t.Fatalf("large script: code %d, err %v", code, err)
	}
	if got := strings.Count(out.stdout.String(), "\n"); got != lines {
		t.Errorf("output lines: got %d, want %d", got, lines)
	}
	if !strings.HasSuffix(out.stdout.String(), fmt.Sprintf("line-%d\n", lines-1)) {
		t.Error("output is missing its end")
	}
}
