package dockerproxy

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/berthci/berth/backends"
	"github.com/berthci/berth/config"
)

// A job's proxy runs in a container of its own, from berth's static binary
// mounted into any image, with the engine's socket and the job's builds dir
// (read-only) mounted in. It serves the job's socket in a host directory
// that the job container mounts. This file is that layout, shared by the
// backends that give a job a guarded socket.

// RoleProxy is the berth.role of a job's proxy container.
const RoleProxy = "docker-proxy"

// Paths inside the proxy container.
const (
	BinaryPath   = "/berth"
	ListenDir    = "/run/berth-docker"
	UpstreamPath = "/var/run/host-docker.sock"
)

// The proxy container's bounds: memory for maxConnections bodies of
// MaxJSONBody and the Go runtime, and pids for its threads.
const (
	ContainerMemory = 384 << 20
	ContainerPids   = 256
)

// readyTimeout bounds the wait for the proxy's first answer.
const readyTimeout = 30 * time.Second

// JobDir is the job's host directory for its guarded socket: next to the
// builds dir, not in it, so that the job can neither replace the socket nor
// bind-mount the directory through the proxy.
func JobDir(job *backends.Job) string { return job.BuildsDir + ".docker-proxy" }

// JobSocket is the job's guarded socket on the host.
func JobSocket(job *backends.Job) string { return filepath.Join(JobDir(job), "docker.sock") }

// ContainerName is the name of the job's proxy container.
func ContainerName(job *backends.Job) string { return job.Name() + "-docker-proxy" }

// Settings are the admin's settings of the guard (docker.guard_*).
type Settings struct {
	// LocalRegistries: docker.guard_local_registries.
	LocalRegistries []string
	// PublicPorts: docker.guard_public_ports.
	PublicPorts bool
	// LocalNames are names the engine's host resolves to local addresses
	// (its /etc/hosts), refused as localhost is.
	LocalNames []string
}

// SettingsFrom takes the guard's settings from the berth config, and the
// host's own local names from its /etc/hosts: the engine runs on this host
// and resolves them there.
func SettingsFrom(d config.Docker) Settings {
	return Settings{LocalRegistries: d.GuardLocalRegistries, PublicPorts: d.GuardPublicPorts, LocalNames: HostsLocalNames("/etc/hosts")}
}

// HostsLocalNames returns the names a hosts file maps to a loopback,
// link-local or unspecified address ("runsc", the host's own name, ...).
// A missing or unreadable file gives none.
func HostsLocalNames(path string) []string {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	var names []string
	for _, line := range strings.Split(string(data), "\n") {
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = line[:i]
		}
		fields := strings.Fields(line)
		if len(fields) < 2 || !localHost(fields[0]) {
			continue
		}
		for _, name := range fields[1:] {
			if !localHost(name) {
				names = append(names, strings.ToLower(name))
			}
		}
	}
	return names
}

// Command is the proxy container's command, after the entrypoint
// BinaryPath: it labels what the job creates with the job's labels and
// bounds it by the ceilings.
func Command(job *backends.Job, ceilings Ceilings, settings Settings) []string {
	labels := job.Labels(RoleJobCreated)
	keys := make([]string, 0, len(labels))
	for k := range labels {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	// Both engines' backends name the job's network after the job.
	cmd := []string{"docker-proxy", "--listen", ListenDir + "/docker.sock", "--upstream", "unix://" + UpstreamPath,
		"--builds-dir", job.BuildsDir, "--network", job.Name(), "--peers-dir", PeersDir}
	for _, k := range keys {
		cmd = append(cmd, "--label", k+"="+labels[k])
	}
	for _, r := range settings.LocalRegistries {
		cmd = append(cmd, "--local-registry", r)
	}
	if settings.PublicPorts {
		cmd = append(cmd, "--public-ports")
	}
	for _, n := range settings.LocalNames {
		cmd = append(cmd, "--local-name", n)
	}
	return append(cmd, ceilings.Args()...)
}

// Bind is one bind mount of the proxy container.
type Bind struct {
	Source, Target string
	ReadOnly       bool
}

// Binds are the proxy container's mounts: berth's binary self, the
// engine's socket, the job's socket directory, its builds dir, and the
// admin's builds_dir (read-only), where it reads what names other jobs'
// guards, of any runner that shares it, let them give.
func Binds(job *backends.Job, self, engineSocket string) []Bind {
	return []Bind{
		{Source: self, Target: BinaryPath, ReadOnly: true},
		{Source: engineSocket, Target: UpstreamPath},
		{Source: JobDir(job), Target: ListenDir},
		{Source: job.BuildsDir, Target: job.BuildsDir, ReadOnly: true},
		{Source: buildsRoot(job.BuildsDir), Target: PeersDir, ReadOnly: true},
	}
}

// MakeJobDir creates the job's socket directory afresh, owned by uid:gid
// when uid >= 0 (the rootless user that runs the proxy).
func MakeJobDir(job *backends.Job, uid, gid int) error {
	dir := JobDir(job)
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("remove the job's old guarded socket directory: %w", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create the job's guarded socket directory: %w", err)
	}
	if uid >= 0 {
		if err := os.Lchown(dir, uid, gid); err != nil {
			return fmt.Errorf("give the job's guarded socket directory to uid %d: %w", uid, err)
		}
	}
	return nil
}

// RemoveJobDir removes the job's socket directory, if any.
func RemoveJobDir(job *backends.Job) error {
	if job.BuildsDir == "" {
		return nil
	}
	if err := os.RemoveAll(JobDir(job)); err != nil {
		return fmt.Errorf("remove the job's guarded socket directory: %w", err)
	}
	return nil
}

// WaitJobReady returns once the job's socket answers, or fails naming
// where to look (logsHint, e.g. "docker logs NAME").
func WaitJobReady(ctx context.Context, job *backends.Job, logsHint string) error {
	ready, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	if err := WaitReady(ready, JobSocket(job)); err != nil {
		return fmt.Errorf("%w; see `%s`", err, logsHint)
	}
	return nil
}
