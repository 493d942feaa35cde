package integration

import (
	"context"
	"fmt"
	"io"
	"strings"
	"testing"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/api/types/registry"

	"github.com/berthci/berth/integration/runner"
)

// hostContainer starts a container on the host that no job created, with
// labels, and removes it when the test ends.
func hostContainer(t *testing.T, name string, labels map[string]string) {
	t.Helper()
	ctx := context.Background()
	t.Cleanup(func() {
		err := dockerCli.ContainerRemove(context.Background(), name, container.RemoveOptions{Force: true})
		if err != nil && !cerrdefs.IsNotFound(err) {
			t.Errorf("remove %s: %v", name, err)
		}
	})
	created, err := dockerCli.ContainerCreate(ctx, &container.Config{Image: busyboxImage, Cmd: []string{"sleep", "600"}, Labels: labels},
		&container.HostConfig{NetworkMode: "none"}, nil, nil, name)
	if err != nil {
		t.Fatalf("create %s: %v", name, err)
	}
	if err := dockerCli.ContainerStart(ctx, created.ID, container.StartOptions{}); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
}

// TestSocketGuardRefuses runs one job per escalation through the guarded
// socket: each is a BUILD failure whose log names what was refused, nothing
// is left behind, and the host container the job tried to reach still runs
// untouched.
func TestSocketGuardRefuses(t *testing.T) {
	requireDocker(t)
	foreign := fmt.Sprintf("berth-it-foreign-%d", jobIDBase)
	hostContainer(t, foreign, map[string]string{"berth-it": "foreign"})

	tests := map[string]struct {
		command string
		wantMsg string
	}{
		"privileged container":  {command: "docker run --rm --privileged " + busyboxImage + " true", wantMsg: "privileged containers are not allowed"},
		"bind mount of /":       {command: "docker run --rm -v /:/host " + busyboxImage + " ls /host", wantMsg: `bind mount of "/" is not allowed`},
		"bind of host socket":   {command: "docker run --rm -v /var/run/docker.sock:/s " + busyboxImage + " true", wantMsg: "binds must come from the job's builds directory"},
		"bind-backed volume":    {command: "docker volume create --driver local --opt type=none --opt device=/ --opt o=bind hostroot", wantMsg: "volume driver options (device, o, type) are not allowed"},
		"exec into host ctr":    {command: "docker exec " + foreign + " true", wantMsg: "was not created by this job"},
		"stop host ctr":         {command: "docker rm -f " + foreign, wantMsg: "was not created by this job"},
		"host pid":              {command: "docker run --rm --pid host " + busyboxImage + " true", wantMsg: `PidMode "host" is not allowed`},
		"host network":          {command: "docker run --rm --network host " + busyboxImage + " true", wantMsg: `NetworkMode "host" is not allowed`},
		"join host ctr network": {command: "docker run --rm --network container:" + foreign + " " + busyboxImage + " true", wantMsg: "was not created by this job"},
		"capability":            {command: "docker run --rm --cap-add SYS_ADMIN " + busyboxImage + " true", wantMsg: "adding capabilities (SYS_ADMIN)"},
		"seccomp unconfined":    {command: "docker run --rm --security-opt seccomp=unconfined " + busyboxImage + " true", wantMsg: "seccomp=unconfined"},
		// The CLI reports the refused /grpc upgrade by status alone.
		"buildkit": {command: "printf 'FROM " + busyboxImage + "\\n' > Dockerfile && DOCKER_BUILDKIT=1 docker build .", wantMsg: "received 403"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, options{})
			job := e.job(120)
			job.Script = []string{tc.command}
			res := e.run(job)
			if res.Failure != "build" {
				t.Errorf("got failure %q, want build; log:\n%s", res.Failure, res.Log)
			}
			s, _ := res.Stage("build_script")
			if name != "buildkit" && !strings.Contains(s.Output, "Error response from daemon: berth guarded Docker socket: ") || !strings.Contains(s.Output, tc.wantMsg) {
				t.Errorf("build_script output lacks %q:\n%s", tc.wantMsg, s.Output)
			}
			info, err := dockerCli.ContainerInspect(context.Background(), foreign)
			if err != nil || !info.State.Running || info.HostConfig.Privileged {
				t.Errorf("the host container was touched: running %v, err %v", info.State != nil && info.State.Running, err)
			}
		})
	}
}

