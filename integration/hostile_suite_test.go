package integration

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/events"
	"github.com/docker/docker/api/types/filters"

	"github.com/berthci/berth/integration/runner"
)

// The hostile-input suite: one job per case of shared/spec/hostile-inputs.md
// that needs a real engine, run the way gitlab-runner runs it. Every case
// asserts the same four things:
//   - the exit class (build failure, system failure, or a passing job);
//   - that the log names the problem;
//   - that nothing of the job is left in the engine;
//   - that nothing was escalated: a job refused in prepare created no
//     container at all, a guarded-socket refusal created no container for
//     the job, and every container berth did create carries the job's
//     trusted name and labels.
//
// TestHostileDriverEnvironmentNotForwarded, TestHostileSymlinkInBuildsDir...
// and TestHostileSigtermDuringPrepareServiceWait (hostile_test.go) are
// cases of their own shape. The cases that need no engine are unit tests: driver/job_test.go
// (services JSON, aliases, env data, identities), config/policy_test.go and
// config/rules_test.go (image names, policy), backends/dockerproxy
// (the guard's filter, 160+ requests) and the fuzz targets.

// escalation is what a case may have created in the engine.
type escalation int

const (
	// createsNothing: refused before anything was created.
	createsNothing escalation = iota
	// createsNoJobObjects: berth's own containers ran, but nothing the job
	// asked its socket for was created.
	createsNoJobObjects
	// createsAnything: the job ran normally (the case checks its output).
	createsAnything
)

type hostileCase struct {
	item  int // the spec's item number
	name  string
	opts  options
	dind  bool
	setup func(t *testing.T, e *env, job *runner.Job)
	// class is "build", "system" or "" for a job that passes.
	class string
	// want are strings the job log must hold.
	want    []string
	creates escalation
	// check, when set, checks more after the job.
	check func(t *testing.T, e *env, job *runner.Job, res *runner.Result)
}

func script(lines ...string) func(*testing.T, *env, *runner.Job) {
	return func(_ *testing.T, _ *env, job *runner.Job) { job.Script = lines }
}

func variables(vars ...runner.Variable) func(*testing.T, *env, *runner.Job) {
	return func(_ *testing.T, _ *env, job *runner.Job) { job.Variables = append(job.Variables, vars...) }
}

func jobImage(name string) func(*testing.T, *env, *runner.Job) {
	return func(_ *testing.T, _ *env, job *runner.Job) { job.Image = runner.Image{Name: name} }
}

func services(svcs ...runner.Image) func(*testing.T, *env, *runner.Job) {
	return func(_ *testing.T, _ *env, job *runner.Job) { job.Services = svcs }
}

func servicesEnv(raw string) func(*testing.T, *env, *runner.Job) {
	return func(_ *testing.T, _ *env, job *runner.Job) {
		job.ServicesOnlyInEnv = true
		job.RawServicesEnv = &raw
	}
}

// guardRefusal is a job whose one command the guarded socket must refuse.
func guardRefusal(item int, name, command, want string) hostileCase {
	return hostileCase{item: item, name: name, setup: script("if " + command + "; then echo ESCALATED; exit 1; fi; exit 7"),
		class: "build", want: []string{"berth guarded Docker socket: ", want}, creates: createsNoJobObjects,
		check: func(t *testing.T, _ *env, _ *runner.Job, res *runner.Result) {
			if strings.Contains(res.Log, "\nESCALATED") {
				t.Error("the guarded socket let the command through")
			}
			if res.BuildExitCode != 7 {
				t.Errorf("BUILD_EXIT_CODE_FILE: got %d, want the script's 7", res.BuildExitCode)
			}
		}}
}

