package integration

import (
	"context"
	"encoding/base64"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/network"

	"github.com/berthci/berth/backends"
	"github.com/berthci/berth/backends/dockerproxy"
	"github.com/berthci/berth/integration/runner"
)

// buildImage builds a local test image from a Dockerfile and files, and
// removes it when the test ends.
func buildImage(t *testing.T, tag string, files map[string]string) {
	t.Helper()
	dir := t.TempDir()
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() { removeImage(t, tag) })
	cmd := exec.Command("docker", "build", "-q", "-t", tag, dir)
	cmd.Env = append(os.Environ(), "DOCKER_BUILDKIT=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("docker build %s: %v\n%s", tag, err, out)
	}
}

func TestSocketEntrypointHandling(t *testing.T) {
	e := newEnv(t, options{})
	tag := fmt.Sprintf("berth-it-entrypoint:%d", os.Getpid())
	buildImage(t, tag, map[string]string{
		"Dockerfile": "FROM " + busyboxImage + "\nCOPY entry.sh other.sh /\nENTRYPOINT [\"/entry.sh\"]\n",
		"entry.sh":   "#!/bin/sh\nexport FROM_ENTRYPOINT=image\nexec \"$@\"\n",
		"other.sh":   "#!/bin/sh\nexport FROM_ENTRYPOINT=override\nexec \"$@\"\n",
	})
	cases := map[string]struct {
		entrypoint []string
		want       string
	}{
		"image entrypoint wraps the shell": {nil, "ep=image;"},
		"job entrypoint replaces it":       {[]string{"/other.sh"}, "ep=override;"},
		"empty entrypoint clears it":       {[]string{""}, "ep=;"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			job := e.job(120)
			job.Image = runner.Image{Name: tag, Entrypoint: tc.entrypoint}
			job.Script = []string{`echo "ep=$FROM_ENTRYPOINT;"`}
			res := e.run(job)
			requireSuccess(t, res)
			if s, _ := res.Stage("build_script"); !strings.Contains(s.Output, tc.want) {
				t.Errorf("got output %q, want %q", s.Output, tc.want)
			}
		})
	}
}

func TestSocketShellFallbackToSh(t *testing.T) {
	e := newEnv(t, options{})
	job := e.job(121)
	job.Image = runner.Image{Name: busyboxImage}
	job.Script = []string{"test ! -e /bin/bash && echo no-bash-here", "readlink /proc/$$/exe"}
	res := e.run(job)
	requireSuccess(t, res)
	s, _ := res.Stage("build_script")
	if !strings.Contains(s.Output, "no-bash-here") || !strings.Contains(s.Output, "busybox") {
		t.Errorf("busybox job output:\n%s", s.Output)
	}
}

func TestSocketDebugServicesStreamsLogs(t *testing.T) {
	e := newEnv(t, options{servicesTTL: "1s"})
	job := e.job(122)
	job.Services = []runner.Image{{
		Name: busyboxImage, Alias: "chatty",
		Command:   []string{"sh", "-c", "while true; do echo chatty-service-says-hi; sleep 0.2; done"},
		Variables: []runner.Variable{{Key: "HEALTHCHECK_TCP_PORT", Value: "1"}},
	}}
	job.Variables = []runner.Variable{{Key: "CI_DEBUG_SERVICES", Value: "true", Public: true}}
	job.Script = []string{"sleep 2"}
	res := e.run(job)
	requireSuccess(t, res)
	s, _ := res.Stage("build_script")
	if !strings.Contains(s.Output, "[service:chatty] chatty-service-says-hi") {
		t.Errorf("build_script output lacks the service's log lines:\n%s", s.Output)
	}
}

