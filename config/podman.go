package config

import (
	"errors"
	"fmt"
	"net/url"
	"path/filepath"
	"strings"
)

// Podman configures the podman backend: jobs in a rootless Podman service
// through its API socket. The job containers take their image, helper,
// pull, limit and mount settings from [Docker], like the other backends.
type Podman struct {
	// Socket is the Podman API socket, "unix:///path" or an absolute path.
	// Empty means the rootless socket of the user berth runs as:
	// $XDG_RUNTIME_DIR/podman/podman.sock, else
	// /run/user/<uid>/podman/podman.sock.
	Socket string `toml:"socket"`
	// RequireRootless refuses a service that runs as root.
	RequireRootless bool `toml:"require_rootless"`
	// JobSocket mounts the Podman API socket into the job container at
	// /var/run/docker.sock, so the job's docker CLI (and podman --remote)
	// builds and runs images in the same rootless service.
	JobSocket bool `toml:"job_socket"`
	// Guard puts berth's guarding proxy between the job and the Podman
	// socket (default true): the job's socket is then a per-job socket
	// through which it sees and touches only what it created, with the
	// same refusals as the socket backend's guard. false mounts the
	// service's own socket, through which the job sees every container of
	// the rootless user, and podman --remote works.
	Guard bool `toml:"guard"`
	// Nested starts the job container with what podman or buildah inside
	// it needs: CAP_SYS_ADMIN within the rootless user namespace,
	// /dev/fuse, AppArmor unconfined and SELinux labels disabled. Never
	// privileged.
	Nested bool `toml:"nested"`
}

func defaultPodman() Podman {
	return Podman{RequireRootless: true, JobSocket: true, Guard: true}
}

// SocketPath returns the filesystem path of Socket ("" when it is empty).
func (p Podman) SocketPath() string {
	if strings.HasPrefix(p.Socket, "unix://") {
		if u, err := url.Parse(p.Socket); err == nil {
			return u.Path
		}
	}
	return p.Socket
}

func (p Podman) validate() error {
	if p.Socket == "" {
		return nil
	}
	if strings.Contains(p.Socket, "://") && !strings.HasPrefix(p.Socket, "unix://") {
		return errors.New("podman.socket: only local unix sockets are supported: use \"unix:///run/user/<uid>/podman/podman.sock\" or an absolute path")
	}
	if path := p.SocketPath(); !filepath.IsAbs(path) {
		return fmt.Errorf("podman.socket: %q must be \"unix:///absolute/path\" or an absolute path", p.Socket)
	}
	return nil
}
