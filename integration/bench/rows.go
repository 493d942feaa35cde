package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/berthci/berth/integration/runner"
)

func measurements() []measurement {
	return []measurement{
		noopRow("socket", false, dockerCLI, "docker", "≤ 0.7x"),
		noopRow("socket", true, dockerCLI, "docker", "≤ 0.7x"),
		noopRow("dind", false, dockerCLI, "docker", "-"),
		noopRow("podman", false, podmanCLI, "podman", "≤ 0.8x"),
		noopRow("podman", true, podmanCLI, "podman", "≤ 0.8x"),
		stageRow(),
		dindReadyRow(),
		serviceRow(),
		logsRow(),
		startupRow(),
		startupRSSRow(),
		throughputRow(),
		dindBuildRow(),
	}
}

// prepared starts a socket job and runs its prepare; the caller cleans up.
func (b *bench) prepared(ctx context.Context, job *runner.Job) (*runner.Session, runner.StageResult, error) {
	job.ID, job.ProjectID, job.ProjectPath = b.nextID(), 501, "bench/stage"
	if job.Image.Name == "" {
		job.Image = runner.Image{Name: "berth-test/busybox:latest"}
	}
	s, err := b.emu.Start(ctx, job)
	if err != nil {
		if s != nil {
			s.Cleanup(context.WithoutCancel(ctx))
		}
		return nil, runner.StageResult{}, err
	}
	r := s.Prepare(ctx)
	if r.ExitCode != 0 {
		s.Cleanup(context.WithoutCancel(ctx))
		return nil, r, fmt.Errorf("prepare exited %d:\n%s", r.ExitCode, r.Output)
	}
	return s, r, nil
}

// plainContainer starts a sleeping busybox for `docker exec` baselines and
// returns its name and a func that removes it.
func plainContainer(ctx context.Context, name string) (string, func(), error) {
	if _, err := dockerCLI.run(ctx, "run", "-d", "--name", name, "berth-test/busybox:latest", "sleep", "86400"); err != nil {
		return "", nil, err
	}
	return name, func() { _, _ = dockerCLI.run(context.WithoutCancel(ctx), "rm", "-f", name) }, nil
}

const stageCalls = 5

// stageRow: `berth run` of a trivial build_script against `docker exec CTR
// true`, each a whole process from fork to exit.
func stageRow() measurement {
	r := &row{name: "socket: one `berth run` stage, trivial script", baselineName: "`docker exec CTR true` (CLI)", unit: "ms", target: "≤ 1.0x"}
	return measurement{key: "stage", row: r, once: func(ctx context.Context, b *bench, r *row) error {
		s, _, err := b.prepared(ctx, &runner.Job{})
		if err != nil {
			return err
		}
		defer s.Cleanup(context.WithoutCancel(ctx))
		ctr, remove, err := plainContainer(ctx, fmt.Sprintf("berth-bench-exec-%d", b.nextID()))
		if err != nil {
			return err
		}
		defer remove()
		for range stageCalls {
			res := s.RunStageScript(ctx, "build_script", trivialScript)
			if res.ExitCode != 0 {
				return fmt.Errorf("build_script exited %d:\n%s", res.ExitCode, res.Output)
			}
			start := time.Now()
			if _, err := dockerCLI.run(ctx, "exec", ctr, "true"); err != nil {
				return err
			}
			r.berth, r.baseline = append(r.berth, millis(res.Duration)), append(r.baseline, millis(time.Since(start)))
		}
		r.note = fmt.Sprintf("%d calls of each per run, each call a sample", stageCalls)
		return nil
	}}
}

// serviceDelay is how long the bench's service sleeps before it listens.
const serviceDelay = 2 * time.Second

// serviceRow: prepare with a service that listens after serviceDelay, minus
// the same prepare without it.
func serviceRow() measurement {
	r := &row{name: "socket: prepare with a service that listens after 2 s, minus prepare without", baselineName: "the service's own delay",
		unit: "s", target: "≤ delay + 0.2 s"}
	return measurement{key: "service", row: r, once: func(ctx context.Context, b *bench, r *row) error {
		s, plain, err := b.prepared(ctx, &runner.Job{})
		if err != nil {
			return err
		}
		s.Cleanup(context.WithoutCancel(ctx))
		cmd := fmt.Sprintf("sleep %d; exec httpd -f -p 8080 -h /www", int(serviceDelay.Seconds()))
		s, withService, err := b.prepared(ctx, &runner.Job{Services: []runner.Image{{Name: "berth-test/http-service:latest", Alias: "web",
			Command: []string{"sh", "-c", cmd}}}})
		if err != nil {
			return err
		}
		s.Cleanup(context.WithoutCancel(ctx))
		if strings.Contains(withService.Output, "probably didn't start properly") {
			return fmt.Errorf("the service was not seen listening:\n%s", withService.Output)
		}
		r.berth = append(r.berth, seconds(withService.Duration-plain.Duration))
		r.baseline = append(r.baseline, seconds(serviceDelay))
		return nil
	}}
}

