// Package localjob runs one job of a .gitlab-ci.yml on this machine, the
// way gitlab-runner would run it through berth: it resolves the job from
// the file, snapshots the git work tree, and drives berth's own stage
// commands (config, prepare, run for each stage, cleanup) as child
// processes with the environment and job payload the runner gives a custom
// executor.
package localjob

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/berthci/berth/driver"
)

// Options configure one exec.
type Options struct {
	// Binary is the berth executable whose stage commands run the job.
	Binary string
	// Args go before each stage command, such as --config FILE.
	Args []string
	// Dir is a directory in the git work tree to run the job from.
	Dir string
	// File is the .gitlab-ci.yml; empty means the one at the work tree's
	// root.
	File string
	// Job names the job.
	Job string
	// Backend, when set, is the job's BERTH_BACKEND, over the file's.
	Backend string
	// Vars are KEY=VALUE variables over the file's, as pipeline variables
	// are in GitLab.
	Vars []string
	// ArtifactsDir receives each job's artifacts in a directory named
	// after it; empty means .berth-exec/artifacts in the work tree.
	ArtifactsDir string
	// Stdout and Stderr are the job log.
	Stdout, Stderr io.Writer
	// GracefulKillTimeout is how long a stage gets after SIGTERM before
	// SIGKILL; 0 means 10 s.
	GracefulKillTimeout time.Duration
	// Version names berth in the log.
	Version string
}

// defaultTimeout is GitLab's default job timeout.
const defaultTimeout = time.Hour

// cleanupTimeout bounds the cleanup stage, which runs on a fresh context.
const cleanupTimeout = 5 * time.Minute

// prepareAttempts is how often the runner tries prepare after system
// failures, prepareRetryDelay apart.
const (
	prepareAttempts   = 3
	prepareRetryDelay = 3 * time.Second
)

// Run runs the job and returns nil when it succeeded. A failed script is a
// *driver.Error carrying its exit code; an infrastructure failure is of
// class driver.ErrSystem, an interrupted job of driver.ErrCanceled. A file
// or command line exec cannot run is an unclassified error.
func Run(ctx context.Context, o Options) error {
	if o.Stdout == nil {
		o.Stdout = io.Discard
	}
	if o.Stderr == nil {
		o.Stderr = io.Discard
	}
	if o.GracefulKillTimeout == 0 {
		o.GracefulKillTimeout = defaultGracefulKillTimeout
	}
	overrides, err := parseVars(o.Vars)
	if err != nil {
		return err
	}
	if o.Backend != "" {
		overrides = append(overrides, Variable{Key: "BERTH_BACKEND", Value: o.Backend})
	}
	tree, err := OpenWorkTree(ctx, o.Dir)
	if err != nil {
		return err
	}
	file := o.File
	if file == "" {
		file = filepath.Join(tree.Root, ".gitlab-ci.yml")
	}
	p, err := ParseFile(file)
	if err != nil {
		return err
	}
	if rel, err := filepath.Rel(tree.Root, file); err == nil && !strings.HasPrefix(rel, "..") {
		p.Name = rel
	}
	workDir, err := os.MkdirTemp("", "berth-exec-")
	if err != nil {
		return fmt.Errorf("make a temporary directory: %w", err)
	}
	defer os.RemoveAll(workDir)
	snap, err := tree.Snapshot(ctx, workDir)
	if err != nil {
		return err
	}
	e := &execution{o: o, tree: tree, snap: snap, workDir: workDir, started: time.Now()}
	if err := e.newIdentity(); err != nil {
		return err
	}
	e.job, err = p.Resolve(o.Job, Context{
		Predefined: e.predefined(),
		Overrides:  overrides,
		Files:      snap.Files,
		ReadFile:   snap.ReadFile,
	})
	if err != nil {
		return err
	}
	e.artifactsDir = o.ArtifactsDir
	if e.artifactsDir == "" {
		e.artifactsDir = filepath.Join(tree.Root, ".berth-exec", "artifacts")
	}
	e.fileName = p.Name
	e.introduce()
	return e.run(ctx)
}

