package integration

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// ansiRe matches the job log's colors and section markers' control parts.
var ansiRe = regexp.MustCompile(`\x1b\[[0-9;]*[A-Za-z]|\r`)

// execRepo makes a git work tree for berth exec: the sample
// .gitlab-ci.yml and a tracked file committed, then an uncommitted change
// to that file and an untracked file.
func execRepo(t *testing.T, e *env) string {
	t.Helper()
	sample, err := os.ReadFile(filepath.Join("testdata", "exec", "gitlab-ci.yml"))
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(e.root, "work")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	files := map[string]string{".gitlab-ci.yml": string(sample), "tracked.txt": "committed content\n"}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, args := range [][]string{
		{"init", "-q", "-b", "main"},
		{"add", "-A"},
		{"-c", "user.name=berth", "-c", "user.email=berth@localhost", "commit", "-q", "-m", "sample"},
	} {
		if out, err := exec.Command("git", append([]string{"-C", dir}, args...)...).CombinedOutput(); err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "tracked.txt"), []byte("uncommitted content\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "untracked.txt"), []byte("left out\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// execJob runs `berth exec` in dir and returns its output without colors
// and its exit code.
func execJob(t *testing.T, e *env, dir string, args ...string) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, berthBinary, append([]string{"--config", e.cfgPath, "exec"}, args...)...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	text := ansiRe.ReplaceAllString(string(out), "")
	if testing.Verbose() {
		t.Logf("berth exec %s:\n%s", strings.Join(args, " "), text)
	}
	var exitErr *exec.ExitError
	switch {
	case err == nil:
		return text, 0
	case errors.As(err, &exitErr) && exitErr.ExitCode() > 0:
		return text, exitErr.ExitCode()
	}
	t.Fatalf("berth exec %v: %v\n%s", args, err, text)
	return "", 0
}

func requireLines(t *testing.T, what, out string, wants ...string) {
	t.Helper()
	for _, want := range wants {
		if !strings.Contains(out, want) {
			t.Errorf("%s: output lacks %q:\n%s", what, want, out)
		}
	}
}

// TestExec runs the sample .gitlab-ci.yml's jobs with `berth exec` on each
// backend: a job with a service reached by its alias, global, template and
// job variables, default:, extends:, before_script and after_script, a
// cache and artifacts that land on the local disk, and an unsupported key
// that exec names with what it did instead; a job that uses the first's
// artifacts and cache in a later exec; and a failing job, whose
// after_script still runs and whose exec exits non-zero. Nothing is left
// behind: no labelled resource, no job directory.
func TestExec(t *testing.T) {
	for _, backend := range []string{"socket", "dind", "podman"} {
		t.Run(backend, func(t *testing.T) {
			e := backendEnv(t, backend)
			dir := execRepo(t, e)
			t.Cleanup(func() {
				entries, err := os.ReadDir(filepath.Join(e.root, "builds", e.runner))
				if err != nil && !errors.Is(err, os.ErrNotExist) {
					t.Error(err)
				}
				for _, entry := range entries {
					t.Errorf("job directory left behind: %s", entry.Name())
				}
			})

			out, code := execJob(t, e, dir, "--backend", backend, "build")
			if code != 0 {
				t.Fatalf("exec build: exit %d\n%s", code, out)
			}
			requireLines(t, "exec build", out,
				"Using berth", "with backend "+backend,
				// The unsupported key, its line, and what exec did instead.
				"WARNING: .gitlab-ci.yml:29: retry: exec ran the job once; a failure is not retried",
				"1 untracked file is not in the job", "untracked.txt",
				"plus the uncommitted changes to 1 tracked file", "tracked.txt",
				"default before_script ran",
				"$ echo \"vars $GLOBAL_VAR $TEMPLATE_VAR $JOB_VAR $OVERRIDDEN\"",
				"vars from-global from-template from-job by-job",
				"service says hello from berth service",
				"uncommitted content", "untracked file absent",
				"cache holds 1 run(s)",
				"after_script ran: success",
				"Job succeeded")
			if strings.Contains(out, "committed content\n") && !strings.Contains(out, "uncommitted content") {
				t.Errorf("the job got the committed file, not the work tree's change")
			}

			artifacts := filepath.Join(dir, ".berth-exec", "artifacts", "build")
			requireLines(t, "exec build", out, `Artifacts of job "build" copied to `+artifacts)
			if data, err := os.ReadFile(filepath.Join(artifacts, "out", "artifact.txt")); err != nil || string(data) != "artifact of build on main\n" {
				t.Errorf("got artifact %q, %v; want it on the local disk", data, err)
			}
			if _, err := os.Stat(filepath.Join(artifacts, "out", "scratch.tmp")); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("the excluded artifact is there (%v)", err)
			}
			m := regexp.MustCompile(`Cache "exec-work" saved to (\S+)`).FindStringSubmatch(out)
			if m == nil {
				t.Fatalf("exec build did not say where the cache went:\n%s", out)
			}
			if !strings.HasPrefix(m[1], filepath.Join(e.root, "cache", e.runner)+"/") {
				t.Errorf("got cache %s, want it under the berth config's cache_dir", m[1])
			}
			if _, err := os.Stat(m[1]); err != nil {
				t.Errorf("cache archive: %v", err)
			}

			// A later exec gets the artifacts of the job it needs and the
			// project's cache.
			out, code = execJob(t, e, dir, "--backend", backend, "use-artifacts")
			if code != 0 {
				t.Fatalf("exec use-artifacts: exit %d\n%s", code, out)
			}
			requireLines(t, "exec use-artifacts", out,
				"needs: exec does not run the needed jobs",
				"Downloading artifacts for build (from an earlier berth exec)",
				"artifact of build on main",
				"Successfully extracted cache",
				"restored cache holds 1 run(s)")

			out, code = execJob(t, e, dir, "--backend", backend, "fails")
			if code != 1 {
				t.Errorf("exec fails: got exit %d, want 1\n%s", code, out)
			}
			requireLines(t, "exec fails", out, "about to fail", "after_script after the failure: failed", "ERROR: Job failed: exit code 7")
			if strings.Contains(out, "not reached") || strings.Contains(out, "default before_script ran") {
				t.Errorf("exec fails ran past the failure or inherited default: despite inherit:\n%s", out)
			}

			// The user's work tree is as it was, but for the ignored output.
			status, err := exec.Command("git", "-C", dir, "status", "--porcelain").CombinedOutput()
			if err != nil || string(status) != " M tracked.txt\n?? untracked.txt\n" {
				t.Errorf("git status after exec: %q, %v", status, err)
			}
		})
	}
}

