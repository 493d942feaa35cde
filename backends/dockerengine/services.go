package dockerengine

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/pkg/stdcopy"

	"github.com/berthci/berth/backends"
)

// serviceLogTail is how many of a service's last log lines a health-check
// warning shows.
const serviceLogTail = "50"

// startServices creates and starts the job's services on the job network
// and starts waiting for each to listen on its ports; prepare does the rest
// of its work in the meantime.
func (e *Engine) startServices(ctx context.Context, job *backends.Job, images map[string]image.InspectResponse) (*backends.ServiceWait, error) {
	if len(job.Services) == 0 {
		return nil, nil
	}
	defer backends.StartSection(e.log, "prepare_services", "Starting services").End()
	netName := networkName(job)
	ids := make([]string, len(job.Services))
	for i, svc := range job.Services {
		name := serviceContainerName(job, i)
		labels := job.Labels(RoleService)
		labels[backends.LabelAlias] = strings.Join(svc.Aliases, ",")
		cfg := &container.Config{
			Image:      svc.Name,
			Env:        svc.Env,
			Entrypoint: svc.Entrypoint,
			Cmd:        svc.Command,
			Labels:     labels,
		}
		nc := &network.NetworkingConfig{EndpointsConfig: map[string]*network.EndpointSettings{
			netName: {Aliases: svc.Aliases},
		}}
		e.log.Infof("Starting service %s as %s ...", svc.Name, strings.Join(svc.Aliases, ", "))
		created, err := e.api.ContainerCreate(ctx, cfg, e.hostConfig(job), nc, nil, name)
		if err != nil {
			return nil, fmt.Errorf("create service container %q from image %q: %w", name, svc.Name, err)
		}
		if err := e.api.ContainerStart(ctx, created.ID, container.StartOptions{}); err != nil {
			return nil, fmt.Errorf("start service %q: %w", svc.Name, err)
		}
		ids[i] = created.ID
	}

	timeout := e.cfg.WaitForServicesTimeout.Duration
	if timeout <= 0 {
		return nil, nil
	}
	return backends.StartServiceWait(ctx, len(job.Services), e.log, func(ctx context.Context, i int) string {
		svc := job.Services[i]
		ports := healthPorts(svc, images[svc.Name])
		if len(ports) == 0 {
			return ""
		}
		if err := e.waitForService(ctx, ids[i], netName, ports, timeout); err != nil {
			return e.serviceWarning(ids[i], svc, err)
		}
		return ""
	}), nil
}

// healthPorts are the TCP ports a service may listen on; see
// [backends.HealthPorts].
func healthPorts(svc backends.Service, img image.InspectResponse) []int {
	var exposed []string
	if img.Config != nil {
		for p := range img.Config.ExposedPorts {
			exposed = append(exposed, string(p))
		}
	}
	return backends.HealthPorts(svc, exposed)
}

// waitForService polls the service's ports on the job network until one of
// them accepts a connection, the service exits or the timeout passes.
func (e *Engine) waitForService(ctx context.Context, id, netName string, ports []int, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var addr string
	var dialer net.Dialer
	for tick := 0; ; tick++ {
		if addr == "" || tick%10 == 0 {
			inspect, err := e.api.ContainerInspect(ctx, id)
			if err != nil {
				if ctx.Err() != nil {
					break
				}
				return fmt.Errorf("inspect service: %w", err)
			}
			if inspect.State != nil && !inspect.State.Running {
				return fmt.Errorf("service container exited with code %d", inspect.State.ExitCode)
			}
			if ep, ok := inspect.NetworkSettings.Networks[netName]; ok && ep.IPAddress != "" {
				addr = ep.IPAddress
			}
		}
		for _, port := range ports {
			if addr == "" {
				break
			}
			dctx, dcancel := context.WithTimeout(ctx, time.Second)
			conn, err := dialer.DialContext(dctx, "tcp", net.JoinHostPort(addr, strconv.Itoa(port)))
			dcancel()
			if err == nil {
				conn.Close()
				return nil
			}
		}
		select {
		case <-ctx.Done():
		case <-time.After(50 * time.Millisecond):
			continue
		}
		break
	}
	return fmt.Errorf("service did not listen on any of ports %v within %s", ports, timeout)
}

// serviceWarning is the docker executor's warning for a service that did not
// become healthy, with the service's last log lines.
func (e *Engine) serviceWarning(id string, svc backends.Service, cause error) string {
	var b strings.Builder
	fmt.Fprintf(&b, "Service %s (%s) probably didn't start properly.\n\n", svc.Name, strings.Join(svc.Aliases, ", "))
	fmt.Fprintf(&b, "Health check error:\n%v\n\n", cause)
	b.WriteString("Service container logs:\n")
	b.WriteString(e.serviceLogs(id))
	b.WriteString("*********")
	return b.String()
}

// LogTail returns a container's last log lines, for error messages.
func (e *Engine) LogTail(id string) string { return e.serviceLogs(id) }

func (e *Engine) serviceLogs(id string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	rc, err := e.api.ContainerLogs(ctx, id, container.LogsOptions{ShowStdout: true, ShowStderr: true, Tail: serviceLogTail, Timestamps: true})
	if err != nil {
		return fmt.Sprintf("(logs unavailable: %v)\n", err)
	}
	defer rc.Close()
	var out bytes.Buffer
	if _, err := stdcopy.StdCopy(&out, &out, io.LimitReader(rc, 1<<20)); err != nil {
		fmt.Fprintf(&out, "(reading logs: %v)\n", err)
	}
	return out.String()
}
