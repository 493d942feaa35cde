package localjob

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

// scriptEnv is a job's builds and cache directories in a temp dir, where
// the stage scripts run with the host's bash, as they would in a
// container that mounts them at the same paths.
type scriptEnv struct {
	t       *testing.T
	s       *scripts
	project string
}

func newScriptEnv(t *testing.T, job *Job) *scriptEnv {
	t.Helper()
	if _, err := exec.LookPath("bash"); err != nil {
		t.Skip("no bash on this machine")
	}
	root := t.TempDir()
	builds := filepath.Join(root, "builds", "r", "7")
	project := filepath.Join(builds, "group", "app")
	if err := os.MkdirAll(project, 0o755); err != nil {
		t.Fatal(err)
	}
	s := &scripts{
		job: job,
		vars: []Variable{
			{Key: "CI_PROJECT_DIR", Value: project},
			{Key: "TRICKY", Value: "it's \"$HOME\" `date` \\ \n second line"},
		},
		projectDir: project,
		cacheDir:   filepath.Join(root, "cache", "r", "1099511627776"),
		hostname:   "berth-r-7",
		stagingDir: filepath.Join(builds, ".berth-exec", "artifacts"),
		depsDir:    filepath.Join(builds, ".berth-exec", "dependencies"),
	}
	return &scriptEnv{t: t, s: s, project: project}
}

// run runs a stage's script and returns its output and exit code.
func (e *scriptEnv) run(stage, status string) (string, int) {
	e.t.Helper()
	script := e.s.script(stage, status)
	if script == "" {
		e.t.Fatalf("stage %s has no script", stage)
	}
	path := filepath.Join(e.t.TempDir(), "script")
	if err := os.WriteFile(path, []byte(script), 0o700); err != nil {
		e.t.Fatal(err)
	}
	out, err := exec.Command("bash", path).CombinedOutput()
	var exitErr *exec.ExitError
	switch {
	case err == nil:
		return string(out), 0
	case errors.As(err, &exitErr):
		return string(out), exitErr.ExitCode()
	}
	e.t.Fatalf("run %s: %v", stage, err)
	return "", 0
}

func (e *scriptEnv) write(files ...string) {
	e.t.Helper()
	for _, f := range files {
		p := filepath.Join(e.project, f)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			e.t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(f), 0o644); err != nil {
			e.t.Fatal(err)
		}
	}
}

func TestStepScriptExitStatusEchoAndAfterScript(t *testing.T) {
	job := &Job{
		BeforeScript: []string{`echo "before: $TRICKY"`},
		Script:       []string{"echo FROM_STEP=kept >> \"$GITLAB_ENV\"", "echo first", "(exit 3)", "echo never-printed"},
		AfterScript:  []string{`echo "status=$CI_JOB_STATUS from_step=$FROM_STEP"`, "exit 9"},
	}
	e := newScriptEnv(t, job)
	out, code := e.run(stageStepScript, "")
	if code != 3 {
		t.Errorf("got exit code %d, want the failing command's 3\n%s", code, out)
	}
	for _, want := range []string{
		ansiBoldGreen + `$ echo "before: $TRICKY"` + ansiReset,
		"before: it's \"$HOME\" `date` \\ \n second line",
		ansiBoldGreen + "$ echo first" + ansiReset, "first\n",
		ansiBoldGreen + "$ (exit 3)" + ansiReset,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "never-printed") {
		t.Errorf("the script went on after a failed command:\n%s", out)
	}
	out, code = e.run(stageAfterScript, "failed")
	if code != 9 || !strings.Contains(out, "Running after script...") || !strings.Contains(out, "status=failed from_step=kept") {
		t.Errorf("after_script: got exit %d, output:\n%s\nwant CI_JOB_STATUS and the GITLAB_ENV variable", code, out)
	}
}

func TestMultiLineCommandIsCollapsed(t *testing.T) {
	e := newScriptEnv(t, &Job{Script: []string{"for i in 1 2; do\n  echo item-$i\ndone"}})
	out, code := e.run(stageStepScript, "")
	if code != 0 || !strings.Contains(out, "$ for i in 1 2; do # collapsed multi-line command") || !strings.Contains(out, "item-2") {
		t.Errorf("got exit %d, output:\n%s", code, out)
	}
}

