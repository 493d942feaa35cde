//go:build remote

// The tests behind the README's "Security model" table: each measures, on
// the real engines, one claim of the table that no other test shows. The
// file needs the podman build tag for the podman bindings and the host
// process helpers of podman_test.go.

package integration

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/containers/podman/v5/pkg/bindings/containers"
	"github.com/containers/podman/v5/pkg/bindings/images"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/api/types/registry"

	"github.com/berthci/berth/backends"
	"github.com/berthci/berth/integration/runner"
)

// probeFuncs define two shell functions for a job's script. Both print
// "PROBE <name> CONNECTED <reply>" or "PROBE <name> UNREACHABLE <why>".
// probe NAME HOST PORT opens a TCP connection from the job container
// (bash's /dev/tcp, 3 s at most) and sends an HTTP GET; dprobe NAME HOST
// PORT [NETWORK] fetches http://HOST:PORT/ from a container the job starts
// with its own docker, with busybox's wget, on NETWORK (the default one
// if empty). dprobe judges by a marker, not by docker run's exit code,
// which Podman 4.3's Docker API loses with --rm (podman#18889); and wget
// runs under timeout in a shell, as PID 1 would ignore timeout's SIGTERM
// (Debian's busybox wget crashes with its own -T).
var probeFuncs = []string{
	`probe() { if reply=$(timeout 3 bash -c 'exec 3<>"/dev/tcp/$0/$1" && printf "GET / HTTP/1.0\r\n\r\n" >&3 && cat <&3' "$2" "$3" 2>&1 | tr '\r\n' '  '); then echo "PROBE $1 CONNECTED $reply"; else echo "PROBE $1 UNREACHABLE $reply"; fi; }`,
	`dprobe() { reply=$(docker run --rm --network "${4:-bridge}" ` + busyboxImage + ` sh -c 'timeout 3 wget -qO- "http://$0:$1/" && echo " FETCHED"; exit 0' "$2" "$3" 2>&1 | tr '\r\n' '  ') || true; if [[ $reply == *" FETCHED"* ]]; then echo "PROBE $1 CONNECTED $reply"; else echo "PROBE $1 UNREACHABLE $reply"; fi; }`,
}

// probeResults reads what probe and dprobe printed: name to "CONNECTED
// <reply>" or "UNREACHABLE <why>".
func probeResults(output string) map[string]string {
	results := map[string]string{}
	for _, line := range strings.Split(output, "\n") {
		if rest, ok := strings.CutPrefix(line, "PROBE "); ok {
			name, result, _ := strings.Cut(rest, " ")
			results[name] = result
		}
	}
	return results
}

// preparedSession starts a job and runs prepare and get_sources; the
// job's cleanup runs when the test ends.
func preparedSession(t *testing.T, e *env, job *runner.Job) *runner.Session {
	t.Helper()
	ctx := context.Background()
	s, err := e.emu.Start(ctx, job)
	if s != nil {
		t.Cleanup(func() {
			if r := s.Cleanup(context.Background()); r.ExitCode != 0 {
				t.Errorf("cleanup of job %d: exit %d\n%s", job.ID, r.ExitCode, r.Output)
			}
		})
	}
	if err != nil {
		t.Fatal(err)
	}
	if r := s.Prepare(ctx); r.ExitCode != 0 {
		t.Fatalf("prepare of job %d: exit %d\n%s", job.ID, r.ExitCode, r.Output)
	}
	if r := s.RunStage(ctx, "get_sources"); r.ExitCode != 0 {
		t.Fatalf("get_sources of job %d: exit %d\n%s", job.ID, r.ExitCode, r.Output)
	}
	return s
}

// mustRunStage runs a stage and fails the test unless it passes.
func mustRunStage(t *testing.T, s *runner.Session, stage string) string {
	t.Helper()
	r := s.RunStage(context.Background(), stage)
	if r.ExitCode != 0 {
		t.Fatalf("%s: exit %d\n%s", stage, r.ExitCode, r.Output)
	}
	return r.Output
}

// dockerJobContainers lists a job's containers of a role in the host
// Docker engine.
func dockerJobContainers(t *testing.T, runnerName string, jobID int64, role string) []container.Summary {
	t.Helper()
	list, err := dockerCli.ContainerList(context.Background(), container.ListOptions{All: true, Filters: filters.NewArgs(
		filters.Arg("label", backends.LabelRunner+"="+runnerName),
		filters.Arg("label", fmt.Sprintf("%s=%d", backends.LabelJobID, jobID)),
		filters.Arg("label", backends.LabelRole+"="+role),
	)})
	if err != nil {
		t.Fatalf("list the %s containers of job %d: %v", role, jobID, err)
	}
	if len(list) == 0 {
		t.Fatalf("job %d has no %s container", jobID, role)
	}
	return list
}