func TestSocketDockerAuthConfigVariable(t *testing.T) {
	e := newEnv(t, options{})
	first := e.job(123)
	tag := fmt.Sprintf("%s/berth-it/authcfg:%d", registryAddr, first.ID)
	t.Cleanup(func() { removeImage(t, tag) })
	first.Script = []string{
		"echo \"$REG_PASS\" | docker login " + registryAddr + " -u " + registryUser + " --password-stdin",
		"docker tag " + busyboxImage + " " + tag, "docker push " + tag, "docker rmi " + tag,
	}
	first.Variables = []runner.Variable{{Key: "REG_PASS", Value: registryPass, Masked: true}}
	requireSuccess(t, e.run(first))
	removeImage(t, tag)

	auth := base64.StdEncoding.EncodeToString([]byte(registryUser + ":" + registryPass))
	second := e.job(123)
	second.Image = runner.Image{Name: tag, PullPolicy: []string{"always"}}
	second.Variables = []runner.Variable{{Key: "DOCKER_AUTH_CONFIG", Value: `{"auths":{"` + registryAddr + `":{"auth":"` + auth + `"}}}`}}
	second.Script = []string{"echo pulled-with-docker-auth-config"}
	res := e.run(second)
	requireSuccess(t, res)
	if strings.Contains(res.Log, auth) || strings.Contains(res.Log, registryPass) {
		t.Error("credentials appear in the job log")
	}
}