func TestSkippedStages(t *testing.T) {
	e := newScriptEnv(t, &Job{Script: []string{"true"}, Caches: []Cache{{Key: "k", Paths: []string{"x"}, Policy: "push", When: "on_success"}}})
	for _, stage := range []string{stageRestoreCache, stageDownloadArtifacts, stageAfterScript, stageArchiveCacheFailure, stageUploadSuccess, stageUploadFailure} {
		if s := e.s.script(stage, "success"); s != "" {
			t.Errorf("stage %s: got a script, want it skipped:\n%s", stage, s)
		}
	}
	if e.s.script(stageArchiveCache, "") == "" {
		t.Errorf("archive_cache of a push cache after success: got no script")
	}
}

func TestCacheRoundTrip(t *testing.T) {
	job := &Job{Script: []string{"true"}, Caches: []Cache{
		{Key: "deps/main", Paths: []string{"vendor/", "**/*.log", "missing/"}, When: "on_success", Policy: "pull-push"},
	}}
	e := newScriptEnv(t, job)
	e.write("vendor/a.txt", "vendor/sub/b.txt", "logs/deep/x.log", "top.log", "other.txt", "-dash.log", "it's here.log")
	out, code := e.run(stageArchiveCache, "")
	if code != 0 || !strings.Contains(out, "Created cache") || !strings.Contains(out, "WARNING: missing/: no matching files") {
		t.Fatalf("archive_cache: exit %d\n%s", code, out)
	}
	file := e.s.cacheFile("deps/main")
	if !strings.HasPrefix(filepath.Base(filepath.Dir(file)), "deps_main-") {
		t.Errorf("got cache dir %s, want the key's '/' replaced and a hash added", file)
	}
	if err := os.RemoveAll(e.project); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(e.project, 0o755); err != nil {
		t.Fatal(err)
	}
	out, code = e.run(stageRestoreCache, "")
	if code != 0 || !strings.Contains(out, "Successfully extracted cache") {
		t.Fatalf("restore_cache: exit %d\n%s", code, out)
	}
	got := listFiles(t, e.project)
	want := []string{"-dash.log", "it's here.log", "logs/deep/x.log", "top.log", "vendor/a.txt", "vendor/sub/b.txt"}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("got restored files %v, want %v", got, want)
	}

	// A key without a cache falls back, and says so when nothing is there.
	e.s.job.Caches = []Cache{{Key: "feature", FallbackKeys: []string{"deps/main"}, Paths: []string{"vendor/"}, Policy: "pull"}}
	if out, code := e.run(stageRestoreCache, ""); code != 0 || !strings.Contains(out, "Using the cache of fallback key deps/main") {
		t.Errorf("fallback: exit %d\n%s", code, out)
	}
	e.s.job.Caches = []Cache{{Key: "none-yet", Paths: []string{"vendor/"}, Policy: "pull"}}
	if out, code := e.run(stageRestoreCache, ""); code != 0 || !strings.Contains(out, "WARNING: no cache for key none-yet yet") {
		t.Errorf("missing cache: exit %d\n%s", code, out)
	}
}