// parseVars reads --var KEY=VALUE flags.
func parseVars(flags []string) ([]Variable, error) {
	var out []Variable
	for _, kv := range flags {
		key, value, ok := strings.Cut(kv, "=")
		if !ok || !variableNameRe().MatchString(key) {
			return nil, fmt.Errorf("--var %q: want KEY=VALUE with a name of letters, digits and '_'", kv)
		}
		out = append(out, Variable{Key: key, Value: value})
	}
	return out, nil
}

// execution is one job in flight.
type execution struct {
	o        Options
	tree     *WorkTree
	snap     *Snapshot
	job      *Job
	fileName string
	workDir  string
	started  time.Time

	id, projectID int64
	token         string

	// Known after config.
	config     driver.ConfigOutput
	projectDir string
	vars       []Variable
	env        []string

	artifactsDir string
	deps         []string
}

// newIdentity picks a fresh job id, unique among concurrent execs (and far
// above GitLab's job ids), and a job token.
func (e *execution) newIdentity() error {
	var b [24]byte
	if _, err := rand.Read(b[:]); err != nil {
		return fmt.Errorf("make a job id: %w", err)
	}
	e.id = 1_000_000_000_000_000 + int64(binary.BigEndian.Uint64(b[:8])%8_000_000_000_000_000)
	e.projectID = e.tree.ProjectID()
	e.token = "berth-exec-" + hex.EncodeToString(b[8:])
	return nil
}

func (e *execution) printf(format string, args ...any) {
	fmt.Fprintf(e.o.Stdout, format+"\n", args...)
}

func (e *execution) warnf(format string, args ...any) {
	fmt.Fprintf(e.o.Stdout, ansiYellow+"WARNING: "+format+ansiReset+"\n", args...)
}

// introduce prints what is about to run and every note.
func (e *execution) introduce() {
	host, _ := os.Hostname()
	e.printf("Running with berth %s (berth exec): job %q of %s", e.o.Version, e.job.Name, e.fileName)
	e.printf("  on %s in %s", host, e.tree.Root)
	for _, n := range e.job.Notes {
		if n.Line > 0 {
			e.warnf("%s:%d: %s: %s", e.fileName, n.Line, n.Key, n.Text)
		} else {
			e.warnf("%s: %s: %s", e.fileName, n.Key, n.Text)
		}
	}
	short := e.tree.Head[:8]
	ref := "branch " + e.tree.Branch
	if e.tree.Branch == "" {
		ref = "detached HEAD"
		if e.tree.Tag != "" {
			ref = "tag " + e.tree.Tag
		}
	}
	if e.snap.Dirty {
		e.printf("Source: commit %s (%s) plus the uncommitted changes to %s (as commit %s): %s",
			short, ref, plural(len(e.snap.Changed), "tracked file"), e.snap.Commit[:8], listSome(e.snap.Changed))
	} else {
		e.printf("Source: commit %s (%s)", short, ref)
	}
	if n := len(e.snap.Untracked); n > 0 {
		e.warnf("%s not in the job (exec copies committed and changed tracked files only; git add a file to include it): %s",
			plural(n, "untracked file is"), listSome(e.snap.Untracked))
	}
}

func plural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	if base, ok := strings.CutSuffix(what, " is"); ok {
		return fmt.Sprintf("%d %ss are", n, base)
	}
	return fmt.Sprintf("%d %ss", n, what)
}

func listSome(names []string) string {
	if len(names) > 10 {
		return strings.Join(names[:10], ", ") + fmt.Sprintf(" and %d more", len(names)-10)
	}
	return strings.Join(names, ", ")
}

// run drives the stages and always calls cleanup once config has run.
func (e *execution) run(ctx context.Context) (err error) {
	if err := e.configure(ctx); err != nil {
		return err
	}
	defer func() {
		if cerr := e.cleanup(ctx); cerr != nil && err == nil {
			err = cerr
		}
	}()
	timeout := e.job.Timeout
	if timeout == 0 {
		timeout = defaultTimeout
	}
	jobCtx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if err := e.prepare(jobCtx); err != nil {
		return e.interrupted(ctx, jobCtx, timeout, err)
	}
	if err := e.stageInputs(jobCtx); err != nil {
		return e.interrupted(ctx, jobCtx, timeout, err)
	}
	jobErr := e.jobStages(jobCtx)
	if jobCtx.Err() != nil {
		return e.interrupted(ctx, jobCtx, timeout, jobErr)
	}
	var code *driver.Error
	switch {
	case jobErr == nil:
		e.printf("%sJob succeeded%s", ansiBoldGreen, ansiReset)
	case errors.As(jobErr, &code) && code.ScriptExitCode != 0:
		e.printf("%sERROR: Job failed: exit code %d%s", ansiBoldRed, code.ScriptExitCode, ansiReset)
	}
	return jobErr
}