// jobContainerIPs is the addresses of a job's containers of a role on
// their networks, from the engine's API: the host's Docker, or the test
// podman service.
func jobContainerIPs(t *testing.T, backend, runnerName string, jobID int64, role string) []string {
	t.Helper()
	var ips []string
	if backend != "podman" {
		for _, c := range dockerJobContainers(t, runnerName, jobID, role) {
			if c.NetworkSettings == nil {
				continue
			}
			for _, n := range c.NetworkSettings.Networks {
				if n.IPAddress != "" {
					ips = append(ips, n.IPAddress)
				}
			}
		}
	} else {
		conn := requirePodman(t)
		list, err := containers.List(conn, new(containers.ListOptions).WithAll(true).WithFilters(map[string][]string{"label": {
			backends.LabelRunner + "=" + runnerName, fmt.Sprintf("%s=%d", backends.LabelJobID, jobID), backends.LabelRole + "=" + role,
		}}))
		if err != nil {
			t.Fatalf("list the %s containers of job %d: %v", role, jobID, err)
		}
		for _, c := range list {
			data, err := containers.Inspect(conn, c.ID, nil)
			if err != nil {
				t.Fatalf("inspect %s: %v", c.ID, err)
			}
			if data.NetworkSettings == nil {
				continue
			}
			for _, n := range data.NetworkSettings.Networks {
				if n.IPAddress != "" {
					ips = append(ips, n.IPAddress)
				}
			}
		}
	}
	if len(ips) == 0 {
		t.Fatalf("no address for the %s containers of job %d", role, jobID)
	}
	return ips
}

// Expected outcomes of a probe.
const (
	reached     = "reached"     // connected, and the reply carries the target's content
	unreachable = "unreachable" // no connection
	notTarget   = "not-target"  // whatever answers at that address, it is not the target
)

