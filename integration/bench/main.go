// Command bench measures berth against the engine floors it is compared
// with, side by side in one run, and prints a table of medians, minima and
// maxima with the ratios. It drives the built binary the way gitlab-runner
// does, through integration/runner, and needs the engines and images of
// integration/provision.sh.
//
//	go run ./integration/bench -runs 5
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/volume"
	"github.com/docker/docker/client"

	"github.com/berthci/berth/integration/runner"
)

func main() {
	runs := flag.Int("runs", 5, "runs per measurement")
	only := flag.String("only", "", `measure only these rows: "dind" or "podman" (default both)`)
	flag.Parse()
	if *only != "" && *only != "dind" && *only != "podman" {
		fmt.Fprintln(os.Stderr, `bench: -only must be "dind" or "podman"`)
		os.Exit(2)
	}
	if err := run(*runs, *only); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

type row struct {
	name, baselineName string
	berth, baseline    []time.Duration
}

func run(runs int, only string) error {
	ctx := context.Background()
	root, err := os.MkdirTemp("", "berth-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(root)
	// The rootless podman user mounts the builds dir and berth's binary.
	if err := os.Chmod(root, 0o755); err != nil {
		return err
	}
	bin := filepath.Join(root, "berth")
	if err := runner.BuildBerth(".", bin); err != nil {
		return err
	}
	cli, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
	if err != nil {
		return err
	}
	gitDir := filepath.Join(root, "git")
	repo, err := makeRepo(root, gitDir)
	if err != nil {
		return err
	}
	cfgPath := filepath.Join(root, "config.toml")
	cfg := fmt.Sprintf(`builds_dir = %q
cache_dir = %q
runner_name = "bench"
[policy]
default_backend = "dind"
allowed_backends = ["dind", "podman"]
[docker]
helper_image = "berth-test/helper:latest"
runner_binary = "/usr/local/lib/berth-test/gitlab-runner"
pull_policy = ["if-not-present"]
volumes = [%q]
[dind]
image = "berth-test/dind:latest"
privileged = false
cap_add = ["ALL"]
cap_drop = ["SYS_RESOURCE"]
security_opt = ["seccomp=unconfined", "apparmor=unconfined", "systempaths=unconfined"]
layer_cache = "project"
[podman]
socket = %q
`, filepath.Join(root, "builds"), filepath.Join(root, "cache"), gitDir+":"+gitDir+":ro", "unix://"+podmanSocket)
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		return err
	}
	emu := &runner.Emulator{Binary: bin, ConfigPath: cfgPath, WorkDir: root, GracefulKillTimeout: 10 * time.Second}
	defer cleanupCacheVolumes(ctx, cli)

	ready := row{name: "dind: sidecar start → authenticated ping", baselineName: "same dockerd cold start in a plain container"}
	prepare := row{name: "dind: whole prepare (berth process)", baselineName: "same dockerd cold start in a plain container"}
	builds := row{name: "dind: warm build (layer cache)", baselineName: "cold build (fresh volume)"}
	podmanJob := row{name: "podman: no-op job, all stages (berth)", baselineName: "same containers and starts, podman CLI"}
	jobID := time.Now().Unix() * 1000
	var rows []*row
	if only != "podman" {
		rows = append(rows, &ready, &prepare, &builds)
	}
	if only != "dind" {
		rows = append(rows, &podmanJob)
	}
	for i := range runs {
		if only != "podman" {
			if err := dindRun(ctx, emu, cli, repo, &jobID, i, &ready, &prepare, &builds); err != nil {
				return err
			}
		}
		if only != "dind" {
			// A no-op podman job through berth, next to the same container
			// steps done with the podman CLI against the same service.
			jobID++
			d, stages, err := podmanNoopJob(ctx, emu, jobID)
			if err != nil {
				return err
			}
			podmanJob.berth = append(podmanJob.berth, d)
			base, err := podmanCLINoop(ctx, stages, jobID)
			if err != nil {
				return err
			}
			podmanJob.baseline = append(podmanJob.baseline, base)
		}
		fmt.Fprintf(os.Stderr, "run %d/%d done\n", i+1, runs)
	}
	fmt.Printf("%-44s %8s %8s %8s   %-46s %8s %8s %8s   %6s\n", "berth", "median", "min", "max", "baseline", "median", "min", "max", "ratio")
	for _, r := range rows {
		bm, bmin, bmax := stats(r.berth)
		lm, lmin, lmax := stats(r.baseline)
		fmt.Printf("%-44s %7.2fs %7.2fs %7.2fs   %-46s %7.2fs %7.2fs %7.2fs   %5.2fx\n",
			r.name, bm.Seconds(), bmin.Seconds(), bmax.Seconds(), r.baselineName, lm.Seconds(), lmin.Seconds(), lmax.Seconds(), bm.Seconds()/lm.Seconds())
	}
	fmt.Println("(build rows are the whole build_script stage, which includes `docker load` of busybox)")
	fmt.Println("(the podman CLI baseline feeds each stage an empty script; berth's stages run the runner's scripts)")
	return nil
}

// dindRun measures one run of the dind rows: prepare up to the sidecar's
// TLS ping, which prepare logs, next to a plain dockerd container's plain
// ping; then a cold and a warm build of the same project.
func dindRun(ctx context.Context, emu *runner.Emulator, cli *client.Client, repo string, jobID *int64, i int, ready, prepare, builds *row) error {
	// Readiness: berth's prepare up to the sidecar's TLS ping, which
	// prepare logs, next to a plain dockerd container's plain ping.
	*jobID++
	s, err := emu.Start(ctx, &runner.Job{ID: *jobID, ProjectID: 1, ProjectPath: "bench/app", Image: runner.Image{Name: "berth-test/busybox:latest"},
		Variables: []runner.Variable{{Key: "BERTH_DIND_CACHE", Value: "off", Public: true}}, ExtraCustomEnv: map[string]string{"BERTH_DIND_CACHE": "off"}})
	if err != nil {
		return err
	}
	r := s.Prepare(ctx)
	prepare.berth = append(prepare.berth, r.Duration)
	s.Cleanup(ctx)
	if r.ExitCode != 0 {
		return fmt.Errorf("prepare: %s", r.Output)
	}
	d, err := readyTime(r.Output)
	if err != nil {
		return err
	}
	ready.berth = append(ready.berth, d)
	base, err := plainDockerdStart(ctx, cli)
	if err != nil {
		return err
	}
	ready.baseline = append(ready.baseline, base)
	prepare.baseline = append(prepare.baseline, base)

	// Builds: a fresh project (cold), then the same project again (warm).
	for _, warm := range []bool{false, true} {
		*jobID++
		res, err := emu.RunJob(ctx, &runner.Job{ID: *jobID, ProjectID: int64(100 + i), ProjectPath: "bench/app", RepoURL: repo,
			Image:  runner.Image{Name: "berth-test/debian:12"},
			Script: []string{"docker load -q -i busybox.tar >/dev/null", "time docker build -q . >/dev/null"}})
		if err != nil {
			return err
		}
		if res.Failure != "" {
			return fmt.Errorf("build job failed:\n%s", res.Log)
		}
		st, _ := res.Stage("build_script")
		if warm {
			builds.berth = append(builds.berth, st.Duration)
		} else {
			builds.baseline = append(builds.baseline, st.Duration)
		}
	}
	return nil
}

func readyTime(out string) (time.Duration, error) {
	for _, line := range strings.Split(out, "\n") {
		if i := strings.Index(line, "DinD daemon ready at"); i >= 0 {
			var secs float64
			if j := strings.Index(line, " in "); j >= 0 {
				if _, err := fmt.Sscanf(line[j+4:], "%fs", &secs); err == nil {
					return time.Duration(secs * float64(time.Second)), nil
				}
			}
		}
	}
	return 0, fmt.Errorf("prepare did not report the DinD readiness time:\n%s", out)
}

// plainDockerdStart is the floor: the same image's dockerd in a plain
// container on the default bridge, from create to a ping over TCP.
func plainDockerdStart(ctx context.Context, cli *client.Client) (time.Duration, error) {
	name := fmt.Sprintf("berth-bench-plain-dockerd-%d", time.Now().UnixNano())
	start := time.Now()
	hc := &container.HostConfig{CapAdd: []string{"ALL"}, CapDrop: []string{"SYS_RESOURCE"},
		SecurityOpt: []string{"seccomp=unconfined", "apparmor=unconfined"}, MaskedPaths: []string{}, ReadonlyPaths: []string{}}
	created, err := cli.ContainerCreate(ctx, &container.Config{Image: "berth-test/dind:latest",
		Cmd: []string{"dockerd", "--host=tcp://0.0.0.0:2375", "--tls=false"}}, hc, nil, nil, name)
	if err != nil {
		return 0, err
	}
	defer cli.ContainerRemove(context.Background(), created.ID, container.RemoveOptions{Force: true, RemoveVolumes: true})
	if err := cli.ContainerStart(ctx, created.ID, container.StartOptions{}); err != nil {
		return 0, err
	}
	inspect, err := cli.ContainerInspect(ctx, created.ID)
	if err != nil {
		return 0, err
	}
	url := "http://" + net.JoinHostPort(inspect.NetworkSettings.IPAddress, "2375") + "/_ping"
	hcl := &http.Client{Timeout: time.Second}
	for time.Since(start) < time.Minute {
		if resp, err := hcl.Get(url); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return time.Since(start), nil
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	return 0, fmt.Errorf("plain dockerd did not answer within a minute")
}

func cleanupCacheVolumes(ctx context.Context, cli *client.Client) {
	list, err := cli.VolumeList(ctx, volume.ListOptions{Filters: filters.NewArgs(filters.Arg("label", "berth.runner=bench"))})
	if err != nil {
		return
	}
	for _, v := range list.Volumes {
		_ = cli.VolumeRemove(ctx, v.Name, true)
	}
}

func stats(ds []time.Duration) (median, lo, hi time.Duration) {
	if len(ds) == 0 {
		return 0, 0, 0
	}
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2], s[0], s[len(s)-1]
}

func makeRepo(root, gitDir string) (string, error) {
	dockerfile := "FROM berth-test/busybox:latest\n"
	for i := range 8 {
		dockerfile += fmt.Sprintf("RUN dd if=/dev/urandom of=/layer-%d bs=1M count=4 2>/dev/null && sleep 0.5\n", i)
	}
	tar := filepath.Join(root, "busybox.tar")
	if out, err := exec.Command("docker", "save", "-o", tar, "berth-test/busybox:latest").CombinedOutput(); err != nil {
		return "", fmt.Errorf("docker save: %v\n%s", err, out)
	}
	image, err := os.ReadFile(tar)
	if err != nil {
		return "", err
	}
	return runner.MakeRepo(filepath.Join(root, "work"), filepath.Join(gitDir, "app.git"),
		map[string]string{"Dockerfile": dockerfile, "busybox.tar": string(image)})
}