// TestExecReportsBadInput checks the messages for what exec cannot run:
// an unknown job names the runnable ones, malformed YAML names its line,
// and an unknown key names the job and line; all exit 2, before any engine
// work. A backend the berth config's policy does not allow is refused by
// prepare, before anything is created, as the job's failure.
func TestExecReportsBadInput(t *testing.T) {
	e := newEnv(t, options{})
	dir := execRepo(t, e)
	if out, code := execJob(t, e, dir, "--backend", "dind", "fails"); code != 1 || !strings.Contains(out, `backend "dind" is not allowed`) || strings.Contains(out, "about to fail") {
		t.Errorf("refused backend: exit %d\n%s", code, out)
	}
	out, code := execJob(t, e, dir, "deploy")
	if code != 2 || !strings.Contains(out, `no job "deploy"; runnable jobs: build, use-artifacts, fails, sleeps`) {
		t.Errorf("unknown job: exit %d\n%s", code, out)
	}
	out, code = execJob(t, e, dir)
	if code != 2 || !strings.Contains(out, "name the job to run") || !strings.Contains(out, "build, use-artifacts, fails, sleeps") {
		t.Errorf("no job: exit %d\n%s", code, out)
	}
	bad := filepath.Join(dir, "bad.yml")
	if err := os.WriteFile(bad, []byte("job:\n  script:\n    - echo\n  image: [unclosed\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, code := execJob(t, e, dir, "-f", bad, "job"); code != 2 || !regexp.MustCompile(`bad\.yml is not valid YAML: line 4: `).MatchString(out) {
		t.Errorf("malformed YAML: exit %d\n%s", code, out)
	}
	if err := os.WriteFile(bad, []byte("job:\n  script: [echo]\n  artifact:\n    paths: [x]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, code := execJob(t, e, dir, "-f", bad, "job"); code != 2 || !strings.Contains(out, `line 3: job "job": unknown key "artifact"`) {
		t.Errorf("unknown key: exit %d\n%s", code, out)
	}
}

// lockedBuffer is a bytes.Buffer that a test reads while a process writes.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// TestExecInterruptedCleansUp sends SIGTERM to berth exec while the job's
// script sleeps, as Ctrl-C or a killed terminal session would: exec stops
// the stage, runs cleanup, says so and exits non-zero within seconds, and
// newEnv's check finds nothing left.
func TestExecInterruptedCleansUp(t *testing.T) {
	e := newEnv(t, options{})
	dir := execRepo(t, e)
	var out lockedBuffer
	cmd := exec.Command(berthBinary, "--config", e.cfgPath, "exec", "sleeps")
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	waitFor(t, 2*time.Minute, func() bool { return strings.Contains(out.String(), "sleeping now\n") })
	signalled := time.Now()
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		var exitErr *exec.ExitError
		if !errors.As(err, &exitErr) || exitErr.ExitCode() != 1 {
			t.Errorf("got %v, want exit code 1", err)
		}
	case <-time.After(2 * time.Minute):
		_ = cmd.Process.Kill()
		t.Fatalf("berth exec did not end within 2 minutes of SIGTERM:\n%s", out.String())
	}
	if took := time.Since(signalled); took > 45*time.Second {
		t.Errorf("berth exec took %s to stop and clean up", took)
	}
	text := ansiRe.ReplaceAllString(out.String(), "")
	if !strings.Contains(text, "stopped: berth exec was interrupted; the job's containers are removed") || strings.Contains(text, "Job succeeded") {
		t.Errorf("output:\n%s", text)
	}
	entries, _ := os.ReadDir(filepath.Join(e.root, "builds", e.runner))
	if len(entries) > 0 {
		t.Errorf("job directory left behind: %v", entries)
	}
}
