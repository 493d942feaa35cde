//go:build remote

package integration

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containers/podman/v5/pkg/bindings"
	"github.com/containers/podman/v5/pkg/bindings/containers"
	"github.com/containers/podman/v5/pkg/specgen"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/api/types/registry"

	"github.com/berthci/berth/integration/runner"
)

func TestPodmanPassingJobAllStages(t *testing.T) {
	e := newPodmanEnv(t, options{})
	job := e.job(201)
	job.RepoURL = e.makePodmanRepo(map[string]string{"hello.txt": "hello from git\n"})
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
	for _, s := range []string{"hello from git", "hi there from " + strconv.FormatInt(job.ID, 10), "after-ran", "backend podman (Podman "} {
		if !strings.Contains(res.Log, s) {
			t.Errorf("job log lacks %q", s)
		}
	}
	if res.BuildExitCode != 0 {
		t.Errorf("BUILD_EXIT_CODE_FILE: got %d, want 0", res.BuildExitCode)
	}
	standin, err := os.ReadFile(filepath.Join(res.Config.CacheDir, runner.StandinLogName))
	if err != nil {
		t.Fatalf("stand-in log: %v", err)
	}
	for _, call := range []string{"cache-extractor", "artifacts-downloader", "cache-archiver", "artifacts-uploader"} {
		if !strings.Contains(string(standin), "gitlab-runner "+call) {
			t.Errorf("stand-in log lacks %s:\n%s", call, standin)
		}
	}
	if _, err := os.Stat(res.Config.BuildsDir); !os.IsNotExist(err) {
		t.Errorf("builds dir %s still exists after cleanup (err %v)", res.Config.BuildsDir, err)
	}

	// A second job of the project restores the cache the first one wrote.
	job2 := e.job(201)
	job2.CachePaths = []string{"vendor"}
	job2.Script = []string{"cat vendor/dep"}
	res2 := e.run(job2)
	requireSuccess(t, res2)
	if s, _ := res2.Stage("build_script"); !strings.Contains(s.Output, "cached") {
		t.Errorf("second job did not restore the cache; build_script output:\n%s", s.Output)
	}
}

func TestPodmanFailingScriptExitCode(t *testing.T) {
	e := newPodmanEnv(t, options{})
	cases := map[string]struct {
		script   []string
		failure  string
		buildOut int
	}{
		"exit 3":  {script: []string{"echo about to fail", "exit 3"}, failure: "build", buildOut: 3},
		"false":   {script: []string{"echo before-false", "false", "echo not-reached"}, failure: "build", buildOut: 1},
		"success": {script: []string{"true"}, failure: "", buildOut: 0},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			job := e.job(202)
			job.Script = tc.script
			job.AfterScript = []string{"echo after-script-ran"}
			res := e.run(job)
			if res.Failure != tc.failure {
				t.Fatalf("failure: got %q, want %q; log:\n%s", res.Failure, tc.failure, res.Log)
			}
			if res.BuildExitCode != tc.buildOut {
				t.Errorf("BUILD_EXIT_CODE_FILE: got %d, want %d", res.BuildExitCode, tc.buildOut)
			}
			s, _ := res.Stage("build_script")
			wantExit := 0
			if tc.failure == "build" {
				wantExit = runner.BuildFailureExitCode
			}
			if s.ExitCode != wantExit {
				t.Errorf("build_script exit: got %d, want %d", s.ExitCode, wantExit)
			}
			after, ok := res.Stage("after_script")
			if !ok || after.ExitCode != 0 || !strings.Contains(after.Output, "after-script-ran") {
				t.Errorf("after_script: got %+v", after)
			}
		})
	}
}

func TestPodmanServiceWithAlias(t *testing.T) {
	e := newPodmanEnv(t, options{})
	job := e.job(203)
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
	if prep, _ := res.Stage("prepare"); strings.Contains(prep.Output, "probably didn't start properly") {
		t.Errorf("healthy service got a warning:\n%s", prep.Output)
	}
}