// TestSecurityNetworkIsolationBetweenJobs runs two jobs at the same time
// on each backend. Job A has a service with the alias web and starts a web
// server of its own with its docker (on dind, publishing a port on the
// sidecar too). Job B, from its job container and from a container its
// docker starts, tries A's alias and every address of A's that the
// engine's API reports. Job A's probes of its own service and server pass,
// so a failed probe in B means isolation, not a broken probe. Measured:
// B never resolves A's alias and reaches none of A's addresses, from its
// job container or its docker's containers: the guard puts a job's
// containers on the default network onto the job's own network, and
// podman's job networks are isolated. Only an unguarded socket job
// reaches another's containers, on the shared default bridge or by
// attaching a container to A's network.
func TestSecurityNetworkIsolationBetweenJobs(t *testing.T) {
	cases := map[string]struct {
		newEnv func(t *testing.T) *env
		// want is the outcome of each of job B's probes; the targets are
		// named after job A's addresses (see below).
		want map[string]string
		// joinRefusal is what B's attempt to join A's network prints, or ""
		// when it goes through.
		joinRefusal string
	}{
		"socket": {
			newEnv: func(t *testing.T) *env { return newEnv(t, options{}) },
			want: map[string]string{
				"web-alias": unreachable, "web-ip": unreachable, "drun-ip": unreachable,
				"d-web-alias": unreachable, "d-web-ip": unreachable,
				// The guard puts both jobs' docker run containers on their
				// own job networks, not the shared default bridge.
				"d-drun-ip":    unreachable,
				"d-join-a-net": unreachable,
			},
			joinRefusal: "does not belong to this job",
		},
		"socket unguarded": {
			newEnv: func(t *testing.T) *env { return newEnv(t, options{extraTOML: "\n[socket]\nguard = false\n"}) },
			want: map[string]string{
				"web-alias": unreachable, "web-ip": unreachable, "drun-ip": unreachable,
				"d-web-alias": unreachable, "d-web-ip": unreachable,
				// Without the guard, docker run containers share the
				// host's default bridge.
				"d-drun-ip": reached,
				// The host socket lets B attach a container to A's network.
				"d-join-a-net": reached,
			},
		},
		"dind": {
			newEnv: func(t *testing.T) *env { return dindEnv(t, "") },
			want: map[string]string{
				"web-alias": unreachable, "web-ip": unreachable,
				"sidecar-tls": unreachable, "sidecar-published": unreachable,
				// Inner addresses are private to each sidecar: the same
				// address may exist in B's sidecar or on the host.
				"drun-ip": notTarget, "d-drun-ip": notTarget,
				"d-web-alias": unreachable, "d-web-ip": unreachable,
				"d-sidecar-published": unreachable,
			},
		},
		"podman": {
			newEnv: func(t *testing.T) *env { return newPodmanEnv(t, options{}) },
			want: map[string]string{
				// Job networks are created isolated, and the guard puts
				// docker run containers on them.
				"web-alias": unreachable, "d-web-alias": unreachable,
				"web-ip": unreachable, "drun-ip": unreachable, "d-web-ip": unreachable, "d-drun-ip": unreachable,
				"d-join-a-net": unreachable,
			},
			joinRefusal: "does not belong to this job",
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			e := tc.newEnv(t)
			backend := strings.Fields(name)[0]
			newJob := func() *runner.Job {
				if backend == "dind" {
					return e.dindJob(250, nil)
				}
				return e.job(250)
			}
			loadBusybox := "true"
			if backend == "dind" {
				loadBusybox = "docker load -q -i busybox.tar"
			}

			a := newJob()
			a.Services = []runner.Image{{Name: httpImage, Alias: "web"}}
			token := fmt.Sprintf("berth-it-job-a-%d-secret", a.ID)
			// Not "berth-...": the guard keeps that namespace for berth.
			server := fmt.Sprintf("it-job-a-%d", a.ID)
			if name == "socket unguarded" {
				// Without the guard nothing labels the server, and berth's
				// cleanup does not see it.
				t.Cleanup(func() { removeHostContainer(t, server) })
			}
			publish := ""
			if backend == "dind" {
				publish = "-p 18080:8080"
			}
			a.Script = append(append([]string{}, probeFuncs...),
				loadBusybox,
				fmt.Sprintf("docker run -d --name %s %s %s sh -c 'mkdir -p /www && echo %s > /www/index.html && exec httpd -f -p 8080 -h /www'",
					server, publish, busyboxImage, token),
				fmt.Sprintf("for i in $(seq 50); do docker exec %s wget -qO- http://127.0.0.1:8080/ && break; sleep 0.2; done", server),
				fmt.Sprintf("echo \"DRUN-IP=$(docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' %s)\"", server),
				"probe own-web-alias web 8080",
				fmt.Sprintf("dprobe own-drun-ip $(docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' %s) 8080", server),
			)
			sa := preparedSession(t, e, a)
			outA := mustRunStage(t, sa, "build_script")
			own := probeResults(outA)
			if !strings.HasPrefix(own["own-web-alias"], "CONNECTED ") || !strings.Contains(own["own-web-alias"], "hello from berth service") ||
				!strings.HasPrefix(own["own-drun-ip"], "CONNECTED "+token) {
				t.Fatalf("job A does not reach its own service and server, so the probes prove nothing: %v\n%s", own, outA)
			}
			_, drunIP, _ := strings.Cut(outA, "\nDRUN-IP=")
			drunIP, _, _ = strings.Cut(drunIP, "\n")
			if drunIP == "" {
				t.Fatalf("no address for job A's docker run container:\n%s", outA)
			}

			// Targets: name, host, port; each is tried from B's job
			// container and, with a d- prefix, from a container B's docker
			// starts. kind keys tc.want.
			type target struct{ name, kind, host, port string }
			targets := []target{{"web-alias", "web-alias", "web", "8080"}, {"drun-ip", "drun-ip", drunIP, "8080"}}
			for i, ip := range jobContainerIPs(t, backend, e.runner, a.ID, "service") {
				targets = append(targets, target{fmt.Sprintf("web-ip-%d", i), "web-ip", ip, "8080"})
			}
			if backend == "dind" {
				for i, ip := range jobContainerIPs(t, backend, e.runner, a.ID, "dind") {
					targets = append(targets, target{fmt.Sprintf("sidecar-tls-%d", i), "sidecar-tls", ip, "2376"},
						target{fmt.Sprintf("sidecar-published-%d", i), "sidecar-published", ip, "18080"})
				}
			}
			b := newJob()
			b.Script = append(append([]string{}, probeFuncs...), loadBusybox, "getent hosts web || echo NO-RESOLVE-web")
			var probes []string
			for _, tg := range targets {
				probes = append(probes, fmt.Sprintf("probe %s %s %s", tg.name, tg.host, tg.port))
				if tg.kind != "sidecar-tls" {
					probes = append(probes, fmt.Sprintf("dprobe d-%s %s %s", tg.name, tg.host, tg.port))
				}
			}
			aNetwork := fmt.Sprintf("berth-%s-%d", e.runner, a.ID)
			if backend != "dind" {
				probes = append(probes, "dprobe d-join-a-net web 8080 "+aNetwork)
			}
			b.Script = append(b.Script, strings.Join(probes, " & ")+" & wait")
			sb := preparedSession(t, e, b)
			outB := mustRunStage(t, sb, "build_script")

			if !strings.Contains(outB, "\nNO-RESOLVE-web\n") {
				t.Errorf("job B resolves job A's service alias web:\n%s", outB)
			}
			got := probeResults(outB)
			for _, tg := range targets {
				for _, probe := range []string{tg.name, "d-" + tg.name} {
					kind := tg.kind
					if probe != tg.name {
						kind = "d-" + tg.kind
					}
					if kind == "d-sidecar-tls" {
						continue
					}
					want, ok := tc.want[kind]
					if !ok {
						t.Fatalf("no expectation for probe %s", kind)
					}
					checkProbe(t, probe, tg.host+":"+tg.port, got[probe], want, token)
				}
			}
			if backend != "dind" {
				checkProbe(t, "d-join-a-net", aNetwork, got["d-join-a-net"], tc.want["d-join-a-net"], token)
				if tc.joinRefusal != "" && !strings.Contains(got["d-join-a-net"], tc.joinRefusal) {
					t.Errorf("joining job A's network: got %q, want the guard's refusal %q", got["d-join-a-net"], tc.joinRefusal)
				}
			}
			if t.Failed() {
				t.Logf("job A's build_script:\n%s\njob B's build_script:\n%s", outA, outB)
			}
		})
	}
}

