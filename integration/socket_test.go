package integration

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/api/types/network"

	"github.com/berthci/berth/integration/runner"
)

func TestSocketPassingJobAllStages(t *testing.T) {
	e := newEnv(t, options{})
	job := e.job(101)
	job.RepoURL = e.makeRepo(map[string]string{"hello.txt": "hello from git\n"})
	job.Variables = []runner.Variable{{Key: "GREETING", Value: "hi there", Public: true}}
	job.BeforeScript = []string{"echo before"}
	job.Script = []string{"cat hello.txt", "echo \"$GREETING from $CI_JOB_ID\"", "mkdir -p vendor && echo cached > vendor/dep"}
	job.AfterScript = []string{"echo after-ran"}
	job.CachePaths = []string{"vendor"}

	res := e.run(job)
	requireSuccess(t, res)

	want := []string{"config", "prepare", "prepare_script", "get_sources", "restore_cache", "download_artifacts",
		"build_script", "after_script", "archive_cache", "upload_artifacts_on_success", "cleanup_file_variables", "cleanup"}
	var got []string
	for _, s := range res.Stages {
		got = append(got, s.Name)
	}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("stages: got %v, want %v", got, want)
	}
	for _, s := range []string{"hello from git", "hi there from " + strconv.FormatInt(job.ID, 10), "after-ran", "Using berth"} {
		if !strings.Contains(res.Log, s) {
			t.Errorf("job log lacks %q", s)
		}
	}
	if res.Config.Driver.Name != "berth" || res.Config.Shell != "bash" || res.Config.BuildsDirIsShared {
		t.Errorf("config output: got %+v", res.Config)
	}
	if !strings.Contains(res.Config.BuildsDir, strconv.FormatInt(job.ID, 10)) {
		t.Errorf("builds_dir %q does not derive from the job id %d", res.Config.BuildsDir, job.ID)
	}
	// The cache and artifact stages ran the mounted gitlab-runner stand-in
	// in the helper container.
	standin, err := os.ReadFile(filepath.Join(res.Config.CacheDir, runner.StandinLogName))
	if err != nil {
		t.Fatalf("stand-in log: %v", err)
	}
	for _, call := range []string{"cache-extractor", "artifacts-downloader", "cache-archiver", "artifacts-uploader"} {
		if !strings.Contains(string(standin), "gitlab-runner "+call) {
			t.Errorf("stand-in log lacks %s:\n%s", call, standin)
		}
	}
	// The builds dir is removed at cleanup; the cache persists for the project.
	if _, err := os.Stat(res.Config.BuildsDir); !os.IsNotExist(err) {
		t.Errorf("builds dir %s still exists after cleanup (err %v)", res.Config.BuildsDir, err)
	}
	if _, err := os.Stat(filepath.Join(res.Config.CacheDir, job.ProjectPath, "default", "cache.tgz")); err != nil {
		t.Errorf("cache archive missing: %v", err)
	}

	// A second job of the project restores the cache.
	job2 := e.job(101)
	job2.CachePaths = []string{"vendor"}
	job2.Script = []string{"cat vendor/dep"}
	res2 := e.run(job2)
	requireSuccess(t, res2)
	if s, _ := res2.Stage("build_script"); !strings.Contains(s.Output, "cached") {
		t.Errorf("second job did not restore the cache; build_script output:\n%s", s.Output)
	}
}

func TestSocketFailingScriptExitCode(t *testing.T) {
	e := newEnv(t, options{})
	job := e.job(102)
	job.Script = []string{"echo about to fail", "exit 3"}
	job.AfterScript = []string{"echo after-script-after-failure"}
	res := e.run(job)
	if res.Failure != "build" {
		t.Fatalf("failure: got %q, want build; log:\n%s", res.Failure, res.Log)
	}
	if res.BuildExitCode != 3 {
		t.Errorf("BUILD_EXIT_CODE_FILE: got %d, want 3", res.BuildExitCode)
	}
	s, _ := res.Stage("build_script")
	if s.ExitCode != runner.BuildFailureExitCode {
		t.Errorf("build_script exit: got %d, want %d", s.ExitCode, runner.BuildFailureExitCode)
	}
	after, ok := res.Stage("after_script")
	if !ok || after.ExitCode != 0 || !strings.Contains(after.Output, "after-script-after-failure") {
		t.Errorf("after_script after a failure: got %+v", after)
	}
	if _, ok := res.Stage("upload_artifacts_on_failure"); !ok {
		t.Error("upload_artifacts_on_failure did not run")
	}
}