func TestPodmanUnhealthyServiceWarnsNotHangs(t *testing.T) {
	e := newPodmanEnv(t, options{servicesTTL: "3s"})
	job := e.job(204)
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

func TestPodmanDebugServicesStreamsLogs(t *testing.T) {
	e := newPodmanEnv(t, options{})
	job := e.job(205)
	job.Services = []runner.Image{{Name: busyboxImage, Alias: "chatty",
		Command: []string{"sh", "-c", "while true; do echo chatty-says-hi; sleep 0.3; done"}}}
	job.Variables = []runner.Variable{{Key: "CI_DEBUG_SERVICES", Value: "true", Public: true}}
	job.Script = []string{"sleep 2"}
	res := e.run(job)
	requireSuccess(t, res)
	if s, _ := res.Stage("build_script"); !strings.Contains(s.Output, "[service:chatty] chatty-says-hi") {
		t.Errorf("build_script output lacks the service's lines:\n%s", s.Output)
	}
}

func TestPodmanSeedBindMountPattern(t *testing.T) {
	e := newPodmanEnv(t, options{})
	job := e.job(206)
	job.RepoURL = e.makePodmanRepo(map[string]string{"test/int-00/data.txt": "seed data\n"})
	job.Script = []string{
		"docker run --rm -v $(pwd)/test/int-00:/app/data " + busyboxImage + " cat /app/data/data.txt",
		"echo written-by-job > test/int-00/out.txt",
		"docker run --rm -v $CI_PROJECT_DIR/test/int-00:/data " + busyboxImage + " sh -c 'cat /data/out.txt; echo from-nested > /data/back.txt'",
		"cat test/int-00/back.txt",
	}
	res := e.run(job)
	requireSuccess(t, res)
	s, _ := res.Stage("build_script")
	for _, want := range []string{"seed data", "written-by-job", "from-nested"} {
		if !strings.Contains(s.Output, want) {
			t.Errorf("output lacks %q:\n%s", want, s.Output)
		}
	}
}

func TestPodmanDockerBuildRunPush(t *testing.T) {
	e := newPodmanEnv(t, options{})
	conn := requirePodman(t)
	job := e.job(207)
	tag := fmt.Sprintf("berth-it-built:%d", job.ID)
	// podman's Docker-compatible docker login skips TLS only for
	// "localhost:" registries; provision.sh marks it insecure for pushes.
	reg := "localhost:" + strings.Split(registryAddr, ":")[1]
	pushed := fmt.Sprintf("%s/berth-it/podman-pushed:%d", reg, job.ID)
	t.Cleanup(func() {
		// podman's Docker-compatible build names the image as Docker
		// would, docker.io/library/...
		removePodmanImage(t, conn, "docker.io/library/"+tag)
		removePodmanImage(t, conn, "localhost/"+tag)
		removePodmanImage(t, conn, pushed)
	})
	job.RepoURL = e.makePodmanRepo(map[string]string{
		// No RUN: Podman 4.3 runs RUN steps in the host's network, so
		// the guard refuses them there.
		"Dockerfile": "FROM " + busyboxImage + "\nCOPY built.txt /built.txt\nCMD [\"cat\", \"/built.txt\"]\n",
		"built.txt":  "built-step\n",
	})
	job.Variables = []runner.Variable{{Key: "REG_PASS", Value: registryPass, Masked: true}}
	job.Script = []string{
		"DOCKER_BUILDKIT=0 docker build -q -t " + tag + " .",
		"docker run --rm " + tag,
		"echo \"$REG_PASS\" | docker login " + reg + " -u " + registryUser + " --password-stdin",
		"docker tag " + tag + " " + pushed,
		"docker push " + pushed,
		"docker rmi " + pushed + " " + tag,
		"docker pull " + pushed,
		"docker run --rm " + pushed,
		"docker rmi " + pushed,
	}
	res := e.run(job)
	requireSuccess(t, res)
	if s, _ := res.Stage("build_script"); strings.Count(s.Output, "built-step") != 2 {
		t.Errorf("docker run of the built and of the pulled image: output:\n%s", s.Output)
	}
}

func TestPodmanSigtermDuringBuildScript(t *testing.T) {
	e := newPodmanEnv(t, options{})
	conn := requirePodman(t)
	job := e.job(208)
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
		inspect, err := containers.Inspect(conn, name, nil)
		return err == nil && !inspect.State.Running
	})
	if took := time.Since(signalled); took > 10*time.Second {
		t.Errorf("container still running %s after SIGTERM", took)
	}
	if r := s.Cleanup(ctx); r.ExitCode != 0 {
		t.Errorf("cleanup after cancel: exit %d\n%s", r.ExitCode, r.Output)
	}
	if left := podmanResources(t, conn, e.runner); len(left) > 0 {
		t.Errorf("after cleanup: %v", left)
	}
}

