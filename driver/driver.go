// Package driver speaks gitlab-runner's custom executor protocol: it reads
// the job from the environment and JOB_RESPONSE_FILE, picks a backend through
// the admin's policy, runs the stage, and classifies what went wrong. It
// knows nothing of Docker or Podman.
package driver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/berthci/berth/backends"
	"github.com/berthci/berth/backends/dockerproxy"
	"github.com/berthci/berth/config"
)

// cleanupTimeout bounds the cleanup stage, which runs on a fresh context.
const cleanupTimeout = 2 * time.Minute

// Driver runs one stage of the protocol.
type Driver struct {
	Config *config.Config
	Env    Env
	Log    *logrus.Logger
	Stdout io.Writer
	Stderr io.Writer
	// Open makes a backend; nil means [backends.Open].
	Open func(name string, cfg *config.Config, log logrus.FieldLogger) (backends.Backend, error)
}

// ConfigOutput is what the config stage prints for the runner.
type ConfigOutput struct {
	BuildsDir         string            `json:"builds_dir"`
	CacheDir          string            `json:"cache_dir"`
	BuildsDirIsShared bool              `json:"builds_dir_is_shared"`
	Hostname          string            `json:"hostname"`
	Driver            DriverInfo        `json:"driver"`
	Shell             string            `json:"shell"`
	JobEnv            map[string]string `json:"job_env,omitempty"`
}

// DriverInfo names the driver in the job log.
type DriverInfo struct {
	Name    string `json:"name"`
	Version string `json:"version"`
}

// Configure runs the config stage: it prints the job's directories and the
// driver's name as JSON. It contacts no engine.
func (d *Driver) Configure(ctx context.Context) error {
	d.tag(FieldStage, "config")
	job, err := LoadJob(d.Env)
	if err != nil {
		return err
	}
	d.tagJob(job.ID, job.ProjectID, job.ProjectPath)
	// job_env carries what config already worked out to the later stages,
	// so `run`, which happens many times a job, skips the job payload and
	// the policy. The runner sets these without the CUSTOM_ENV_ prefix, so
	// no job variable can forge them.
	jobEnv := map[string]string{
		envJobID:       strconv.FormatInt(job.ID, 10),
		envProjectID:   strconv.FormatInt(job.ProjectID, 10),
		envProjectPath: job.ProjectPath,
	}
	if job.Image.Name == "" {
		job.Image.Name = d.Config.Docker.Image
	}
	if decision, err := d.Config.Decide(job.Subject(), job.Request()); err == nil {
		jobEnv[envBackend] = decision.Backend
		d.tag(FieldBackend, decision.Backend)
	}
	out := ConfigOutput{
		BuildsDir:         BuildsDir(d.Config, job.ID),
		CacheDir:          CacheDir(d.Config, job.ProjectID),
		BuildsDirIsShared: false,
		Hostname:          backends.JobName(d.Config.RunnerName, job.ID),
		Driver:            DriverInfo{Name: "berth", Version: Version},
		Shell:             "bash",
		JobEnv:            jobEnv,
	}
	enc := json.NewEncoder(d.Stdout)
	if err := enc.Encode(out); err != nil {
		return systemErr(fmt.Errorf("write config output: %w", err))
	}
	return nil
}

// Prepare runs the prepare stage: policy first, so a refusal creates
// nothing, then the backend's Prepare.
func (d *Driver) Prepare(ctx context.Context) error {
	d.tag(FieldStage, "prepare")
	job, spec, backend, err := d.open()
	if err != nil {
		return classify(ctx, err)
	}
	d.addSecrets(job)
	desc := ""
	if describer, ok := backend.(backends.Describer); ok {
		if v, err := describer.Describe(ctx, spec); err == nil {
			desc = " (" + v + ")"
		} else {
			return classify(ctx, fmt.Errorf("backend %q cannot reach its engine: %w; start the engine or fix its address in the berth config", spec.Backend, err))
		}
	}
	d.Log.Infof("Using berth %s with backend %s%s", Version, spec.Backend, desc)
	marker := prepareMarker(spec.BuildsDir)
	if err := writeMarker(marker, prepareStarted, spec.Timeout); err != nil {
		return classify(ctx, err)
	}
	if err := backend.Prepare(ctx, spec); err != nil {
		return classify(ctx, fmt.Errorf("prepare job environment: %w", err))
	}
	if err := writeMarker(marker, prepareDone, spec.Timeout); err != nil {
		return classify(ctx, err)
	}
	return nil
}

// The prepare marker, next to the job's builds dir, says whether prepare
// began creating resources and whether it finished. A prepare killed in
// between may have create requests in flight that the engine completes
// after the process is gone; cleanup then waits for them (settleTime) and
// looks again. It is also berth's record that the job lives, which a job
// cannot write (it sees only its builds dir): written before prepare
// creates anything, with the job's timeout, and removed last by cleanup.
// `berth gc` judges a job with a marker by it, never by labels.
const (
	prepareStarted = "started"
	prepareDone    = "done"
	settleTime     = 2 * time.Second
)

func prepareMarker(buildsDir string) string { return buildsDir + ".prepare" }

