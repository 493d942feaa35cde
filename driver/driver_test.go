package driver

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/berthci/berth/backends"
	"github.com/berthci/berth/config"
)

// fakeBackend records what the driver asks of it.
type fakeBackend struct {
	mu     sync.Mutex
	log    logrus.FieldLogger
	calls  []string
	jobs   []*backends.Job
	stages []backends.Stage
	// cleanupCtxErr is ctx.Err() as Cleanup saw it.
	cleanupCtxErr error

	describeErr error
	prepareErr  error
	runCode     int
	runErr      error
	cleanupErr  error
	// prepareLog is logged through the driver's logger during Prepare.
	prepareLog string
}

func (b *fakeBackend) record(call string, job *backends.Job) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.calls = append(b.calls, call)
	if job != nil {
		// The driver may reuse its job value for the next backend.
		copied := *job
		job = &copied
	}
	b.jobs = append(b.jobs, job)
}

func (b *fakeBackend) Prepare(ctx context.Context, job *backends.Job) error {
	b.record("prepare", job)
	if b.prepareLog != "" {
		b.log.Info(b.prepareLog)
	}
	return b.prepareErr
}

func (b *fakeBackend) Run(ctx context.Context, job *backends.Job, stage backends.Stage) (int, error) {
	b.record("run", job)
	b.mu.Lock()
	b.stages = append(b.stages, stage)
	b.mu.Unlock()
	return b.runCode, b.runErr
}

func (b *fakeBackend) Cleanup(ctx context.Context, job *backends.Job) error {
	b.record("cleanup", job)
	b.mu.Lock()
	b.cleanupCtxErr = ctx.Err()
	b.mu.Unlock()
	return b.cleanupErr
}

// describingBackend is a fakeBackend with the optional Describer capability.
type describingBackend struct{ *fakeBackend }

func (b describingBackend) Describe(ctx context.Context, job *backends.Job) (string, error) {
	b.record("describe", nil)
	return "Fake 1.0", b.describeErr
}

// opener is a Driver.Open hook that hands out fake backends by name and
// records every open.
type opener struct {
	mu       sync.Mutex
	backends map[string]*fakeBackend
	opened   []string
	describe bool
}

func (o *opener) open(name string, cfg *config.Config, log logrus.FieldLogger) (backends.Backend, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.opened = append(o.opened, name)
	b, ok := o.backends[name]
	if !ok {
		return nil, errors.New("no such fake backend")
	}
	b.log = log
	if o.describe {
		return describingBackend{b}, nil
	}
	return b, nil
}

// newTestDriver returns a driver for a job whose payload is resp, with
// extra environment, the default config and fake backends.
func newTestDriver(t *testing.T, resp any, extra map[string]string) (*Driver, *opener, *bytes.Buffer, *bytes.Buffer) {
	t.Helper()
	log, _, logBuf := newTestLogger(t, "text")
	var stdout bytes.Buffer
	o := &opener{backends: map[string]*fakeBackend{"socket": {}, "podman": {}}}
	cfg := config.Default()
	// Prepare and cleanup write beside the builds dir.
	root := t.TempDir()
	cfg.BuildsDir, cfg.CacheDir = filepath.Join(root, "builds"), filepath.Join(root, "cache")
	d := &Driver{
		Config: cfg,
		Env:    jobEnv(t, resp, extra),
		Log:    log,
		Stdout: &stdout,
		Stderr: &bytes.Buffer{},
		Open:   o.open,
	}
	return d, o, &stdout, logBuf
}