// TestSocketGuardNormalWork checks that what CI needs works through the
// guarded socket: login, build, run, exec, push, ps, networks and volumes;
// that the job sees only its own containers; and that everything it created,
// including a detached container, is gone after cleanup.
func TestSocketGuardNormalWork(t *testing.T) {
	e := newEnv(t, options{})
	job := e.job(121)
	otherJob := fmt.Sprintf("berth-it-otherjob-%d", job.ID)
	hostContainer(t, otherJob, map[string]string{
		"berth.runner": e.runner, "berth.job.id": "1", "berth.role": "job-created",
	})
	tag := fmt.Sprintf("%s/berth-it/guarded:%d", registryAddr, job.ID)
	t.Cleanup(func() { removeImage(t, tag) })
	detached := fmt.Sprintf("guarded-bg-%d", job.ID)
	job.RepoURL = e.makeRepo(map[string]string{
		"Dockerfile":  "FROM " + busyboxImage + "\nRUN echo built-through-proxy > /built.txt\nCMD [\"cat\", \"/built.txt\"]\n",
		"data/in.txt": "from-the-builds-dir\n",
	})
	job.Variables = []runner.Variable{{Key: "REG_PASS", Value: registryPass, Masked: true}}
	job.Script = []string{
		"echo \"$REG_PASS\" | docker login " + registryAddr + " -u " + registryUser + " --password-stdin",
		"DOCKER_BUILDKIT=0 docker build -q -t " + tag + " .",
		"docker run --rm " + tag,
		"docker push " + tag,
		"docker run --rm -v $CI_PROJECT_DIR/data:/data " + busyboxImage + " cat /data/in.txt",
		"docker network create guarded-net-" + fmt.Sprint(job.ID),
		"docker volume create guarded-vol-" + fmt.Sprint(job.ID),
		"docker run -d --name " + detached + " --label berth.runner=forged --label berth.job.id=1 --network guarded-net-" + fmt.Sprint(job.ID) +
			" -v guarded-vol-" + fmt.Sprint(job.ID) + ":/v " + busyboxImage + " sleep 600",
		"docker exec " + detached + " echo exec-through-proxy",
		"docker logs " + detached,
		"docker inspect -f 'job-label={{index .Config.Labels \"berth.job.id\"}}' " + detached,
		"echo PS-BEGIN; docker ps -a --format '{{.Names}}'; echo PS-END",
		"docker network ls --format '{{.Name}}' | grep -x guarded-net-" + fmt.Sprint(job.ID),
		"docker volume ls --format '{{.Name}}' | grep -x guarded-vol-" + fmt.Sprint(job.ID),
		"docker rmi " + tag,
		// pulled back with the job's credentials
		"docker pull -q " + tag + " && docker run --rm " + tag + " | sed 's/^/pulled: /'",
		"docker rmi " + tag,
	}
	res := e.run(job)
	requireSuccess(t, res)
	s, _ := res.Stage("build_script")
	for _, want := range []string{"Login Succeeded", "built-through-proxy", "from-the-builds-dir", "exec-through-proxy", fmt.Sprintf("job-label=%d", job.ID), "pulled: built-through-proxy"} {
		if !strings.Contains(s.Output, want) {
			t.Errorf("build_script output lacks %q:\n%s", want, s.Output)
		}
	}
	_, ps, _ := strings.Cut(s.Output, "PS-BEGIN\n")
	ps, _, _ = strings.Cut(ps, "PS-END")
	if names := strings.Fields(ps); len(names) != 1 || names[0] != detached {
		t.Errorf("docker ps -a in the job: got %v, want only [%s]", names, detached)
	}
	ctx := context.Background()
	if _, err := dockerCli.ContainerInspect(ctx, detached); !cerrdefs.IsNotFound(err) {
		t.Errorf("the job's detached container: got %v, want it removed at cleanup", err)
	}
	// The pushed image is in the registry: pull it back on the host.
	removeImage(t, tag)
	auth, err := registry.EncodeAuthConfig(registry.AuthConfig{Username: registryUser, Password: registryPass, ServerAddress: registryAddr})
	if err != nil {
		t.Fatal(err)
	}
	rc, err := dockerCli.ImagePull(ctx, tag, image.PullOptions{RegistryAuth: auth})
	if err != nil {
		t.Fatalf("pull the pushed image: %v", err)
	}
	_, _ = io.Copy(io.Discard, rc)
	rc.Close()
	built, err := dockerCli.ImageList(ctx, image.ListOptions{Filters: filters.NewArgs(filters.Arg("label", "berth.runner="+e.runner))})
	if err != nil {
		t.Fatal(err)
	}
	if len(built) == 0 {
		t.Error("the built image lacks the job's berth labels")
	}
}

// TestSocketGuardOff keeps the host socket itself when the admin turns the
// guard off.
func TestSocketGuardOff(t *testing.T) {
	e := newEnv(t, options{extraTOML: "\n[socket]\nguard = false\n"})
	job := e.job(122)
	job.Script = []string{"docker run --rm --pid host " + busyboxImage + " true && echo unguarded-host-pid"}
	res := e.run(job)
	requireSuccess(t, res)
	if s, _ := res.Stage("build_script"); !strings.Contains(s.Output, "unguarded-host-pid") {
		t.Errorf("output:\n%s", s.Output)
	}
}
