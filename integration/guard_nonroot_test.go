package integration

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestGuardNonRootContainers: containers a job runs through the guard as a
// user that is not root work with the guard's start checks, and the checks
// hold for them. On Podman the guard compares what was mounted in the
// container's root, which a container whose user is not the guard's must
// still let it read. A bind of the builds directory is read and written as
// uid 1000 and 65534 at run, start and restart, and a swapped bind source
// is refused for such a container as for root's.
func TestGuardNonRootContainers(t *testing.T) {
	forGuardedBackends(t, options{}, func(t *testing.T, backend string, e *env) {
		secretDir, secret := hostSecretDir(t)
		job := e.job(281)
		job.Script = []string{
			`data="$CI_PROJECT_DIR/data"; mkdir -p "$data"; echo from-job > "$data/f"; chmod 0777 "$data"`,
			`docker run --rm --user 1000:1000 -v "$data:/data" ` + busyboxImage + ` sh -c 'echo "RUN-UID $(id -u)"; cat /data/f; echo by-1000 > /data/w'`,
			`echo "WRITTEN $(cat "$data/w")"`,
			`docker create --name "nr-$CI_JOB_ID" --user 65534:65534 -v "$data:/data" ` + busyboxImage + ` sh -c 'echo "START-UID $(id -u) $(cat /data/f)"'`,
			`docker start -a "nr-$CI_JOB_ID"`,
			`docker restart "nr-$CI_JOB_ID" && docker wait "nr-$CI_JOB_ID" && docker logs "nr-$CI_JOB_ID"`,
			`swap="$CI_PROJECT_DIR/swap"; mkdir -p "$swap/real"; echo in-builds > "$swap/real/marker"`,
			`docker create --name "nrswap-$CI_JOB_ID" --user 1000:1000 -v "$swap/real:/h" ` + busyboxImage + ` cat /h/marker`,
			`mv "$swap/real" "$swap/real.orig" && ln -s ` + secretDir + ` "$swap/real"`,
			`if docker start "nrswap-$CI_JOB_ID"; then echo RESULT swap-allowed; else echo RESULT swap-refused; fi`,
		}
		res := e.run(job)
		requireSuccess(t, res)
		out, _ := res.Stage("build_script")
		for _, want := range []string{"RUN-UID 1000", "WRITTEN by-1000", "START-UID 65534 from-job", "RESULT swap-refused", "is a symlink"} {
			if !strings.Contains(out.Output, want) {
				t.Errorf("build_script output lacks %q:\n%s", want, out.Output)
			}
		}
		// Started, then restarted: the logs hold both runs.
		if n := strings.Count(out.Output, "START-UID 65534 from-job"); n < 3 {
			t.Errorf("the uid 65534 container printed %d times, want its start and restart (and the logs of both):\n%s", n, out.Output)
		}
		if strings.Contains(out.Output, secret) {
			t.Errorf("a job container read the host directory %s:\n%s", secretDir, out.Output)
		}
		if got, err := os.ReadFile(filepath.Join(secretDir, "marker")); err != nil || string(got) != secret+"\n" {
			t.Errorf("the host marker changed: %q, %v", got, err)
		}
		e.assertNoResources()
	})
}
