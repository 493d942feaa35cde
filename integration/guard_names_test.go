package integration

import (
	"fmt"
	"strings"
	"testing"

	"github.com/berthci/berth/integration/runner"
)

// TestGuardAnotherJobsGivenNameIsNotSeen replays a poisoning of a name
// that another project's job then uses through its own guard: job A tags
// an image of its choice with the name of a registry image that is not on
// the host yet, and keeps running. Job B of another project builds from
// that name (refused: pull it first), then runs it: its guard answers as
// for a missing image, so B's docker CLI pulls, and B runs the registry's
// image, not A's. A's cleanup then leaves the name B pulled.
func TestGuardAnotherJobsGivenNameIsNotSeen(t *testing.T) {
	forGuardedBackends(t, options{}, func(t *testing.T, backend string, e *env) {
		reg := registryAddr
		if backend == "podman" {
			reg = "localhost:" + strings.Split(registryAddr, ":")[1]
		}
		login := `echo "$REG_PASS" | docker login ` + reg + ` -u ` + registryUser + ` --password-stdin >/dev/null`
		s := e.job(290)
		name := fmt.Sprintf("%s/berth-it/victim:%d", reg, s.ID)
		t.Cleanup(func() {
			if backend == "podman" {
				removePodmanImage(t, requirePodman(t), name)
			} else {
				removeImage(t, name)
			}
		})
		// The registry's image under the name: busybox, pushed by a job,
		// whose cleanup takes the name off the host again.
		s.Variables = []runner.Variable{{Key: "REG_PASS", Value: registryPass, Masked: true}}
		s.Script = []string{login, "docker tag " + busyboxImage + " " + name, "docker push " + name}
		requireSuccess(t, e.run(s))
		genuine := strings.TrimPrefix(engineImageID(t, backend, busyboxImage), "sha256:")
		planted := strings.TrimPrefix(engineImageID(t, backend, httpImage), "sha256:")

		a := e.job(291)
		a.Script = []string{"docker tag " + httpImage + " " + name, `docker image inspect -f 'A-SEES {{.Id}}' ` + name}
		sa := preparedSession(t, e, a)
		if out := mustRunStage(t, sa, "build_script"); !strings.Contains(out, "A-SEES sha256:"+planted) {
			t.Fatalf("job A did not plant %s under %s:\n%s", planted, name, out)
		}

		b := e.job(292)
		b.Variables = []runner.Variable{{Key: "REG_PASS", Value: registryPass, Masked: true}}
		b.Script = []string{
			resultFunc,
			login,
			`mkdir -p ctx && printf 'FROM ` + name + `\n' > ctx/Dockerfile`,
			`step=build-from-it DOCKER_BUILDKIT=0 res docker build ctx`,
			`step=inspect-it res docker image inspect ` + name,
			// nor by the id of the image the name points at, which a
			// container of it would keep past A's cleanup
			`step=run-by-id res docker run --rm sha256:` + planted + ` true`,
			`docker run --rm ` + name + ` true`,
			`docker image inspect -f 'B-RAN {{.Id}}' ` + name,
		}
		res := e.run(b)
		requireSuccess(t, res)
		out, _ := res.Stage("build_script")
		for _, want := range []string{"RESULT build-from-it refused", "was given by another job running on this runner", "docker pull " + name,
			"RESULT inspect-it refused", "No such image: " + name, "RESULT run-by-id refused", "B-RAN sha256:" + genuine} {
			if !strings.Contains(out.Output, want) {
				t.Errorf("job B's build_script lacks %q:\n%s", want, out.Output)
			}
		}
		if strings.Contains(out.Output, "B-RAN sha256:"+planted) || strings.Contains(out.Output, "RESULT run-by-id allowed") {
			t.Errorf("job B saw job A's image %s:\n%s", planted, out.Output)
		}

		// A's cleanup leaves the name B pulled.
		if r := sa.Cleanup(t.Context()); r.ExitCode != 0 {
			t.Fatalf("job A's cleanup: %d\n%s", r.ExitCode, r.Output)
		}
		if got := strings.TrimPrefix(engineImageID(t, backend, name), "sha256:"); got != genuine {
			t.Errorf("after job A's cleanup %s is %s, want the image job B pulled, %s", name, got, genuine)
		}
		e.assertNoResources()
	})
}
