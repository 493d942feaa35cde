package dockerproxy

import (
	"fmt"
	"net"
	"sort"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/go-connections/nat"
)

// Published ports. Docker binds a published port on every host interface
// unless told an address, which would put a job's containers on the host's
// public network. Through the guard a port publishes on the job network's
// gateway address instead: the address a container on the job network
// reaches the host by, which is how testcontainers and its kind find a
// published port from inside a container, and which the host's other
// networks do not route to. Each job's gateway is its own, so two jobs
// publishing the same host port do not collide. Loopback addresses are
// allowed as given (the host alone reaches them). The admin's
// docker.guard_public_ports leaves every binding as the job gave it.
//
// Rootless Podman binds a published port with a forwarder in the host's
// network namespace, while the job network's gateway exists only in the
// rootless one: no address is both bindable and reachable from the job but
// every interface. There the guard refuses published ports (loopback
// ones aside) unless the admin allows public ones; the job reaches its
// containers at their addresses or aliases on the job network.
//
// What a published port on the gateway does not stop: other containers on
// the host (another job's among them) can reach any host address, the
// gateway's too, through the engine's userland proxy. Ports are not secrets.

// publishPorts rewrites where h publishes the ports of a container created
// with cfg (see above).
func (r *request) publishPorts(cfg *container.Config, h *container.HostConfig) error {
	if r.f.publicPorts || (len(h.PortBindings) == 0 && !h.PublishAllPorts) {
		return nil
	}
	if r.f.rootlessPorts {
		if h.PublishAllPorts {
			return refuse("publishing all ports (-P) is not available on this rootless Podman: its port forwarder would listen on every host interface; reach the container at its address or network alias on the job's network, or ask the runner admin for docker.guard_public_ports")
		}
		for port, bindings := range h.PortBindings {
			for _, b := range bindings {
				if !loopback(b.HostIP) {
					return refuse("publishing port %s is not available on this rootless Podman: its port forwarder would listen on every host interface; reach the container at its address or network alias on the job's network, publish on 127.0.0.1 for the host alone, or ask the runner admin for docker.guard_public_ports", port)
				}
			}
		}
		return nil
	}
	gw, err := r.f.gateway(r)
	if err != nil {
		return err
	}
	if h.PortBindings == nil {
		h.PortBindings = nat.PortMap{}
	}
	if h.PublishAllPorts {
		// Every exposed port, the image's too, on the gateway, as -P
		// would publish them on every interface.
		exposed := map[nat.Port]bool{}
		for p := range cfg.ExposedPorts {
			exposed[p] = true
		}
		if cfg.Image != "" {
			img, err := r.f.up.Image(r.ctx, cfg.Image)
			if err == nil {
				for _, p := range img.Ports {
					exposed[nat.Port(p)] = true
				}
			}
		}
		for p := range exposed {
			if len(h.PortBindings[p]) == 0 {
				h.PortBindings[p] = []nat.PortBinding{{}}
			}
		}
		h.PublishAllPorts = false
	}
	ports := make([]string, 0, len(h.PortBindings))
	for p := range h.PortBindings {
		ports = append(ports, string(p))
	}
	sort.Strings(ports)
	for _, p := range ports {
		bindings := h.PortBindings[nat.Port(p)]
		for i := range bindings {
			switch ip := bindings[i].HostIP; {
			case ip == "" || ip == "0.0.0.0" || ip == "::":
				bindings[i].HostIP = gw
			case ip == gw || loopback(ip):
			default:
				return refuse("publishing port %s on %s is not allowed: ports publish on the job network's address %s, which the job's containers reach (leave the address out); the runner admin can allow every interface with docker.guard_public_ports", p, ip, gw)
			}
		}
	}
	return nil
}

// loopback reports whether ip is a loopback address.
func loopback(ip string) bool {
	parsed := net.ParseIP(ip)
	return parsed != nil && parsed.IsLoopback()
}

// gateway returns the job network's IPv4 gateway, looked up once; with no
// job network, the loopback address.
func (f *Filter) gateway(r *request) (string, error) {
	f.gatewayMu.Lock()
	defer f.gatewayMu.Unlock()
	if f.gatewayIP != "" {
		return f.gatewayIP, nil
	}
	if f.network == "" {
		return "127.0.0.1", nil
	}
	obj, err := f.up.Network(r.ctx, f.network)
	if err != nil {
		return "", fmt.Errorf("look up the job's network %q for its gateway: %w", f.network, err)
	}
	if net.ParseIP(obj.Gateway) == nil {
		return "", fmt.Errorf("the job's network %q has no gateway address to publish ports on", f.network)
	}
	f.gatewayIP = obj.Gateway
	return f.gatewayIP, nil
}
