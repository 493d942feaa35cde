package integration

import (
	"fmt"
	"strings"
	"testing"
)

// TestGuardDindImageCannotBeMoved: a job on the guarded socket tries to
// move the DinD sidecar's image name (which a later dind job's sidecar,
// with every capability and no seccomp, runs from) by tag, build and
// load. Each is refused, and a later dind job of another project runs
// its sidecar, DNS relay and helper from the genuine images by id, with their
// HEALTHCHECKs off.
func TestGuardDindImageCannotBeMoved(t *testing.T) {
	e := newEnv(t, options{policyTOML: "default_backend = \"socket\"\nallowed_backends = [\"socket\", \"dind\"]\n", extraTOML: dindCapabilityCfg})
	genuineDind := engineImageID(t, "socket", dindImage)
	genuineHelper := engineImageID(t, "socket", helperImage)
	a := e.job(273)
	own := fmt.Sprintf("berth-it-own-dind-%d:1", a.ID)
	t.Cleanup(func() { removeImage(t, own) })
	a.Script = []string{
		resultFunc,
		`step=tag res docker tag ` + busyboxImage + ` ` + dindImage,
		`printf 'FROM ` + busyboxImage + `\nHEALTHCHECK CMD echo evil\n' > Dockerfile`,
		`step=build DOCKER_BUILDKIT=0 res docker build -q -t ` + dindImage + ` .`,
		`step=own-tag res docker tag ` + busyboxImage + ` ` + own,
		`docker save -o /tmp/own.tar ` + own + ` && mkdir -p /tmp/x && tar -C /tmp/x -xf /tmp/own.tar && rm -f /tmp/x/repositories`,
		`sed -i 's|"RepoTags":\[[^]]*\]|"RepoTags":["` + dindImage + `"]|' /tmp/x/manifest.json`,
		`tar -C /tmp/x -cf /tmp/evil.tar . && step=load res docker load -i /tmp/evil.tar`,
	}
	res := e.run(a)
	requireSuccess(t, res)
	out, _ := res.Stage("build_script")
	for _, want := range []string{"RESULT tag refused", "RESULT build refused", "RESULT own-tag allowed", "RESULT load refused",
		`image name "` + dindImage + `" is taken`} {
		if !strings.Contains(out.Output, want) {
			t.Errorf("job A's build_script lacks %q:\n%s", want, out.Output)
		}
	}
	if got := engineImageID(t, "socket", dindImage); got != genuineDind {
		t.Fatalf("after job A, %s is %s, want the genuine %s", dindImage, got, genuineDind)
	}

	b := e.job(274)
	b.ProjectID++ // another project
	b.ExtraCustomEnv = map[string]string{"BERTH_BACKEND": "dind"}
	b.Script = []string{"docker version --format '{{.Server.Version}}'"}
	s := preparedSession(t, e, b)
	for role, want := range map[string]string{"dind": genuineDind, "dind-dns": genuineDind, "helper": genuineHelper} {
		id, health := containerImageAndHealth(t, "dind", e.runner, b.ID, role)
		if strings.TrimPrefix(id, "sha256:") != want {
			t.Errorf("job B's %s container runs image %s, want the genuine %s", role, id, want)
		}
		if len(health) != 1 || health[0] != "NONE" {
			t.Errorf("job B's %s container has healthcheck %q, want [NONE]", role, health)
		}
	}
	mustRunStage(t, s, "build_script")
}