// TestPodmanJobProcessesAreUnprivileged looks at the host while a job with a
// service runs: every process in the job's containers belongs to the podman
// user or its subordinate ids, and no container is privileged.
func TestPodmanJobProcessesAreUnprivileged(t *testing.T) {
	e := newPodmanEnv(t, options{})
	conn := requirePodman(t)
	job := e.job(209)
	job.Services = []runner.Image{{Name: httpImage, Alias: "web"}}
	job.Script = []string{"echo job-running", "sleep 300"}
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
	defer func() { cancel(); <-done }()
	waitFor(t, 60*time.Second, func() bool { return strings.Contains(s.Log(), "job-running") })

	subStart, subCount := subordinateRange(t, podUser)
	list, err := containers.List(conn, new(containers.ListOptions).WithAll(true).
		WithFilters(map[string][]string{"label": {"berth.runner=" + e.runner}}))
	if err != nil {
		t.Fatal(err)
	}
	checked := 0
	for _, c := range list {
		inspect, err := containers.Inspect(conn, c.ID, nil)
		if err != nil {
			t.Fatal(err)
		}
		if inspect.HostConfig != nil && inspect.HostConfig.Privileged {
			t.Errorf("container %s is privileged", inspect.Name)
		}
		if inspect.State == nil || !inspect.State.Running {
			continue
		}
		members := pidNamespaceMembers(t, inspect.State.Pid)
		if c.Labels["berth.role"] == "docker-proxy" {
			// The guard shares the service's pid namespace (it reads
			// what Podman mounted in /proc/<pid>/root), so its
			// namespace is the host's: its own process is what counts.
			members = []int{inspect.State.Pid}
		}
		for _, pid := range members {
			uid := procUID(t, pid)
			checked++
			if uid != podUID && (uid < subStart || uid >= subStart+subCount) {
				t.Errorf("process %d (%s) of container %s runs as host uid %d, want %d or %d-%d",
					pid, procComm(pid), inspect.Name, uid, podUID, subStart, subStart+subCount-1)
			}
		}
	}
	if checked < 2 {
		t.Errorf("checked %d job processes on the host, want at least the job's sleep and the service", checked)
	}
}

// subordinateRange reads the user's first /etc/subuid range.
func subordinateRange(t *testing.T, user string) (start, count int) {
	t.Helper()
	f, err := os.Open("/etc/subuid")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		parts := strings.Split(sc.Text(), ":")
		if len(parts) == 3 && parts[0] == user {
			start, _ = strconv.Atoi(parts[1])
			count, _ = strconv.Atoi(parts[2])
			return start, count
		}
	}
	t.Fatalf("no /etc/subuid range for %s", user)
	return 0, 0
}

// pidNamespaceMembers lists the host pids that share pid's PID namespace.
func pidNamespaceMembers(t *testing.T, pid int) []int {
	t.Helper()
	want, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", pid))
	if err != nil {
		t.Fatalf("pid namespace of %d: %v", pid, err)
	}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var pids []int
	for _, e := range entries {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if ns, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", p)); err == nil && ns == want {
			pids = append(pids, p)
		}
	}
	return pids
}

// procUID is the real uid of a host process, as `ps -o user` shows it.
func procUID(t *testing.T, pid int) int {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatalf("status of %d: %v", pid, err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if fields := strings.Fields(line); len(fields) >= 2 && fields[0] == "Uid:" {
			uid, _ := strconv.Atoi(fields[1])
			return uid
		}
	}
	t.Fatalf("no Uid line for %d", pid)
	return -1
}