func TestSocketAdminLimitsAndOptions(t *testing.T) {
	e := newEnv(t, options{extraTOML: `memory = "256m"
cpus = "0.5"
pids_limit = 200
shm_size = "32m"
ulimits = ["nofile=512:1024"]
cap_drop = ["NET_RAW"]
security_opt = ["no-new-privileges"]
extra_hosts = ["berth-extra.invalid:10.1.2.3"]
network_mtu = 1400
`})
	job := e.job(124)
	job.Script = []string{"grep berth-extra.invalid /etc/hosts", "ulimit -n"}
	ctx := context.Background()
	s, err := e.emu.Start(ctx, job)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Cleanup(ctx)
	if r := s.Prepare(ctx); r.ExitCode != 0 {
		t.Fatalf("prepare: %d\n%s", r.ExitCode, r.Output)
	}
	name := fmt.Sprintf("berth-%s-%d-build", e.runner, job.ID)
	inspect, err := dockerCli.ContainerInspect(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	hc := inspect.HostConfig
	if hc.Memory != 256<<20 || hc.NanoCPUs != 5e8 || hc.PidsLimit == nil || *hc.PidsLimit != 200 || hc.ShmSize != 32<<20 {
		t.Errorf("resources: got memory %d, cpus %d, pids %v, shm %d", hc.Memory, hc.NanoCPUs, hc.PidsLimit, hc.ShmSize)
	}
	if len(hc.CapDrop) != 1 || !strings.HasSuffix(hc.CapDrop[0], "NET_RAW") || len(hc.SecurityOpt) != 1 {
		t.Errorf("security: got cap_drop %v, security_opt %v", hc.CapDrop, hc.SecurityOpt)
	}
	if len(hc.Ulimits) != 1 || hc.Ulimits[0].Name != "nofile" || hc.Ulimits[0].Soft != 512 {
		t.Errorf("ulimits: got %v", hc.Ulimits)
	}
	nw, err := dockerCli.NetworkInspect(ctx, fmt.Sprintf("berth-%s-%d", e.runner, job.ID), network.InspectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if nw.Options["com.docker.network.driver.mtu"] != "1400" {
		t.Errorf("network mtu option: got %v", nw.Options)
	}
	for _, stage := range []string{"get_sources", "build_script"} {
		r := s.RunStage(ctx, stage)
		if r.ExitCode != 0 {
			t.Fatalf("%s: %d\n%s", stage, r.ExitCode, r.Output)
		}
		if stage == "build_script" && (!strings.Contains(r.Output, "10.1.2.3") || !strings.Contains(r.Output, "512")) {
			t.Errorf("build_script output:\n%s", r.Output)
		}
	}
}

func TestSocketWithoutHelperRunsEverythingInJobContainer(t *testing.T) {
	e := newEnv(t, options{extraTOML: "use_helper = false\n"})
	job := e.job(125)
	job.RepoURL = e.makeRepo(map[string]string{"f.txt": "from git\n"})
	job.CachePaths = []string{"f.txt"}
	job.Script = []string{"cat f.txt"}
	res := e.run(job)
	requireSuccess(t, res)
	cs, err := dockerCli.ContainerList(context.Background(), container.ListOptions{All: true, Filters: e.labelFilter()})
	if err != nil {
		t.Fatal(err)
	}
	if len(cs) != 0 {
		t.Errorf("containers left: %d", len(cs))
	}
	if !strings.Contains(res.Log, "from git") || !strings.Contains(res.Log, "gitlab-runner stand-in: cache-archiver") {
		t.Errorf("job log:\n%s", res.Log)
	}
}

func TestSocketMissingRunnerBinaryIsSystemFailure(t *testing.T) {
	e := newEnv(t, options{extraTOML: ""})
	cfg, err := os.ReadFile(e.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	cfg = []byte(strings.Replace(string(cfg), standinPath, "/nonexistent/gitlab-runner", 1))
	if err := os.WriteFile(e.cfgPath, cfg, 0o644); err != nil {
		t.Fatal(err)
	}
	res := e.run(e.job(126))
	prep, _ := res.Stage("prepare")
	if res.Failure != "system" || !strings.Contains(prep.Output, "runner_binary") {
		t.Errorf("got failure %q; prepare output:\n%s", res.Failure, prep.Output)
	}
}

func TestSocketBadConfigIsSystemFailureNamingTheKey(t *testing.T) {
	e := newEnv(t, options{extraTOML: "memroy = \"1g\"\n"})
	_, err := e.emu.Start(context.Background(), e.job(127))
	if err == nil {
		t.Fatal("config_exec succeeded with an unknown key in the berth config")
	}
	for _, want := range []string{fmt.Sprintf("exited %d", runner.SystemFailureExitCode), "unknown key", "docker.memroy", e.cfgPath + ":"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q: %v", want, err)
		}
	}
}

// TestSocketBerthBinaryFromConfig: with [docker] berth_binary set, as when
// berth runs in the runner image, the guard runs the binary at that host
// path, not the running executable.
func TestSocketBerthBinaryFromConfig(t *testing.T) {
	hostCopy := filepath.Join(os.TempDir(), fmt.Sprintf("berth-host-copy-%d", os.Getpid()))
	data, err := os.ReadFile(berthBinary)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(hostCopy, data, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(hostCopy) })
	e := newEnv(t, options{extraTOML: fmt.Sprintf("berth_binary = %q\n", hostCopy)})
	job := e.job(131)
	job.Script = []string{"docker version --format '{{.Server.Version}}'"}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	s, err := e.emu.Start(ctx, job)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if r := s.Cleanup(ctx); r.ExitCode != 0 {
			t.Errorf("cleanup: exit %d\n%s", r.ExitCode, r.Output)
		}
	}()
	if r := s.Prepare(ctx); r.ExitCode != 0 {
		t.Fatalf("prepare: exit %d\n%s", r.ExitCode, r.Output)
	}
	f := e.labelFilter()
	f.Add("label", backends.LabelRole+"="+dockerproxy.RoleProxy)
	proxies, err := dockerCli.ContainerList(ctx, container.ListOptions{All: true, Filters: f})
	if err != nil || len(proxies) != 1 {
		t.Fatalf("got proxies %v (err %v), want the job's one", proxies, err)
	}
	var sources []string
	for _, m := range proxies[0].Mounts {
		sources = append(sources, m.Source)
	}
	if !slices.Contains(sources, hostCopy) {
		t.Errorf("the guard mounts %v, want the configured berth_binary %s", sources, hostCopy)
	}
	for _, stage := range []string{"get_sources", "build_script"} {
		if r := s.RunStage(ctx, stage); r.ExitCode != 0 {
			t.Errorf("%s through the guard: exit %d\n%s", stage, r.ExitCode, r.Output)
		}
	}
}
