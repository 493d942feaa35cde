// Package runner emulates gitlab-runner driving a custom executor: one
// process per stage, CUSTOM_ENV_ variables, a JOB_RESPONSE_FILE, runner-style
// bash stage scripts, non-default failure exit codes, the stage order and
// skips of a real job, and SIGTERM to the process group then SIGKILL.
package runner

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Exit codes the emulator asks for: deliberately not 1 and 2, so a driver
// that hard-codes them fails.
const (
	BuildFailureExitCode  = 41
	SystemFailureExitCode = 42
)

// Emulator drives a built berth binary.
type Emulator struct {
	Binary     string
	ConfigPath string
	// WorkDir holds the per-job temp dirs, scripts and response files.
	WorkDir string
	// GracefulKillTimeout is how long a canceled stage gets after SIGTERM
	// before SIGKILL.
	GracefulKillTimeout time.Duration
	// Log, when set, receives the job log as it is written.
	Log io.Writer
	// Args go before every call's command, as an admin's config_args,
	// prepare_args... do: ["--log-format", "json"], say.
	Args []string
}

// Image is an image or service of the job payload.
type Image struct {
	Name       string     `json:"name"`
	Alias      string     `json:"alias,omitempty"`
	Command    []string   `json:"command,omitempty"`
	Entrypoint []string   `json:"entrypoint,omitempty"`
	Variables  []Variable `json:"variables,omitempty"`
	PullPolicy []string   `json:"pull_policy,omitempty"`
}

// Variable is a job variable.
type Variable struct {
	Key    string `json:"key"`
	Value  string `json:"value"`
	Public bool   `json:"public"`
	File   bool   `json:"file"`
	Masked bool   `json:"masked"`
}

// Credential is a registry login of the job payload.
type Credential struct {
	Type     string `json:"type"`
	URL      string `json:"url"`
	Username string `json:"username"`
	Password string `json:"password"`
}

// Job is one CI job to run.
type Job struct {
	ID          int64
	ProjectID   int64
	ProjectPath string // e.g. "group/app"
	Ref         string
	Protected   bool
	RepoURL     string // a local bare repository, e.g. file:///srv/git/app.git
	Timeout     int    // the job's timeout in seconds; 0 means 3600

	Image     Image
	Services  []Image
	Variables []Variable // the job's own variables, after the predefined ones
	// PayloadVariables are in JOB_RESPONSE_FILE only: values that no
	// environment can carry, such as a NUL byte.
	PayloadVariables []Variable
	Credentials      []Credential

	BeforeScript []string
	Script       []string
	AfterScript  []string
	// CachePaths, when set, adds the cache stages with these paths.
	CachePaths []string

	// ServicesOnlyInEnv leaves services out of the payload so the driver
	// must read CUSTOM_ENV_CI_JOB_SERVICES.
	ServicesOnlyInEnv bool
	// RawServicesEnv replaces CUSTOM_ENV_CI_JOB_SERVICES verbatim.
	RawServicesEnv *string
	// ExtraCustomEnv adds or overrides CUSTOM_ENV_ variables after all
	// others, as a job variable of the same name would.
	ExtraCustomEnv map[string]string
}

// StageResult is one driver call.
type StageResult struct {
	Name     string
	ExitCode int
	Output   string
	Duration time.Duration
	MaxRSS   int64 // the driver process's peak resident memory (VmHWM), in bytes
	// Stdout and Stderr are the driver's two streams apart, when the
	// session keeps them (KeepStreams).
	Stdout, Stderr string
}

// Result is a finished job.
type Result struct {
	Config        ConfigOutput
	Stages        []StageResult
	Log           string
	BuildExitCode int    // from BUILD_EXIT_CODE_FILE of the failing stage, or 0
	Failure       string // "", "build" or "system"
}

// Stage returns the named stage's result.
func (r *Result) Stage(name string) (StageResult, bool) {
	for _, s := range r.Stages {
		if s.Name == name {
			return s, true
		}
	}
	return StageResult{}, false
}

// ConfigOutput is what config_exec printed.
type ConfigOutput struct {
	BuildsDir         string            `json:"builds_dir"`
	CacheDir          string            `json:"cache_dir"`
	BuildsDirIsShared bool              `json:"builds_dir_is_shared"`
	Hostname          string            `json:"hostname"`
	Shell             string            `json:"shell"`
	JobEnv            map[string]string `json:"job_env"`
	Driver            struct {
		Name    string `json:"name"`
		Version string `json:"version"`
	} `json:"driver"`
}