func TestSocketServiceWithAlias(t *testing.T) {
	e := newEnv(t, options{})
	job := e.job(103)
	job.Services = []runner.Image{{Name: httpImage, Alias: "web,www"}}
	job.Script = []string{
		"curl -sf http://web:8080/ && echo",
		"curl -sf http://www:8080/ && echo",
		"curl -sf http://berth-test__http-service:8080/ && echo",
		"curl -sf http://berth-test-http-service:8080/ && echo",
	}
	res := e.run(job)
	requireSuccess(t, res)
	s, _ := res.Stage("build_script")
	if n := strings.Count(s.Output, "hello from berth service"); n != 4 {
		t.Errorf("service answers: got %d, want 4; output:\n%s", n, s.Output)
	}
}

func TestSocketServicesFromEnvFallback(t *testing.T) {
	e := newEnv(t, options{})
	job := e.job(104)
	job.Services = []runner.Image{{Name: httpImage, Alias: "svc"}}
	job.ServicesOnlyInEnv = true
	job.Script = []string{"curl -sf http://svc:8080/"}
	res := e.run(job)
	requireSuccess(t, res)
}

func TestSocketUnhealthyServiceWarnsNotHangs(t *testing.T) {
	e := newEnv(t, options{servicesTTL: "3s"})
	job := e.job(105)
	job.Services = []runner.Image{{
		Name:      busyboxImage,
		Alias:     "never",
		Command:   []string{"sh", "-c", "echo service-log-line; sleep 600"},
		Variables: []runner.Variable{{Key: "HEALTHCHECK_TCP_PORT", Value: "9999"}},
	}}
	job.Script = []string{"echo job-ran"}
	start := time.Now()
	res := e.run(job)
	requireSuccess(t, res)
	prep, _ := res.Stage("prepare")
	for _, s := range []string{"probably didn't start properly", "service-log-line"} {
		if !strings.Contains(prep.Output, s) {
			t.Errorf("prepare output lacks %q:\n%s", s, prep.Output)
		}
	}
	if elapsed := time.Since(start); elapsed > 2*time.Minute {
		t.Errorf("job took %s with a 3s service timeout", elapsed)
	}
}

func TestSocketSeedBindMountPattern(t *testing.T) {
	e := newEnv(t, options{})
	job := e.job(106)
	job.RepoURL = e.makeRepo(map[string]string{"test/int-00/data.txt": "seed data\n"})
	job.Script = []string{
		"docker run --rm -v $(pwd)/test/int-00:/app/data " + busyboxImage + " cat /app/data/data.txt",
		"echo written-by-job > test/int-00/out.txt",
		"docker run --rm -v $CI_PROJECT_DIR/test/int-00:/data " + busyboxImage + " cat /data/out.txt",
	}
	res := e.run(job)
	requireSuccess(t, res)
	s, _ := res.Stage("build_script")
	for _, want := range []string{"seed data", "written-by-job"} {
		if !strings.Contains(s.Output, want) {
			t.Errorf("output lacks %q:\n%s", want, s.Output)
		}
	}
}

func TestSocketDockerBuildAndRun(t *testing.T) {
	e := newEnv(t, options{})
	job := e.job(107)
	tag := fmt.Sprintf("berth-it-built:%d", job.ID)
	t.Cleanup(func() { removeImage(t, tag) })
	job.RepoURL = e.makeRepo(map[string]string{
		"Dockerfile": "FROM " + busyboxImage + "\nRUN echo built-step > /built.txt\nCMD [\"cat\", \"/built.txt\"]\n",
	})
	job.Script = []string{
		"DOCKER_BUILDKIT=0 docker build -q -t " + tag + " .",
		"docker run --rm " + tag,
	}
	res := e.run(job)
	requireSuccess(t, res)
	if s, _ := res.Stage("build_script"); !strings.Contains(s.Output, "built-step") {
		t.Errorf("docker run of the built image: output:\n%s", s.Output)
	}
}

