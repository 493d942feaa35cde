package integration

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/image"

	"github.com/berthci/berth/backends"
	"github.com/berthci/berth/integration/runner"
)

const (
	dindImage         = "berth-test/dind:latest"
	registryImage     = "berth-test/registry:latest"
	dindPolicy        = "default_backend = \"socket\"\nallowed_backends = [\"socket\", \"dind\"]\n"
	dindCapabilityCfg = `
[dind]
image = "berth-test/dind:latest"
privileged = false
cap_add = ["ALL"]
cap_drop = ["SYS_RESOURCE"]
security_opt = ["seccomp=unconfined", "apparmor=unconfined", "systempaths=unconfined"]
insecure_registries = ["registry:5000"]
ready_timeout = "60s"
`
)

// dindEnv is a test env whose policy allows dind, with the sidecar in the
// capability form these hosts need (shared/spec/test-hosts.md).
func dindEnv(t *testing.T, extraDind string) *env {
	t.Helper()
	e := newEnv(t, options{policyTOML: dindPolicy, extraTOML: dindCapabilityCfg + extraDind})
	for _, img := range []string{dindImage, registryImage} {
		if _, err := dockerCli.ImageInspect(context.Background(), img); err != nil {
			t.Fatalf("test image %s is missing: %v (run integration/provision.sh)", img, err)
		}
	}
	return e
}

// dindJob is a job on the dind backend whose repository carries the busybox
// image as a tarball: the inner daemon reaches no registry but the job's.
func (e *env) dindJob(projectID int64, files map[string]string) *runner.Job {
	e.t.Helper()
	job := e.job(projectID)
	job.ExtraCustomEnv = map[string]string{"BERTH_BACKEND": "dind"}
	if files == nil {
		files = map[string]string{}
	}
	tar := filepath.Join(e.root, "busybox.tar")
	if _, err := os.Stat(tar); err != nil {
		if out, err := exec.Command("docker", "save", "-o", tar, busyboxImage).CombinedOutput(); err != nil {
			e.t.Fatalf("docker save: %v\n%s", err, out)
		}
	}
	data, err := os.ReadFile(tar)
	if err != nil {
		e.t.Fatal(err)
	}
	files["busybox.tar"] = string(data)
	job.RepoURL = e.makeRepo(files)
	return job
}