// removeHostContainer removes a container of the host Docker by name, if
// it is there.
func removeHostContainer(t *testing.T, name string) {
	t.Helper()
	err := dockerCli.ContainerRemove(context.Background(), name, container.RemoveOptions{Force: true})
	if err != nil && !cerrdefs.IsNotFound(err) {
		t.Errorf("remove container %s: %v", name, err)
	}
}

// checkProbe compares one probe's result with its expected outcome.
func checkProbe(t *testing.T, probe, target, got, want, token string) {
	t.Helper()
	connected := strings.HasPrefix(got, "CONNECTED ")
	switch {
	case got == "":
		t.Errorf("probe %s (%s) printed nothing", probe, target)
	case want == unreachable && connected:
		t.Errorf("job B reached job A's %s (%s): got %q, want no connection", probe, target, got)
	case want == notTarget && strings.Contains(got, token):
		t.Errorf("job B reached job A's %s (%s): got %q, want anything but job A's server", probe, target, got)
	case want == reached && !(connected && (strings.Contains(got, token) || strings.Contains(got, "hello from berth service"))):
		t.Errorf("probe %s (%s): got %q, want job A's reply (the measured behaviour the README states)", probe, target, got)
	}
}

// printed reports whether a stage's output holds line as a line of its
// own, not within the echo of the command that printed it.
func printed(output, line string) bool {
	return strings.HasPrefix(output, line+"\n") || strings.Contains(output, "\n"+line+"\n")
}

// hostProcStatus reads a host process's /proc status fields; nil when the
// process is gone.
func hostProcStatus(pid int) map[string]string {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return nil
	}
	fields := map[string]string{}
	for _, line := range strings.Split(string(data), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok {
			fields[k] = strings.TrimSpace(v)
		}
	}
	return fields
}

// Capability bits of /proc/<pid>/status's Cap* masks.
var capabilityBits = map[string]uint{"NET_ADMIN": 12, "SYS_MODULE": 16, "SYS_RAWIO": 17, "SYS_PTRACE": 19, "SYS_ADMIN": 21, "SYS_RESOURCE": 24}

// hasCapability reports whether a hexadecimal capability mask holds cap.
func hasCapability(t *testing.T, mask, capability string) bool {
	t.Helper()
	bits, err := strconv.ParseUint(mask, 16, 64)
	if err != nil {
		t.Fatalf("capability mask %q: %v", mask, err)
	}
	return bits&(1<<capabilityBits[capability]) != 0
}

