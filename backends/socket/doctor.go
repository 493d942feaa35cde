package socket

import (
	"context"
	"fmt"
	"strings"

	"github.com/berthci/berth/backends"
	"github.com/berthci/berth/backends/dockerengine"
	"github.com/berthci/berth/config"
)

// Doctor checks the host daemon for socket jobs: the checks every Docker
// backend shares, socket.host_socket, the guarding proxy's image, and
// whether a rootful daemon's socket reaches jobs unguarded. See
// [backends.Doctor].
func (b *Backend) Doctor(ctx context.Context, opts backends.DoctorOptions) []backends.Check {
	guarded, unguardedBy := backends.SocketGuardUse(b.cfg, b.cfg.Socket.Guard)
	proxy := backends.NeededImage{Check: "proxy-image", Ref: b.cfg.Socket.ProxyImage, Key: "socket.proxy_image", Policies: []string{config.PullIfNotPresent}}
	if proxy.Ref == "" {
		proxy.Ref, proxy.Key = b.cfg.Docker.HelperImage, "docker.helper_image (socket.proxy_image is empty)"
	}
	if !guarded {
		proxy.Unused = "not used: [socket] guard is false and no policy rule turns it on"
	}
	spec := dockerengine.DoctorSpec{
		Runner:     b.cfg.RunnerName,
		Backend:    Name,
		Images:     append(backends.NeededJobImages(b.cfg.Docker), proxy),
		HostSocket: b.cfg.Socket.HostSocket,
		Rootless: func(name string, rootless bool, detail string) backends.Check {
			if rootless || len(unguardedBy) == 0 {
				return backends.OK(name, detail+"; socket jobs get the guarded socket")
			}
			return backends.Warn(name, fmt.Sprintf("%s; jobs get its socket unguarded (%s): they are root on this host", detail, strings.Join(unguardedBy, ", ")),
				"keep [socket] guard = true, and socket_guard = false only in rules for projects trusted with the host")
		},
	}
	return dockerengine.Doctor(ctx, b.cli, b.cfg.Docker, spec, opts)
}