func procComm(pid int) string {
	data, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	return strings.TrimSpace(string(data))
}

// nestedImage is a job image with podman and buildah in it, built by
// provision.sh.
const nestedImage = "berth-test/podman:latest"

func TestPodmanNestedPodmanBuild(t *testing.T) {
	conn := requirePodman(t)
	requirePodmanImage(t, conn, nestedImage)
	e := newPodmanEnv(t, options{}, "nested = true", "job_socket = false")
	busybox, err := os.ReadFile("/bin/busybox")
	if err != nil {
		t.Fatalf("static busybox for the nested image: %v (run integration/provision.sh)", err)
	}
	job := e.job(210)
	job.Image = runner.Image{Name: nestedImage}
	job.RepoURL = e.makePodmanRepo(map[string]string{
		"busybox": string(busybox),
		"Containerfile": "FROM scratch\nCOPY busybox /bin/busybox\n" +
			"RUN [\"/bin/busybox\", \"sh\", \"-c\", \"echo nested-build-step > /built.txt\"]\n" +
			"CMD [\"/bin/busybox\", \"cat\", \"/built.txt\"]\n",
	})
	job.Script = []string{
		"test ! -e /var/run/docker.sock",
		"chmod +x busybox",
		"podman info --format '{{.Store.GraphDriverName}}'",
		"podman build -t localhost/nested-built .",
		"podman run --rm localhost/nested-built",
	}
	res := e.run(job)
	requireSuccess(t, res)
	if s, _ := res.Stage("build_script"); !strings.Contains(s.Output, "nested-build-step") {
		t.Errorf("output lacks the nested build's result:\n%s", s.Output)
	}
}

func TestPodmanPullPolicyWithJobCredentials(t *testing.T) {
	e := newPodmanEnv(t, options{})
	conn := requirePodman(t)
	ctx := context.Background()
	first := e.job(211)
	// podman knows the test registry as insecure under this name (see
	// provision.sh); dockerd trusts any loopback name.
	ref := fmt.Sprintf("localhost:%s/berth-it/podman-pulled:%d", strings.Split(registryAddr, ":")[1], first.ID)
	t.Cleanup(func() {
		removeImage(t, ref)
		removePodmanImage(t, conn, ref)
	})
	if err := dockerCli.ImageTag(ctx, busyboxImage, ref); err != nil {
		t.Fatal(err)
	}
	auth, err := registry.EncodeAuthConfig(registry.AuthConfig{Username: registryUser, Password: registryPass, ServerAddress: ref[:strings.IndexByte(ref, '/')]})
	if err != nil {
		t.Fatal(err)
	}
	rc, err := dockerCli.ImagePush(ctx, ref, image.PushOptions{RegistryAuth: auth})
	if err != nil {
		t.Fatalf("push the test image: %v", err)
	}
	out, _ := io.ReadAll(rc)
	rc.Close()
	if strings.Contains(string(out), `"error"`) {
		t.Fatalf("push the test image: %s", out)
	}

	first.Image = runner.Image{Name: ref, PullPolicy: []string{"always"}}
	first.Credentials = []runner.Credential{{Type: "registry", URL: ref[:strings.IndexByte(ref, '/')], Username: registryUser, Password: registryPass}}
	first.Script = []string{"echo running-in-pulled-image"}
	res := e.run(first)
	requireSuccess(t, res)
	prep, _ := res.Stage("prepare")
	if !strings.Contains(prep.Output, "Pulling podman image "+ref) {
		t.Errorf("prepare did not pull:\n%s", prep.Output)
	}
	if strings.Contains(res.Log, registryPass) {
		t.Error("the registry password appears in the job log")
	}

	// Without credentials the registry refuses the pull: a system failure
	// naming the image.
	removePodmanImage(t, conn, ref)
	second := e.job(211)
	second.Image = runner.Image{Name: ref, PullPolicy: []string{"always"}}
	second.Script = []string{"true"}
	res = e.run(second)
	if res.Failure != "system" || !strings.Contains(res.Log, ref) {
		t.Errorf("pull without credentials: got failure %q; log:\n%s", res.Failure, res.Log)
	}

	// "never" with the image absent is a system failure too.
	third := e.job(211)
	third.Image = runner.Image{Name: ref, PullPolicy: []string{"never"}}
	third.Script = []string{"true"}
	res = e.run(third)
	if res.Failure != "system" || !strings.Contains(res.Log, "pull policy is \"never\"") {
		t.Errorf("pull policy never: got failure %q; log:\n%s", res.Failure, res.Log)
	}
}