func TestConfigure(t *testing.T) {
	d, o, stdout, _ := newTestDriver(t, testResponse(), identityOverrides)
	if err := d.Configure(context.Background()); err != nil {
		t.Fatalf("got %v, want no error", err)
	}
	var got map[string]any
	if err := json.Unmarshal(stdout.Bytes(), &got); err != nil {
		t.Fatalf("got %q, want one JSON object: %v", stdout, err)
	}
	want := map[string]any{
		"builds_dir":           d.Config.BuildsDir + "/berth/101",
		"cache_dir":            d.Config.CacheDir + "/berth/7",
		"builds_dir_is_shared": false,
		"hostname":             "berth-berth-101",
		"driver":               map[string]any{"name": "berth", "version": Version},
		"shell":                "bash",
		"job_env": map[string]any{
			"BERTH_RESOLVED_JOB_ID":       "101",
			"BERTH_RESOLVED_PROJECT_ID":   "7",
			"BERTH_RESOLVED_PROJECT_PATH": "group/app",
			"BERTH_RESOLVED_BACKEND":      "socket",
		},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
	if len(o.opened) != 0 {
		t.Errorf("got backends opened %v, want none: config contacts no engine", o.opened)
	}
}

func TestConfigureWithoutResponseFile(t *testing.T) {
	d, _, stdout, _ := newTestDriver(t, testResponse(), nil)
	d.Env = fakeEnv(nil)
	err := d.Configure(context.Background())
	if !errors.Is(err, ErrSystem) {
		t.Errorf("got %v, want a system error", err)
	}
	if stdout.Len() != 0 {
		t.Errorf("got output %q, want none", stdout)
	}
}

func TestPrepareRefusesDisallowedBackend(t *testing.T) {
	d, o, _, _ := newTestDriver(t, testResponse(), map[string]string{"CUSTOM_ENV_BERTH_BACKEND": "dind"})
	err := d.Prepare(context.Background())
	if !errors.Is(err, ErrBuild) {
		t.Fatalf("got %v, want a build error", err)
	}
	var refusal *config.RefusalError
	if !errors.As(err, &refusal) {
		t.Errorf("got %v, want it to wrap a *config.RefusalError", err)
	}
	for _, w := range []string{`backend "dind"`, "group/app", "allowed: socket"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("got %q, want it to contain %q", err, w)
		}
	}
	if len(o.opened) != 0 {
		t.Errorf("got backends opened %v, want none", o.opened)
	}
}

func TestPrepareRefusesBeforeOpening(t *testing.T) {
	badAlias := testResponse()
	badAlias.Services = []ImageSpec{{Name: "redis", Alias: "$(reboot)"}}
	badImage := testResponse()
	badImage.Image.Name = "--privileged"
	tests := map[string]struct {
		resp  JobResponse
		extra map[string]string
	}{
		"bad alias":         {resp: badAlias},
		"malformed image":   {resp: badImage},
		"bad services JSON": {resp: noServicesResponse(), extra: map[string]string{"CUSTOM_ENV_CI_JOB_SERVICES": "[null]"}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			d, o, _, _ := newTestDriver(t, tc.resp, tc.extra)
			err := d.Prepare(context.Background())
			if !errors.Is(err, ErrBuild) {
				t.Errorf("got %v, want a build error", err)
			}
			if len(o.opened) != 0 {
				t.Errorf("got backends opened %v, want none", o.opened)
			}
		})
	}
}

func TestPrepare(t *testing.T) {
	d, o, _, logBuf := newTestDriver(t, testResponse(), map[string]string{"CUSTOM_ENV_BERTH_BACKEND": "socket"})
	o.backends["socket"].prepareLog = "logging in with job-token-secret"
	if err := d.Prepare(context.Background()); err != nil {
		t.Fatalf("got %v, want no error", err)
	}
	b := o.backends["socket"]
	if !reflect.DeepEqual(o.opened, []string{"socket"}) || !reflect.DeepEqual(b.calls, []string{"prepare"}) {
		t.Fatalf("got opened %v calls %v, want socket opened and prepared once", o.opened, b.calls)
	}
	spec := b.jobs[0]
	if spec.ID != 101 || spec.Backend != "socket" || spec.Image.Name != "alpine:3" || spec.BuildsDir != d.Config.BuildsDir+"/berth/101" {
		t.Errorf("got spec %+v, want job 101 on socket with alpine:3", spec)
	}
	if strings.Contains(logBuf.String(), "job-token-secret") || !strings.Contains(logBuf.String(), "[MASKED]") {
		t.Errorf("got log %q, want the job token masked", logBuf)
	}
}

func TestPrepareFailures(t *testing.T) {
	engineDown := errors.New("connection refused")
	canceled, cancel := context.WithCancel(context.Background())
	cancel()
	tests := map[string]struct {
		ctx       context.Context
		setup     func(o *opener)
		wantClass error
		wantCause error
	}{
		"backend prepare fails": {
			ctx:       context.Background(),
			setup:     func(o *opener) { o.backends["socket"].prepareErr = engineDown },
			wantClass: ErrSystem,
			wantCause: engineDown,
		},
		"engine unreachable": {
			ctx: context.Background(),
			setup: func(o *opener) {
				o.describe = true
				o.backends["socket"].describeErr = engineDown
			},
			wantClass: ErrSystem,
			wantCause: engineDown,
		},
		"backend cannot be opened": {
			ctx:       context.Background(),
			setup:     func(o *opener) { delete(o.backends, "socket") },
			wantClass: ErrSystem,
		},
		"canceled": {
			ctx:       canceled,
			setup:     func(o *opener) { o.backends["socket"].prepareErr = context.Canceled },
			wantClass: ErrCanceled,
			wantCause: context.Canceled,
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			d, o, _, _ := newTestDriver(t, testResponse(), nil)
			tc.setup(o)
			err := d.Prepare(tc.ctx)
			if !errors.Is(err, tc.wantClass) {
				t.Errorf("got %v, want class %v", err, tc.wantClass)
			}
			if tc.wantCause != nil && !errors.Is(err, tc.wantCause) {
				t.Errorf("got %v, want it to wrap %v", err, tc.wantCause)
			}
		})
	}
}

