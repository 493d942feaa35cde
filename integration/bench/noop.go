package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"time"

	"github.com/berthci/berth/driver"
	"github.com/berthci/berth/integration/runner"
)

// usualStages are the nine run stages of a job with a cache and an
// after_script, in the runner's order.
var usualStages = []string{
	"prepare_script", "get_sources", "restore_cache", "download_artifacts", "build_script",
	"after_script", "archive_cache", "upload_artifacts_on_success", "cleanup_file_variables",
}

// trivialScript is what each stage of a no-op job runs: the runner's bash
// preamble around `true`.
const trivialScript = "#!/usr/bin/env bash\nset -eo pipefail\n: | eval 'true'\nexit 0\n"

// noopJob runs config, prepare, the nine stages with trivial scripts and
// cleanup through berth, as the runner would, and returns the wall time.
// Jobs of the project unguardedProject get the raw socket (a policy rule
// in the bench's config), as the CLI baselines do.
func (b *bench) noopJob(ctx context.Context, backend string, unguarded bool) (time.Duration, error) {
	start := time.Now()
	project := "bench/noop"
	if unguarded {
		project = unguardedProject
	}
	s, err := b.emu.Start(ctx, &runner.Job{ID: b.nextID(), ProjectID: 500, ProjectPath: project,
		Image:     runner.Image{Name: "berth-test/busybox:latest"},
		Variables: []runner.Variable{{Key: "BERTH_BACKEND", Value: backend, Public: true}, {Key: "BERTH_DIND_CACHE", Value: "off", Public: true}}})
	if err != nil {
		return 0, err
	}
	defer s.Cleanup(context.WithoutCancel(ctx))
	if r := s.Prepare(ctx); r.ExitCode != 0 {
		return 0, fmt.Errorf("%s prepare exited %d:\n%s", backend, r.ExitCode, r.Output)
	}
	for _, st := range usualStages {
		if r := s.RunStageScript(ctx, st, trivialScript); r.ExitCode != 0 {
			return 0, fmt.Errorf("%s %s exited %d:\n%s", backend, st, r.ExitCode, r.Output)
		}
	}
	if r := s.Cleanup(ctx); r.ExitCode != 0 {
		return 0, fmt.Errorf("%s cleanup exited %d:\n%s", backend, r.ExitCode, r.Output)
	}
	return time.Since(start), nil
}

// engineCLI runs the docker CLI, or the podman CLI against the rootless
// service.
type engineCLI struct {
	argv []string
	// rmNow makes `rm -f` kill at once: podman's waits out the stop
	// timeout first, docker's does not.
	rmNow []string
}

// rm is `rm -f -v` of the containers.
func (c engineCLI) rm(ctx context.Context, names ...string) error {
	_, err := c.run(ctx, append(append([]string{"rm", "-f", "-v"}, c.rmNow...), names...)...)
	return err
}

var (
	dockerCLI = engineCLI{argv: []string{"docker"}}
	podmanCLI = engineCLI{argv: []string{"podman", "--remote", "--url", "unix://" + podmanSocket}, rmNow: []string{"-t", "0"}}
)

func (c engineCLI) run(ctx context.Context, args ...string) (string, error) {
	argv := append(append([]string{}, c.argv...), args...)
	out, err := exec.CommandContext(ctx, argv[0], argv[1:]...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s: %v\n%s", strings.Join(argv, " "), err, out)
	}
	return string(out), nil
}

