//go:build remote

package podman

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/containers/podman/v5/pkg/bindings/containers"
	"github.com/containers/podman/v5/pkg/domain/entities/types"

	"github.com/berthci/berth/backends"
)

// serviceLogTail is how many of a service's last log lines a health-check
// warning shows.
const serviceLogTail = "50"

// probeScript waits until one of $PORTS on $HOST accepts a connection, for
// at most $TIMEOUT seconds. It runs in a short-lived container on the job
// network: a rootless service's network lives in the service user's network
// namespace, so the host cannot reach the job's containers, but a container
// on the same network can, by the same route the job takes.
const probeScript = `probe() {
	if [ -x /bin/bash ]; then
		/bin/bash -c 'exec 3<>"/dev/tcp/$0/$1"' "$1" "$2" 2>/dev/null && return 0
	fi
	if command -v nc >/dev/null 2>&1; then
		nc -z -w 1 "$1" "$2" >/dev/null 2>&1 && return 0
	fi
	return 1
}
end=$(( $(date +%s) + TIMEOUT ))
while :; do
	for port in $PORTS; do
		probe "$HOST" "$port" && exit 0
	done
	[ "$(date +%s)" -ge "$end" ] && break
	sleep 0.2 2>/dev/null || sleep 1
done
echo "no connection to $HOST on ports $PORTS within ${TIMEOUT}s"
exit 1
`

// startServices creates and starts the job's services on the job network
// and starts waiting for each to listen on its ports; prepare does the rest
// of its work in the meantime.
func (b *Backend) startServices(ctx context.Context, job *backends.Job, images map[string]*types.ImageInspectReport) (*backends.ServiceWait, error) {
	if len(job.Services) == 0 {
		return nil, nil
	}
	defer backends.StartSection(b.log, "prepare_services", "Starting services").End()
	for i, svc := range job.Services {
		name := serviceContainerName(job, i)
		s := b.containerSpec(job, name, svc.Name, roleService, svc.Aliases)
		s.Labels[backends.LabelAlias] = strings.Join(svc.Aliases, ",")
		s.Entrypoint = svc.Entrypoint
		s.Command = svc.Command
		s.Env = envMap(svc.Env)
		b.log.Infof("Starting service %s as %s ...", svc.Name, strings.Join(svc.Aliases, ", "))
		if _, err := containers.CreateWithSpec(ctx, s, nil); err != nil {
			return nil, fmt.Errorf("create service container %q from image %q: %w", name, svc.Name, err)
		}
		if err := containers.Start(ctx, name, nil); err != nil {
			return nil, fmt.Errorf("start service %q: %w", svc.Name, err)
		}
	}

	timeout := b.cfg.WaitForServicesTimeout.Duration
	if timeout <= 0 {
		return nil, nil
	}
	return backends.StartServiceWait(ctx, len(job.Services), b.log, func(ctx context.Context, i int) string {
		svc := job.Services[i]
		var exposed []string
		if img := images[svc.Name]; img != nil && img.Config != nil {
			for p := range img.Config.ExposedPorts {
				exposed = append(exposed, p)
			}
		}
		ports := backends.HealthPorts(svc, exposed)
		if len(ports) == 0 {
			return ""
		}
		if err := b.waitForService(ctx, job, i, ports, timeout); err != nil {
			return b.serviceWarning(ctx, serviceContainerName(job, i), svc, err)
		}
		return ""
	}), nil
}