// interrupted turns the end of the job's context into the job's error.
func (e *execution) interrupted(ctx, jobCtx context.Context, timeout time.Duration, err error) error {
	switch {
	case ctx.Err() != nil:
		return &driver.Error{Class: driver.ErrCanceled, Err: errors.New("berth exec was interrupted; the job's containers are removed")}
	case jobCtx.Err() != nil:
		return &driver.Error{Class: driver.ErrBuild, Err: fmt.Errorf("job failed: execution took longer than %s (the job's timeout); raise timeout: in %s", timeout, e.fileName)}
	}
	return err
}

// configure writes the job payload and calls config; it retries with a
// new job id when another exec took the builds directory first.
func (e *execution) configure(ctx context.Context) error {
	for attempt := 0; ; attempt++ {
		if err := e.writeResponse(); err != nil {
			return err
		}
		e.env = e.baseEnv()
		var stdout bytes.Buffer
		code, err := e.call(ctx, &stdout, e.o.Stderr, "config")
		if err != nil {
			return &driver.Error{Class: driver.ErrSystem, Err: fmt.Errorf("start %s config: %w", e.o.Binary, err)}
		}
		if code != 0 {
			return e.failure("config", code, false)
		}
		if err := json.Unmarshal(bytes.TrimSpace(stdout.Bytes()), &e.config); err != nil || e.config.BuildsDir == "" {
			return &driver.Error{Class: driver.ErrSystem, Err: fmt.Errorf("config printed %q, not the runner's JSON: %v", stdout.String(), err)}
		}
		if err := os.MkdirAll(filepath.Dir(e.config.BuildsDir), 0o755); err != nil {
			return &driver.Error{Class: driver.ErrSystem, Err: fmt.Errorf("create the builds directory: %w; check builds_dir in the berth config", err)}
		}
		// The job's own builds directory is its claim on the job id.
		err = os.Mkdir(e.config.BuildsDir, 0o755)
		if err == nil {
			break
		}
		if !errors.Is(err, fs.ErrExist) || attempt >= 4 {
			return &driver.Error{Class: driver.ErrSystem, Err: fmt.Errorf("create the job's builds directory: %w; check builds_dir in the berth config", err)}
		}
		if err := e.newIdentity(); err != nil {
			return err
		}
	}
	e.projectDir = filepath.Join(e.config.BuildsDir, e.tree.ProjectPath)
	e.vars = e.jobVariables(e.buildsVariables()...)
	e.env = e.baseEnv()
	for k, v := range e.config.JobEnv {
		e.env = append(e.env, k+"="+v)
	}
	return nil
}

// buildsVariables are the predefined variables that config's answer
// decides.
func (e *execution) buildsVariables() []Variable {
	return []Variable{
		{Key: "CI_BUILDS_DIR", Value: e.config.BuildsDir},
		{Key: "CI_PROJECT_DIR", Value: e.projectDir},
		{Key: "CI_REPOSITORY_URL", Value: e.sourceRepo()},
	}
}

func (e *execution) sourceRepo() string {
	return filepath.Join(e.config.BuildsDir, ".berth-exec", "source.git")
}

// prepare calls prepare, again after a system failure, as the runner does.
func (e *execution) prepare(ctx context.Context) (err error) {
	e.section("prepare_executor", `Preparing the "berth" executor`, func() { err = e.prepareAttempts(ctx) })
	return err
}

func (e *execution) prepareAttempts(ctx context.Context) error {
	for attempt := 1; ; attempt++ {
		code, err := e.call(ctx, e.o.Stdout, e.o.Stderr, "prepare")
		if err != nil {
			return &driver.Error{Class: driver.ErrSystem, Err: fmt.Errorf("start %s prepare: %w", e.o.Binary, err)}
		}
		if code == 0 {
			return nil
		}
		if code != systemFailureExitCode || attempt >= prepareAttempts || ctx.Err() != nil {
			return e.failure("prepare", code, false)
		}
		e.warnf("prepare failed with a system failure; trying again in %s (attempt %d of %d)", prepareRetryDelay, attempt+1, prepareAttempts)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(prepareRetryDelay):
		}
	}
}

