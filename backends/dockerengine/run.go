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

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/errdefs"
	"github.com/docker/docker/pkg/stdcopy"

	"github.com/berthci/berth/backends"
)

// Run starts the stage's container with the script on its shell's stdin and
// streams its output, as the docker executor does. See
// [backends.Backend.Run].
func (e *Engine) Run(ctx context.Context, job *backends.Job, stage backends.Stage) (int, error) {
	name := buildContainerName(job)
	if stage.Helper && e.cfg.UseHelper {
		name = helperContainerName(job)
	}
	if job.DebugServices {
		stop := e.followServiceLogs(job, stage.Stderr)
		defer stop()
	}

	attach, err := e.api.ContainerAttach(ctx, name, container.AttachOptions{Stream: true, Stdin: true, Stdout: true, Stderr: true})
	if err != nil {
		// The attach upgrade may report a missing container as a bare 404.
		gone := errdefs.IsNotFound(err)
		if !gone {
			_, ierr := e.api.ContainerInspect(ctx, name)
			gone = errdefs.IsNotFound(ierr)
		}
		if gone {
			return 0, fmt.Errorf("container %q of this job is gone: prepare did not finish or cleanup already ran: %w", name, err)
		}
		return 0, fmt.Errorf("attach to %q: %w", name, err)
	}
	defer attach.Close()

	if err := e.api.ContainerStart(ctx, name, container.StartOptions{}); err != nil {
		return 0, fmt.Errorf("start %q for stage %s: %w", name, stage.Name, err)
	}

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

	// The attach stream ends when the container's process does. Only then
	// is the exit code asked for: a wait registered before the start can
	// reach the daemon after a short script has already exited, and would
	// then wait for an exit that never comes.
	select {
	case <-outputDone:
	case <-ctx.Done():
		return 0, e.stopStage(name, ctx.Err())
	}
	waitCh, waitErrCh := e.api.ContainerWait(ctx, name, container.WaitConditionNotRunning)
	select {
	case res := <-waitCh:
		if res.Error != nil && res.Error.Message != "" {
			return 0, fmt.Errorf("wait for %q: %s", name, res.Error.Message)
		}
		// A daemon that shuts down stops the containers itself; their exit
		// codes are then its doing, not the script's.
		if res.StatusCode != 0 {
			if err := e.engineAnswers(ctx); err != nil {
				return 0, fmt.Errorf("the engine stopped during stage %s, so its exit code %d is not the script's: %w", stage.Name, res.StatusCode, err)
			}
		}
		return int(res.StatusCode), nil
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
	if err := e.api.ContainerStop(ctx, name, container.StopOptions{Timeout: &seconds}); err != nil && !errdefs.IsNotFound(err) {
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