// waitForService runs a probe container on the job network until the
// service listens on one of its ports or the timeout passes.
func (b *Backend) waitForService(ctx context.Context, job *backends.Job, i int, ports []int, timeout time.Duration) error {
	service := serviceContainerName(job, i)
	inspect, err := containers.Inspect(ctx, service, nil)
	if err != nil {
		return fmt.Errorf("inspect service: %w", err)
	}
	host := service
	if inspect.NetworkSettings != nil {
		if ep, ok := inspect.NetworkSettings.Networks[networkName(job)]; ok && ep.IPAddress != "" {
			host = ep.IPAddress
		}
	}
	image := job.Image.Name
	if b.cfg.UseHelper {
		image = b.cfg.HelperImage
	}
	var portList []string
	for _, p := range ports {
		portList = append(portList, strconv.Itoa(p))
	}
	name := probeContainerName(job, i)
	s := b.containerSpec(job, name, image, roleProbe, nil)
	s.Entrypoint = []string{""}
	s.Command = []string{"sh", "-c", probeScript}
	s.Env = map[string]string{
		"HOST":    host,
		"PORTS":   strings.Join(portList, " "),
		"TIMEOUT": strconv.Itoa(int(timeout.Round(time.Second) / time.Second)),
	}
	if _, err := containers.CreateWithSpec(ctx, s, nil); err != nil {
		return fmt.Errorf("create health probe: %w", err)
	}
	defer func() {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		_, _ = containers.Remove(rctx, name, new(containers.RemoveOptions).WithForce(true).WithTimeout(0))
	}()
	if err := containers.Start(ctx, name, nil); err != nil {
		return fmt.Errorf("start health probe: %w", err)
	}
	wctx, cancel := context.WithTimeout(ctx, timeout+30*time.Second)
	defer cancel()
	exitCode, err := containers.Wait(wctx, name, nil)
	if err != nil {
		return fmt.Errorf("wait for health probe: %w", err)
	}
	if exitCode == 0 {
		return nil
	}
	if now, err := containers.Inspect(ctx, service, nil); err == nil && now.State != nil && !now.State.Running {
		return fmt.Errorf("service container exited with code %d", now.State.ExitCode)
	}
	return fmt.Errorf("service did not listen on any of ports %v within %s", ports, timeout)
}

// serviceWarning is the docker executor's warning for a service that did not
// become healthy, with the service's last log lines.
func (b *Backend) serviceWarning(ctx context.Context, name string, svc backends.Service, cause error) string {
	var sb strings.Builder
	fmt.Fprintf(&sb, "Service %s (%s) probably didn't start properly.\n\n", svc.Name, strings.Join(svc.Aliases, ", "))
	fmt.Fprintf(&sb, "Health check error:\n%v\n\n", cause)
	sb.WriteString("Service container logs:\n")
	sb.WriteString(b.logTail(ctx, name))
	sb.WriteString("*********")
	return sb.String()
}

// logTail returns a container's last log lines.
func (b *Backend) logTail(ctx context.Context, name string) string {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	var out strings.Builder
	err := streamLogs(ctx, name, new(containers.LogOptions).WithStdout(true).WithStderr(true).WithTail(serviceLogTail).WithTimestamps(true),
		func(line string) { out.WriteString(line) })
	if err != nil {
		fmt.Fprintf(&out, "(logs unavailable: %v)\n", err)
	}
	return out.String()
}

// streamLogs calls fn with each log frame of the container, in order, until
// the stream ends or ctx is done.
func streamLogs(ctx context.Context, name string, opts *containers.LogOptions, fn func(string)) error {
	lines := make(chan string)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for line := range lines {
			fn(line)
		}
	}()
	err := containers.Logs(ctx, name, opts, lines, lines)
	close(lines)
	<-done
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// followServiceLogs streams the services' logs into w, each line prefixed
// with the service's alias, until the returned stop is called.
func (b *Backend) followServiceLogs(ctx context.Context, job *backends.Job, w io.Writer) (stop func()) {
	ctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	filters := selectorFilters(job)
	filters["label"] = append(filters["label"], backends.LabelRole+"="+roleService)
	list, err := containers.List(ctx, new(containers.ListOptions).WithAll(true).WithFilters(filters))
	if err != nil {
		b.log.Warnf("CI_DEBUG_SERVICES: list services: %v", err)
		return cancel
	}
	logs := backends.NewServiceLogs(w)
	since := strconv.FormatInt(time.Now().Unix(), 10)
	for _, c := range list {
		if !b.owns(job, c.Labels) {
			continue
		}
		alias, _, _ := strings.Cut(c.Labels[backends.LabelAlias], ",")
		logs.Follow(alias, func(w io.Writer) error {
			return streamLogs(ctx, c.ID, new(containers.LogOptions).WithStdout(true).WithStderr(true).WithFollow(true).WithSince(since),
				func(line string) { _, _ = io.WriteString(w, line) })
		})
	}
	return func() { logs.Stop(cancel) }
}
