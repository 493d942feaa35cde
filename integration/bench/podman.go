package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/berthci/berth/integration/runner"
)

// podmanSocket is the rootless service that integration/provision.sh runs.
const podmanSocket = "/run/user/1001/podman/podman.sock"

// helperStages run in the helper container, as berth runs them.
var helperStages = map[string]bool{
	"get_sources": true, "clear_worktree": true, "restore_cache": true, "download_artifacts": true,
	"archive_cache": true, "archive_cache_on_failure": true, "upload_artifacts_on_success": true,
	"upload_artifacts_on_failure": true, "cleanup_file_variables": true,
}

// podmanNoopJob runs a job whose script is `true` on the podman backend,
// from config to cleanup, and returns its wall time and the stages that
// ran in containers.
func podmanNoopJob(ctx context.Context, emu *runner.Emulator, id int64) (time.Duration, []string, error) {
	start := time.Now()
	res, err := emu.RunJob(ctx, &runner.Job{ID: id, ProjectID: 500, ProjectPath: "bench/noop", Image: runner.Image{Name: "berth-test/busybox:latest"},
		Variables: []runner.Variable{{Key: "BERTH_BACKEND", Value: "podman", Public: true}}, Script: []string{"true"}})
	d := time.Since(start)
	if err != nil {
		return 0, nil, err
	}
	if res.Failure != "" {
		return 0, nil, fmt.Errorf("podman no-op job failed:\n%s", res.Log)
	}
	var stages, timings []string
	for _, st := range res.Stages {
		timings = append(timings, fmt.Sprintf("%s %.2fs", st.Name, st.Duration.Seconds()))
		if st.Name != "config" && st.Name != "prepare" && st.Name != "cleanup" {
			stages = append(stages, st.Name)
		}
	}
	fmt.Fprintf(os.Stderr, "podman job %.2fs: %s\n", d.Seconds(), strings.Join(timings, ", "))
	return d, stages, nil
}

// podmanCLINoop does with the podman CLI what berth does for a no-op job:
// a network, a helper and a job container created stopped, one attached
// start per stage with its (empty) script on stdin, then removal.
func podmanCLINoop(ctx context.Context, stages []string, id int64) (time.Duration, error) {
	name := fmt.Sprintf("berth-bench-cli-%d", id)
	podman := func(stdin string, args ...string) error {
		cmd := exec.CommandContext(ctx, "podman", append([]string{"--remote", "--url", "unix://" + podmanSocket}, args...)...)
		cmd.Stdin = strings.NewReader(stdin)
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("podman %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return nil
	}
	start := time.Now()
	defer func() {
		_ = podman("", "rm", "-f", "-t", "0", name+"-helper", name+"-build")
		_ = podman("", "network", "rm", "-f", name)
	}()
	steps := [][]string{
		{"network", "create", name},
		{"create", "-i", "--name", name + "-helper", "--network", name, "berth-test/helper:latest", "sh", "-c", "exec sh"},
		{"create", "-i", "--name", name + "-build", "--network", name, "berth-test/busybox:latest", "sh", "-c", "exec sh"},
	}
	for _, st := range stages {
		ctr := name + "-build"
		if helperStages[st] {
			ctr = name + "-helper"
		}
		steps = append(steps, []string{"start", "-ai", ctr})
	}
	steps = append(steps, []string{"rm", "-f", "-t", "0", name + "-helper", name + "-build"}, []string{"network", "rm", name})
	for _, args := range steps {
		if err := podman("true\n", args...); err != nil {
			return 0, err
		}
	}
	return time.Since(start), nil
}