func TestSocketRegistryPushThenPullWithJobCredentials(t *testing.T) {
	e := newEnv(t, options{})
	repo := fmt.Sprintf("%s/berth-it/pushed", registryAddr)
	first := e.job(108)
	tag := fmt.Sprintf("%s:%d", repo, first.ID)
	t.Cleanup(func() { removeImage(t, tag) })
	first.Script = []string{
		"echo \"$REG_PASS\" | docker login " + registryAddr + " -u " + registryUser + " --password-stdin",
		"docker tag " + busyboxImage + " " + tag,
		"docker push " + tag,
		"docker rmi " + tag,
		"docker logout " + registryAddr,
	}
	first.Variables = []runner.Variable{{Key: "REG_PASS", Value: registryPass, Masked: true}}
	requireSuccess(t, e.run(first))
	removeImage(t, tag)

	// A later job pulls it with the job payload's credentials.
	second := e.job(108)
	second.Image = runner.Image{Name: tag, PullPolicy: []string{"always"}}
	second.Credentials = []runner.Credential{{Type: "registry", URL: registryAddr, Username: registryUser, Password: registryPass}}
	second.Script = []string{"echo running-in-pulled-image"}
	res := e.run(second)
	requireSuccess(t, res)
	prep, _ := res.Stage("prepare")
	if !strings.Contains(prep.Output, "Pulling docker image "+tag) {
		t.Errorf("prepare did not pull:\n%s", prep.Output)
	}
	// The pull's progress is compact: a line per layer state change, never
	// a progress bar or the same state twice.
	seen := map[string]bool{}
	for _, line := range strings.Split(sectionBody(prep.Output, "prepare_images"), "\n") {
		if strings.Contains(line, "=>") || strings.Contains(line, "MB/") || strings.Contains(line, "kB/") {
			t.Errorf("pull progress bar in the job log: %q", line)
		}
		if strings.HasPrefix(line, "  ") && seen[line] {
			t.Errorf("pull progress line %q repeated in:\n%s", line, prep.Output)
		}
		seen[line] = true
	}
	if strings.Contains(res.Log, registryPass) {
		t.Error("the registry password appears in the job log")
	}

	// Without credentials the same pull is refused by the registry: a
	// system failure naming the image.
	removeImage(t, tag)
	third := e.job(108)
	third.Image = runner.Image{Name: tag, PullPolicy: []string{"always"}}
	third.Script = []string{"true"}
	res = e.run(third)
	if res.Failure != "system" || !strings.Contains(res.Log, tag) {
		t.Errorf("pull without credentials: got failure %q; log:\n%s", res.Failure, res.Log)
	}
}

func TestSocketPullFailureIsSystemFailure(t *testing.T) {
	e := newEnv(t, options{})
	job := e.job(109)
	missing := registryAddr + "/berth-it/does-not-exist:1"
	job.Image = runner.Image{Name: missing, PullPolicy: []string{"always"}}
	job.Credentials = []runner.Credential{{Type: "registry", URL: registryAddr, Username: registryUser, Password: registryPass}}
	res := e.run(job)
	if res.Failure != "system" {
		t.Fatalf("failure: got %q, want system; log:\n%s", res.Failure, res.Log)
	}
	prep, _ := res.Stage("prepare")
	if prep.ExitCode != runner.SystemFailureExitCode || !strings.Contains(prep.Output, missing) {
		t.Errorf("prepare: got exit %d, output:\n%s", prep.ExitCode, prep.Output)
	}
	if left := e.resources(); len(left) > 0 {
		t.Errorf("after a failed prepare (before cleanup ran): %v", left)
	}
}

