package integration

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/api/types/volume"
	"github.com/docker/docker/client"

	"github.com/berthci/berth/integration/runner"
)

// Test images and the local registry that provision.sh sets up.
const (
	debianImage  = "berth-test/debian:12"
	busyboxImage = "berth-test/busybox:latest"
	helperImage  = "berth-test/helper:latest"
	httpImage    = "berth-test/http-service:latest"
	registryAddr = "127.0.0.1:5000"
	registryUser = "berth"
	registryPass = "berth-secret"
	standinPath  = "/usr/local/lib/berth-test/gitlab-runner"
)

var (
	berthBinary string
	dockerCli   *client.Client
	jobCounter  atomic.Int64
	jobIDBase   = time.Now().Unix()%100000*1000 + 1_000_000_000
)

func TestMain(m *testing.M) {
	os.Exit(testMain(m))
}

func testMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "berth-it-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	// The rootless podman user mounts berth into its jobs' proxy containers.
	if err := os.Chmod(dir, 0o755); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	berthBinary = filepath.Join(dir, "berth")
	_, thisFile, _, _ := runtime.Caller(0)
	root := filepath.Dir(filepath.Dir(thisFile))
	if err := runner.BuildBerth(root, berthBinary); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	dockerCli, err = client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
	if err != nil {
		fmt.Fprintln(os.Stderr, "docker client:", err)
		return 1
	}
	return m.Run()
}

// requireDocker skips the test when no Docker engine is present, except
// under CI=true, where a missing engine fails it. A present but broken
// engine always fails.
func requireDocker(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := dockerCli.Ping(ctx); err != nil {
		if _, statErr := os.Stat("/var/run/docker.sock"); os.IsNotExist(statErr) && os.Getenv("CI") != "true" {
			t.Skipf("no Docker engine on this machine (run integration/provision.sh): %v", err)
		}
		t.Fatalf("Docker engine is not answering: %v (run integration/provision.sh)", err)
	}
	for _, img := range []string{debianImage, busyboxImage, helperImage, httpImage} {
		if _, err := dockerCli.ImageInspect(ctx, img); err != nil {
			t.Fatalf("test image %s is missing: %v (run integration/provision.sh)", img, err)
		}
	}
}

// env is one test's berth installation: config, directories and emulator.
type env struct {
	t       *testing.T
	root    string
	runner  string
	gitDir  string
	cfgPath string
	emu     *runner.Emulator
}

// options tweak the test config.
type options struct {
	extraTOML   string // appended to the [docker] section
	policyTOML  string // replaces the [policy] section body
	topTOML     string // added at the top level
	servicesTTL string // wait_for_services_timeout
}

var runnerCounter, repoCounter atomic.Int64

// newEnv writes a berth config for a fresh runner name, whose resources are
// checked to be gone when the test ends.
func newEnv(t *testing.T, o options) *env {
	t.Helper()
	requireDocker(t)
	root, err := os.MkdirTemp("", "berth-it-")
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, root: root, runner: fmt.Sprintf("it%d-%d", os.Getpid()%100000, runnerCounter.Add(1))}
	t.Cleanup(func() {
		e.assertNoResources()
		os.RemoveAll(root)
	})
	e.gitDir = filepath.Join(root, "git")
	policy := o.policyTOML
	if policy == "" {
		policy = "default_backend = \"socket\"\nallowed_backends = [\"socket\"]\n"
	}
	ttl := o.servicesTTL
	if ttl == "" {
		ttl = "20s"
	}
	cfg := fmt.Sprintf(`%s
builds_dir = %q
cache_dir = %q
runner_name = %q

[policy]
%s

[docker]
helper_image = %q
runner_binary = %q
pull_policy = ["if-not-present"]
wait_for_services_timeout = %q
stop_timeout = "1s"
volumes = [%q]
guard_local_registries = [%q, %q]
%s
`, o.topTOML, filepath.Join(root, "builds"), filepath.Join(root, "cache"), e.runner, policy,
		helperImage, standinPath, ttl, e.gitDir+":"+e.gitDir+":ro", registryAddr, "localhost:"+strings.Split(registryAddr, ":")[1], o.extraTOML)
	e.cfgPath = filepath.Join(root, "config.toml")
	if err := os.WriteFile(e.cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	e.emu = &runner.Emulator{
		Binary:              berthBinary,
		ConfigPath:          e.cfgPath,
		WorkDir:             root,
		GracefulKillTimeout: 10 * time.Second,
		Log:                 testLogWriter{t},
	}
	return e
}