// Session is a job in flight: its files and environment, for tests that
// drive single stages (to cancel one, say).
type Session struct {
	e       *Emulator
	job     *Job
	dir     string
	env     []string
	config  ConfigOutput
	log     bytes.Buffer
	logMu   sync.Mutex
	Results []StageResult
	// KillOnCancel sends SIGKILL instead of SIGTERM when a call's context
	// ends, as when the runner itself is killed: no deferred code runs.
	KillOnCancel bool
	// KeepStreams keeps each call's stdout and stderr apart as well, in
	// StageResult.Stdout and Stderr.
	KeepStreams bool
	// StageStdout, when set, takes the stages' stdout in place of the job
	// log, as a bench that counts bytes wants.
	StageStdout io.Writer
}

// Start writes the job's files and runs config_exec.
func (e *Emulator) Start(ctx context.Context, job *Job) (*Session, error) {
	dir, err := os.MkdirTemp(e.WorkDir, fmt.Sprintf("job-%d-", job.ID))
	if err != nil {
		return nil, err
	}
	s := &Session{e: e, job: job, dir: dir}
	if err := os.MkdirAll(filepath.Join(dir, "tmp"), 0o700); err != nil {
		return nil, err
	}
	if err := s.writeResponse(); err != nil {
		return nil, err
	}
	s.env = s.baseEnv()
	res := s.call(ctx, "config")
	if res.ExitCode != 0 {
		return s, fmt.Errorf("config_exec exited %d: %s", res.ExitCode, res.Output)
	}
	if err := json.Unmarshal([]byte(lastLine(res.stdout)), &s.config); err != nil {
		return s, fmt.Errorf("config_exec printed invalid JSON %q: %w", res.stdout, err)
	}
	for k, v := range s.config.JobEnv {
		s.env = append(s.env, k+"="+v)
	}
	return s, nil
}

// Env is the environment the runner gives the driver for this job, for
// callers that start the driver themselves (under /usr/bin/time, say).
func (s *Session) Env() []string { return append([]string(nil), s.env...) }

// Config is what config_exec printed.
func (s *Session) Config() ConfigOutput { return s.config }

// Log is the job log so far.
func (s *Session) Log() string {
	s.logMu.Lock()
	defer s.logMu.Unlock()
	return s.log.String()
}

// ProjectDir is CI_PROJECT_DIR as the runner computes it.
func (s *Session) ProjectDir() string {
	return filepath.Join(s.config.BuildsDir, s.job.ProjectPath)
}

// RunJob runs the whole job as gitlab-runner would and always calls cleanup.
func (e *Emulator) RunJob(ctx context.Context, job *Job) (*Result, error) {
	s, err := e.Start(ctx, job)
	if err != nil {
		if s != nil {
			s.Cleanup(context.WithoutCancel(ctx))
		}
		return nil, err
	}
	res := &Result{Config: s.config}
	// cleanup always runs, last, whatever happened before.
	finish := func() (*Result, error) {
		s.Cleanup(context.WithoutCancel(ctx))
		res.Stages, res.Log = s.Results, s.Log()
		return res, nil
	}
	fail := func(r StageResult) {
		switch r.ExitCode {
		case BuildFailureExitCode:
			res.Failure = "build"
			if code, err := s.buildExitCode(); err == nil {
				res.BuildExitCode = code
			}
		default:
			res.Failure = "system"
		}
	}

	// The runner retries prepare on a system failure, 3 attempts in all.
	var prep stageCall
	for attempt := 0; attempt < 3; attempt++ {
		prep = s.call(ctx, "prepare")
		if prep.ExitCode != SystemFailureExitCode {
			break
		}
	}
	if prep.ExitCode != 0 {
		fail(prep.StageResult)
		return finish()
	}

	ok := true
	for _, stage := range []string{"prepare_script", "get_sources", "restore_cache", "download_artifacts", "build_script"} {
		if stage == "restore_cache" && len(job.CachePaths) == 0 {
			continue
		}
		r := s.RunStage(ctx, stage)
		if r.ExitCode != 0 {
			fail(r)
			ok = false
			break
		}
	}
	if len(job.AfterScript) > 0 {
		s.RunStage(ctx, "after_script") // its failure does not change the job's status
	}
	if len(job.CachePaths) > 0 {
		if ok {
			s.RunStage(ctx, "archive_cache")
		} else {
			s.RunStage(ctx, "archive_cache_on_failure")
		}
	}
	if ok {
		if r := s.RunStage(ctx, "upload_artifacts_on_success"); r.ExitCode != 0 {
			fail(r)
		}
	} else {
		s.RunStage(ctx, "upload_artifacts_on_failure")
	}
	s.RunStage(ctx, "cleanup_file_variables")
	return finish()
}

// RunStage writes the stage's runner-style script and calls run_exec.
func (s *Session) RunStage(ctx context.Context, stage string) StageResult {
	return s.RunStageScript(ctx, stage, s.script(stage))
}