// A job without `image:` gets the admin's docker.image.
func TestPrepareUsesAdminDefaultImage(t *testing.T) {
	resp := testResponse()
	resp.Image = ImageSpec{}
	d, o, _, _ := newTestDriver(t, resp, nil)
	d.Config.Docker.Image = "alpine:3.20"
	if err := d.Prepare(context.Background()); err != nil {
		t.Fatalf("got %v, want no error", err)
	}
	if got := o.backends["socket"].jobs[0].Image.Name; got != "alpine:3.20" {
		t.Errorf("got image %q, want alpine:3.20", got)
	}
}

func TestRun(t *testing.T) {
	engineGone := errors.New("container is gone")
	tests := map[string]struct {
		stage      string
		runCode    int
		runErr     error
		wantClass  error
		wantScript int
	}{
		"success":        {stage: "build_script"},
		"script failure": {stage: "build_script", runCode: 3, wantClass: ErrBuild, wantScript: 3},
		"engine failure": {stage: "get_sources", runErr: engineGone, wantClass: ErrSystem},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			d, o, _, _ := newTestDriver(t, testResponse(), nil)
			b := o.backends["socket"]
			b.runCode, b.runErr = tc.runCode, tc.runErr
			script := filepath.Join(t.TempDir(), "script.sh")
			if err := os.WriteFile(script, []byte("echo hi\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			err := d.Run(context.Background(), script, tc.stage)
			if tc.wantClass == nil {
				if err != nil {
					t.Fatalf("got %v, want no error", err)
				}
			} else if !errors.Is(err, tc.wantClass) {
				t.Fatalf("got %v, want class %v", err, tc.wantClass)
			}
			var classified *Error
			if errors.As(err, &classified) && classified.ScriptExitCode != tc.wantScript {
				t.Errorf("got script exit code %d, want %d", classified.ScriptExitCode, tc.wantScript)
			}
			if len(b.stages) != 1 {
				t.Fatalf("got %d runs, want 1", len(b.stages))
			}
			stage := b.stages[0]
			if stage.Name != tc.stage || string(stage.Script) != "echo hi\n" || stage.Helper != HelperStage(tc.stage) {
				t.Errorf("got stage %q script %q helper %v, want %q, the script and %v", stage.Name, stage.Script, stage.Helper, tc.stage, HelperStage(tc.stage))
			}
		})
	}
}

func TestRunMissingScript(t *testing.T) {
	d, o, _, _ := newTestDriver(t, testResponse(), nil)
	err := d.Run(context.Background(), filepath.Join(t.TempDir(), "none.sh"), "build_script")
	if !errors.Is(err, ErrSystem) {
		t.Errorf("got %v, want a system error", err)
	}
	if len(o.opened) != 0 {
		t.Errorf("got backends opened %v, want none", o.opened)
	}
}

func TestCleanup(t *testing.T) {
	d, o, _, _ := newTestDriver(t, testResponse(), map[string]string{"CUSTOM_ENV_BERTH_BACKEND": "dind"})
	d.Config.BuildsDir = t.TempDir()
	d.Config.Policy.AllowedBackends = []string{"socket", "podman"}
	jobDir := BuildsDir(d.Config, 101)
	if err := os.MkdirAll(filepath.Join(jobDir, "group", "app"), 0o755); err != nil {
		t.Fatal(err)
	}
	cleanupFailed := errors.New("engine busy")
	o.backends["socket"].cleanupErr = cleanupFailed

	ctx, cancel := context.WithCancel(context.Background())
	cancel() // cleanup runs even after the job was canceled
	err := d.Cleanup(ctx)
	if !errors.Is(err, ErrSystem) || !errors.Is(err, cleanupFailed) {
		t.Errorf("got %v, want a system error wrapping the socket failure", err)
	}
	for _, name := range []string{"socket", "podman"} {
		b := o.backends[name]
		if !reflect.DeepEqual(b.calls, []string{"cleanup"}) {
			t.Errorf("%s: got calls %v, want one cleanup", name, b.calls)
			continue
		}
		if b.cleanupCtxErr != nil {
			t.Errorf("%s: got context error %v, want a fresh context", name, b.cleanupCtxErr)
		}
		if job := b.jobs[0]; job.ID != 101 || job.Runner != "berth" || job.Backend != name {
			t.Errorf("%s: got job %+v, want job 101 of runner berth", name, job)
		}
	}
	if _, err := os.Stat(jobDir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("got %v for the job's builds dir, want it removed", err)
	}
}