// writeMarker writes the state line and "timeout <seconds>".
func writeMarker(path, state string, timeout time.Duration) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return systemErr(fmt.Errorf("create the runner's builds directory: %w; check builds_dir in the berth config", err))
	}
	content := fmt.Sprintf("%s\ntimeout %d\n", state, int64(timeout/time.Second))
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		return systemErr(fmt.Errorf("record the prepare state: %w; check builds_dir in the berth config", err))
	}
	return nil
}

// readMarker returns a marker's state and the job's timeout (0: unknown).
func readMarker(path string) (state string, timeout time.Duration, err error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return "", 0, err
	}
	lines := strings.Split(string(data), "\n")
	if len(lines) > 1 {
		if secs, ok := strings.CutPrefix(lines[1], "timeout "); ok {
			if n, err := strconv.ParseInt(secs, 10, 64); err == nil && n > 0 {
				timeout = time.Duration(n) * time.Second
			}
		}
	}
	return lines[0], timeout, nil
}

// interruptedPrepare reports whether a prepare of the job began creating
// resources and did not finish.
func interruptedPrepare(buildsDir string) bool {
	state, _, err := readMarker(prepareMarker(buildsDir))
	return err == nil && state == prepareStarted
}

// Run runs one `run <script> <stage>` call.
func (d *Driver) Run(ctx context.Context, scriptPath, stageName string) error {
	d.tag(FieldStage, stageName)
	script, err := os.ReadFile(scriptPath)
	if err != nil {
		return systemErr(fmt.Errorf("read stage script: %w", err))
	}
	spec, backend, err := d.openForRun()
	if err != nil {
		return classify(ctx, err)
	}
	code, err := backend.Run(ctx, spec, backends.Stage{
		Name:   stageName,
		Script: script,
		Helper: HelperStage(stageName),
		Stdout: d.Stdout,
		Stderr: d.Stderr,
	})
	if err != nil {
		// The fast path did not read the payload; its secrets must be known
		// before the error is logged.
		if job, lerr := LoadJob(d.Env); lerr == nil {
			d.addSecrets(job)
		}
		return classify(ctx, fmt.Errorf("stage %s: %w", stageName, err))
	}
	if ctx.Err() != nil {
		return classify(ctx, ctx.Err())
	}
	if code != 0 {
		return ScriptFailed(code)
	}
	return nil
}