// logsRow: b.logBytes of stdout through `berth run` against the same
// through `docker exec`, read to the end by the bench in both cases.
func logsRow() measurement {
	r := &row{name: "socket: stdout through `berth run`", baselineName: "the same through `docker exec` (CLI)", unit: "MB/s", higherIsBetter: true, target: "≥ 0.9x"}
	return measurement{key: "logs", row: r, once: func(ctx context.Context, b *bench, r *row) error {
		script := fmt.Sprintf("yes 'berth bench: a line of job log output, 64 bytes in all........' | head -c %d", b.logBytes)
		s, _, err := b.prepared(ctx, &runner.Job{})
		if err != nil {
			return err
		}
		defer s.Cleanup(context.WithoutCancel(ctx))
		// Both sides' output goes through a pipe to a counter.
		var delivered countWriter
		s.StageStdout = &delivered
		// No pipefail: yes ends on SIGPIPE when head has had enough.
		res := s.RunStageScript(ctx, "build_script", "#!/usr/bin/env bash\n"+script+"\n")
		s.StageStdout = nil
		if res.ExitCode != 0 {
			return fmt.Errorf("build_script exited %d", res.ExitCode)
		}
		if delivered.n != b.logBytes {
			return fmt.Errorf("berth delivered %d of %d bytes", delivered.n, b.logBytes)
		}
		ctr, remove, err := plainContainer(ctx, fmt.Sprintf("berth-bench-exec-%d", b.nextID()))
		if err != nil {
			return err
		}
		defer remove()
		cmd := exec.CommandContext(ctx, "docker", "exec", ctr, "sh", "-c", script)
		var counted countWriter
		cmd.Stdout = &counted
		start := time.Now()
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("docker exec: %w", err)
		}
		base := time.Since(start)
		if counted.n != b.logBytes {
			return fmt.Errorf("docker exec delivered %d of %d bytes", counted.n, b.logBytes)
		}
		mb := float64(b.logBytes) / 1e6
		r.berth, r.baseline = append(r.berth, mb/res.Duration.Seconds()), append(r.baseline, mb/base.Seconds())
		r.note = fmt.Sprintf("%d MB per run; berth's peak RSS in the last run: %.1f MiB (VmHWM)", b.logBytes/1e6, float64(res.MaxRSS)/(1<<20))
		return nil
	}}
}

type countWriter struct{ n int64 }

func (w *countWriter) Write(p []byte) (int, error) { w.n += int64(len(p)); return len(p), nil }

// timed runs argv under /usr/bin/time and returns its wall time and peak
// RSS as the kernel counts them.
func timed(ctx context.Context, env []string, argv ...string) (time.Duration, float64, error) {
	cmd := exec.CommandContext(ctx, "/usr/bin/time", append([]string{"-f", "BENCH %e %M"}, argv...)...)
	cmd.Env = env
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = io.Discard, &stderr
	start := time.Now()
	if err := cmd.Run(); err != nil {
		return 0, 0, fmt.Errorf("%s: %v\n%s", strings.Join(argv, " "), err, stderr.String())
	}
	wall := time.Since(start)
	lines := strings.Split(strings.TrimSpace(stderr.String()), "\n")
	fields := strings.Fields(lines[len(lines)-1])
	if len(fields) != 3 || fields[0] != "BENCH" {
		return 0, 0, fmt.Errorf("unexpected /usr/bin/time output %q", stderr.String())
	}
	kb, err := strconv.ParseFloat(fields[2], 64)
	if err != nil {
		return 0, 0, err
	}
	return wall, kb / 1024, nil
}

// startup samples `berth config` (as config_exec, with a job's environment)
// and `docker --version` once each, for the wall and RSS rows.
type startupSample struct{ wall, baseWall, rss, baseRSS float64 }

func (b *bench) startup(ctx context.Context) (startupSample, error) {
	s, err := b.emu.Start(ctx, &runner.Job{ID: b.nextID(), ProjectID: 502, ProjectPath: "bench/config", Image: runner.Image{Name: "berth-test/busybox:latest"}})
	if err != nil {
		return startupSample{}, err
	}
	defer s.Cleanup(context.WithoutCancel(ctx))
	var out startupSample
	wall, rss, err := timed(ctx, s.Env(), b.emu.Binary, "--config", b.emu.ConfigPath, "config")
	if err != nil {
		return out, err
	}
	baseWall, baseRSS, err := timed(ctx, s.Env(), "docker", "--version")
	if err != nil {
		return out, err
	}
	return startupSample{millis(wall), millis(baseWall), rss, baseRSS}, nil
}

var startupSamples []startupSample

func startupRow() measurement {
	r := &row{name: "`berth config` wall (config_exec)", baselineName: "`docker --version` (a Go CLI's start)", unit: "ms", target: "≤ 30 ms"}
	return measurement{key: "startup", row: r, once: func(ctx context.Context, b *bench, r *row) error {
		for range stageCalls {
			s, err := b.startup(ctx)
			if err != nil {
				return err
			}
			startupSamples = append(startupSamples, s)
			r.berth, r.baseline = append(r.berth, s.wall), append(r.baseline, s.baseWall)
		}
		r.note = fmt.Sprintf("%d calls of each per run, under /usr/bin/time", stageCalls)
		return nil
	}}
}

// startupRSSRow reports the peak RSS of the startup row's samples, or takes
// its own when the startup row is not selected.
func startupRSSRow() measurement {
	r := &row{name: "`berth config` peak RSS", baselineName: "`docker --version`", unit: "MiB", target: "≤ 50 MiB"}
	return measurement{key: "startup-rss", row: r, once: func(ctx context.Context, b *bench, r *row) error {
		samples := startupSamples
		if len(samples) == 0 {
			s, err := b.startup(ctx)
			if err != nil {
				return err
			}
			samples = []startupSample{s}
		}
		for _, s := range samples {
			r.berth, r.baseline = append(r.berth, s.rss), append(r.baseline, s.baseRSS)
		}
		startupSamples = nil
		return nil
	}}
}
