//go:build remote

package podman

import (
	"context"
	"fmt"
	"os"
	"strings"

	"github.com/containers/podman/v5/pkg/bindings/containers"
	"github.com/containers/podman/v5/pkg/specgen"
	"github.com/docker/go-units"
	spec "github.com/opencontainers/runtime-spec/specs-go"
	"go.podman.io/image/v5/manifest"

	"github.com/berthci/berth/backends"
	"github.com/berthci/berth/backends/dockerproxy"
)

// guarded reports whether the job's socket goes through the guarding
// proxy: the policy's say for the job, else [podman] guard.
func (b *Backend) guarded(job *backends.Job) bool {
	if job.Policy.SocketGuard != nil {
		return *job.Policy.SocketGuard
	}
	return b.podman.Guard
}

// jobSocketSource is the host socket the job container gets at
// /var/run/docker.sock: the job's guarded socket, or the service's own.
func (b *Backend) jobSocketSource(job *backends.Job) string {
	if b.guarded(job) {
		return dockerproxy.JobSocket(job)
	}
	return b.socketPath
}

// startProxy runs the job's guarding proxy in the rootless service itself:
// berth's static binary in a container with no network, no capability but
// reading other containers' roots, no new privileges and a read-only root, holding the service's socket
// and serving the job's. The proxy speaks Podman's Docker-compatible API
// to the service, so the job's docker CLI works and the job sees only its
// own objects, exactly as on the socket backend. It returns once the job's
// socket answers /_ping.
func (b *Backend) startProxy(ctx context.Context, job *backends.Job) error {
	self, err := backends.SelfBinary(b.ProxyBinary, b.cfg.BerthBinary, "the guarded Podman socket")
	if err != nil {
		return err
	}
	report, err := b.ensureImage(ctx, job, b.cfg.HelperImage, []string{"if-not-present"})
	if err != nil {
		return fmt.Errorf("the guarded Podman socket's image: %w; set docker.helper_image in the berth config", err)
	}
	uid, gid := -1, -1
	if os.Getuid() == 0 && b.owner.uid != 0 {
		uid, gid = b.owner.uid, b.owner.gid
	}
	if err := dockerproxy.MakeJobDir(job, uid, gid); err != nil {
		return err
	}
	name := dockerproxy.ContainerName(job)
	// By the id just resolved, never a name a job could move since, and
	// without the image's HEALTHCHECK.
	s := specgen.NewSpecGenerator(report.ID, false)
	s.HealthConfig = noHealthcheck()
	s.Name = name
	s.Labels = job.Labels(dockerproxy.RoleProxy)
	s.NetNS = specgen.Namespace{NSMode: specgen.NoNetwork}
	s.Entrypoint = []string{dockerproxy.BinaryPath}
	s.Command = dockerproxy.Command(job, dockerproxy.JobCeilings(b.limits, job), dockerproxy.SettingsFrom(b.cfg))
	for _, m := range dockerproxy.Binds(job, self, b.socketPath) {
		mode := "rw"
		if m.ReadOnly {
			mode = "ro"
		}
		s.Mounts = append(s.Mounts, bindMount(m.Source, m.Target, mode))
	}
	// Root in the container is the service's user on the host, which owns
	// both sockets. The proxy checks a start's binds where the runtime
	// mounted them, in /proc/<pid>/root of the initialised container (see
	// dockerproxy.Filter): it sees the service's pids, and has
	// CAP_SYS_PTRACE, in the rootless user namespace only, to read the
	// roots of containers whose user is not its own. It needs nothing else.
	s.CapDrop = []string{"ALL"}
	s.CapAdd = []string{"CAP_SYS_PTRACE"}
	s.PidNS = specgen.Namespace{NSMode: specgen.Host}
	yes, no := true, false
	s.NoNewPrivileges = &yes
	s.ReadOnlyFilesystem = &yes
	s.Privileged = &no
	s.Rlimits = rlimits(b.limits.Ulimits)
	if _, err := containers.CreateWithSpec(ctx, s, nil); err != nil {
		return fmt.Errorf("create the guarded Podman socket's proxy container: %w", err)
	}
	if err := containers.Start(ctx, name, nil); err != nil {
		return fmt.Errorf("start the guarded Podman socket's proxy container: %w; berth's binary %s must be readable by the service's user (uid %d)", err, self, b.owner.uid)
	}
	if err := dockerproxy.WaitJobReady(ctx, job, "podman logs "+name+" as the service's user"); err != nil {
		return err
	}
	b.log.Infof("Guarded Podman socket ready (set [podman] guard = false for the service's own socket)")
	return nil
}

// noHealthcheck turns off an image's HEALTHCHECK in berth's own
// containers: the engine would run it inside them, with their mounts.
func noHealthcheck() *manifest.Schema2HealthConfig {
	return &manifest.Schema2HealthConfig{Test: []string{"NONE"}}
}

// rlimits turns the admin's ulimits into the spec's: by their short names
// ("nofile"), to which Podman adds RLIMIT_ itself.
func rlimits(ulimits []*units.Ulimit) []spec.POSIXRlimit {
	var out []spec.POSIXRlimit
	for _, u := range ulimits {
		out = append(out, spec.POSIXRlimit{Type: strings.ToLower(u.Name), Soft: uint64(u.Soft), Hard: uint64(u.Hard)})
	}
	return out
}