// cliNoop is the baseline of a no-op job: the same engine work as a CLI
// script does it. A network, the helper and job containers started with a
// long sleep, one `exec` per stage in the container berth would use, and
// removal. With dind it also starts a dockerd sidecar on the network and
// waits until `docker version` answers inside it.
func cliNoop(ctx context.Context, c engineCLI, name string, dind bool) (time.Duration, error) {
	start := time.Now()
	helper, build := name+"-helper", name+"-build"
	containers := []string{helper, build}
	defer func() {
		_ = c.rm(context.WithoutCancel(ctx), append(containers, name+"-docker")...)
		_, _ = c.run(context.WithoutCancel(ctx), "network", "rm", name)
	}()
	steps := [][]string{{"network", "create", name}}
	if dind {
		steps = append(steps, []string{"run", "-d", "--name", name + "-docker", "--network", name, "--network-alias", "docker",
			"--cap-add", "ALL", "--cap-drop", "SYS_RESOURCE", "--security-opt", "seccomp=unconfined", "--security-opt", "apparmor=unconfined",
			// Only the unix socket: dockerd waits 15 s before it serves
			// plain TCP without --tls=false.
			"--security-opt", "systempaths=unconfined", "berth-test/dind:latest", "dockerd", "--host=unix:///var/run/docker.sock"})
		containers = append(containers, name+"-docker")
	}
	steps = append(steps,
		[]string{"run", "-d", "--name", helper, "--network", name, "berth-test/helper:latest", "sleep", "86400"},
		[]string{"run", "-d", "--name", build, "--network", name, "berth-test/busybox:latest", "sleep", "86400"})
	for _, args := range steps {
		if _, err := c.run(ctx, args...); err != nil {
			return 0, err
		}
	}
	if dind {
		for {
			// `docker version`, not `docker info`: info asks the default
			// registry, which takes seconds without a network.
			if _, err := c.run(ctx, "exec", name+"-docker", "docker", "version"); err == nil {
				break
			}
			if time.Since(start) > time.Minute {
				return 0, fmt.Errorf("the CLI's dind sidecar did not answer within a minute")
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	for _, st := range usualStages {
		ctr := build
		if driver.HelperStage(st) {
			ctr = helper
		}
		if _, err := c.run(ctx, "exec", ctr, "sh", "-c", "true"); err != nil {
			return 0, err
		}
	}
	if err := c.rm(ctx, containers...); err != nil {
		return 0, err
	}
	if _, err := c.run(ctx, "network", "rm", name); err != nil {
		return 0, err
	}
	return time.Since(start), nil
}

func noopRow(backend string, unguarded bool, c engineCLI, cliName string, target string) measurement {
	key, name := "noop-"+backend, backend+": no-op job (config, prepare, 9 stages, cleanup)"
	if unguarded {
		key, name = key+"-unguarded", backend+", socket guard off: no-op job"
	}
	r := &row{name: name, baselineName: "the same engine work with the " + cliName + " CLI, 9 execs", unit: "s", target: target}
	return measurement{key: key, row: r, once: func(ctx context.Context, b *bench, r *row) error {
		d, err := b.noopJob(ctx, backend, unguarded)
		if err != nil {
			return err
		}
		base, err := cliNoop(ctx, c, fmt.Sprintf("berth-bench-cli-%d", b.nextID()), backend == "dind")
		if err != nil {
			return err
		}
		r.berth, r.baseline = append(r.berth, seconds(d)), append(r.baseline, seconds(base))
		return nil
	}}
}

// throughputRow runs b.jobs no-op socket jobs, b.workers at a time, next to
// as many CLI sequences at the same concurrency.
func throughputRow() measurement {
	r := &row{name: "socket: no-op jobs at concurrency (wall of all)", baselineName: "the CLI sequences at the same concurrency", unit: "s", target: "≤ 0.8x, 0 leaks"}
	return measurement{key: "throughput", row: r, once: func(ctx context.Context, b *bench, r *row) error {
		r.note = fmt.Sprintf("%d jobs, %d at once; the run fails if anything labelled is left", b.jobs, b.workers)
		d, err := b.parallel(ctx, func(ctx context.Context) error { _, err := b.noopJob(ctx, "socket", false); return err })
		if err != nil {
			return err
		}
		base, err := b.parallel(ctx, func(ctx context.Context) error {
			_, err := cliNoop(ctx, dockerCLI, fmt.Sprintf("berth-bench-cli-%d", b.nextID()), false)
			return err
		})
		if err != nil {
			return err
		}
		if n, err := b.leftovers(ctx); err != nil || n > 0 {
			return fmt.Errorf("after the throughput jobs: %d labelled resources left (%v)", n, err)
		}
		r.berth, r.baseline = append(r.berth, seconds(d)), append(r.baseline, seconds(base))
		return nil
	}}
}

// parallel runs b.jobs calls of job, b.workers at a time, and returns the
// wall time of all.
func (b *bench) parallel(ctx context.Context, job func(context.Context) error) (time.Duration, error) {
	start := time.Now()
	sem := make(chan struct{}, b.workers)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var first error
	for range b.jobs {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			if err := job(ctx); err != nil {
				mu.Lock()
				if first == nil {
					first = err
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if first != nil {
		return 0, first
	}
	fmt.Fprintf(os.Stderr, "  %d jobs at concurrency %d: %.2fs\n", b.jobs, b.workers, time.Since(start).Seconds())
	return time.Since(start), nil
}