func TestCacheThatCannotBeSavedIsAWarning(t *testing.T) {
	e := newScriptEnv(t, &Job{Script: []string{"true"}, Caches: []Cache{{Key: "k", Paths: []string{"a"}, Policy: "push"}}})
	e.write("a")
	// A file where the key's directory should be.
	if err := os.MkdirAll(e.s.cacheDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(e.s.cacheDir, "k"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	out, code := e.run(stageArchiveCache, "")
	if code != 0 || !strings.Contains(out, "WARNING: Failed to create cache") {
		t.Errorf("got exit %d, want 0 and a warning:\n%s", code, out)
	}
}

func TestUploadArtifactsCollectsGlobs(t *testing.T) {
	e := newScriptEnv(t, &Job{Script: []string{"true"}, Artifacts: &Artifacts{Paths: []string{"dist/", "**/*.txt", "[ab].bin", "nothing-here/"}, When: "on_success"}})
	e.write("dist/app", "dist/sub/lib", "docs/readme.txt", "a.bin", "c.bin", "src/.hidden/notes.txt", "ignored.md")
	out, code := e.run(stageUploadSuccess, "")
	if code != 0 || !strings.Contains(out, "WARNING: nothing-here/: no matching files") {
		t.Fatalf("exit %d\n%s", code, out)
	}
	got := listFiles(t, e.s.stagingDir)
	want := []string{"a.bin", "dist/app", "dist/sub/lib", "docs/readme.txt", "src/.hidden/notes.txt"}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("got staged files %v, want %v", got, want)
	}
}

func TestUntrackedFilesAreCollected(t *testing.T) {
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("no git on this machine")
	}
	e := newScriptEnv(t, &Job{Script: []string{"true"}, Artifacts: &Artifacts{Untracked: true, When: "always"}})
	e.write("tracked.txt")
	for _, args := range [][]string{{"init", "-q"}, {"add", "tracked.txt"}} {
		if out, err := exec.Command("git", append([]string{"-C", e.project}, args...)...).CombinedOutput(); err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
	}
	e.write("build/out.bin", "new.txt")
	if out, code := e.run(stageUploadFailure, ""); code != 0 {
		t.Fatalf("exit %d\n%s", code, out)
	}
	if got := strings.Join(listFiles(t, e.s.stagingDir), ","); got != "build/out.bin,new.txt" {
		t.Errorf("got staged files %s, want the untracked ones only", got)
	}
}

func TestDownloadArtifactsRestoresDependencies(t *testing.T) {
	e := newScriptEnv(t, &Job{Script: []string{"true"}})
	e.s.deps = []string{"build/linux"}
	dep := filepath.Join(e.s.depsDir, artifactDirName("build/linux"), "dist")
	if err := os.MkdirAll(dep, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dep, "app"), []byte("bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	out, code := e.run(stageDownloadArtifacts, "")
	if code != 0 || !strings.Contains(out, "Downloading artifacts for build/linux") {
		t.Fatalf("exit %d\n%s", code, out)
	}
	if data, err := os.ReadFile(filepath.Join(e.project, "dist", "app")); err != nil || string(data) != "bin" {
		t.Errorf("got %q, %v; want the dependency's artifact in the project", data, err)
	}
}

func TestGlobWordQuotesAllButGlobs(t *testing.T) {
	dir := t.TempDir()
	for _, f := range []string{"a b/x.txt", "a b/y.log", "it's/z.txt", "$HOME/q.txt", "p1.o", "p2.o", "p3.c"} {
		p := filepath.Join(dir, f)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	tests := map[string]string{
		"a b/*.txt":   "a b/x.txt",
		"it's/*":      "it's/z.txt",
		"$HOME/*.txt": "$HOME/q.txt",
		"p[12].o":     "p1.o p2.o",
		"p?.{o,c}":    "p1.o p2.o p3.c",
		"**/*.txt":    "$HOME/q.txt a b/x.txt it's/z.txt",
		"[unclosed":   "[unclosed",
		"x;rm -rf ~":  "x;rm -rf ~",
	}
	for pattern, want := range tests {
		cmd := exec.Command("bash", "-c", "shopt -s globstar; for f in "+globWord(pattern)+`; do if [ -e "$f" ] || [ "$f" = "$0" ]; then printf '%s\n' "$f"; fi; done`, pattern)
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%s: %v\n%s", pattern, err, out)
		}
		if got := strings.ReplaceAll(strings.TrimSpace(string(out)), "\n", " "); got != want {
			t.Errorf("%s (as %s): got %q, want %q", pattern, globWord(pattern), got, want)
		}
	}
}

// listFiles lists the regular files under dir, relative and sorted.
func listFiles(t *testing.T, dir string) []string {
	t.Helper()
	var files []string
	err := filepath.Walk(dir, func(p string, info os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		if info.Mode().IsRegular() {
			rel, _ := filepath.Rel(dir, p)
			files = append(files, filepath.ToSlash(rel))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(files)
	return files
}