// hostState is what the host daemon has, to show a DinD job adds nothing.
func hostState(t *testing.T) (images map[string]bool, containers int) {
	t.Helper()
	ctx := context.Background()
	list, err := dockerCli.ImageList(ctx, image.ListOptions{All: true})
	if err != nil {
		t.Fatal(err)
	}
	images = map[string]bool{}
	for _, img := range list {
		images[img.ID] = true
	}
	cs, err := dockerCli.ContainerList(ctx, container.ListOptions{All: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cs {
		if _, ours := c.Labels[backends.LabelJobID]; !ours {
			containers++
		}
	}
	return images, containers
}

func TestDindBuildRunPushThroughSidecar(t *testing.T) {
	e := dindEnv(t, "")
	job := e.dindJob(201, map[string]string{
		"Dockerfile": "FROM " + busyboxImage + "\nRUN echo built-in-dind > /built.txt\nCMD [\"cat\", \"/built.txt\"]\n",
		"data/file":  "file from get_sources\n",
	})
	job.Services = []runner.Image{{Name: registryImage, Alias: "registry"}, {Name: httpImage, Alias: "web"}}
	job.Script = []string{
		"docker info --format 'inner daemon {{.ServerVersion}} name={{.Name}}'",
		"docker load -q -i busybox.tar",
		"echo from-build-script > data/second",
		"docker build -q -t registry:5000/it/app:1 .",
		"docker run --rm registry:5000/it/app:1",
		"docker run --rm -v $CI_PROJECT_DIR/data:/data " + busyboxImage + " cat /data/file /data/second",
		"docker run --rm " + busyboxImage + " wget -qO- http://web:8080/ && echo",
		"docker push -q registry:5000/it/app:1",
		"docker rmi registry:5000/it/app:1 && docker pull -q registry:5000/it/app:1",
	}
	imagesBefore, containersBefore := hostState(t)
	res := e.run(job)
	requireSuccess(t, res)
	s, _ := res.Stage("build_script")
	for _, want := range []string{"inner daemon", "built-in-dind", "file from get_sources", "from-build-script", "hello from berth service"} {
		if !strings.Contains(s.Output, want) {
			t.Errorf("build_script output lacks %q:\n%s", want, s.Output)
		}
	}
	if prep, _ := res.Stage("prepare"); !strings.Contains(prep.Output, "DinD daemon ready at tcp://docker:2376") {
		t.Errorf("prepare output:\n%s", prep.Output)
	}
	imagesAfter, containersAfter := hostState(t)
	for id := range imagesAfter {
		if !imagesBefore[id] {
			t.Errorf("the host daemon gained image %s", id)
		}
	}
	if containersAfter != containersBefore {
		t.Errorf("host containers without berth labels: got %d, want %d", containersAfter, containersBefore)
	}
	if _, err := os.Stat(filepath.Join(e.root, "builds", e.runner, fmt.Sprint(job.ID)+".dind-certs")); !os.IsNotExist(err) {
		t.Errorf("the job's certificates were not removed: %v", err)
	}
}

func TestDindGitLabDocsJobsUnchanged(t *testing.T) {
	cases := map[string]struct {
		adminTOML string
		vars      []runner.Variable
		wantFail  string // "" or the failure class
		wantText  string
	}{
		"TLS, as GitLab documents it": {
			vars: []runner.Variable{
				{Key: "DOCKER_HOST", Value: "tcp://docker:2376", Public: true},
				{Key: "DOCKER_TLS_CERTDIR", Value: "/certs", Public: true},
				{Key: "DOCKER_TLS_VERIFY", Value: "1", Public: true},
				{Key: "DOCKER_CERT_PATH", Value: "/certs/client", Public: true},
			},
			wantText: "inner-ok",
		},
		"TLS disabled, allowed by the admin": {
			adminTOML: "allow_tls_disabled = true\n",
			vars: []runner.Variable{
				{Key: "DOCKER_HOST", Value: "tcp://docker:2375", Public: true},
				{Key: "DOCKER_TLS_CERTDIR", Value: "", Public: true},
			},
			wantText: "inner-ok",
		},
		"TLS disabled, not allowed": {
			vars: []runner.Variable{
				{Key: "DOCKER_HOST", Value: "tcp://docker:2375", Public: true},
				{Key: "DOCKER_TLS_CERTDIR", Value: "", Public: true},
			},
			wantFail: "build",
			wantText: "allow_tls_disabled",
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			e := dindEnv(t, tc.adminTOML)
			job := e.job(202)
			job.ExtraCustomEnv = map[string]string{"BERTH_BACKEND": "dind"}
			job.Services = []runner.Image{{Name: "docker:24.0.5-dind"}}
			job.Variables = tc.vars
			job.Script = []string{"docker version --format '{{.Server.Version}}'", "docker info >/dev/null && echo inner-ok"}
			res := e.run(job)
			if res.Failure != tc.wantFail {
				t.Fatalf("failure: got %q, want %q; log:\n%s", res.Failure, tc.wantFail, res.Log)
			}
			if !strings.Contains(res.Log, tc.wantText) {
				t.Errorf("job log lacks %q:\n%s", tc.wantText, res.Log)
			}
		})
	}
}

func TestDindLayerCache(t *testing.T) {
	e := dindEnv(t, "layer_cache = \"project\"\nlayer_cache_max_size = \"5g\"\n")
	const project = 203
	cacheVolume := fmt.Sprintf("berth-%s-dindcache-%d", e.runner, project)
	t.Cleanup(func() { _ = dockerCli.VolumeRemove(context.Background(), cacheVolume, true) })
	files := map[string]string{
		"Dockerfile": "FROM " + busyboxImage + "\nRUN echo one > /1\nRUN echo two > /2\nRUN echo three > /3\n",
	}
	build := []string{"docker load -q -i busybox.tar", "docker build --no-cache=false . 2>&1"}

	first := e.dindJob(project, files)
	first.Script = build
	res := e.run(first)
	requireSuccess(t, res)
	if s, _ := res.Stage("build_script"); strings.Contains(s.Output, "Using cache") {
		t.Errorf("the first build used a cache:\n%s", s.Output)
	}

	second := e.dindJob(project, files)
	second.Script = build
	res = e.run(second)
	requireSuccess(t, res)
	s, _ := res.Stage("build_script")
	if n := strings.Count(s.Output, "Using cache"); n != 3 {
		t.Errorf("second build: got %d cached steps, want 3:\n%s", n, s.Output)
	}

	// Two concurrent jobs of the project: one gets the cache, the other a
	// fresh volume, and neither waits for the other.
	var wg sync.WaitGroup
	logs := make([]string, 2)
	for i := range 2 {
		job := e.dindJob(project, files)
		job.Script = []string{"sleep 3"}
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			r, err := e.emu.RunJob(ctx, job)
			if err != nil || r.Failure != "" {
				t.Errorf("concurrent job %d: err %v, failure %v", i, err, r)
				return
			}
			logs[i] = r.Log
		}()
	}
	wg.Wait()
	cached := 0
	fresh := 0
	for _, l := range logs {
		if strings.Contains(l, "Using the project's DinD layer cache") {
			cached++
		}
		if strings.Contains(l, "in use by another job") {
			fresh++
		}
	}
	if cached != 1 || fresh != 1 {
		t.Errorf("concurrent jobs: got %d with the cache and %d with a fresh volume, want 1 and 1", cached, fresh)
	}

	// A job can opt out.
	optOut := e.dindJob(project, files)
	optOut.Variables = []runner.Variable{{Key: "BERTH_DIND_CACHE", Value: "off", Public: true}}
	optOut.Script = build
	res = e.run(optOut)
	requireSuccess(t, res)
	if s, _ := res.Stage("build_script"); strings.Contains(s.Output, "Using cache") {
		t.Errorf("BERTH_DIND_CACHE=off still used the cache:\n%s", s.Output)
	}
}