// TestSecurityJobProcessesAreHostRoot looks, from the host's /proc, at the
// processes of a running job container on socket (guarded and not) and
// dind: its PID namespace has no user namespace of its own (uid_map is the
// identity), and every process in it, the stage's shell included, is uid
// 0 on the host. On dind, the sidecar's dockerd is host root too, with the
// capabilities of the capability form the tests run (all but
// SYS_RESOURCE) and no seccomp filter.
func TestSecurityJobProcessesAreHostRoot(t *testing.T) {
	cases := map[string]func(t *testing.T) *env{
		"socket":           func(t *testing.T) *env { return newEnv(t, options{}) },
		"socket unguarded": func(t *testing.T) *env { return newEnv(t, options{extraTOML: "\n[socket]\nguard = false\n"}) },
		"dind":             func(t *testing.T) *env { return dindEnv(t, "") },
	}
	for name, newE := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			e := newE(t)
			job := e.job(251)
			if name == "dind" {
				job.ExtraCustomEnv = map[string]string{"BERTH_BACKEND": "dind"}
			}
			// The stage runs until the test drops a file into the project
			// directory, which is at the same path on the host.
			job.Script = []string{"echo job-running", "for i in $(seq 600); do test -e release && break; sleep 0.1; done", "test -e release"}
			s := preparedSession(t, e, job)
			done := make(chan runner.StageResult, 1)
			go func() { done <- s.RunStage(context.Background(), "build_script") }()
			release := func() runner.StageResult {
				if err := os.WriteFile(filepath.Join(s.ProjectDir(), "release"), nil, 0o644); err != nil {
					t.Errorf("release the stage: %v", err)
				}
				return <-done
			}
			released := false
			defer func() {
				if !released {
					release()
				}
			}()
			waitFor(t, 60*time.Second, func() bool { return printed(s.Log(), "job-running") })

			ctx := context.Background()
			build, err := dockerCli.ContainerInspect(ctx, dockerJobContainers(t, e.runner, job.ID, "build")[0].ID)
			if err != nil {
				t.Fatal(err)
			}
			uidMap, err := os.ReadFile(fmt.Sprintf("/proc/%d/uid_map", build.State.Pid))
			if err != nil {
				t.Fatal(err)
			}
			if got := strings.Fields(string(uidMap)); strings.Join(got, " ") != "0 0 4294967295" {
				t.Errorf("the job container's uid_map: got %q, want the identity map 0 0 4294967295 (no user namespace)", uidMap)
			}
			seen := 0
			for _, pid := range pidNamespaceMembers(t, build.State.Pid) {
				status := hostProcStatus(pid)
				if status == nil {
					continue
				}
				seen++
				if uids := strings.Fields(status["Uid"]); len(uids) == 0 || uids[0] != "0" {
					t.Errorf("process %d (%s) of the job container: host uid %v, want 0", pid, status["Name"], uids)
				}
			}
			if seen < 3 {
				t.Errorf("looked at %d processes of the job container, want at least its keepalive, the stage's shell and its sleep", seen)
			}

			if name == "dind" {
				sidecar, err := dockerCli.ContainerInspect(ctx, dockerJobContainers(t, e.runner, job.ID, "dind")[0].ID)
				if err != nil {
					t.Fatal(err)
				}
				dockerd := 0
				for _, pid := range pidNamespaceMembers(t, sidecar.State.Pid) {
					status := hostProcStatus(pid)
					if status == nil {
						continue
					}
					if uids := strings.Fields(status["Uid"]); len(uids) == 0 || uids[0] != "0" {
						t.Errorf("process %d (%s) of the sidecar: host uid %v, want 0", pid, status["Name"], uids)
					}
					if status["Name"] != "dockerd" {
						continue
					}
					dockerd++
					for _, c := range []string{"SYS_ADMIN", "SYS_MODULE", "SYS_RAWIO", "SYS_PTRACE", "NET_ADMIN"} {
						if !hasCapability(t, status["CapEff"], c) {
							t.Errorf("the sidecar's dockerd lacks CAP_%s (CapEff %s)", c, status["CapEff"])
						}
					}
					if hasCapability(t, status["CapEff"], "SYS_RESOURCE") {
						t.Errorf("the sidecar's dockerd has CAP_SYS_RESOURCE, which the tests' cap_drop removes (CapEff %s)", status["CapEff"])
					}
					if status["Seccomp"] != "0" {
						t.Errorf("the sidecar's dockerd: Seccomp %q, want 0 (seccomp=unconfined)", status["Seccomp"])
					}
				}
				if dockerd != 1 {
					t.Errorf("found %d dockerd processes in the sidecar, want 1", dockerd)
				}
			}
			released = true
			if r := release(); r.ExitCode != 0 {
				t.Errorf("build_script: exit %d\n%s", r.ExitCode, r.Output)
			}
		})
	}
}