// stageInputs puts what the stages read into the job's builds directory:
// the work tree's snapshot and the artifacts of the job's dependencies.
func (e *execution) stageInputs(ctx context.Context) error {
	base := filepath.Join(e.config.BuildsDir, ".berth-exec")
	if e.gitStrategy() != "none" {
		if err := e.snap.Publish(ctx, e.sourceRepo(), e.sourceRef(), e.gitDepth()); err != nil {
			return &driver.Error{Class: driver.ErrSystem, Err: err}
		}
	}
	for _, dep := range e.job.Dependencies {
		from := filepath.Join(e.artifactsDir, artifactDirName(dep))
		if info, err := os.Stat(from); err != nil || !info.IsDir() {
			continue
		}
		if _, err := copyTree(from, filepath.Join(base, "dependencies", artifactDirName(dep)), nil); err != nil {
			return &driver.Error{Class: driver.ErrSystem, Err: fmt.Errorf("copy the artifacts of %s into the job: %w", dep, err)}
		}
		e.deps = append(e.deps, dep)
	}
	if err := os.MkdirAll(base, 0o755); err != nil {
		return &driver.Error{Class: driver.ErrSystem, Err: err}
	}
	// A cache another backend saved belongs to its containers' user; the
	// project's cache directory tells whose the next ones are.
	for _, c := range e.job.Caches {
		for _, key := range append([]string{c.Key}, c.FallbackKeys...) {
			dir := filepath.Join(e.config.CacheDir, cacheKeyDir(key))
			if _, err := os.Lstat(dir); err == nil {
				if err := chownTree(dir, e.config.CacheDir); err != nil {
					return &driver.Error{Class: driver.ErrSystem, Err: fmt.Errorf("give the cache of key %s to the cache directory's owner: %w", key, err)}
				}
			}
		}
	}
	if err := chownTree(base, e.config.BuildsDir); err != nil {
		return &driver.Error{Class: driver.ErrSystem, Err: fmt.Errorf("give the job's copy of the repository to the builds directory's owner: %w", err)}
	}
	return nil
}

// sourceRef is the ref the snapshot has in the job's copy of the
// repository, and the one the job fetches it into.
func (e *execution) sourceRef() string {
	if e.tree.Branch == "" && e.tree.Tag != "" {
		return "refs/tags/" + e.tree.Tag
	}
	return "refs/heads/" + e.tree.RefName()
}

func (e *execution) fetchInto() string {
	if e.tree.Branch == "" && e.tree.Tag != "" {
		return "refs/tags/" + e.tree.Tag
	}
	return "refs/remotes/origin/" + e.tree.RefName()
}

func (e *execution) variable(key string) (string, bool) {
	for _, v := range e.vars {
		if v.Key == key {
			return v.Value, true
		}
	}
	return "", false
}

// gitStrategy is GIT_STRATEGY: fetch and clone both make a fresh clone.
func (e *execution) gitStrategy() string {
	v, _ := e.variable("GIT_STRATEGY")
	return v
}

// gitDepth is GIT_DEPTH, else GitLab's default of 20; 0 means all.
func (e *execution) gitDepth() int {
	if v, ok := e.variable("GIT_DEPTH"); ok {
		if n, err := strconv.Atoi(strings.TrimSpace(v)); err == nil && n >= 0 {
			return n
		}
	}
	return 20
}