func TestDindSidecarFailureIsSystemFailureWithLogs(t *testing.T) {
	cases := map[string]struct {
		from, to string
		want     []string
	}{
		"image without dockerd": {
			from: `image = "berth-test/dind:latest"`, to: `image = "berth-test/busybox:latest"`,
			want: []string{"start the DinD sidecar", "dockerd"},
		},
		"daemon that exits": {
			from: `insecure_registries = ["registry:5000"]`, to: `registry_mirrors = ["not a mirror url"]`,
			want: []string{"DinD sidecar exited", "last log lines", "not a mirror url"},
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			e := dindEnv(t, "")
			cfg, err := os.ReadFile(e.cfgPath)
			if err != nil {
				t.Fatal(err)
			}
			cfg = []byte(strings.Replace(string(cfg), tc.from, tc.to, 1))
			if err := os.WriteFile(e.cfgPath, cfg, 0o644); err != nil {
				t.Fatal(err)
			}
			job := e.job(204)
			job.ExtraCustomEnv = map[string]string{"BERTH_BACKEND": "dind"}
			start := time.Now()
			res := e.run(job)
			prep, _ := res.Stage("prepare")
			if res.Failure != "system" || prep.ExitCode != runner.SystemFailureExitCode {
				t.Fatalf("got failure %q (prepare exit %d), want system; log:\n%s", res.Failure, prep.ExitCode, res.Log)
			}
			for _, want := range tc.want {
				if !strings.Contains(prep.Output, want) {
					t.Errorf("prepare output lacks %q:\n%s", want, prep.Output)
				}
			}
			if took := time.Since(start); took > 3*time.Minute {
				t.Errorf("three failed prepares took %s", took)
			}
		})
	}
}

func TestDindServiceOverridesRefused(t *testing.T) {
	e := dindEnv(t, "")
	job := e.job(205)
	job.ExtraCustomEnv = map[string]string{"BERTH_BACKEND": "dind"}
	job.Services = []runner.Image{{Name: "docker:dind", Entrypoint: []string{"sh", "-c"}, Command: []string{"id"}}}
	res := e.run(job)
	prep, _ := res.Stage("prepare")
	if res.Failure != "build" || !strings.Contains(prep.Output, "allow_service_overrides") {
		t.Errorf("got failure %q; prepare output:\n%s", res.Failure, prep.Output)
	}
	if left := e.resources(); len(left) > 0 {
		t.Errorf("left: %v", left)
	}
}

// TestDindLayerCacheOverTheLimitIsPruned sets a cache limit that any
// build exceeds: cleanup prunes the cached layers, so the next job of the
// project builds from scratch, and says why.
func TestDindLayerCacheOverTheLimitIsPruned(t *testing.T) {
	e := dindEnv(t, "layer_cache = \"project\"\nlayer_cache_max_size = \"1k\"\n")
	const project = 207
	cacheVolume := fmt.Sprintf("berth-%s-dindcache-%d", e.runner, project)
	t.Cleanup(func() { _ = dockerCli.VolumeRemove(context.Background(), cacheVolume, true) })
	files := map[string]string{"Dockerfile": "FROM " + busyboxImage + "\nRUN echo one > /1\nRUN echo two > /2\n"}
	build := []string{"docker load -q -i busybox.tar", "docker build --no-cache=false . 2>&1"}
	for i := range 2 {
		job := e.dindJob(project, files)
		job.Script = build
		res := e.run(job)
		requireSuccess(t, res)
		if !strings.Contains(res.Log, "over dind.layer_cache_max_size") {
			t.Errorf("job %d: cleanup did not prune the cache over its limit:\n%s", i, res.Log)
		}
		if s, _ := res.Stage("build_script"); strings.Contains(s.Output, "Using cache") {
			t.Errorf("job %d built from a cache that should have been pruned:\n%s", i, s.Output)
		}
	}
}

func TestDindInnerMTUFollowsTheJobNetwork(t *testing.T) {
	e := newEnv(t, options{policyTOML: dindPolicy, extraTOML: "network_mtu = 1400\n" + dindCapabilityCfg})
	job := e.job(206)
	job.ExtraCustomEnv = map[string]string{"BERTH_BACKEND": "dind"}
	job.Script = []string{`docker network inspect bridge --format 'inner-mtu={{index .Options "com.docker.network.driver.mtu"}}'`}
	res := e.run(job)
	requireSuccess(t, res)
	if s, _ := res.Stage("build_script"); !strings.Contains(s.Output, "inner-mtu=1400") {
		t.Errorf("inner bridge MTU: output:\n%s", s.Output)
	}
}