// TestCleanupOfAnotherBackendOnlyWarns: when config chose the job's
// backend, another allowed backend whose engine is down does not fail the
// job's cleanup; the chosen backend's failure still does.
func TestCleanupOfAnotherBackendOnlyWarns(t *testing.T) {
	d, o, _, stderr := newTestDriver(t, testResponse(), map[string]string{envBackend: "socket"})
	d.Config.BuildsDir = t.TempDir()
	d.Config.Policy.AllowedBackends = []string{"socket", "podman"}
	down := errors.New("podman service down")
	o.backends["podman"].cleanupErr = down
	if err := d.Cleanup(context.Background()); err != nil {
		t.Errorf("got %v, want no error: the job ran on socket", err)
	}
	if !strings.Contains(stderr.String(), "podman service down") || !strings.Contains(stderr.String(), "berth gc") {
		t.Errorf("got log %q, want a warning naming the failure and berth gc", stderr.String())
	}

	d, o, _, _ = newTestDriver(t, testResponse(), map[string]string{envBackend: "socket"})
	d.Config.BuildsDir = t.TempDir()
	d.Config.Policy.AllowedBackends = []string{"socket", "podman"}
	o.backends["socket"].cleanupErr = down
	if err := d.Cleanup(context.Background()); !errors.Is(err, ErrSystem) || !errors.Is(err, down) {
		t.Errorf("got %v, want the chosen backend's failure as a system error", err)
	}
}

// TestCleanupAfterAnInterruptedPrepareLooksTwice: a prepare that began
// creating and never finished may have left create requests in flight, so
// cleanup waits and runs every backend's cleanup again. A prepare that
// finished needs one pass. The marker goes with the job.
func TestCleanupAfterAnInterruptedPrepareLooksTwice(t *testing.T) {
	for _, tc := range []struct {
		state string
		want  []string
	}{
		{prepareStarted, []string{"cleanup", "cleanup"}},
		{prepareDone, []string{"cleanup"}},
	} {
		d, o, _, _ := newTestDriver(t, testResponse(), nil)
		marker := prepareMarker(BuildsDir(d.Config, 101))
		if err := writeMarker(marker, tc.state, time.Hour); err != nil {
			t.Fatal(err)
		}
		if err := d.Cleanup(context.Background()); err != nil {
			t.Fatal(err)
		}
		if got := o.backends["socket"].calls; !reflect.DeepEqual(got, tc.want) {
			t.Errorf("prepare %q: got %v, want %v", strings.TrimSpace(tc.state), got, tc.want)
		}
		if _, err := os.Stat(marker); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("prepare %q: the marker outlived cleanup: %v", strings.TrimSpace(tc.state), err)
		}
	}
}

func TestPrepareMarksItsProgress(t *testing.T) {
	resp := testResponse()
	resp.RunnerInfo.Timeout = 5400
	d, o, _, _ := newTestDriver(t, resp, nil)
	marker := prepareMarker(BuildsDir(d.Config, 101))
	o.backends["socket"].prepareErr = errors.New("engine gone")
	if err := d.Prepare(context.Background()); err == nil {
		t.Fatal("prepare succeeded")
	}
	if !interruptedPrepare(BuildsDir(d.Config, 101)) {
		t.Error("a failed prepare did not leave the started marker")
	}
	o.backends["socket"].prepareErr = nil
	if err := d.Prepare(context.Background()); err != nil {
		t.Fatal(err)
	}
	state, timeout, err := readMarker(marker)
	if err != nil || state != prepareDone || timeout != 90*time.Minute {
		t.Errorf("marker after a finished prepare: %q, timeout %s, %v; want %q and 1h30m", state, timeout, err, prepareDone)
	}
}

