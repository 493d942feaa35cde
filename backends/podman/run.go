//go:build remote

package podman

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/containers/podman/v5/libpod/define"
	"github.com/containers/podman/v5/pkg/bindings/containers"

	"github.com/berthci/berth/backends"
)

// Run starts the stage's container with the script on its shell's stdin and
// streams its output, as the docker executor does. See
// [backends.Backend.Run].
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
			return 0, fmt.Errorf("container %q of this job is gone: prepare did not finish or cleanup already ran: %w", name, err)
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
