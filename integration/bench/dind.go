package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/api/types/volume"

	"github.com/berthci/berth/integration/runner"
)

// dindReadyRow: berth's prepare up to the sidecar's TLS ping, which prepare
// logs, next to the same dockerd cold-starting in a plain container.
func dindReadyRow() measurement {
	r := &row{name: "dind: sidecar start → authenticated ping", baselineName: "the same dockerd cold start in a plain container", unit: "s", target: "≤ cold start + 0.5 s"}
	return measurement{key: "dind-ready", row: r, once: func(ctx context.Context, b *bench, r *row) error {
		s, err := b.emu.Start(ctx, &runner.Job{ID: b.nextID(), ProjectID: 1, ProjectPath: "bench/app", Image: runner.Image{Name: "berth-test/busybox:latest"},
			Variables: []runner.Variable{{Key: "BERTH_BACKEND", Value: "dind", Public: true}, {Key: "BERTH_DIND_CACHE", Value: "off", Public: true}}})
		if err != nil {
			return err
		}
		res := s.Prepare(ctx)
		s.Cleanup(context.WithoutCancel(ctx))
		if res.ExitCode != 0 {
			return fmt.Errorf("prepare: %s", res.Output)
		}
		d, err := readyTime(res.Output)
		if err != nil {
			return err
		}
		base, err := b.plainDockerdStart(ctx)
		if err != nil {
			return err
		}
		r.berth, r.baseline = append(r.berth, seconds(d)), append(r.baseline, seconds(base))
		return nil
	}}
}

// dindBuildRow: the build_script of a project's second job (warm layer
// cache) next to its first (a fresh cache volume).
func dindBuildRow() measurement {
	r := &row{name: "dind: warm build (layer cache)", baselineName: "cold build (fresh cache volume)", unit: "s", target: "-"}
	return measurement{key: "dind-build", row: r, once: func(ctx context.Context, b *bench, r *row) error {
		project := b.nextID()
		for _, warm := range []bool{false, true} {
			res, err := b.emu.RunJob(ctx, &runner.Job{ID: b.nextID(), ProjectID: project, ProjectPath: "bench/app", RepoURL: b.repo,
				Image:     runner.Image{Name: "berth-test/debian:12"},
				Variables: []runner.Variable{{Key: "BERTH_BACKEND", Value: "dind", Public: true}},
				Script:    []string{"docker load -q -i busybox.tar >/dev/null", "time docker build -q . >/dev/null"}})
			if err != nil {
				return err
			}
			if res.Failure != "" {
				return fmt.Errorf("build job failed:\n%s", res.Log)
			}
			st, _ := res.Stage("build_script")
			if warm {
				r.berth = append(r.berth, seconds(st.Duration))
			} else {
				r.baseline = append(r.baseline, seconds(st.Duration))
			}
		}
		r.note = "the whole build_script stage, which includes `docker load` of busybox; the project's cache volume is removed at the end"
		return nil
	}}
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
func (b *bench) plainDockerdStart(ctx context.Context) (time.Duration, error) {
	name := fmt.Sprintf("berth-bench-plain-dockerd-%d", time.Now().UnixNano())
	start := time.Now()
	hc := &container.HostConfig{CapAdd: []string{"ALL"}, CapDrop: []string{"SYS_RESOURCE"},
		SecurityOpt: []string{"seccomp=unconfined", "apparmor=unconfined"}, MaskedPaths: []string{}, ReadonlyPaths: []string{}}
	created, err := b.cli.ContainerCreate(ctx, &container.Config{Image: "berth-test/dind:latest",
		Cmd: []string{"dockerd", "--host=tcp://0.0.0.0:2375", "--tls=false"}}, hc, nil, nil, name)
	if err != nil {
		return 0, err
	}
	defer b.cli.ContainerRemove(context.Background(), created.ID, container.RemoveOptions{Force: true, RemoveVolumes: true})
	if err := b.cli.ContainerStart(ctx, created.ID, container.StartOptions{}); err != nil {
		return 0, err
	}
	inspect, err := b.cli.ContainerInspect(ctx, created.ID)
	if err != nil {
		return 0, err
	}
	bridge, ok := inspect.NetworkSettings.Networks["bridge"]
	if !ok {
		return 0, fmt.Errorf("plain dockerd container %s is not on the default bridge network", name)
	}
	url := "http://" + net.JoinHostPort(bridge.IPAddress, "2375") + "/_ping"
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

// leftovers counts what carries the bench runner's label on the Docker
// engine and the podman service: containers, networks and volumes, the
// projects' dind cache volumes excepted (they are meant to stay).
func (b *bench) leftovers(ctx context.Context) (int, error) {
	args := filters.NewArgs(filters.Arg("label", "berth.runner=bench"))
	ctrs, err := b.cli.ContainerList(ctx, container.ListOptions{All: true, Filters: args})
	if err != nil {
		return 0, err
	}
	nets, err := b.cli.NetworkList(ctx, network.ListOptions{Filters: args})
	if err != nil {
		return 0, err
	}
	n := len(ctrs) + len(nets)
	out, err := podmanCLI.run(ctx, "ps", "-aq", "--filter", "label=berth.runner=bench")
	if err != nil {
		return 0, err
	}
	n += len(strings.Fields(out))
	for _, c := range ctrs {
		fmt.Fprintf(os.Stderr, "left: container %v\n", c.Names)
	}
	return n, nil
}

// removeLeftovers removes the projects' dind cache volumes and anything a
// failed run left.
func (b *bench) removeLeftovers(ctx context.Context) {
	args := filters.NewArgs(filters.Arg("label", "berth.runner=bench"))
	if ctrs, err := b.cli.ContainerList(ctx, container.ListOptions{All: true, Filters: args}); err == nil {
		for _, c := range ctrs {
			_ = b.cli.ContainerRemove(ctx, c.ID, container.RemoveOptions{Force: true, RemoveVolumes: true})
		}
	}
	if nets, err := b.cli.NetworkList(ctx, network.ListOptions{Filters: args}); err == nil {
		for _, n := range nets {
			_ = b.cli.NetworkRemove(ctx, n.ID)
		}
	}
	if list, err := b.cli.VolumeList(ctx, volume.ListOptions{Filters: args}); err == nil {
		for _, v := range list.Volumes {
			_ = b.cli.VolumeRemove(ctx, v.Name, true)
		}
	}
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