// podmanHostContainer starts a container in the rootless service that no
// job created, with labels, and removes it when the test ends.
func podmanHostContainer(t *testing.T, conn context.Context, name string, labels map[string]string) {
	t.Helper()
	t.Cleanup(func() {
		if _, err := containers.Remove(conn, name, new(containers.RemoveOptions).WithForce(true).WithIgnore(true).WithTimeout(0)); err != nil {
			t.Errorf("remove %s: %v", name, err)
		}
	})
	s := specgen.NewSpecGenerator(busyboxImage, false)
	s.Name = name
	s.Labels = labels
	s.Command = []string{"sleep", "600"}
	s.NetNS = specgen.Namespace{NSMode: specgen.NoNetwork}
	if _, err := containers.CreateWithSpec(conn, s, nil); err != nil {
		t.Fatalf("create %s: %v", name, err)
	}
	if err := containers.Start(conn, name, nil); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
}

// TestPodmanGuardedSocket checks the podman job's guarded socket: every
// escalation is refused with the guard's message, the container of the
// rootless user that the job did not create stays untouched, and the job
// sees only its own containers.
func TestPodmanGuardedSocket(t *testing.T) {
	e := newPodmanEnv(t, options{})
	conn := requirePodman(t)
	job := e.job(212)
	foreign := fmt.Sprintf("berth-it-podforeign-%d", job.ID)
	podmanHostContainer(t, conn, foreign, map[string]string{"berth-it": "foreign"})
	otherJob := fmt.Sprintf("berth-it-podotherjob-%d", job.ID)
	podmanHostContainer(t, conn, otherJob, map[string]string{"berth.runner": e.runner, "berth.job.id": "1", "berth.role": "job-created"})

	refusals := []struct{ command, want string }{
		{"docker run --rm --privileged " + busyboxImage + " true", "privileged containers are not allowed"},
		{"docker run --rm -v /:/host " + busyboxImage + " ls /host", `bind mount of "/" is not allowed`},
		{"docker run --rm -v " + podSocket + ":/s " + busyboxImage + " true", "binds must come from the job's builds directory"},
		{"docker volume create --driver local --opt type=none --opt device=/ --opt o=bind hostroot", "volume driver options (device, o, type) are not allowed"},
		{"docker exec " + foreign + " true", "was not created by this job"},
		{"docker rm -f " + foreign, "was not created by this job"},
		{"docker run --rm --pid host " + busyboxImage + " true", `PidMode "host" is not allowed`},
		{"docker run --rm --network host " + busyboxImage + " true", `NetworkMode "host" is not allowed`},
		{"docker run --rm --cap-add SYS_ADMIN " + busyboxImage + " true", "adding capabilities (SYS_ADMIN)"},
		{"docker run --rm --network container:" + foreign + " " + busyboxImage + " true", "was not created by this job"},
	}
	for i, r := range refusals {
		job.Script = append(job.Script, fmt.Sprintf("if %s; then echo ESCALATED-%d; exit 1; fi", r.command, i))
	}
	job.Script = append(job.Script,
		"docker run -d --name podguard-bg-"+fmt.Sprint(job.ID)+" --label berth.job.id=1 "+busyboxImage+" sleep 600",
		"echo PS-BEGIN; docker ps -a --format '{{.Names}}'; echo PS-END",
	)
	res := e.run(job)
	requireSuccess(t, res)
	s, _ := res.Stage("build_script")
	for _, r := range refusals {
		if !strings.Contains(s.Output, r.want) {
			t.Errorf("build_script output lacks the refusal %q", r.want)
		}
	}
	if strings.Contains(s.Output, "\nESCALATED-") {
		t.Errorf("an escalation went through:\n%s", s.Output)
	}
	_, ps, _ := strings.Cut(s.Output, "PS-BEGIN\n")
	ps, _, _ = strings.Cut(ps, "PS-END")
	if names := strings.Fields(ps); len(names) != 1 || names[0] != "podguard-bg-"+fmt.Sprint(job.ID) {
		t.Errorf("docker ps -a in the job: got %v, want only its own container", names)
	}
	data, err := containers.Inspect(conn, foreign, nil)
	if err != nil || !data.State.Running || data.HostConfig.Privileged {
		t.Errorf("the rootless user's other container was touched: err %v", err)
	}
	if ok, _ := containers.Exists(conn, "podguard-bg-"+fmt.Sprint(job.ID), nil); ok {
		t.Error("the job's detached container outlived cleanup")
	}
	if t.Failed() {
		t.Logf("build_script output:\n%s", s.Output)
	}
}