type testLogWriter struct{ t *testing.T }

func (w testLogWriter) Write(p []byte) (int, error) {
	if testing.Verbose() {
		w.t.Logf("%s", strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

// job returns a job with a fresh id for the env's project.
func (e *env) job(projectID int64) *runner.Job {
	return &runner.Job{
		ID:          jobIDBase + jobCounter.Add(1),
		ProjectID:   projectID,
		ProjectPath: fmt.Sprintf("group/project-%d", projectID),
		Image:       runner.Image{Name: debianImage},
	}
}

// run runs the job and fails the test on a harness error.
func (e *env) run(job *runner.Job) *runner.Result {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	res, err := e.emu.RunJob(ctx, job)
	if err != nil {
		e.t.Fatalf("run job: %v", err)
	}
	return res
}

// labelFilter selects everything of this env's runner.
func (e *env) labelFilter() filters.Args {
	return filters.NewArgs(filters.Arg("label", "berth.runner="+e.runner))
}

// resources lists what carries this runner's berth labels.
func (e *env) resources() []string {
	e.t.Helper()
	ctx := context.Background()
	var found []string
	cs, err := dockerCli.ContainerList(ctx, container.ListOptions{All: true, Filters: e.labelFilter()})
	if err != nil {
		e.t.Fatalf("list containers: %v", err)
	}
	for _, c := range cs {
		found = append(found, "container "+strings.Join(c.Names, ","))
	}
	ns, err := dockerCli.NetworkList(ctx, network.ListOptions{Filters: e.labelFilter()})
	if err != nil {
		e.t.Fatalf("list networks: %v", err)
	}
	for _, n := range ns {
		found = append(found, "network "+n.Name)
	}
	vs, err := dockerCli.VolumeList(ctx, volume.ListOptions{Filters: e.labelFilter()})
	if err != nil {
		e.t.Fatalf("list volumes: %v", err)
	}
	for _, v := range vs.Volumes {
		found = append(found, "volume "+v.Name)
	}
	return found
}

func (e *env) assertNoResources() {
	e.t.Helper()
	if left := e.resources(); len(left) > 0 {
		e.t.Errorf("berth-labelled resources left behind: %v", left)
	}
}

// makeRepo creates a local bare git repository, mounted read-only into the
// job by the admin volume, holding files.
func (e *env) makeRepo(files map[string]string) string {
	e.t.Helper()
	n := repoCounter.Add(1)
	url, err := runner.MakeRepo(filepath.Join(e.root, fmt.Sprintf("work-%d", n)), filepath.Join(e.gitDir, fmt.Sprintf("project-%d.git", n)), files)
	if err != nil {
		e.t.Fatal(err)
	}
	return url
}

// requireSuccess fails the test unless the job passed.
func requireSuccess(t *testing.T, res *runner.Result) {
	t.Helper()
	if res.Failure != "" {
		t.Fatalf("job failed (%s, script exit %d); log:\n%s", res.Failure, res.BuildExitCode, res.Log)
	}
	for _, s := range res.Stages {
		if s.ExitCode != 0 && s.Name != "after_script" {
			t.Fatalf("stage %s exited %d; log:\n%s", s.Name, s.ExitCode, res.Log)
		}
	}
}