func TestSocketSigtermDuringBuildScript(t *testing.T) {
	e := newEnv(t, options{})
	job := e.job(110)
	job.Script = []string{"echo sleeping-now", "sleep 300"}
	ctx := context.Background()
	s, err := e.emu.Start(ctx, job)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Cleanup(ctx)
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
	r := <-done
	if r.ExitCode == 0 {
		t.Errorf("canceled stage exited 0")
	}
	name := fmt.Sprintf("berth-%s-%d-build", e.runner, job.ID)
	waitFor(t, 10*time.Second-time.Since(signalled), func() bool {
		inspect, err := dockerCli.ContainerInspect(ctx, name)
		return err == nil && !inspect.State.Running
	})
	if took := time.Since(signalled); took > 10*time.Second {
		t.Errorf("container still running %s after SIGTERM", took)
	}
	if r := s.Cleanup(ctx); r.ExitCode != 0 {
		t.Errorf("cleanup after cancel: exit %d\n%s", r.ExitCode, r.Output)
	}
	if left := e.resources(); len(left) > 0 {
		t.Errorf("after cleanup: %v", left)
	}
}

func TestSocketPrepareRerunAfterPartialFailure(t *testing.T) {
	e := newEnv(t, options{})
	job := e.job(111)
	job.Services = []runner.Image{{Name: httpImage, Alias: "web"}}
	job.Script = []string{"curl -sf http://web:8080/"}
	ctx := context.Background()
	s, err := e.emu.Start(ctx, job)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Cleanup(ctx)
	// What a SIGKILLed first attempt leaves: the network and a stray
	// container with the job's names and labels.
	labels := map[string]string{"berth.runner": e.runner, "berth.job.id": strconv.FormatInt(job.ID, 10)}
	netName := fmt.Sprintf("berth-%s-%d", e.runner, job.ID)
	if _, err := dockerCli.NetworkCreate(ctx, netName, network.CreateOptions{Labels: labels}); err != nil {
		t.Fatal(err)
	}
	if _, err := dockerCli.ContainerCreate(ctx, &container.Config{Image: busyboxImage, Labels: labels},
		nil, nil, nil, netName+"-svc-0"); err != nil {
		t.Fatal(err)
	}
	for attempt := 1; attempt <= 2; attempt++ {
		if r := s.Prepare(ctx); r.ExitCode != 0 {
			t.Fatalf("prepare attempt %d: exit %d\n%s", attempt, r.ExitCode, r.Output)
		}
	}
	for _, stage := range []string{"get_sources", "build_script"} {
		if r := s.RunStage(ctx, stage); r.ExitCode != 0 {
			t.Fatalf("%s: exit %d\n%s", stage, r.ExitCode, r.Output)
		}
	}
	cs, err := dockerCli.ContainerList(ctx, container.ListOptions{All: true, Filters: e.labelFilter()})
	if err != nil {
		t.Fatal(err)
	}
	if len(cs) != 4 { // service, helper, build, and the guarded socket's proxy
		t.Errorf("containers after two prepares: got %d, want 4", len(cs))
	}
}

func TestSocketConcurrentJobsSameProject(t *testing.T) {
	e := newEnv(t, options{})
	var wg sync.WaitGroup
	results := make([]*runner.Result, 2)
	jobs := []*runner.Job{e.job(112), e.job(112)}
	for i, job := range jobs {
		job.Script = []string{"echo \"I am $CI_JOB_ID\" > mine.txt", "sleep 2", "cat mine.txt", "exit " + strconv.Itoa(i)}
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			res, err := e.emu.RunJob(ctx, job)
			if err != nil {
				t.Error(err)
				return
			}
			results[i] = res
		}()
	}
	wg.Wait()
	for i, res := range results {
		if res == nil {
			t.Fatalf("job %d did not run", i)
		}
		s, _ := res.Stage("build_script")
		own := fmt.Sprintf("I am %d", jobs[i].ID)
		other := fmt.Sprintf("I am %d", jobs[1-i].ID)
		if !strings.Contains(s.Output, own) || strings.Contains(res.Log, other) {
			t.Errorf("job %d log mixes jobs:\n%s", i, res.Log)
		}
	}
	if results[0].Failure != "" {
		t.Errorf("job 0: got failure %q, want none", results[0].Failure)
	}
	if results[1].Failure != "build" || results[1].BuildExitCode != 1 {
		t.Errorf("job 1: got %q/%d, want build/1", results[1].Failure, results[1].BuildExitCode)
	}
}