// TestPodmanGuardOff gives the job the service's own socket, where podman
// --remote's API works too, when the admin turns the guard off.
func TestPodmanGuardOff(t *testing.T) {
	e := newPodmanEnv(t, options{}, "guard = false")
	job := e.job(213)
	job.Script = []string{
		`test "$CONTAINER_HOST" = unix:///var/run/docker.sock`,
		"curl -sf --unix-socket /var/run/docker.sock http://d/v4.0.0/libpod/_ping && echo libpod-api-reachable",
	}
	res := e.run(job)
	requireSuccess(t, res)
	if s, _ := res.Stage("build_script"); !strings.Contains(s.Output, "libpod-api-reachable") {
		t.Errorf("output:\n%s", s.Output)
	}
}

// TestPodmanServiceMissingIsSystemFailure points berth at a socket that
// does not exist: prepare is a system failure that says what to start.
func TestPodmanServiceMissingIsSystemFailure(t *testing.T) {
	e := newPodmanEnv(t, options{}, `socket = "unix:///run/user/4242/podman/podman.sock"`)
	res := e.run(e.job(214))
	prep, _ := res.Stage("prepare")
	if res.Failure != "system" {
		t.Errorf("got failure %q, want system", res.Failure)
	}
	for _, want := range []string{"/run/user/4242/podman/podman.sock", "systemctl --user enable --now podman.socket"} {
		if !strings.Contains(prep.Output, want) {
			t.Errorf("prepare output lacks %q:\n%s", want, prep.Output)
		}
	}
}

// TestPodmanRootfulServiceRefused runs a rootful podman service (root's,
// started by this test and stopped by its pid) and points berth at it
// with require_rootless = true, the default: prepare is a system failure
// naming the setting, and nothing is created in that service.
func TestPodmanRootfulServiceRefused(t *testing.T) {
	requirePodman(t)
	dir := t.TempDir()
	sock := filepath.Join(dir, "podman.sock")
	cmd := exec.Command("podman", "system", "service", "--time=0", "unix://"+sock)
	cmd.Stdout, cmd.Stderr = io.Discard, io.Discard
	if err := cmd.Start(); err != nil {
		t.Fatalf("start a rootful podman service: %v", err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	})
	waitFor(t, 30*time.Second, func() bool { _, err := os.Stat(sock); return err == nil })

	e := newPodmanEnv(t, options{}, fmt.Sprintf("socket = %q", "unix://"+sock))
	res := e.run(e.job(215))
	prep, _ := res.Stage("prepare")
	if res.Failure != "system" {
		t.Errorf("got failure %q, want system", res.Failure)
	}
	for _, want := range []string{"runs as root but [podman] require_rootless is true", "systemctl --user enable --now podman.socket"} {
		if !strings.Contains(prep.Output, want) {
			t.Errorf("prepare output lacks %q:\n%s", want, prep.Output)
		}
	}
	root, err := bindings.NewConnection(context.Background(), "unix://"+sock)
	if err != nil {
		t.Fatal(err)
	}
	if left := podmanResources(t, root, e.runner); len(left) > 0 {
		t.Errorf("berth created %v in the rootful service", left)
	}
}