// TestSecurityUnguardedSocketReachesTheHost gives a job the host's socket
// ([socket] guard = false) and measures what the README says it can do: it
// sees a container of the host that no job created and stops it, bind
// mounts a host directory outside its builds directory, runs a container
// with every capability and no seccomp filter (all the guard refuses;
// --privileged itself fails on the test hosts), and builds images, with
// both builders, that stay on the host after its cleanup, without berth's
// labels, as does a container it leaves running. The job log warns that
// the job is root on the host.
func TestSecurityUnguardedSocketReachesTheHost(t *testing.T) {
	e := newEnv(t, options{extraTOML: "\n[socket]\nguard = false\n"})
	job := e.job(252)
	sacrificial := fmt.Sprintf("berth-it-sacrificial-%d", job.ID)
	hostContainer(t, sacrificial, map[string]string{"berth-it": "sacrificial"})
	hostDir := t.TempDir()
	secret := fmt.Sprintf("host-only-file-%d", job.ID)
	if err := os.WriteFile(filepath.Join(hostDir, "token"), []byte(secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	classic := fmt.Sprintf("berth-it-unguarded-classic:%d", job.ID)
	buildkit := fmt.Sprintf("berth-it-unguarded-buildkit:%d", job.ID)
	leftover := fmt.Sprintf("berth-it-unguarded-leftover-%d", job.ID)
	t.Cleanup(func() {
		removeHostContainer(t, leftover)
		removeImage(t, classic)
		removeImage(t, buildkit)
	})
	job.RepoURL = e.makeRepo(map[string]string{"Dockerfile": "FROM " + busyboxImage + "\nRUN echo built-unguarded > /built.txt\n"})
	job.Script = []string{
		"docker ps --format '{{.Names}}' | grep -x " + sacrificial + " && echo SEES-THE-HOST-CONTAINER",
		"docker kill " + sacrificial + " && echo KILLED-THE-HOST-CONTAINER",
		"docker run --rm -v " + hostDir + ":/hostdir:ro " + busyboxImage + " cat /hostdir/token",
		// --privileged fails on the test hosts (see the dind section), so
		// the capability form stands for it.
		"docker run --rm --cap-add ALL --cap-drop SYS_RESOURCE --security-opt seccomp=unconfined " + busyboxImage + " grep -e CapEff -e Seccomp: /proc/self/status",
		"DOCKER_BUILDKIT=0 docker build -q -t " + classic + " .",
		"DOCKER_BUILDKIT=1 docker build -q -t " + buildkit + " .",
		"docker run -d --name " + leftover + " " + busyboxImage + " sleep 600",
	}
	res := e.run(job)
	requireSuccess(t, res)
	out, _ := res.Stage("build_script")
	for _, want := range []string{"SEES-THE-HOST-CONTAINER", "KILLED-THE-HOST-CONTAINER", secret} {
		if !printed(out.Output, want) {
			t.Errorf("build_script did not print %q:\n%s", want, out.Output)
		}
	}
	_, capEff, _ := strings.Cut(out.Output, "\nCapEff:")
	capEff, _, _ = strings.Cut(capEff, "\n")
	if capEff = strings.TrimSpace(capEff); capEff == "" || !hasCapability(t, capEff, "SYS_ADMIN") || !hasCapability(t, capEff, "SYS_MODULE") {
		t.Errorf("the container with every capability: CapEff %q, want CAP_SYS_ADMIN and CAP_SYS_MODULE", capEff)
	}
	if !strings.Contains(out.Output, "\nSeccomp:\t0\n") {
		t.Errorf("the container with seccomp=unconfined has a seccomp filter:\n%s", out.Output)
	}
	ctx := context.Background()
	if info, err := dockerCli.ContainerInspect(ctx, sacrificial); err != nil || info.State.Running {
		t.Errorf("the host container the job killed: running %v, err %v; want it stopped", err == nil && info.State.Running, err)
	}
	for _, tag := range []string{classic, buildkit} {
		img, err := dockerCli.ImageInspect(ctx, tag)
		if err != nil {
			t.Errorf("image %s the unguarded job built: %v, want it left on the host", tag, err)
			continue
		}
		if img.Config != nil && img.Config.Labels[backends.LabelRunner] != "" {
			t.Errorf("image %s carries berth's labels %v; only the guard adds them", tag, img.Config.Labels)
		}
	}
	if info, err := dockerCli.ContainerInspect(ctx, leftover); err != nil || !info.State.Running || info.Config.Labels[backends.LabelRunner] != "" {
		t.Errorf("the container the unguarded job left running: err %v; want it running, without berth's labels, after the job's cleanup", err)
	}
	if !strings.Contains(res.Log, "it is root on the host") {
		t.Errorf("the job log lacks the warning that the job is root on the host:\n%s", truncate(res.Log, 4000))
	}
}

// TestSecurityGuardedImagesRemovedBaseImagesShared runs two jobs one
// after the other through the guarded socket, on socket and podman. Job
// A pulls a base image from the registry and builds an image from it;
// after A's cleanup the built image is gone from the engine, while the
// pulled base stays and serves job B without a pull.
func TestSecurityGuardedImagesRemovedBaseImagesShared(t *testing.T) {
	for _, backend := range []string{"socket", "podman"} {
		t.Run(backend, func(t *testing.T) {
			t.Parallel()
			var e *env
			if backend == "podman" {
				e = newPodmanEnv(t, options{})
			} else {
				e = newEnv(t, options{})
			}
			a := e.job(253)
			// podman knows the test registry as insecure under this name
			// (see provision.sh); dockerd trusts any loopback name.
			reg := "localhost:" + strings.Split(registryAddr, ":")[1]
			base := fmt.Sprintf("%s/berth-it/shared-base:%d", reg, a.ID)
			built := fmt.Sprintf("berth-it-guarded-built:%d", a.ID)
			t.Cleanup(func() { removeImage(t, base) })
			if backend == "podman" {
				conn := requirePodman(t)
				t.Cleanup(func() {
					removePodmanImage(t, conn, base)
					removePodmanImage(t, conn, "docker.io/library/"+built)
				})
			}
			pushTestImage(t, base)
			removeImage(t, base)

			// No RUN, which the guard refuses on Podman 4.3 (its build
			// steps run in the host's network).
			files := map[string]string{"Dockerfile": "FROM " + base + "\nCOPY built.txt /built.txt\n", "built.txt": "built-by-job-a\n"}
			if backend == "podman" {
				a.RepoURL = e.makePodmanRepo(files)
			} else {
				a.RepoURL = e.makeRepo(files)
			}
			a.Variables = []runner.Variable{{Key: "REG_PASS", Value: registryPass, Masked: true}}
			a.Script = []string{
				"echo \"$REG_PASS\" | docker login " + reg + " -u " + registryUser + " --password-stdin",
				"docker pull -q " + base,
				"DOCKER_BUILDKIT=0 docker build -q -t " + built + " .",
				"docker run --rm " + built + " cat /built.txt",
			}
			sa := preparedSession(t, e, a)
			if out := mustRunStage(t, sa, "build_script"); !printed(out, "built-by-job-a") {
				t.Errorf("job A's build_script:\n%s", out)
			}
			if r := sa.Cleanup(context.Background()); r.ExitCode != 0 {
				t.Errorf("job A's cleanup: exit %d\n%s", r.ExitCode, r.Output)
			}
			if engineHasImage(t, backend, built) {
				t.Errorf("image %s that job A built is still in the %s engine after its cleanup", built, backend)
			}
			if present := engineHasImage(t, backend, base); !present {
				t.Errorf("base image %s that job A pulled is gone from the %s engine", base, backend)
			}

			b := e.job(253)
			b.Script = []string{"docker run --rm --pull never " + base + " echo served-from-the-engine-store"}
			res := e.run(b)
			requireSuccess(t, res)
			if s, _ := res.Stage("build_script"); !printed(s.Output, "served-from-the-engine-store") {
				t.Errorf("job B's build_script:\n%s", s.Output)
			}
		})
	}
}

// pushTestImage pushes busybox to the test registry as ref.
func pushTestImage(t *testing.T, ref string) {
	t.Helper()
	ctx := context.Background()
	if err := dockerCli.ImageTag(ctx, busyboxImage, ref); err != nil {
		t.Fatal(err)
	}
	auth, err := registry.EncodeAuthConfig(registry.AuthConfig{Username: registryUser, Password: registryPass, ServerAddress: ref[:strings.IndexByte(ref, '/')]})
	if err != nil {
		t.Fatal(err)
	}
	rc, err := dockerCli.ImagePush(ctx, ref, image.PushOptions{RegistryAuth: auth})
	if err != nil {
		t.Fatalf("push %s: %v", ref, err)
	}
	out, _ := io.ReadAll(rc)
	rc.Close()
	if strings.Contains(string(out), `"error"`) {
		t.Fatalf("push %s: %s", ref, out)
	}
}

// engineHasImage reports whether the backend's engine has an image: the
// host's Docker, or the test podman service, where a name without a
// registry is docker.io's, as podman's Docker-compatible build names it.
func engineHasImage(t *testing.T, backend, ref string) bool {
	t.Helper()
	if backend == "podman" {
		if !strings.Contains(ref, "/") {
			ref = "docker.io/library/" + ref
		}
		ok, err := images.Exists(requirePodman(t), ref, nil)
		if err != nil {
			t.Fatalf("look up image %s in podman: %v", ref, err)
		}
		return ok
	}
	_, err := dockerCli.ImageInspect(context.Background(), ref)
	if err != nil && !cerrdefs.IsNotFound(err) {
		t.Fatalf("look up image %s: %v", ref, err)
	}
	return err == nil
}

// TestSecurityDindJobReachesOnlyItsSidecar checks what a dind job's docker
// reaches: no Docker socket is in the job container, DOCKER_HOST is the
// sidecar, whose daemon is not the host's; the job's docker sees none of
// the host's containers and cannot stop one; and a bind mount of a host
// directory outside the builds directory gets the sidecar's own
// filesystem, not the host's files.
func TestSecurityDindJobReachesOnlyItsSidecar(t *testing.T) {
	e := dindEnv(t, "")
	job := e.dindJob(254, nil)
	sacrificial := fmt.Sprintf("berth-it-dind-sacrificial-%d", job.ID)
	hostContainer(t, sacrificial, map[string]string{"berth-it": "sacrificial"})
	hostDir := t.TempDir()
	secret := fmt.Sprintf("host-only-file-%d", job.ID)
	if err := os.WriteFile(filepath.Join(hostDir, "token"), []byte(secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	hostInfo, err := dockerCli.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	job.Script = []string{
		"test ! -e /var/run/docker.sock && test ! -e /run/docker.sock && echo NO-DOCKER-SOCKET",
		"if ! grep docker.sock /proc/self/mountinfo; then echo NO-SOCKET-MOUNT; fi",
		"echo \"DOCKER_HOST=$DOCKER_HOST\"",
		"docker info --format 'DAEMON-ID={{.ID}}'",
		"docker load -q -i busybox.tar",
		"echo PS-BEGIN; docker ps -a --format '{{.Names}}'; echo PS-END",
		"if docker stop -t 0 " + sacrificial + "; then echo STOPPED-THE-HOST-CONTAINER; fi",
		"docker run --rm -v " + hostDir + ":/hostdir " + busyboxImage + " sh -c 'echo BIND-BEGIN; ls -A /hostdir; echo BIND-END'",
	}
	res := e.run(job)
	requireSuccess(t, res)
	s, _ := res.Stage("build_script")
	for _, want := range []string{"NO-DOCKER-SOCKET", "NO-SOCKET-MOUNT", "DOCKER_HOST=tcp://docker:2376"} {
		if !printed(s.Output, want) {
			t.Errorf("build_script did not print %q:\n%s", want, s.Output)
		}
	}
	if !strings.Contains(s.Output, "\nDAEMON-ID=") || printed(s.Output, "DAEMON-ID="+hostInfo.ID) {
		t.Errorf("the job's docker reaches daemon %q, want the sidecar's, not the host's %s:\n%s", s.Output, hostInfo.ID, s.Output)
	}
	_, ps, _ := strings.Cut(s.Output, "\nPS-BEGIN\n")
	ps, _, _ = strings.Cut(ps, "PS-END")
	if names := strings.Fields(ps); len(names) != 0 {
		t.Errorf("docker ps -a in the dind job: got %v, want nothing (the sidecar's daemon is empty)", names)
	}
	if printed(s.Output, "STOPPED-THE-HOST-CONTAINER") {
		t.Error("the dind job stopped a container of the host")
	}
	_, bind, _ := strings.Cut(s.Output, "\nBIND-BEGIN\n")
	bind, _, _ = strings.Cut(bind, "BIND-END")
	if strings.TrimSpace(bind) != "" {
		t.Errorf("the bind mount of host directory %s shows %q in the dind job, want the sidecar's empty directory", hostDir, bind)
	}
	if info, err := dockerCli.ContainerInspect(ctx, sacrificial); err != nil || !info.State.Running {
		t.Errorf("the host container: running %v, err %v; want it untouched", err == nil && info.State.Running, err)
	}
}

// TestSecurityPodmanJobHasNoHostDockerSocket checks that a guarded podman
// job's Docker socket is the guard's, in front of the rootless service:
// its docker reports Podman's engine, and the socket mounted into the job
// container comes from the job's own directory next to the builds
// directory, not from the host's Docker.
func TestSecurityPodmanJobHasNoHostDockerSocket(t *testing.T) {
	e := newPodmanEnv(t, options{})
	job := e.job(255)
	job.Script = []string{
		"docker version --format 'ENGINE={{range .Server.Components}}{{.Name}};{{end}}'",
		"echo MOUNT-BEGIN; grep docker.sock /proc/self/mountinfo; echo MOUNT-END",
	}
	res := e.run(job)
	requireSuccess(t, res)
	s, _ := res.Stage("build_script")
	_, engine, _ := strings.Cut(s.Output, "\nENGINE=")
	engine, _, _ = strings.Cut(engine, "\n")
	if !strings.Contains(engine, "Podman Engine") {
		t.Errorf("the job's docker reaches engine components %q, want Podman Engine", engine)
	}
	_, mounts, _ := strings.Cut(s.Output, "\nMOUNT-BEGIN\n")
	mounts, _, _ = strings.Cut(mounts, "MOUNT-END")
	lines := strings.Split(strings.TrimSpace(mounts), "\n")
	if len(lines) != 1 {
		t.Fatalf("mounts of a docker.sock in the job container: got %q, want one", mounts)
	}
	// mountinfo's fourth field is the mounted path within its source
	// filesystem.
	if fields := strings.Fields(lines[0]); len(fields) < 5 || !strings.Contains(fields[3], fmt.Sprintf("/%d.docker-proxy/", job.ID)) {
		t.Errorf("the job's docker.sock is mounted from %q, want the guard's socket in %d.docker-proxy", lines[0], job.ID)
	}
}

// TestSecurityPodmanUnguardedSeesTheUsersContainers turns podman's guard
// off: the job's docker then sees a container of the service's user that
// no job created, and can stop it.
func TestSecurityPodmanUnguardedSeesTheUsersContainers(t *testing.T) {
	e := newPodmanEnv(t, options{}, "guard = false")
	conn := requirePodman(t)
	job := e.job(256)
	foreign := fmt.Sprintf("berth-it-pod-sacrificial-%d", job.ID)
	podmanHostContainer(t, conn, foreign, map[string]string{"berth-it": "sacrificial"})
	job.Script = []string{
		"docker ps --format '{{.Names}}' | grep -x " + foreign + " && echo SEES-THE-USERS-CONTAINER",
		"docker kill " + foreign + " && echo KILLED-THE-USERS-CONTAINER",
	}
	res := e.run(job)
	requireSuccess(t, res)
	s, _ := res.Stage("build_script")
	for _, want := range []string{"SEES-THE-USERS-CONTAINER", "KILLED-THE-USERS-CONTAINER"} {
		if !printed(s.Output, want) {
			t.Errorf("build_script did not print %q:\n%s", want, s.Output)
		}
	}
	if data, err := containers.Inspect(conn, foreign, nil); err != nil || data.State.Running {
		t.Errorf("the user's container the job killed: running %v, err %v; want it stopped", err == nil && data.State.Running, err)
	}
}
