//go:build remote

// Attacks on the guarded socket that are sequences of requests each
// allowed on its own, replayed end to end through the real guard.

package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// hostSecretDir makes a host directory outside every builds dir, readable
// by the rootless podman user, with a marker file whose content no job may
// ever print.
func hostSecretDir(t *testing.T) (dir, secret string) {
	t.Helper()
	dir, err := os.MkdirTemp("", "berth-it-host-secret-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	secret = fmt.Sprintf("host-secret-%d", os.Getpid())
	if err := os.WriteFile(filepath.Join(dir, "marker"), []byte(secret+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir, secret
}

// TestGuardBindSourceSwappedAfterCreate replays the symlink swap: a bind
// source in the builds dir is accepted at create, then replaced by a
// symlink to a host directory, and the container started, restarted and
// started again. The engine resolves bind sources at every start, so the
// guard must refuse each start and the host directory must never be
// mounted.
func TestGuardBindSourceSwappedAfterCreate(t *testing.T) {
	for _, backend := range []string{"socket", "podman"} {
		t.Run(backend, func(t *testing.T) {
			t.Parallel()
			var e *env
			if backend == "podman" {
				e = newPodmanEnv(t, options{})
			} else {
				e = newEnv(t, options{})
			}
			secretDir, secret := hostSecretDir(t)
			job := e.job(261)
			job.Script = []string{
				`swap="$CI_PROJECT_DIR/swap"; mkdir -p "$swap/real"; echo in-builds > "$swap/real/marker"`,
				// create while the source is a real directory, then swap
				`docker create --name "swap-$CI_JOB_ID" -v "$swap/real:/h" ` + busyboxImage + ` cat /h/marker`,
				`mv "$swap/real" "$swap/real.orig" && ln -s ` + secretDir + ` "$swap/real"`,
				`if docker start -a "swap-$CI_JOB_ID"; then echo RESULT start-allowed; else echo RESULT start-refused; fi`,
				// restart: start it once with the real directory back, swap, restart
				`rm "$swap/real" && mv "$swap/real.orig" "$swap/real"`,
				`docker start -a "swap-$CI_JOB_ID"`,
				`mv "$swap/real" "$swap/real.orig" && ln -s ` + secretDir + ` "$swap/real"`,
				`if docker restart "swap-$CI_JOB_ID"; then echo RESULT restart-allowed; else echo RESULT restart-refused; fi`,
				`docker logs "swap-$CI_JOB_ID"`,
				// a symlink above the bound directory, and a Mounts bind
				`rm "$swap/real" && mv "$swap/real.orig" "$swap/real"`,
				`docker create --name "swap2-$CI_JOB_ID" --mount "type=bind,source=$swap/real,target=/h" ` + busyboxImage + ` cat /h/marker`,
				`mv "$swap" "$swap.orig" && mkdir -p "$(dirname "$swap")" && ln -s ` + filepath.Dir(secretDir) + ` "$swap"`,
				`if docker start -a "swap2-$CI_JOB_ID"; then echo RESULT mount-allowed; else echo RESULT mount-refused; fi`,
				`rm "$swap" && mv "$swap.orig" "$swap"`,
				// the restart policy that would start it behind the guard's back
				`if docker run -d --restart always ` + busyboxImage + ` true; then echo RESULT policy-allowed; else echo RESULT policy-refused; fi`,
			}
			res := e.run(job)
			requireSuccess(t, res)
			out, _ := res.Stage("build_script")
			for _, want := range []string{"RESULT start-refused", "RESULT restart-refused", "RESULT mount-refused", "RESULT policy-refused",
				"berth guarded Docker socket: bind source", "is a symlink", "restart policy \"always\" is not allowed"} {
				if !strings.Contains(out.Output, want) {
					t.Errorf("build_script output lacks %q:\n%s", want, out.Output)
				}
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
}

// TestGuardBindSourceSwapRace keeps swapping a bound directory and a
// symlink to a host directory for 10 seconds in the job container while
// the job starts and restarts a container that binds it. Each start is
// either refused or mounts the real directory: the host directory never.
// The guard pauses the job's other containers while it checks a start, so
// the swapping loop cannot run between the check and the engine's mount.
// Socket only: rootless Podman on these cgroup v1 hosts cannot pause, and
// there the race stays open (see the README's security section).
func TestGuardBindSourceSwapRace(t *testing.T) {
	e := newEnv(t, options{})
	secretDir, secret := hostSecretDir(t)
	job := e.job(262)
	job.Script = []string{
		`swap="$CI_PROJECT_DIR/swap"; mkdir -p "$swap/real"; echo in-builds > "$swap/real/marker"`,
		`docker create --name "race-$CI_JOB_ID" -v "$swap/real:/h" ` + busyboxImage + ` cat /h/marker`,
		// the swapper: real directory and symlink, as fast as it can
		// (rm -rf removes the symlink, or a directory the engine made
		// where it found nothing)
		`( end=$((SECONDS+10)); n=0; while [ $SECONDS -lt $end ]; do mv -T "$swap/real" "$swap/d" 2>/dev/null; ln -sfn ` + secretDir + ` "$swap/real" 2>/dev/null; rm -rf "$swap/real"; mv -T "$swap/d" "$swap/real" 2>/dev/null || mkdir -p "$swap/real"; n=$((n+1)); done; echo "SWAPS $n" ) &`,
		`end=$((SECONDS+10)); starts=0; refused=0; while [ $SECONDS -lt $end ]; do if docker start -a "race-$CI_JOB_ID" >>/tmp/race.out 2>&1; then starts=$((starts+1)); else refused=$((refused+1)); fi; docker restart -t 0 "race-$CI_JOB_ID" >>/tmp/race.out 2>&1 || refused=$((refused+1)); done`,
		`wait; echo "STARTS $starts REFUSED $refused"; docker logs "race-$CI_JOB_ID" >>/tmp/race.out 2>&1; sort /tmp/race.out | uniq -c | sort -rn | head -20`,
	}
	res := e.run(job)
	requireSuccess(t, res)
	out, _ := res.Stage("build_script")
	t.Logf("race:\n%s", lastLines(out.Output, 25))
	if strings.Contains(out.Output, secret) {
		t.Errorf("a job container read the host directory %s during the race:\n%s", secretDir, out.Output)
	}
	if !strings.Contains(out.Output, "SWAPS ") || !strings.Contains(out.Output, "STARTS ") {
		t.Errorf("the race did not run:\n%s", out.Output)
	}
	if got, err := os.ReadFile(filepath.Join(secretDir, "marker")); err != nil || string(got) != secret+"\n" {
		t.Errorf("the host marker changed: %q, %v", got, err)
	}
	e.assertNoResources()
}