// jobStages runs the stages in the runner's order: the user's script only
// after the stages before it succeeded, after_script whenever the script
// ran, then cache and artifacts for the job's outcome.
func (e *execution) jobStages(ctx context.Context) error {
	s := &scripts{
		job:        e.job,
		vars:       e.vars,
		projectDir: e.projectDir,
		cacheDir:   e.config.CacheDir,
		hostname:   e.config.Hostname,
		source: source{Repo: e.sourceRepo(), Ref: e.sourceRef(), FetchInto: e.fetchInto(), Commit: e.snap.Commit,
			RefName: e.tree.RefName(), Depth: e.gitDepth(), Strategy: e.gitStrategy()},
		stagingDir: filepath.Join(e.config.BuildsDir, ".berth-exec", "artifacts"),
		depsDir:    filepath.Join(e.config.BuildsDir, ".berth-exec", "dependencies"),
		deps:       e.deps,
	}
	var jobErr error
	for _, stage := range []string{stagePrepare, stageGetSources, stageRestoreCache, stageDownloadArtifacts} {
		if jobErr = e.stage(ctx, s, stage, ""); jobErr != nil {
			break
		}
	}
	if jobErr == nil {
		jobErr = e.stage(ctx, s, stageStepScript, "")
		if ctx.Err() != nil {
			return jobErr
		}
		status := "success"
		if jobErr != nil {
			status = "failed"
		}
		if err := e.stage(ctx, s, stageAfterScript, status); err != nil {
			e.warnf("after_script failed, but the job's result stands: %v", err)
		}
	}
	if ctx.Err() != nil {
		return jobErr
	}
	success := jobErr == nil
	archive, upload := stageArchiveCache, stageUploadSuccess
	if !success {
		archive, upload = stageArchiveCacheFailure, stageUploadFailure
	}
	archiveStart := time.Now()
	cacheErr := e.stage(ctx, s, archive, "")
	if cacheErr == nil {
		e.reportCaches(s, success, archiveStart)
	}
	uploadErr := e.stage(ctx, s, upload, "")
	if uploadErr == nil && e.job.Artifacts.uploadsOn(success) {
		if err := e.collectArtifacts(s.stagingDir); err != nil {
			uploadErr = &driver.Error{Class: driver.ErrSystem, Err: err}
		}
	}
	if err := e.stage(ctx, s, stageCleanupFileVars, ""); err != nil {
		e.warnf("cleanup_file_variables failed: %v", err)
	}
	return firstError(jobErr, cacheErr, uploadErr)
}