// RunStageScript calls run_exec for the stage with the given script in
// place of the runner-style one, as a bench feeds trivial scripts.
func (s *Session) RunStageScript(ctx context.Context, stage, script string) StageResult {
	path := filepath.Join(s.dir, "script-"+stage)
	if err := os.WriteFile(path, []byte(script), 0o700); err != nil {
		return StageResult{Name: stage, ExitCode: -1, Output: err.Error()}
	}
	return s.call(ctx, "run", path, stage).StageResult
}

// Prepare calls prepare_exec once.
func (s *Session) Prepare(ctx context.Context) StageResult { return s.call(ctx, "prepare").StageResult }

// Cleanup calls cleanup_exec.
func (s *Session) Cleanup(ctx context.Context) StageResult { return s.call(ctx, "cleanup").StageResult }

// BuildExitCode reads BUILD_EXIT_CODE_FILE.
func (s *Session) buildExitCode() (int, error) {
	data, err := os.ReadFile(filepath.Join(s.dir, "build-exit-code"))
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(strings.TrimSpace(string(data)))
}

// BuildExitCode reads what the driver wrote to BUILD_EXIT_CODE_FILE.
func (s *Session) BuildExitCode() (int, error) { return s.buildExitCode() }

type stageCall struct {
	StageResult
	stdout string
}

// call runs the driver once, like the runner: own process group, stdout and
// stderr to the job log, SIGTERM to the group on cancel, SIGKILL after the
// grace.
func (s *Session) call(ctx context.Context, args ...string) stageCall {
	name := args[0]
	if name == "run" {
		name = args[len(args)-1]
	}
	argv := []string{"--config", s.e.ConfigPath}
	argv = append(argv, s.e.Args...)
	argv = append(argv, args...)
	cmd := exec.Command(s.e.Binary, argv...)
	cmd.Env = s.env
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	var stdout, streamOut, streamErr bytes.Buffer
	out := &lockedWriter{s: s}
	if name == "config" {
		cmd.Stdout = &stdout
	} else if s.KeepStreams {
		cmd.Stdout = io.MultiWriter(out, &streamOut)
	} else if s.StageStdout != nil {
		cmd.Stdout = s.StageStdout
	} else {
		cmd.Stdout = out
	}
	cmd.Stderr = out
	if s.KeepStreams {
		cmd.Stderr = io.MultiWriter(out, &streamErr)
	}
	start := time.Now()
	s.logMu.Lock()
	mark := s.log.Len()
	s.logMu.Unlock()
	if err := cmd.Start(); err != nil {
		return stageCall{StageResult: StageResult{Name: name, ExitCode: -1, Output: err.Error()}}
	}
	peak := watchPeakRSS(cmd.Process.Pid)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var err error
	select {
	case err = <-done:
	case <-ctx.Done():
		if s.KillOnCancel {
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			err = <-done
			break
		}
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		grace := s.e.GracefulKillTimeout
		if grace == 0 {
			grace = 10 * time.Second
		}
		select {
		case err = <-done:
		case <-time.After(grace):
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			err = <-done
		}
	}
	code := 0
	var exitErr *exec.ExitError
	if errors.As(err, &exitErr) {
		code = exitErr.ExitCode()
	} else if err != nil {
		code = -1
	}
	s.logMu.Lock()
	output := s.log.String()[mark:]
	s.logMu.Unlock()
	r := StageResult{Name: name, ExitCode: code, Output: output, Duration: time.Since(start), Stdout: streamOut.String(), Stderr: streamErr.String()}
	r.MaxRSS = peak()
	s.Results = append(s.Results, r)
	return stageCall{StageResult: r, stdout: stdout.String()}
}

type lockedWriter struct{ s *Session }

func (w *lockedWriter) Write(p []byte) (int, error) {
	w.s.logMu.Lock()
	defer w.s.logMu.Unlock()
	if w.s.e.Log != nil {
		_, _ = w.s.e.Log.Write(p)
	}
	return w.s.log.Write(p)
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

// watchPeakRSS follows the process's VmHWM, its resident memory's high-water
// mark, until the returned func is called, which returns the last value
// read. The kernel's rusage is no use here: os/exec starts the child with
// vfork, and exec then folds this (large) test process's high-water mark
// into the child's.
func watchPeakRSS(pid int) func() int64 {
	var mu sync.Mutex
	var hwm int64
	stop := make(chan struct{})
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		path := fmt.Sprintf("/proc/%d/status", pid)
		for {
			if data, err := os.ReadFile(path); err == nil {
				for _, line := range strings.Split(string(data), "\n") {
					if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
						if kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64); err == nil {
							mu.Lock()
							hwm = max(hwm, kb*1024)
							mu.Unlock()
						}
					}
				}
			}
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	return func() int64 {
		close(stop)
		<-stopped
		mu.Lock()
		defer mu.Unlock()
		return hwm
	}
}
