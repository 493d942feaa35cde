package integration

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/berthci/berth/integration/runner"
)

// TestGCRemovesCrashedJobsOnly prepares four jobs and never cleans them
// up, as when the runner is SIGKILLed: three with a 1 s timeout (one on
// each backend) and one with an hour. After the short
// timeouts and a 1 s grace, `berth gc --dry-run` lists them and removes
// nothing; `berth gc` then removes the three crashed jobs entirely and leaves
// the live job, and a container without berth's labels, alone.
func TestGCRemovesCrashedJobsOnly(t *testing.T) {
	e := newPodmanEnv(t, options{policyTOML: "default_backend = \"socket\"\nallowed_backends = [\"socket\", \"podman\", \"dind\"]\n",
		extraTOML: dindCapabilityCfg})
	conn := requirePodman(t)
	ctx := context.Background()
	unlabelled := fmt.Sprintf("berth-it-gc-unlabelled-%d", jobIDBase)
	hostContainer(t, unlabelled, map[string]string{"berth-it": "unlabelled"})

	prepare := func(backend string, timeout int) (*runner.Job, *runner.Session) {
		job := e.job(230)
		job.Timeout = timeout
		job.ExtraCustomEnv = map[string]string{"BERTH_BACKEND": backend}
		s, err := e.emu.Start(ctx, job)
		if err != nil {
			t.Fatal(err)
		}
		if r := s.Prepare(ctx); r.ExitCode != 0 {
			t.Fatalf("prepare %s: %d\n%s", backend, r.ExitCode, r.Output)
		}
		return job, s
	}
	crashedSocket, _ := prepare("socket", 1)
	crashedPodman, _ := prepare("podman", 1)
	crashedDind, _ := prepare("dind", 1)
	crashed := []*runner.Job{crashedSocket, crashedPodman, crashedDind}
	live, liveSession := prepare("socket", 3600)
	defer liveSession.Cleanup(ctx)

	jobLeft := func(job *runner.Job) []string {
		var left []string
		for _, r := range append(e.resources(), podmanResources(t, conn, e.runner)...) {
			if strings.Contains(r, fmt.Sprintf("-%d", job.ID)) {
				left = append(left, r)
			}
		}
		dir := filepath.Join(e.root, "builds", e.runner, fmt.Sprint(job.ID))
		for _, d := range []string{dir, dir + ".docker-proxy", dir + ".dind-certs"} {
			if _, err := os.Stat(d); err == nil {
				left = append(left, "dir "+d)
			}
		}
		return left
	}
	for _, job := range append(crashed, live) {
		if len(jobLeft(job)) == 0 {
			t.Fatalf("job %d has nothing to collect, so this test proves nothing", job.ID)
		}
	}
	time.Sleep(2500 * time.Millisecond)

	gc := func(args ...string) string {
		cmd := exec.Command(berthBinary, append([]string{"--config", e.cfgPath, "gc", "--grace", "1s"}, args...)...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("berth gc %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	out := gc("--dry-run")
	for _, job := range append(crashed, live) {
		if len(jobLeft(job)) == 0 {
			t.Errorf("the dry run removed job %d", job.ID)
		}
	}
	for _, want := range []string{fmt.Sprint(crashedSocket.ID), fmt.Sprint(crashedPodman.ID), fmt.Sprint(crashedDind.ID), fmt.Sprint(live.ID), "expired", "live", "dry run: 3 of 4 jobs would be removed"} {
		if !strings.Contains(out, want) {
			t.Errorf("dry-run table lacks %q:\n%s", want, out)
		}
	}

	out = gc()
	if !strings.Contains(out, "removed 3 of 4 jobs") {
		t.Errorf("gc output:\n%s", out)
	}
	for _, job := range crashed {
		if left := jobLeft(job); len(left) > 0 {
			t.Errorf("gc left job %d's %v", job.ID, left)
		}
	}
	if len(jobLeft(live)) == 0 {
		t.Error("gc removed the live job")
	}
	if info, err := dockerCli.ContainerInspect(ctx, unlabelled); err != nil || !info.State.Running {
		t.Errorf("gc touched a container without berth's labels: %v", err)
	}
	if t.Failed() {
		t.Logf("gc output:\n%s", out)
	}
}