func firstError(errs ...error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// stage writes a stage's script and runs it; a stage with nothing to do is
// skipped, as the runner skips it.
func (e *execution) stage(ctx context.Context, s *scripts, stage, jobStatus string) error {
	script := s.script(stage, jobStatus)
	if script == "" {
		return nil
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	path := filepath.Join(e.workDir, "script-"+stage)
	if err := os.WriteFile(path, []byte(script), 0o700); err != nil {
		return &driver.Error{Class: driver.ErrSystem, Err: fmt.Errorf("write the %s script: %w", stage, err)}
	}
	var code int
	var err error
	e.section(stage, stageDescription(stage), func() {
		// A stale code from an earlier stage must not be taken for this
		// one's.
		_ = os.Remove(e.exitCodeFile())
		code, err = e.call(ctx, e.o.Stdout, e.o.Stderr, "run", path, stage)
	})
	if err != nil {
		return &driver.Error{Class: driver.ErrSystem, Err: fmt.Errorf("start %s run: %w", e.o.Binary, err)}
	}
	if code == 0 {
		return nil
	}
	return e.failure(stage, code, true)
}

// failure classifies a stage command's exit code.
func (e *execution) failure(stage string, code int, script bool) error {
	switch code {
	case buildFailureExitCode:
		if data, err := os.ReadFile(e.exitCodeFile()); err == nil && script {
			if n, err := strconv.Atoi(strings.TrimSpace(string(data))); err == nil && n != 0 {
				return fmt.Errorf("stage %s: %w", stage, driver.ScriptFailed(n))
			}
		}
		return &driver.Error{Class: driver.ErrBuild, Err: fmt.Errorf("the %s stage failed (see the messages above)", stage)}
	case systemFailureExitCode:
		return &driver.Error{Class: driver.ErrSystem, Err: fmt.Errorf("the %s stage failed with a system failure (see the messages above)", stage)}
	case -1:
		return &driver.Error{Class: driver.ErrSystem, Err: fmt.Errorf("the %s stage was killed", stage)}
	}
	return &driver.Error{Class: driver.ErrSystem, Err: fmt.Errorf("the %s stage exited %d, which is neither the build nor the system failure code", stage, code)}
}

// section prints a stage's header and runs fn inside GitLab's collapsible
// section markers.
func (e *execution) section(name, header string, fn func()) {
	fmt.Fprintf(e.o.Stdout, "\x1b[0Ksection_start:%d:%s\r\x1b[0K%s%s%s\n", time.Now().Unix(), name, ansiBoldCyan, header, ansiReset)
	fn()
	fmt.Fprintf(e.o.Stdout, "\x1b[0Ksection_end:%d:%s\r\x1b[0K\n", time.Now().Unix(), name)
}

// reportCaches says where the caches that the archive stage saved are.
func (e *execution) reportCaches(s *scripts, success bool, since time.Time) {
	for _, c := range e.job.Caches {
		if !c.archivesOn(success) {
			continue
		}
		file := s.cacheFile(c.Key)
		if info, err := os.Stat(file); err == nil && !info.ModTime().Before(since.Add(-time.Second)) {
			e.printf("Cache %q saved to %s (%d bytes); the next exec of this project restores it", c.Key, file, info.Size())
		}
	}
}

// collectArtifacts copies what upload_artifacts collected to the host's
// artifacts directory, without the excluded paths.
func (e *execution) collectArtifacts(staging string) error {
	dest := filepath.Join(e.artifactsDir, artifactDirName(e.job.Name))
	if _, err := os.Stat(staging); err != nil {
		e.printf("No artifacts to copy for job %q", e.job.Name)
		return nil
	}
	if err := prepareOutputDir(e.tree.Root, filepath.Dir(dest)); err != nil {
		return fmt.Errorf("artifacts directory: %w", err)
	}
	n, err := copyTree(staging, dest, e.job.Artifacts.Exclude)
	if err != nil {
		return fmt.Errorf("copy the artifacts to %s: %w", dest, err)
	}
	e.printf("%sArtifacts of job %q copied to %s (%s)%s", ansiBoldGreen, e.job.Name, dest, plural(n, "file"), ansiReset)
	return nil
}

// cleanup calls cleanup on a fresh context: it runs after failures and
// interruptions too. Its output shows only when it fails.
func (e *execution) cleanup(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
	defer cancel()
	var out bytes.Buffer
	code, err := e.call(ctx, &out, &out, "cleanup")
	if err == nil && code == 0 {
		return nil
	}
	fmt.Fprint(e.o.Stderr, out.String())
	if err == nil {
		err = fmt.Errorf("exit code %d", code)
	}
	err = fmt.Errorf("cleanup failed (%v): the job's containers may be left; `berth gc` removes them once the job expires", err)
	e.warnf("%v", err)
	return &driver.Error{Class: driver.ErrSystem, Err: err}
}

// call runs one stage command of berth.
func (e *execution) call(ctx context.Context, stdout, stderr io.Writer, args ...string) (int, error) {
	argv := append(append([]string(nil), e.o.Args...), args...)
	return call(ctx, e.o.Binary, argv, e.env, stdout, stderr, e.o.GracefulKillTimeout)
}

func (e *execution) exitCodeFile() string { return filepath.Join(e.workDir, "build-exit-code") }

// baseEnv is the environment gitlab-runner gives every call of a custom
// executor: its own, the job's variables with CUSTOM_ENV_, the services
// list, and the protocol's variables.
func (e *execution) baseEnv() []string {
	env := hostEnv()
	for _, v := range e.vars {
		env = append(env, "CUSTOM_ENV_"+v.Key+"="+v.Value)
	}
	env = append(env,
		"CUSTOM_ENV_CI_JOB_SERVICES="+e.servicesEnv(),
		"BUILD_FAILURE_EXIT_CODE="+strconv.Itoa(buildFailureExitCode),
		"SYSTEM_FAILURE_EXIT_CODE="+strconv.Itoa(systemFailureExitCode),
		"BUILD_EXIT_CODE_FILE="+e.exitCodeFile(),
		"JOB_RESPONSE_FILE="+filepath.Join(e.workDir, "response.json"),
		"TMPDIR="+filepath.Join(e.workDir, "tmp"),
	)
	return env
}

// servicesEnv is CUSTOM_ENV_CI_JOB_SERVICES as the runner writes it.
func (e *execution) servicesEnv() string {
	type service struct {
		Name       string            `json:"name"`
		Alias      string            `json:"alias"`
		Entrypoint []string          `json:"entrypoint"`
		Command    []string          `json:"command"`
		Variables  map[string]string `json:"variables,omitempty"`
	}
	if len(e.job.Services) == 0 {
		return ""
	}
	list := make([]service, 0, len(e.job.Services))
	for _, s := range e.job.Services {
		entry := service{Name: s.Name, Alias: s.Alias, Entrypoint: s.Entrypoint, Command: s.Command}
		for _, v := range s.Variables {
			if entry.Variables == nil {
				entry.Variables = map[string]string{}
			}
			entry.Variables[v.Key] = v.Value
		}
		list = append(list, entry)
	}
	data, _ := json.Marshal(list)
	return string(data)
}

// writeResponse writes JOB_RESPONSE_FILE, the job payload GitLab would
// send, and the job's temporary directory.
func (e *execution) writeResponse() error {
	if err := os.MkdirAll(filepath.Join(e.workDir, "tmp"), 0o700); err != nil {
		return err
	}
	e.vars = e.jobVariables()
	protected := false
	timeout := e.job.Timeout
	if timeout == 0 {
		timeout = defaultTimeout
	}
	refType := "branch"
	if e.tree.Branch == "" && e.tree.Tag != "" {
		refType = "tag"
	}
	resp := driver.JobResponse{
		ID:    e.id,
		Token: e.token,
		JobInfo: driver.JobInfo{Name: e.job.Name, Stage: e.job.Stage, ProjectID: e.projectID,
			ProjectName: filepath.Base(e.tree.ProjectPath), ProjectFullPath: e.tree.ProjectPath, NamespaceID: 1},
		GitInfo:    driver.GitInfo{Ref: e.tree.RefName(), Sha: e.snap.Commit, RefType: refType, Protected: &protected},
		RunnerInfo: driver.RunnerInfo{Timeout: int(timeout / time.Second)},
		Image:      driver.ImageSpec{Name: e.job.Image.Name, Entrypoint: e.job.Image.Entrypoint, PullPolicy: e.job.Image.PullPolicy},
	}
	for _, v := range e.vars {
		resp.Variables = append(resp.Variables, driver.Variable{Key: v.Key, Value: v.Value, Public: v.Key != "CI_JOB_TOKEN",
			Masked: v.Key == "CI_JOB_TOKEN", Raw: true})
	}
	for _, s := range e.job.Services {
		spec := driver.ImageSpec{Name: s.Name, Alias: s.Alias, Command: s.Command, Entrypoint: s.Entrypoint, PullPolicy: s.PullPolicy}
		for _, v := range s.Variables {
			spec.Variables = append(spec.Variables, driver.Variable{Key: v.Key, Value: v.Value, Public: true})
		}
		resp.Services = append(resp.Services, spec)
	}
	data, err := json.Marshal(resp)
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(e.workDir, "response.json"), data, 0o600)
}

// jobVariables are the job's variables, expanded: the predefined ones, the
// file's and the command line's, then extra.
func (e *execution) jobVariables(extra ...Variable) []Variable {
	vars := append(e.predefined(), extra...)
	return ExpandVariables(dedupeVariables(append(vars, e.job.Variables...)))
}

// predefined are the CI_* variables GitLab and the runner would set.
func (e *execution) predefined() []Variable {
	t := e.tree
	name := e.o.Job
	stage := "test"
	image := ""
	timeout := defaultTimeout
	nodes := 1
	if e.job != nil {
		stage, image = e.job.Stage, e.job.Image.Name
		if e.job.Timeout > 0 {
			timeout = e.job.Timeout
		}
		if e.job.NodeTotal > 0 {
			nodes = e.job.NodeTotal
		}
	}
	title, description, _ := strings.Cut(e.snap.Message, "\n")
	started := e.started.UTC().Format(time.RFC3339)
	vars := []Variable{
		{Key: "CI", Value: "true"},
		{Key: "GITLAB_CI", Value: "true"},
		{Key: "CI_SERVER", Value: "yes"},
		{Key: "CI_JOB_ID", Value: strconv.FormatInt(e.id, 10)},
		{Key: "CI_JOB_NAME", Value: name},
		{Key: "CI_JOB_NAME_SLUG", Value: slug(name)},
		{Key: "CI_JOB_STAGE", Value: stage},
		{Key: "CI_JOB_TOKEN", Value: e.token},
		{Key: "CI_JOB_STARTED_AT", Value: started},
		{Key: "CI_JOB_STATUS", Value: "running"},
		{Key: "CI_JOB_TIMEOUT", Value: strconv.Itoa(int(timeout / time.Second))},
		{Key: "CI_JOB_IMAGE", Value: image},
		{Key: "CI_PIPELINE_ID", Value: strconv.FormatInt(e.id, 10)},
		{Key: "CI_PIPELINE_IID", Value: "1"},
		{Key: "CI_PIPELINE_SOURCE", Value: "push"},
		{Key: "CI_PIPELINE_CREATED_AT", Value: started},
		{Key: "CI_PROJECT_ID", Value: strconv.FormatInt(e.projectID, 10)},
		{Key: "CI_PROJECT_PATH", Value: t.ProjectPath},
		{Key: "CI_PROJECT_PATH_SLUG", Value: slug(t.ProjectPath)},
		{Key: "CI_PROJECT_NAME", Value: filepath.Base(t.ProjectPath)},
		{Key: "CI_PROJECT_TITLE", Value: filepath.Base(t.ProjectPath)},
		{Key: "CI_PROJECT_NAMESPACE", Value: filepath.Dir(t.ProjectPath)},
		{Key: "CI_PROJECT_ROOT_NAMESPACE", Value: strings.SplitN(t.ProjectPath, "/", 2)[0]},
		{Key: "CI_COMMIT_SHA", Value: e.snap.Commit},
		{Key: "CI_COMMIT_SHORT_SHA", Value: e.snap.Commit[:8]},
		{Key: "CI_COMMIT_BEFORE_SHA", Value: strings.Repeat("0", 40)},
		{Key: "CI_COMMIT_REF_NAME", Value: t.RefName()},
		{Key: "CI_COMMIT_REF_SLUG", Value: slug(t.RefName())},
		{Key: "CI_COMMIT_REF_PROTECTED", Value: "false"},
		{Key: "CI_COMMIT_MESSAGE", Value: e.snap.Message},
		{Key: "CI_COMMIT_TITLE", Value: title},
		{Key: "CI_COMMIT_DESCRIPTION", Value: strings.TrimLeft(description, "\n")},
		{Key: "CI_COMMIT_AUTHOR", Value: e.snap.Author},
		{Key: "CI_COMMIT_TIMESTAMP", Value: e.snap.Timestamp.Format(time.RFC3339)},
		{Key: "CI_DEFAULT_BRANCH", Value: t.DefaultBranch},
		{Key: "CI_NODE_TOTAL", Value: strconv.Itoa(nodes)},
		{Key: "CI_RUNNER_DESCRIPTION", Value: "berth exec"},
		{Key: "CI_RUNNER_TAGS", Value: "[]"},
		{Key: "CI_CONCURRENT_ID", Value: "0"},
		{Key: "CI_CONCURRENT_PROJECT_ID", Value: "0"},
	}
	switch {
	case t.Branch != "":
		vars = append(vars, Variable{Key: "CI_COMMIT_BRANCH", Value: t.Branch})
	case t.Tag != "":
		vars = append(vars, Variable{Key: "CI_COMMIT_TAG", Value: t.Tag})
	}
	if nodes > 1 {
		vars = append(vars, Variable{Key: "CI_NODE_INDEX", Value: "1"})
	}
	if t.UserName != "" {
		vars = append(vars, Variable{Key: "GITLAB_USER_NAME", Value: t.UserName})
	}
	if t.UserEmail != "" {
		vars = append(vars, Variable{Key: "GITLAB_USER_EMAIL", Value: t.UserEmail})
	}
	if e.job != nil && e.job.Environment != "" {
		vars = append(vars, Variable{Key: "CI_ENVIRONMENT_NAME", Value: e.job.Environment},
			Variable{Key: "CI_ENVIRONMENT_SLUG", Value: slug(e.job.Environment)})
		if e.job.EnvironmentURL != "" {
			vars = append(vars, Variable{Key: "CI_ENVIRONMENT_URL", Value: e.job.EnvironmentURL})
		}
	}
	for i := range vars {
		vars[i].Raw = true
	}
	return vars
}

// slug is GitLab's *_SLUG form: lowercased, everything but a-z and 0-9
// turned into '-', at most 63 bytes, no '-' at either end.
func slug(s string) string {
	out := strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' {
			return r
		}
		if r >= 'A' && r <= 'Z' {
			return r + 'a' - 'A'
		}
		return '-'
	}, s)
	if len(out) > 63 {
		out = out[:63]
	}
	return strings.Trim(out, "-")
}