// Cleanup removes everything of the job, on a fresh context: it runs even
// when earlier stages failed or were killed.
func (d *Driver) Cleanup(ctx context.Context) error {
	d.tag(FieldStage, "cleanup")
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
	defer cancel()
	job, err := LoadJob(d.Env)
	if err != nil {
		return err
	}
	d.tagJob(job.ID, job.ProjectID, job.ProjectPath)
	d.addSecrets(job)
	// Resources are found by label, whatever backend prepare picked; so
	// every backend the admin allows, in [policy] or a rule, is asked.
	names := d.Config.AllBackends()
	spec := &backends.Job{ID: job.ID, ProjectID: job.ProjectID, ProjectPath: job.ProjectPath, Runner: d.Config.RunnerName,
		BuildsDir: BuildsDir(d.Config, job.ID), CacheDir: CacheDir(d.Config, job.ProjectID)}
	// The backend that config chose for the job is the one that holds its
	// resources; another one that cannot be reached only warns, so an
	// engine the job never used does not fail it. `berth gc` collects
	// what such an engine still holds once it is back.
	chosen, _ := d.Env(envBackend)
	if !contains(names, chosen) {
		chosen = ""
	}
	var errs []error
	fail := func(name string, err error) {
		if chosen != "" && name != chosen {
			d.Log.Warnf("%v; this job ran on backend %s, so this is only a check for strays: `berth gc` removes any once the engine is back", err, chosen)
			return
		}
		errs = append(errs, err)
	}
	opened := map[string]backends.Backend{}
	for _, name := range names {
		backend, err := d.openBackend(name)
		if err != nil {
			fail(name, err)
			continue
		}
		opened[name] = backend
	}
	passes := 1
	if interruptedPrepare(spec.BuildsDir) {
		passes = 2
	}
	for pass := range passes {
		if pass > 0 {
			d.Log.Debugf("prepare was interrupted: waiting %s for requests it left in flight", settleTime)
			select {
			case <-ctx.Done():
			case <-time.After(settleTime):
			}
		}
		// One after the other: backends on the same engine (socket and
		// dind) find the same containers by label, and one's network
		// removal must not race the other's container removal.
		for _, name := range names {
			backend, ok := opened[name]
			if !ok {
				continue
			}
			spec.Backend = name
			d.tag(FieldBackend, name)
			if err := backend.Cleanup(ctx, spec); err != nil {
				fail(name, fmt.Errorf("clean up backend %s: %w", name, err))
			}
		}
	}
	// Last, after every backend: the guard's socket directory (which
	// holds its record of given names for the backends' cleanups), the
	// builds dir and the prepare marker, berth's record that the job lives.
	for _, path := range []string{dockerproxy.JobDir(spec), BuildsDir(d.Config, job.ID), prepareMarker(spec.BuildsDir)} {
		if err := os.RemoveAll(path); err != nil {
			errs = append(errs, fmt.Errorf("remove %s: %w", path, err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return systemErr(err)
	}
	return nil
}

// Names of the job_env variables that config passes to later stages.
const (
	envJobID       = "BERTH_RESOLVED_JOB_ID"
	envProjectID   = "BERTH_RESOLVED_PROJECT_ID"
	envProjectPath = "BERTH_RESOLVED_PROJECT_PATH"
	envBackend     = "BERTH_RESOLVED_BACKEND"
)

// openForRun finds the job's backend for a `run` call: from what config put
// in job_env when it is there, else from the job payload and policy.
func (d *Driver) openForRun() (*backends.Job, backends.Backend, error) {
	jobID, _ := d.Env(envJobID)
	projectID, _ := d.Env(envProjectID)
	name, _ := d.Env(envBackend)
	id, err1 := strconv.ParseInt(jobID, 10, 64)
	pid, err2 := strconv.ParseInt(projectID, 10, 64)
	if err1 != nil || err2 != nil || id <= 0 || name == "" || !contains(d.Config.AllBackends(), name) {
		job, spec, backend, err := d.open()
		if err != nil {
			return nil, nil, err
		}
		d.addSecrets(job)
		return spec, backend, nil
	}
	projectPath, _ := d.Env(envProjectPath)
	d.tagJob(id, pid, projectPath)
	d.tag(FieldBackend, name)
	debug, _ := d.Env(customEnvPrefix + "CI_DEBUG_SERVICES")
	spec := &backends.Job{ID: id, ProjectID: pid, ProjectPath: projectPath, Runner: d.Config.RunnerName, Backend: name,
		BuildsDir: BuildsDir(d.Config, id), CacheDir: CacheDir(d.Config, pid)}
	spec.DebugServices, _ = strconv.ParseBool(debug)
	backend, err := d.openBackend(name)
	return spec, backend, err
}

// open loads the job, applies policy and opens the chosen backend.
func (d *Driver) open() (*Job, *backends.Job, backends.Backend, error) {
	job, err := LoadJob(d.Env)
	if err != nil {
		return nil, nil, nil, err
	}
	d.tagJob(job.ID, job.ProjectID, job.ProjectPath)
	if job.servicesErr != nil {
		return nil, nil, nil, job.servicesErr
	}
	if job.Image.Name == "" {
		job.Image.Name = d.Config.Docker.Image
	}
	if job.Image.Name == "" {
		return nil, nil, nil, buildErr(errors.New("the job has no image: set `image:` in .gitlab-ci.yml (or ask the runner admin to set docker.image)"))
	}
	decision, err := d.Config.Decide(job.Subject(), job.Request())
	if err != nil {
		var refusal *config.RefusalError
		if errors.As(err, &refusal) {
			return nil, nil, nil, buildErr(err)
		}
		return nil, nil, nil, systemErr(err)
	}
	d.tag(FieldBackend, decision.Backend)
	spec, err := job.Spec(d.Config, decision)
	if err != nil {
		return nil, nil, nil, err
	}
	backend, err := d.openBackend(decision.Backend)
	if err != nil {
		return nil, nil, nil, err
	}
	return job, spec, backend, nil
}

func (d *Driver) openBackend(name string) (backends.Backend, error) {
	open := d.Open
	if open == nil {
		open = backends.Open
	}
	backend, err := open(name, d.Config, d.Log)
	if err != nil {
		return nil, systemErr(fmt.Errorf("open backend %q: %w", name, err))
	}
	return backend, nil
}

// tag puts a field on every later line of the admin log (JSON format).
func (d *Driver) tag(key string, value any) {
	for _, h := range d.Log.Hooks[logrus.InfoLevel] {
		if f, ok := h.(*JobFields); ok {
			f.Set(key, value)
		}
	}
}

// tagJob puts the job's identity on every later line of the admin log.
func (d *Driver) tagJob(id, projectID int64, projectPath string) {
	d.tag(FieldJobID, id)
	d.tag(FieldProjectID, projectID)
	d.tag(FieldProject, projectPath)
}

func (d *Driver) addSecrets(job *Job) {
	for _, h := range d.Log.Hooks[logrus.InfoLevel] {
		if r, ok := h.(*Redactor); ok {
			r.Add(job.Secrets()...)
		}
	}
}

// helperStages are the stages the docker executor runs in its helper
// (predefined) container; every other stage, after_script, step_* and
// unknown ones included, runs in the job's.
var helperStages = map[string]bool{
	"prepare_script":              true,
	"get_sources":                 true,
	"clear_worktree":              true,
	"restore_cache":               true,
	"download_artifacts":          true,
	"archive_cache":               true,
	"archive_cache_on_failure":    true,
	"upload_artifacts_on_success": true,
	"upload_artifacts_on_failure": true,
	"cleanup_file_variables":      true,
}

// HelperStage reports whether a stage runs in the helper container.
func HelperStage(stage string) bool { return helperStages[strings.TrimSpace(stage)] }
