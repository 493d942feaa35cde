package dockerengine

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/pkg/stdcopy"

	"github.com/berthci/berth/backends"
)

// Run runs the stage's script in its container and streams its output: as
// an exec in a container that prepare started (exec mode), or by starting
// the stopped container with the script on its shell's stdin, as the
// docker executor does (attach mode). See [backends.Backend.Run] and
// [backends.StageMode].
func (e *Engine) Run(ctx context.Context, job *backends.Job, stage backends.Stage) (int, error) {
	name := buildContainerName(job)
	if stage.Helper && e.cfg.UseHelper {
		name = helperContainerName(job)
	}
	if job.DebugServices {
		stop := e.followServiceLogs(job, stage.Stderr)
		defer stop()
	}
	code, err := e.runExec(ctx, name, stage)
	if errors.Is(err, errAttachMode) {
		return e.runAttached(ctx, name, stage)
	}
	return code, err
}

// errAttachMode tells Run that the container runs its stages in attach
// mode.
var errAttachMode = errors.New("attach mode")

// runExec runs the stage as an exec in its running container. A container
// that is not running is inspected: an attach-mode one gives errAttachMode,
// and an exec-mode one that a canceled stage stopped is started again.
func (e *Engine) runExec(ctx context.Context, name string, stage backends.Stage) (int, error) {
	opts := container.ExecOptions{AttachStdin: true, AttachStdout: true, AttachStderr: true, Cmd: []string{"sh", "-c", backends.StageExec}}
	created, err := e.api.ContainerExecCreate(ctx, name, opts)
	if err != nil && cerrdefs.IsConflict(err) {
		inspect, ierr := e.api.ContainerInspect(ctx, name)
		switch {
		case cerrdefs.IsNotFound(ierr):
			return 0, e.goneError(name, ierr)
		case ierr != nil:
			return 0, fmt.Errorf("inspect %q: %w", name, ierr)
		case inspect.Config == nil || inspect.Config.Labels[backends.LabelStageMode] != backends.StageModeExec:
			return 0, errAttachMode
		}
		if err := e.api.ContainerStart(ctx, name, container.StartOptions{}); err != nil {
			return 0, fmt.Errorf("start %q again for stage %s: %w", name, stage.Name, err)
		}
		created, err = e.api.ContainerExecCreate(ctx, name, opts)
	}
	if err != nil {
		if cerrdefs.IsNotFound(err) {
			return 0, e.goneError(name, err)
		}
		return 0, fmt.Errorf("exec in %q for stage %s: %w", name, stage.Name, err)
	}
	attach, err := e.api.ContainerExecAttach(ctx, created.ID, container.ExecAttachOptions{})
	if err != nil {
		return 0, fmt.Errorf("start the exec of stage %s in %q: %w", stage.Name, name, err)
	}
	defer attach.Close()
	if err := e.stream(ctx, attach, stage); err != nil {
		return 0, e.stopStage(name, err)
	}
	// The stream ends when the exec's process does; the daemon records its
	// exit code a moment later.
	for {
		inspect, err := e.api.ContainerExecInspect(ctx, created.ID)
		if err != nil {
			if ctx.Err() != nil {
				return 0, e.stopStage(name, ctx.Err())
			}
			return 0, fmt.Errorf("inspect the exec of stage %s: %w; the engine may have restarted, so the stage's outcome is unknown", stage.Name, err)
		}
		if !inspect.Running {
			return e.exitCode(ctx, stage, inspect.ExitCode)
		}
		select {
		case <-ctx.Done():
			return 0, e.stopStage(name, ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// stream copies the script to the stage's stdin and its output to the
// stage's writers until the output ends, or returns the context's error.
func (e *Engine) stream(ctx context.Context, attach types.HijackedResponse, stage backends.Stage) error {
	outputDone := make(chan error, 1)
	go func() {
		_, err := stdcopy.StdCopy(stage.Stdout, stage.Stderr, attach.Reader)
		outputDone <- err
	}()
	go func() {
		// The shell reads the script to EOF; closing our side ends its stdin.
		_, _ = attach.Conn.Write(stage.Script)
		_ = attach.CloseWrite()
	}()
	select {
	case <-outputDone:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// exitCode checks a non-zero exit code: a daemon that shuts down stops the
// containers itself, and their exit codes are then its doing, not the
// script's.
func (e *Engine) exitCode(ctx context.Context, stage backends.Stage, code int) (int, error) {
	if code != 0 {
		if err := e.engineAnswers(ctx); err != nil {
			return 0, fmt.Errorf("the engine stopped during stage %s, so its exit code %d is not the script's: %w", stage.Name, code, err)
		}
	}
	return code, nil
}

func (e *Engine) goneError(name string, err error) error {
	return fmt.Errorf("container %q of this job is gone: prepare did not finish or cleanup already ran: %w", name, err)
}

// runAttached starts the stopped container with the script on its shell's
// stdin, as the docker executor does.
func (e *Engine) runAttached(ctx context.Context, name string, stage backends.Stage) (int, error) {
	attach, err := e.api.ContainerAttach(ctx, name, container.AttachOptions{Stream: true, Stdin: true, Stdout: true, Stderr: true})
	if err != nil {
		// The attach upgrade may report a missing container as a bare 404.
		gone := cerrdefs.IsNotFound(err)
		if !gone {
			_, ierr := e.api.ContainerInspect(ctx, name)
			gone = cerrdefs.IsNotFound(ierr)
		}
		if gone {
			return 0, e.goneError(name, err)
		}
		return 0, fmt.Errorf("attach to %q: %w", name, err)
	}
	defer attach.Close()

	if err := e.api.ContainerStart(ctx, name, container.StartOptions{}); err != nil {
		return 0, fmt.Errorf("start %q for stage %s: %w", name, stage.Name, err)
	}

	// The attach stream ends when the container's process does. Only then
	// is the exit code asked for: a wait registered before the start can
	// reach the daemon after a short script has already exited, and would
	// then wait for an exit that never comes.
	if err := e.stream(ctx, attach, stage); err != nil {
		return 0, e.stopStage(name, err)
	}
	waitCh, waitErrCh := e.api.ContainerWait(ctx, name, container.WaitConditionNotRunning)
	select {
	case res := <-waitCh:
		if res.Error != nil && res.Error.Message != "" {
			return 0, fmt.Errorf("wait for %q: %s", name, res.Error.Message)
		}
		return e.exitCode(ctx, stage, int(res.StatusCode))
	case err := <-waitErrCh:
		if ctx.Err() != nil {
			return 0, e.stopStage(name, ctx.Err())
		}
		return 0, fmt.Errorf("wait for %q: %w; the engine may have restarted, so the stage's outcome is unknown", name, err)
	case <-ctx.Done():
		return 0, e.stopStage(name, ctx.Err())
	}
}

// engineAnswers pings the daemon over a new connection: a daemon that is
// shutting down has closed its listener but may still answer on the
// connections it had.
func (e *Engine) engineAnswers(ctx context.Context) error {
	d, ok := e.api.(interface {
		Dialer() func(context.Context) (net.Conn, error)
	})
	if !ok {
		return nil
	}
	dial := d.Dialer()
	httpc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		DialContext:       func(ctx context.Context, _, _ string) (net.Conn, error) { return dial(ctx) },
		DisableKeepAlives: true,
	}}
	req, err := http.NewRequestWithContext(backends.WithoutDialRetry(ctx), http.MethodGet, "http://docker/_ping", nil)
	if err != nil {
		return err
	}
	resp, err := httpc.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("ping: %s", resp.Status)
	}
	return nil
}

// stopStage stops a canceled stage's container so nothing of the user's
// keeps running, on a fresh context since the job's is canceled.
func (e *Engine) stopStage(name string, cause error) error {
	grace := e.cfg.StopTimeout.Duration
	ctx, cancel := context.WithTimeout(context.Background(), grace+10*time.Second)
	defer cancel()
	seconds := int(grace.Round(time.Second) / time.Second)
	if err := e.api.ContainerStop(ctx, name, container.StopOptions{Timeout: &seconds}); err != nil && !cerrdefs.IsNotFound(err) {
		return errors.Join(cause, fmt.Errorf("stop %q after cancel: %w", name, err))
	}
	return fmt.Errorf("stage canceled, container %q stopped: %w", name, cause)
}

// followServiceLogs streams the services' logs into w, each line prefixed
// with the service's alias, until the returned stop is called.
func (e *Engine) followServiceLogs(job *backends.Job, w io.Writer) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	args := selectorFilter(job)
	args.Add("label", backends.LabelRole+"="+RoleService)
	list, err := e.api.ContainerList(ctx, container.ListOptions{Filters: args})
	if err != nil {
		e.log.Warnf("CI_DEBUG_SERVICES: list services: %v", err)
		return cancel
	}
	logs := backends.NewServiceLogs(w)
	since := fmt.Sprint(time.Now().Unix())
	for _, c := range list {
		alias, _, _ := strings.Cut(c.Labels[backends.LabelAlias], ",")
		rc, err := e.api.ContainerLogs(ctx, c.ID, container.LogsOptions{ShowStdout: true, ShowStderr: true, Follow: true, Since: since})
		if err != nil {
			e.log.Warnf("CI_DEBUG_SERVICES: logs of %s: %v", alias, err)
			continue
		}
		logs.Follow(alias, func(w io.Writer) error {
			defer rc.Close()
			_, err := stdcopy.StdCopy(w, w, rc)
			return err
		})
	}
	return func() { logs.Stop(cancel) }
}