// rawGuardRequest sends one raw HTTP request to the job's socket with curl.
func rawGuardRequest(item int, name, curlArgs, want string) hostileCase {
	c := guardRefusal(item, name, "", want)
	c.setup = script(`code=$(curl -s -o /tmp/body -w '%{http_code}' --unix-socket /var/run/docker.sock ` + curlArgs + `); cat /tmp/body; echo; echo "status $code"; test "$code" = 403 && exit 7`)
	c.want = append(c.want, "status 403")
	return c
}

func hostileCases() []hostileCase {
	const bb = busyboxImage
	foreignOf := func(job *runner.Job) string { return fmt.Sprintf("berth-it-hostile-foreign-%d", job.ID) }
	withForeign := func(command func(foreign string) string) func(*testing.T, *env, *runner.Job) {
		return func(t *testing.T, _ *env, job *runner.Job) {
			hostContainer(t, foreignOf(job), map[string]string{"berth-it": "foreign"})
			job.Script = []string{"if " + command(foreignOf(job)) + "; then echo ESCALATED; exit 1; fi; exit 7"}
		}
	}
	foreignUntouched := func(t *testing.T, _ *env, job *runner.Job, res *runner.Result) {
		info, err := dockerCli.ContainerInspect(context.Background(), foreignOf(job))
		if err != nil || !info.State.Running || info.HostConfig.Privileged {
			t.Errorf("the container the job did not create was touched: err %v", err)
		}
		if strings.Contains(res.Log, "\nESCALATED") {
			t.Error("the guarded socket let the command through")
		}
	}
	identity := func(key string) hostileCase {
		return hostileCase{item: 1, name: "identity " + key, class: "",
			setup: func(_ *testing.T, _ *env, job *runner.Job) {
				job.Variables = []runner.Variable{{Key: key, Value: "1", Public: true}}
				job.ExtraCustomEnv = map[string]string{key: "1"}
				job.Script = []string{"echo \"$CI_PROJECT_DIR\""}
			},
			want: []string{"$ echo \"$CI_PROJECT_DIR\""}, creates: createsAnything,
			check: func(t *testing.T, e *env, job *runner.Job, res *runner.Result) {
				wantDir := filepath.Join(e.root, "builds", e.runner, strconv.FormatInt(job.ID, 10))
				if s, _ := res.Stage("build_script"); !strings.Contains(s.Output, wantDir) {
					t.Errorf("the builds dir did not come from the payload's ids: want %s in\n%s", wantDir, s.Output)
				}
			}}
	}
	injection := func(name, payload string) hostileCase {
		return hostileCase{item: 3, name: "injection " + name, class: "",
			setup: func(_ *testing.T, e *env, job *runner.Job) {
				marker := filepath.Join(e.root, "pwned")
				value := strings.ReplaceAll(payload, "MARKER", marker)
				job.Variables = []runner.Variable{{Key: "EVIL", Value: value, Public: true}}
				job.Services = []runner.Image{{Name: bb, Alias: "svc", Command: []string{"sleep", "600"},
					Variables: []runner.Variable{{Key: "EVIL2", Value: value}, {Key: "HEALTHCHECK_TCP_PORT", Value: "1"}}}}
				job.Script = []string{`printf 'evil=%s\n' "$EVIL"`, `test -e "` + marker + `" && exit 9 || true`}
			},
			opts: options{servicesTTL: "1s"}, want: []string{"evil="}, creates: createsAnything,
			check: func(t *testing.T, e *env, _ *runner.Job, _ *runner.Result) {
				if _, err := os.Stat(filepath.Join(e.root, "pwned")); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("a job value was run as a command: %v", err)
				}
			}}
	}
	badImage := func(name, img, want string) hostileCase {
		return hostileCase{item: 4, name: "image " + name, setup: jobImage(img), class: "build", want: []string{want}}
	}
	badServices := func(name, raw, want string) hostileCase {
		return hostileCase{item: 5, name: "services JSON " + name, setup: servicesEnv(raw), class: "build", want: []string{"CI_JOB_SERVICES", want}}
	}
	deep := strings.Repeat("[", 200) + strings.Repeat("]", 200)
	// An environment variable holds at most 128 KiB; the driver caps the
	// services variable at 64 KiB.
	huge := `[{"name":"` + strings.Repeat("a", 100<<10) + `"}]`

	return []hostileCase{
		identity("CI_JOB_ID"),
		identity("CI_PROJECT_ID"),
		identity("CI_CONCURRENT_PROJECT_ID"),
		identity("CI_PROJECT_PATH_SLUG"),
		identity("CI_RUNNER_ID"),

		// The runner's scripts cd to builds dir + project path; the
		// traversal leads nowhere on the host, since the containers see
		// only the job's own builds dir of it.
		{item: 2, name: "project path with traversal", class: "build",
			setup: func(_ *testing.T, _ *env, job *runner.Job) {
				job.ProjectPath = "../../../../escape"
				job.Script = []string{"pwd", "touch planted"}
			},
			want: []string{"escape: No such file or directory"}, creates: createsAnything,
			check: func(t *testing.T, e *env, job *runner.Job, res *runner.Result) {
				if _, err := os.Stat(filepath.Join(e.root, "escape")); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("the project path reached the host: %v", err)
				}
			}},

		injection("command substitution", "$(touch MARKER)"),
		injection("backticks", "`touch MARKER`"),
		injection("semicolon and newline", "x; touch MARKER\ntouch MARKER"),
		{item: 3, name: "injection in BERTH_MEMORY", setup: variables(runner.Variable{Key: "BERTH_MEMORY", Value: "1g; touch /tmp/x", Public: true}),
			class: "build", want: []string{"BERTH_MEMORY"}},

		badImage("like a flag", "--privileged", "invalid image name"),
		badImage("with a space", "busybox latest", "invalid image name"),
		badImage("uppercase", "BusyBox:latest", "invalid image name"),
		badImage("very long", strings.Repeat("a", 600), "the limit is 512"),
		badImage("odd digest", "busybox@sha256:xyz", "invalid image name"),
		{item: 4, name: "service image like a flag", setup: services(runner.Image{Name: "--privileged"}), class: "build", want: []string{"invalid image name"}},

		badServices("invalid", `[{"name":`, "not a valid JSON list"),
		badServices("wrong types", `[{"name":42}]`, "not a valid JSON list"),
		badServices("null entry", `[null]`, "entry 0 is null"),
		badServices("duplicate keys", `[{"name":"a","name":"b"}]`, "not a valid JSON list"),
		badServices("case-variant keys", `[{"name":"a","Name":"b"}]`, "not a valid JSON list"),
		badServices("deep nesting", deep, "not a valid JSON list"),
		badServices("over 64 KiB", huge, "the limit is"),
		{item: 5, name: "megabytes in the payload", setup: func(_ *testing.T, _ *env, job *runner.Job) {
			// No environment can carry it, so it is in JOB_RESPONSE_FILE only.
			empty := ""
			job.Services, job.RawServicesEnv = []runner.Image{{Name: strings.Repeat("a", 3<<20)}}, &empty
		}, class: "build", want: []string{"the limit is 512"}},

		{item: 6, name: "too many services", opts: options{policyTOML: "default_backend = \"socket\"\nallowed_backends = [\"socket\"]\nservices_limit = 2\n"},
			setup: services(runner.Image{Name: httpImage, Alias: "a"}, runner.Image{Name: httpImage, Alias: "b"}, runner.Image{Name: httpImage, Alias: "c"}),
			class: "build", want: []string{"services_limit", "2"}},

		{item: 7, name: "entrypoint override on the dind sidecar", dind: true,
			setup: func(_ *testing.T, _ *env, job *runner.Job) {
				job.ExtraCustomEnv = map[string]string{"BERTH_BACKEND": "dind"}
				job.Services = []runner.Image{{Name: "docker:dind", Entrypoint: []string{"sh", "-c", "id"}}}
			}, class: "build", want: []string{"allow_service_overrides"}},
		{item: 7, name: "command override on the dind sidecar", dind: true,
			setup: func(_ *testing.T, _ *env, job *runner.Job) {
				job.ExtraCustomEnv = map[string]string{"BERTH_BACKEND": "dind"}
				job.Services = []runner.Image{{Name: "docker:dind", Command: []string{"sh"}}}
			}, class: "build", want: []string{"allow_service_overrides"}},

		{item: 8, name: "alias docker under dind", dind: true,
			setup: func(_ *testing.T, _ *env, job *runner.Job) {
				job.ExtraCustomEnv = map[string]string{"BERTH_BACKEND": "dind"}
				job.Services = []runner.Image{{Name: httpImage, Alias: "docker"}}
			}, class: "build", want: []string{`"docker"`}},
		{item: 8, name: "duplicate aliases", setup: services(runner.Image{Name: httpImage, Alias: "web"}, runner.Image{Name: busyboxImage, Alias: "web"}),
			class: "build", want: []string{`alias "web" is already used`}},
		{item: 8, name: "alias not a hostname", setup: services(runner.Image{Name: httpImage, Alias: "web;rm -rf /"}),
			class: "build", want: []string{"is not a valid hostname"}},

		{item: 9, name: "NUL in a value", setup: func(_ *testing.T, _ *env, job *runner.Job) {
			job.PayloadVariables = []runner.Variable{{Key: "NULVAL", Value: "a\x00b", Public: true}}
		}, class: "build", want: []string{`"NULVAL"`, "NUL byte"}},
		{item: 9, name: "= in a key", setup: func(_ *testing.T, _ *env, job *runner.Job) {
			job.PayloadVariables = []runner.Variable{{Key: "PATH=/evil:", Value: "x", Public: true}}
		}, class: "build", want: []string{"may not contain '='"}},
		{item: 9, name: "empty key", setup: func(_ *testing.T, _ *env, job *runner.Job) {
			job.PayloadVariables = []runner.Variable{{Key: "", Value: "x", Public: true}}
		}, class: "build", want: []string{"empty name"}},
		guardRefusal(10, "volume /:/host", "docker run --rm -v /:/host "+bb+" true", `bind mount of "/" is not allowed`),
		guardRefusal(10, "volume of the docker socket", "docker run --rm -v /var/run/docker.sock:/s "+bb+" true", "binds must come from the job's builds directory"),
		guardRefusal(10, "volume with :z relabel", "docker run --rm -v $CI_PROJECT_DIR:/p:z "+bb+" true", `bind option "z"`),
		guardRefusal(10, "mount with rshared propagation", "docker run --rm --mount type=bind,source=$CI_PROJECT_DIR,target=/p,bind-propagation=rshared "+bb+" true", `bind propagation "rshared" is not allowed`),

		guardRefusal(11, "network host", "docker run --rm --network host "+bb+" true", `NetworkMode "host" is not allowed`),
		{item: 11, name: "network of another container", setup: withForeign(func(f string) string {
			return "docker run --rm --network container:" + f + " " + bb + " true"
		}), class: "build", want: []string{"was not created by this job"}, creates: createsNoJobObjects, check: foreignUntouched},
		guardRefusal(11, "network ns:/proc/1/ns/net", "docker run --rm --network ns:/proc/1/ns/net "+bb+" true", `NetworkMode "ns:/proc/1/ns/net" is not allowed`),
		guardRefusal(11, "network pasta:", "docker run --rm --network pasta:-T,8080 "+bb+" true", `NetworkMode "pasta:-T,8080" is not allowed`),
		// The docker CLI will not send this one, so the request is raw.
		rawGuardRequest(11, "network slirp4netns:", `-X POST -H 'Content-Type: application/json' --data-binary '{"Image":"`+bb+`","HostConfig":{"NetworkMode":"slirp4netns:allow_host_loopback=true"}}' http://d/containers/create`,
			`NetworkMode \"slirp4netns:allow_host_loopback=true\" is not allowed`),
		guardRefusal(11, "pid host", "docker run --rm --pid host "+bb+" true", `PidMode "host" is not allowed`),
		guardRefusal(11, "ipc host", "docker run --rm --ipc host "+bb+" true", `IpcMode "host" is not allowed`),
		guardRefusal(11, "uts host", "docker run --rm --uts host "+bb+" true", `UTSMode "host" is not allowed`),
		guardRefusal(11, "userns host", "docker run --rm --userns host "+bb+" true", `UsernsMode "host" is not allowed`),
		guardRefusal(11, "cgroupns host", "docker run --rm --cgroupns host "+bb+" true", `CgroupnsMode "host" is not allowed`),

		{item: 12, name: "berth labels from the job", class: "",
			setup: script("docker run --name forged-$CI_JOB_ID --label berth.runner=other --label berth.job.id=1 --label berth.role=build "+bb+" true",
				`docker inspect -f 'labels {{index .Config.Labels "berth.runner"}} {{index .Config.Labels "berth.job.id"}} {{index .Config.Labels "berth.role"}}' forged-$CI_JOB_ID`),
			want: []string{"labels "}, creates: createsAnything,
			check: func(t *testing.T, e *env, job *runner.Job, res *runner.Result) {
				want := fmt.Sprintf("labels %s %d job-created", e.runner, job.ID)
				if s, _ := res.Stage("build_script"); !strings.Contains(s.Output, want) {
					t.Errorf("forged labels reached the engine: want %q in\n%s", want, s.Output)
				}
			}},

		{item: 13, name: "backend not allowed", setup: func(_ *testing.T, _ *env, job *runner.Job) {
			job.ExtraCustomEnv = map[string]string{"BERTH_BACKEND": "dind"}
		}, class: "build", want: []string{`"dind"`, "socket"}},
		{item: 13, name: "unknown backend", setup: func(_ *testing.T, _ *env, job *runner.Job) {
			job.ExtraCustomEnv = map[string]string{"BERTH_BACKEND": "root-shell"}
		}, class: "build", want: []string{`"root-shell"`}},

		{item: 15, name: "engine gone", opts: options{extraTOML: "host = \"unix:///run/berth-it-no-such-docker.sock\"\n"},
			class: "system", want: []string{"berth-it-no-such-docker.sock"}},

		{item: 16, name: "huge log", class: "",
			setup: script("head -c 20000000 /dev/zero | tr '\\0' 'x' | fold -w 200", "echo flood-done"),
			want:  []string{"flood-done"}, creates: createsAnything,
			check: func(t *testing.T, _ *env, _ *runner.Job, res *runner.Result) {
				s, _ := res.Stage("build_script")
				if s.MaxRSS > 100<<20 {
					t.Errorf("berth run held %d MiB while streaming 20 MB of output; it must stream, not buffer", s.MaxRSS>>20)
				}
			}},

		guardRefusal(17, "privileged", "docker run --rm --privileged "+bb+" true", "privileged containers are not allowed"),
		guardRefusal(17, "cap-add", "docker run --rm --cap-add NET_ADMIN "+bb+" true", "adding capabilities (NET_ADMIN)"),
		guardRefusal(17, "device", "docker run --rm --device /dev/sda "+bb+" true", "devices are not allowed"),
		guardRefusal(17, "gpus", "docker run --rm --gpus all "+bb+" true", "device requests (GPUs) are not allowed"),
		{item: 17, name: "volumes-from another container", setup: withForeign(func(f string) string {
			return "docker run --rm --volumes-from " + f + " " + bb + " true"
		}), class: "build", want: []string{"VolumesFrom is not allowed"}, creates: createsNoJobObjects, check: foreignUntouched},
		guardRefusal(17, "seccomp unconfined", "docker run --rm --security-opt seccomp=unconfined "+bb+" true", `security option "seccomp=unconfined" is not allowed`),
		guardRefusal(17, "apparmor unconfined", "docker run --rm --security-opt apparmor=unconfined "+bb+" true", `security option "apparmor=unconfined" is not allowed`),
		guardRefusal(17, "sysctl", "docker run --rm --sysctl net.ipv4.ip_forward=1 "+bb+" true", "sysctls are not allowed"),
		guardRefusal(17, "masked paths off", "docker run --rm --security-opt systempaths=unconfined "+bb+" true", "overriding the masked and read-only /proc and /sys paths is not allowed"),
		guardRefusal(17, "runtime", "docker run --rm --runtime runc "+bb+" true", `runtime "runc" is not allowed`),
		guardRefusal(17, "cgroup parent", "docker run --rm --cgroup-parent /evil "+bb+" true", "CgroupParent is not allowed"),
		guardRefusal(17, "bind-backed volume", "docker volume create --opt type=none --opt device=/ --opt o=bind hostroot", "volume driver options (device, o, type) are not allowed"),
		{item: 17, name: "exec into another container", setup: withForeign(func(f string) string { return "docker exec " + f + " true" }),
			class: "build", want: []string{"was not created by this job"}, creates: createsNoJobObjects, check: foreignUntouched},
		{item: 17, name: "stop another container", setup: withForeign(func(f string) string { return "docker stop " + f }),
			class: "build", want: []string{"was not created by this job"}, creates: createsNoJobObjects, check: foreignUntouched},
		{item: 17, name: "kill another container", setup: withForeign(func(f string) string { return "docker kill " + f }),
			class: "build", want: []string{"was not created by this job"}, creates: createsNoJobObjects, check: foreignUntouched},
		{item: 17, name: "remove another container", setup: withForeign(func(f string) string { return "docker rm -f " + f }),
			class: "build", want: []string{"was not created by this job"}, creates: createsNoJobObjects, check: foreignUntouched},
		// Sequences and shared state (the guard_attack_test.go tests replay
		// them whole; these are their single refused requests).
		guardRefusal(17, "restart policy", "docker run -d --restart always "+bb+" true", `restart policy "always" is not allowed`),
		guardRefusal(17, "berth's container name", "docker create --name berth-x-1-build "+bb, `names starting with "berth-" are berth's own`),
		guardRefusal(17, "berth's volume name", "docker volume create berth-x-1-vol-0", `names starting with "berth-" are berth's own`),
		guardRefusal(17, "network named like an id", "docker network create 0123456789ab", "hex digits only"),
		guardRefusal(17, "tag over the helper image", "docker tag "+bb+" "+helperImage, `image name "`+helperImage+`" is taken`),
		guardRefusal(17, "remove the helper image", "docker rmi -f "+helperImage, "may remove only images its project built"),
		guardRefusal(17, "oom kill disabled", "docker run --rm --oom-kill-disable "+bb+" true", "OomKillDisable is not allowed"),
		rawGuardRequest(17, "annotations", `-X POST -H 'Content-Type: application/json' --data-binary '{"Image":"x","HostConfig":{"Annotations":{"a":"b"}}}' http://d/containers/create`, "annotations are not allowed"),
		guardRefusal(17, "pull from the metadata address", "docker pull 169.254.169.254/latest:1", "is at a loopback or link-local address"),
		guardRefusal(17, "podman bind option U", "docker run --rm -v $CI_PROJECT_DIR:/p:U "+bb+" true", `bind option "U"`),
		rawGuardRequest(17, "endpoint NetworkID", `-X POST -H 'Content-Type: application/json' --data-binary '{"Image":"x","NetworkingConfig":{"EndpointsConfig":{"bridge":{"NetworkID":"0123"}}}}' http://d/containers/create`, "may not set NetworkID"),
		guardRefusal(17, "publish on another host address", "docker run -d -p 192.0.2.1::8080 "+bb+" true", "publishing port 8080/tcp on 192.0.2.1 is not allowed"),
		guardRefusal(17, "build ADD from loopback", `printf 'FROM `+bb+`\nADD http://127.0.0.1:9/secret /s\n' > Dockerfile && DOCKER_BUILDKIT=0 docker build -q .`, "the engine would fetch the URL on the host's own network"),
		guardRefusal(17, "build FROM a loopback registry", `printf 'ARG R=127.0.0.2:5000\nFROM $R/x\n' > Dockerfile && DOCKER_BUILDKIT=0 docker build -q .`, "is at a loopback or link-local address"),
		guardRefusal(17, "build ADD in ONBUILD", `printf 'FROM `+bb+`\nONBUILD ADD http://169.254.169.254/latest /m\n' > Dockerfile && DOCKER_BUILDKIT=0 docker build -q .`, "the engine would fetch the URL on the host's own network"),
		rawGuardRequest(17, "build with a Dockerfile outside the context", `-X POST -H 'Content-Type: application/x-tar' --data-binary @/dev/null 'http://d/build?dockerfile=../../etc/passwd'`, "lies outside the build context"),
		// The fourth attack review.
		rawGuardRequest(17, "an upper-case query key", `'http://d/images/get?NAMES=`+bb+`'`, `query parameter \"NAMES\" is not allowed`),
		rawGuardRequest(17, "a push destination", `-X POST 'http://d/images/`+bb+`/push?tag=latest&destination=dir:/tmp/x'`, `query parameter \"destination\" is not allowed`),
		guardRefusal(17, "tmpfs nr_blocks", "docker run --rm --tmpfs /t:size=1m,nr_blocks=1000000 "+bb+" true", `option "nr_blocks=1000000" is not allowed`),
		guardRefusal(17, "colon in a mount source", `mkdir -p "$CI_PROJECT_DIR/a:b" && docker create --mount "type=bind,src=$CI_PROJECT_DIR/a:b,dst=/t" `+bb+` true`, "may not hold a comma, an equals sign or a colon"),
		guardRefusal(17, "swarm", "docker swarm init", "POST /swarm/init is not allowed"),
		guardRefusal(17, "plugin", "docker plugin install --grant-all-permissions vieux/sshfs", "GET /plugins/privileges is not allowed"),
		guardRefusal(17, "system df", "docker system df", "GET /system/df is not allowed"),
		rawGuardRequest(17, "BuildKit session", "-X POST http://d/session", "BuildKit (/session) is not available"),
		rawGuardRequest(17, "BuildKit grpc", "-X POST http://d/grpc", "BuildKit (/grpc) is not available"),
		rawGuardRequest(17, "chunked body", `-X POST -H 'Content-Type: application/json' -H 'Transfer-Encoding: chunked' --data-binary '{"Image":"x"}' http://d/containers/create`, "chunked request bodies are not allowed"),
		rawGuardRequest(17, "zero-length body", `-X POST -H 'Content-Type: application/json' -H 'Content-Length: 0' http://d/containers/create`, "the request body is empty"),
		rawGuardRequest(17, "non-JSON body", `-X POST -H 'Content-Type: text/plain' --data-binary '{"Image":"x"}' http://d/containers/create`, "the request body must be application/json"),
		rawGuardRequest(17, "oversized body", `-X POST -H 'Content-Type: application/json' --data-binary @/tmp/big http://d/containers/create`, "is over the 1048576 byte limit"),
		rawGuardRequest(17, "duplicate keys", `-X POST -H 'Content-Type: application/json' --data-binary '{"Image":"x","HostConfig":{"Privileged":false,"Privileged":true}}' http://d/containers/create`, `duplicate key \"Privileged\"`),
		rawGuardRequest(17, "case-variant keys", `-X POST -H 'Content-Type: application/json' --data-binary '{"Image":"x","HostConfig":{"Privileged":false,"privileged":true}}' http://d/containers/create`, `keys \"Privileged\" and \"privileged\" differ only in case`),
	}
}