func writeScript(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "script.sh")
	if err := os.WriteFile(path, []byte("echo hi\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// resolvedEnv is what the config stage hands later stages through job_env.
var resolvedEnv = map[string]string{
	"BERTH_RESOLVED_JOB_ID":     "101",
	"BERTH_RESOLVED_PROJECT_ID": "7",
	"BERTH_RESOLVED_BACKEND":    "socket",
}

func TestRunFindsTheJob(t *testing.T) {
	forged := map[string]string{
		"CUSTOM_ENV_BERTH_RESOLVED_JOB_ID":     "999",
		"CUSTOM_ENV_BERTH_RESOLVED_PROJECT_ID": "1",
		"CUSTOM_ENV_BERTH_RESOLVED_BACKEND":    "podman",
	}
	notAllowed := map[string]string{
		"BERTH_RESOLVED_JOB_ID":     "101",
		"BERTH_RESOLVED_PROJECT_ID": "7",
		"BERTH_RESOLVED_BACKEND":    "podman",
	}
	tests := map[string]struct {
		env         map[string]string
		noResponse  bool
		wantBackend string
	}{
		"from job_env without the payload":  {env: resolvedEnv, noResponse: true, wantBackend: "socket"},
		"from the payload":                  {env: nil, wantBackend: "socket"},
		"forged job variables ignored":      {env: forged, wantBackend: "socket"},
		"job_env backend no longer allowed": {env: notAllowed, wantBackend: "socket"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			d, o, _, _ := newTestDriver(t, testResponse(), tc.env)
			if tc.noResponse {
				env := d.Env
				d.Env = func(key string) (string, bool) {
					if key == "JOB_RESPONSE_FILE" {
						return "", false
					}
					return env(key)
				}
			}
			if err := d.Run(context.Background(), writeScript(t), "build_script"); err != nil {
				t.Fatalf("got %v, want no error", err)
			}
			if !reflect.DeepEqual(o.opened, []string{tc.wantBackend}) {
				t.Fatalf("got backends opened %v, want [%s]", o.opened, tc.wantBackend)
			}
			job := o.backends[tc.wantBackend].jobs[0]
			if job.ID != 101 || job.ProjectID != 7 || job.BuildsDir != d.Config.BuildsDir+"/berth/101" || job.CacheDir != d.Config.CacheDir+"/berth/7" {
				t.Errorf("got job %d project %d dirs %q %q, want the payload's ids", job.ID, job.ProjectID, job.BuildsDir, job.CacheDir)
			}
		})
	}
}

// Secrets must be masked in berth's messages in every stage, whichever way
// run finds the job.
func TestRunMasksSecrets(t *testing.T) {
	tests := map[string]map[string]string{
		"from the payload": nil,
		"from job_env":     resolvedEnv,
	}
	for name, env := range tests {
		t.Run(name, func(t *testing.T) {
			d, o, _, logBuf := newTestDriver(t, testResponse(), env)
			o.backends["socket"].runErr = errors.New("registry said: bad token job-token-secret")
			err := d.Run(context.Background(), writeScript(t), "build_script")
			if err == nil {
				t.Fatal("got no error, want the backend's")
			}
			d.Log.Error(err) // as cmd/berth does
			if strings.Contains(logBuf.String(), "job-token-secret") {
				t.Errorf("got log %q, want the job token masked", logBuf)
			}
		})
	}
}

// A bad services list is the job's fault: it fails prepare, but config and
// cleanup, which do not need the services, still work.
func TestBadServicesEnvOnlyFailsStagesThatNeedServices(t *testing.T) {
	extra := map[string]string{"CUSTOM_ENV_CI_JOB_SERVICES": `[{"name":"a","name":"b"}]`}
	d, _, stdout, _ := newTestDriver(t, noServicesResponse(), extra)
	if err := d.Configure(context.Background()); err != nil {
		t.Errorf("config: got %v, want no error", err)
	}
	if !json.Valid(stdout.Bytes()) {
		t.Errorf("config: got %q, want JSON", stdout)
	}
	d.Config.BuildsDir = t.TempDir()
	if err := d.Cleanup(context.Background()); err != nil {
		t.Errorf("cleanup: got %v, want no error", err)
	}
	if err := d.Prepare(context.Background()); !errors.Is(err, ErrBuild) || !strings.Contains(err.Error(), "duplicate key") {
		t.Errorf("prepare: got %v, want a build error naming the duplicate key", err)
	}
}
