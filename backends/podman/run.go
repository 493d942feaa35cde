//go:build remote

package podman

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/containers/podman/v5/libpod/define"
	"github.com/containers/podman/v5/pkg/api/handlers"
	"github.com/containers/podman/v5/pkg/bindings/containers"
	dockerContainer "github.com/docker/docker/api/types/container"

	"github.com/berthci/berth/backends"
)

// Run runs the stage's script in its container and streams its output: as
// an exec in a container that prepare started (exec mode), or by starting
// the stopped container with the script on its shell's stdin, as the
// docker executor does (attach mode). See [backends.Backend.Run] and
// [backends.StageMode].
func (b *Backend) Run(ctx context.Context, job *backends.Job, stage backends.Stage) (int, error) {
	ctx, err := b.conn(ctx)
	if err != nil {
		return 0, err
	}
	name := buildContainerName(job)
	if stage.Helper && b.cfg.UseHelper {
		name = helperContainerName(job)
	}
	if job.DebugServices {
		stop := b.followServiceLogs(ctx, job, stage.Stderr)
		defer stop()
	}
	code, err := b.runExec(ctx, name, stage)
	if errors.Is(err, errAttachMode) {
		return b.runAttached(ctx, name, stage)
	}
	return code, err
}

// errAttachMode tells Run that the container runs its stages in attach
// mode.
var errAttachMode = errors.New("attach mode")

// runExec runs the stage as an exec in its running container. When the
// exec cannot be created the container is inspected: an attach-mode one
// gives errAttachMode, and an exec-mode one that a canceled stage stopped
// is started again.
func (b *Backend) runExec(ctx context.Context, name string, stage backends.Stage) (int, error) {
	cfg := &handlers.ExecCreateConfig{ExecOptions: dockerContainer.ExecOptions{
		AttachStdin: true, AttachStdout: true, AttachStderr: true, Cmd: []string{"sh", "-c", backends.StageExec},
	}}
	id, err := containers.ExecCreate(ctx, name, cfg)
	if err != nil && !isNotFound(err) {
		inspect, ierr := containers.Inspect(ctx, name, nil)
		switch {
		case isNotFound(ierr):
			return 0, goneError(name, ierr)
		case ierr != nil:
			return 0, fmt.Errorf("inspect %q: %w", name, ierr)
		case inspect.Config == nil || inspect.Config.Labels[backends.LabelStageMode] != backends.StageModeExec:
			return 0, errAttachMode
		case inspect.State == nil || !inspect.State.Running:
			if err := containers.Start(ctx, name, nil); err != nil {
				return 0, fmt.Errorf("start %q again for stage %s: %w", name, stage.Name, err)
			}
			id, err = containers.ExecCreate(ctx, name, cfg)
		}
	}
	if err != nil {
		if isNotFound(err) {
			return 0, goneError(name, err)
		}
		return 0, fmt.Errorf("exec in %q for stage %s: %w", name, stage.Name, err)
	}
	yes := true
	stdout, stderr := stage.Stdout, stage.Stderr
	opts := &containers.ExecStartAndAttachOptions{
		OutputStream: &stdout, ErrorStream: &stderr, InputStream: bufio.NewReader(bytes.NewReader(stage.Script)),
		AttachOutput: &yes, AttachError: &yes, AttachInput: &yes,
	}
	done := make(chan error, 1)
	go func() { done <- containers.ExecStartAndAttach(ctx, id, opts) }()
	select {
	case err := <-done:
		if err != nil && ctx.Err() == nil {
			b.log.Warnf("the output stream of stage %s ended with an error, some output may be missing: %v", stage.Name, err)
		}
	case <-ctx.Done():
		return 0, b.stopStage(ctx, name, ctx.Err())
	}
	// The stream ends when the exec's process does; the service records
	// its exit code a moment later.
	for {
		inspect, err := containers.ExecInspect(ctx, id, nil)
		if err != nil {
			if ctx.Err() != nil {
				return 0, b.stopStage(ctx, name, ctx.Err())
			}
			return 0, fmt.Errorf("inspect the exec of stage %s: %w; the service may have restarted, so the stage's outcome is unknown", stage.Name, err)
		}
		if !inspect.Running {
			return inspect.ExitCode, nil
		}
		select {
		case <-ctx.Done():
			return 0, b.stopStage(ctx, name, ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
}

func goneError(name string, err error) error {
	return fmt.Errorf("container %q of this job is gone: prepare did not finish or cleanup already ran: %w", name, err)
}

// runAttached starts the stopped container with the script on its shell's
// stdin, as the docker executor does.
func (b *Backend) runAttached(ctx context.Context, name string, stage backends.Stage) (int, error) {
	// Podman re-initializes an exited container on attach (for Docker
	// compatibility), so every stage attaches to the same stopped container
	// and starts it again, keeping its filesystem between stages.
	ready := make(chan bool, 1)
	attachDone := make(chan error, 1)
	go func() {
		attachDone <- containers.Attach(ctx, name, bytes.NewReader(stage.Script), stage.Stdout, stage.Stderr, ready,
			new(containers.AttachOptions).WithStream(true))
	}()
	select {
	case <-ready:
	case err := <-attachDone:
		if isNotFound(err) {
			return 0, goneError(name, err)
		}
		if ctx.Err() != nil {
			return 0, fmt.Errorf("attach to %q: %w", name, ctx.Err())
		}
		return 0, fmt.Errorf("attach to %q: %w", name, err)
	case <-ctx.Done():
		return 0, b.stopStage(ctx, name, ctx.Err())
	}
	if err := containers.Start(ctx, name, nil); err != nil {
		if ctx.Err() != nil {
			return 0, b.stopStage(ctx, name, ctx.Err())
		}
		return 0, fmt.Errorf("start %q for stage %s: %w", name, stage.Name, err)
	}

	select {
	case err := <-attachDone:
		if err != nil && ctx.Err() == nil {
			b.log.Warnf("the output stream of %q ended with an error, some output may be missing: %v", name, err)
		}
	case <-ctx.Done():
		return 0, b.stopStage(ctx, name, ctx.Err())
	}
	exitCode, err := containers.Wait(ctx, name, new(containers.WaitOptions).WithCondition(
		[]define.ContainerStatus{define.ContainerStateExited, define.ContainerStateStopped}))
	if err != nil {
		if ctx.Err() != nil {
			return 0, b.stopStage(ctx, name, ctx.Err())
		}
		return 0, fmt.Errorf("wait for %q: %w; the service may have restarted, so the stage's outcome is unknown", name, err)
	}
	return int(exitCode), nil
}

// stopStage stops a canceled stage's container so nothing of the user's
// keeps running, on a fresh context since the job's is canceled.
func (b *Backend) stopStage(ctx context.Context, name string, cause error) error {
	grace := b.cfg.StopTimeout.Duration
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), grace+10*time.Second)
	defer cancel()
	seconds := uint(grace.Round(time.Second) / time.Second)
	if err := containers.Stop(sctx, name, new(containers.StopOptions).WithTimeout(seconds)); err != nil && !isNotFound(err) {
		return errors.Join(cause, fmt.Errorf("stop %q after cancel: %w", name, err))
	}
	return fmt.Errorf("stage canceled, container %q stopped: %w", name, cause)
}