// TestHostileInputs runs the suite; see the top of this file.
func TestHostileInputs(t *testing.T) {
	requireDocker(t)
	seen := map[string]bool{}
	for _, tc := range hostileCases() {
		name := fmt.Sprintf("%02d %s", tc.item, tc.name)
		if seen[name] {
			t.Fatalf("duplicate case %q", name)
		}
		seen[name] = true
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			var e *env
			if tc.dind {
				e = dindEnv(t, "")
			} else {
				e = newEnv(t, tc.opts)
			}
			job := e.job(400 + int64(tc.item))
			if strings.HasPrefix(tc.name, "oversized") {
				// The body comes from a file made in the job.
				tc.setup(t, e, job)
				job.Script = append([]string{"head -c 2000000 /dev/zero | tr '\\0' ' ' > /tmp/big"}, job.Script...)
			} else if tc.setup != nil {
				tc.setup(t, e, job)
			}
			if job.Image.Name == debianImage && len(job.Script) == 0 {
				job.Script = []string{"true"}
			}
			since := time.Now()
			res := e.run(job)

			if res.Failure != tc.class {
				t.Errorf("exit class: got %q, want %q", res.Failure, tc.class)
			}
			for _, want := range tc.want {
				if !strings.Contains(res.Log, want) {
					t.Errorf("the job log does not name the problem: it lacks %q", want)
				}
			}
			if left := e.resources(); len(left) > 0 {
				t.Errorf("left behind: %v", left)
			}
			created := e.createdContainers(t, since)
			for _, c := range created {
				if !strings.HasPrefix(c.name, fmt.Sprintf("berth-%s-%d-", e.runner, job.ID)) && c.role != "job-created" {
					t.Errorf("container %q was created outside the job's trusted name", c.name)
				}
				if c.jobID != strconv.FormatInt(job.ID, 10) {
					t.Errorf("container %q carries job id %q, want the payload's %d", c.name, c.jobID, job.ID)
				}
			}
			switch tc.creates {
			case createsNothing:
				if len(created) > 0 {
					t.Errorf("refused, yet created %v", created)
				}
			case createsNoJobObjects:
				for _, c := range created {
					if c.role == "job-created" {
						t.Errorf("the job created %q through its socket", c.name)
					}
				}
			}
			if tc.check != nil {
				tc.check(t, e, job, res)
			}
			if t.Failed() {
				t.Logf("job log:\n%s", truncate(res.Log, 8000))
			}
		})
	}
	if len(seen) < 40 {
		t.Errorf("the suite has %d cases; keep it at 40 or more", len(seen))
	}
}

type createdContainer struct{ name, role, jobID string }

// createdContainers lists the containers created for the env's runner
// since the given time, from the daemon's event log, so that containers
// already removed are counted too.
func (e *env) createdContainers(t *testing.T, since time.Time) []createdContainer {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	msgs, errs := dockerCli.Events(ctx, events.ListOptions{
		Since: strconv.FormatInt(since.Unix()-1, 10),
		Until: strconv.FormatInt(time.Now().Unix()+1, 10),
		Filters: filters.NewArgs(filters.Arg("type", "container"), filters.Arg("event", "create"),
			filters.Arg("label", "berth.runner="+e.runner)),
	})
	var out []createdContainer
	for {
		select {
		case m := <-msgs:
			a := m.Actor.Attributes
			out = append(out, createdContainer{name: a["name"], role: a["berth.role"], jobID: a["berth.job.id"]})
		case err := <-errs:
			if err != nil && !errors.Is(err, io.EOF) {
				t.Fatalf("read the daemon's events: %v", err)
			}
			return out
		}
	}
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n/2] + "\n...\n" + s[len(s)-n/2:]
}