func TestSocketIdentityOverridesIgnored(t *testing.T) {
	e := newEnv(t, options{})
	job := e.job(113)
	job.ExtraCustomEnv = map[string]string{
		"CI_JOB_ID": "1", "CI_PROJECT_ID": "2", "CI_CONCURRENT_PROJECT_ID": "99",
		"CI_PROJECT_PATH_SLUG": "other-project", "CI_RUNNER_ID": "5", "CI_PROJECT_PATH": "other/project",
	}
	ctx := context.Background()
	s, err := e.emu.Start(ctx, job)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Cleanup(ctx)
	if !strings.HasSuffix(s.Config().BuildsDir, "/"+strconv.FormatInt(job.ID, 10)) {
		t.Errorf("builds_dir %q does not end in the real job id %d", s.Config().BuildsDir, job.ID)
	}
	if r := s.Prepare(ctx); r.ExitCode != 0 {
		t.Fatalf("prepare: %d\n%s", r.ExitCode, r.Output)
	}
	cs, err := dockerCli.ContainerList(ctx, container.ListOptions{All: true, Filters: e.labelFilter()})
	if err != nil {
		t.Fatal(err)
	}
	if len(cs) == 0 {
		t.Fatal("no containers")
	}
	for _, c := range cs {
		if c.Labels["berth.job.id"] != strconv.FormatInt(job.ID, 10) || c.Labels["berth.project.id"] != "113" ||
			c.Labels["berth.project.path"] != job.ProjectPath {
			t.Errorf("container %v labels: got %v", c.Names, c.Labels)
		}
		if !strings.Contains(c.Names[0], strconv.FormatInt(job.ID, 10)) {
			t.Errorf("container name %v lacks the real job id", c.Names)
		}
	}
}

func TestSocketDisallowedBackendRefusedBeforeCreate(t *testing.T) {
	e := newEnv(t, options{})
	job := e.job(114)
	job.ExtraCustomEnv = map[string]string{"BERTH_BACKEND": "dind"}
	ctx := context.Background()
	s, err := e.emu.Start(ctx, job)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Cleanup(ctx)
	r := s.Prepare(ctx)
	if r.ExitCode != runner.BuildFailureExitCode {
		t.Errorf("prepare exit: got %d, want %d", r.ExitCode, runner.BuildFailureExitCode)
	}
	for _, want := range []string{`backend "dind" is not allowed`, "allowed: socket"} {
		if !strings.Contains(r.Output, want) {
			t.Errorf("prepare output lacks %q:\n%s", want, r.Output)
		}
	}
	if left := e.resources(); len(left) > 0 {
		t.Errorf("refused prepare created %v", left)
	}
}

func TestSocketDisallowedImageRefusedBeforeCreate(t *testing.T) {
	e := newEnv(t, options{policyTOML: `default_backend = "socket"
allowed_backends = ["socket"]
allowed_images = ["berth-test/*"]
allowed_services = ["berth-test/http-service:*"]`})
	for name, job := range map[string]*runner.Job{
		"image":   {Image: runner.Image{Name: "evil/image:1"}},
		"service": {Image: runner.Image{Name: debianImage}, Services: []runner.Image{{Name: busyboxImage}}},
		"flag":    {Image: runner.Image{Name: "--privileged"}},
	} {
		t.Run(name, func(t *testing.T) {
			base := e.job(115)
			job.ID, job.ProjectID, job.ProjectPath = base.ID, base.ProjectID, base.ProjectPath
			res := e.run(job)
			prep, _ := res.Stage("prepare")
			if prep.ExitCode != runner.BuildFailureExitCode || res.Failure != "build" {
				t.Errorf("prepare exit: got %d (%s), want %d", prep.ExitCode, res.Failure, runner.BuildFailureExitCode)
			}
			if !strings.Contains(prep.Output, "not allowed") && !strings.Contains(prep.Output, "invalid image name") {
				t.Errorf("prepare output does not say why:\n%s", prep.Output)
			}
			if _, ok := res.Stage("build_script"); ok {
				t.Error("build_script ran after a refused prepare")
			}
		})
	}
}

func removeImage(t *testing.T, ref string) {
	t.Helper()
	_, err := dockerCli.ImageRemove(context.Background(), ref, image.RemoveOptions{Force: true, PruneChildren: true})
	if err != nil && !cerrdefs.IsNotFound(err) {
		t.Logf("remove image %s: %v", ref, err)
	}
}

func waitFor(t *testing.T, limit time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %s", limit)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
