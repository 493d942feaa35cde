package dockerengine

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strconv"
	"strings"
	"syscall"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api"
	"github.com/docker/docker/api/types"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/api/types/registry"
	"github.com/docker/docker/api/types/system"
	"github.com/docker/docker/api/types/versions"
	"github.com/docker/docker/client"
	"github.com/docker/docker/pkg/stdcopy"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/berthci/berth/backends"
	"github.com/berthci/berth/config"
)

// DoctorAPI is the part of the Docker client that `berth doctor` uses.
type DoctorAPI interface {
	ServerVersion(ctx context.Context) (types.Version, error)
	Info(ctx context.Context) (system.Info, error)
	ClientVersion() string
	DaemonHost() string
	NetworkInspect(ctx context.Context, networkID string, options network.InspectOptions) (network.Inspect, error)
	ImageInspect(ctx context.Context, imageID string, opts ...client.ImageInspectOption) (image.InspectResponse, error)
	DistributionInspect(ctx context.Context, imageRef, encodedRegistryAuth string) (registry.DistributionInspect, error)
	ContainerCreate(ctx context.Context, config *container.Config, hostConfig *container.HostConfig, networkingConfig *network.NetworkingConfig, platform *ocispec.Platform, containerName string) (container.CreateResponse, error)
	ContainerStart(ctx context.Context, containerID string, options container.StartOptions) error
	ContainerWait(ctx context.Context, containerID string, condition container.WaitCondition) (<-chan container.WaitResponse, <-chan error)
	ContainerLogs(ctx context.Context, containerID string, options container.LogsOptions) (io.ReadCloser, error)
	ContainerRemove(ctx context.Context, containerID string, options container.RemoveOptions) error
	ContainerStatPath(ctx context.Context, containerID, path string) (container.PathStat, error)
}

// Minimum Docker API versions: what the client library and the guarding
// proxy accept at all, and what berth is tested against (Docker 20.10).
const (
	minAPIVersion    = "1.24"
	testedAPIVersion = "1.41"
)

// DoctorStep is a backend's own check, run after the shared ones while
// the engine answers.
type DoctorStep struct {
	Name string
	Run  func(ctx context.Context) backends.Check
}

// DoctorSpec is what a Docker backend's doctor checks besides the shared
// ones.
type DoctorSpec struct {
	Runner  string
	Backend string
	Images  []backends.NeededImage
	// HostSocket is socket.host_socket, which the socket backend mounts;
	// "" for none.
	HostSocket string
	// Rootless judges whether the daemon's mode suits the backend; nil
	// accepts both.
	Rootless func(name string, rootless bool, detail string) backends.Check
	// NestedMTU is dind.mtu; 0 for none.
	NestedMTU int
	// Extra are the backend's own checks.
	Extra []DoctorStep
}

// Doctor runs the checks that every Docker backend shares, then the
// backend's own; see [backends.Doctor] for the contract.
func Doctor(ctx context.Context, api DoctorAPI, cfg config.Docker, spec DoctorSpec, opts backends.DoctorOptions) []backends.Check {
	d := &doctor{api: api, cfg: cfg, spec: spec, opts: opts}
	run := func(name string, check func(ctx context.Context) backends.Check) backends.Check {
		return backends.RunCheck(ctx, opts.CheckTimeout, name, check)
	}
	checks := []backends.Check{run("engine", d.engine)}
	reachable := checks[0].Status == backends.StatusOK
	// The checks below need the engine's answer, except the socket's and
	// the host's runner binary.
	needEngine := func(name string, check func(ctx context.Context) backends.Check) backends.Check {
		if !reachable {
			return backends.Skip(name, "the engine does not answer (see the engine check)")
		}
		return run(name, check)
	}
	checks = append(checks, needEngine("api-version", d.apiVersion))
	checks = append(checks, run("socket", d.socket))
	if spec.HostSocket != "" {
		checks = append(checks, run("host-socket", func(context.Context) backends.Check {
			return backends.SocketCheck("host-socket", spec.HostSocket, "socket.host_socket (mounted for the job or its guard)",
				"fix socket.host_socket in the berth config: it must be the host Docker daemon's socket")
		}))
	}
	checks = append(checks, needEngine("rootless", d.rootless))
	for _, img := range spec.Images {
		checks = append(checks, needEngine(img.Check, func(ctx context.Context) backends.Check { return d.image(ctx, img) }))
	}
	if cfg.RunnerBinary != "" {
		checks = append(checks, run("runner-binary", d.runnerBinary))
	} else {
		checks = append(checks, needEngine("runner-binary", d.runnerBinary))
	}
	checks = append(checks, needEngine("mtu", d.mtu))
	checks = append(checks, needEngine("engine-disk", d.engineDisk))
	for _, step := range spec.Extra {
		checks = append(checks, needEngine(step.Name, step.Run))
	}
	return checks
}

type doctor struct {
	api  DoctorAPI
	cfg  config.Docker
	spec DoctorSpec
	opts backends.DoctorOptions
	// info is the daemon's, from the engine check.
	info    system.Info
	version types.Version
}

// unixSocket returns the path of the daemon's unix socket, or "".
func (d *doctor) unixSocket() string {
	u, err := client.ParseHostURL(d.api.DaemonHost())
	if err != nil || u.Scheme != "unix" {
		return ""
	}
	return u.Host
}

func (d *doctor) startFix() string {
	return fmt.Sprintf("start the Docker daemon (systemctl start docker), or fix docker.host in the berth config (now %q, empty for $DOCKER_HOST or the default socket)", d.cfg.Host)
}

func (d *doctor) engine(ctx context.Context) backends.Check {
	ctx = backends.WithoutDialRetry(ctx)
	v, err := d.api.ServerVersion(ctx)
	if errors.Is(err, context.DeadlineExceeded) {
		return backends.Fail("engine", fmt.Sprintf("Docker at %s: %v", d.api.DaemonHost(), err), backends.HungFix("the Docker daemon", "systemctl restart docker"))
	}
	if err != nil {
		return backends.Fail("engine", fmt.Sprintf("Docker at %s: %v", d.api.DaemonHost(), err), d.startFix())
	}
	info, err := d.api.Info(ctx)
	if err != nil {
		return backends.Fail("engine", fmt.Sprintf("Docker at %s answers its version but not its info: %v", d.api.DaemonHost(), err), d.startFix())
	}
	d.version, d.info = v, info
	cgroup := info.CgroupVersion
	if cgroup == "" {
		cgroup = "1"
	}
	return backends.OK("engine", fmt.Sprintf("Docker %s at %s on %s, kernel %s, %s/%s, cgroup v%s (%s), storage %s",
		v.Version, d.api.DaemonHost(), info.OperatingSystem, info.KernelVersion, info.OSType, info.Architecture, cgroup, info.CgroupDriver, info.Driver))
}

func (d *doctor) apiVersion(context.Context) backends.Check {
	server, min := d.version.APIVersion, d.version.MinAPIVersion
	detail := fmt.Sprintf("negotiated API %s; the daemon serves %s to %s, berth's client up to %s", d.api.ClientVersion(), min, server, api.DefaultVersion)
	switch {
	case versions.LessThan(server, minAPIVersion):
		return backends.Fail("api-version", detail+"; berth needs API "+minAPIVersion+" or later", "upgrade the Docker engine (berth is tested with Docker 20.10, API 1.41, and later)")
	case versions.LessThan(server, testedAPIVersion):
		return backends.Warn("api-version", detail+"; berth is tested with API "+testedAPIVersion+" (Docker 20.10) and later", "upgrade the Docker engine to 20.10 or later")
	}
	return backends.OK("api-version", detail)
}

func (d *doctor) socket(context.Context) backends.Check {
	path := d.unixSocket()
	if path == "" {
		return backends.OK("socket", fmt.Sprintf("the engine is at %s, not a local socket: nothing to check here", d.api.DaemonHost()))
	}
	return backends.SocketCheck("socket", path, "the Docker daemon's socket", d.startFix())
}

func (d *doctor) rootless(context.Context) backends.Check {
	opts, err := system.DecodeSecurityOptions(d.info.SecurityOptions)
	if err != nil {
		return backends.Warn("rootless", fmt.Sprintf("cannot read the daemon's security options %v: %v", d.info.SecurityOptions, err), "check `docker info` by hand")
	}
	rootless := false
	var names []string
	for _, o := range opts {
		if o.Name == "rootless" {
			rootless = true
		}
		name := o.Name
		for _, kv := range o.Options {
			name += " " + kv.Key + "=" + kv.Value
		}
		names = append(names, name)
	}
	mode := "rootful"
	if rootless {
		mode = "rootless"
	}
	detail := fmt.Sprintf("the daemon is %s; security options: %s", mode, strings.Join(names, ", "))
	if d.spec.Rootless != nil {
		return d.spec.Rootless("rootless", rootless, detail)
	}
	return backends.OK("rootless", detail)
}

func (d *doctor) image(ctx context.Context, img backends.NeededImage) backends.Check {
	if img.Unused != "" {
		return backends.OK(img.Check, img.Unused)
	}
	inspect, err := d.api.ImageInspect(ctx, img.Ref)
	if err == nil {
		return backends.OK(img.Check, fmt.Sprintf("%s %s is present (%s, %s)", img.Key, img.Ref, strings.TrimPrefix(shortID(inspect.ID), "sha256:"), backends.HumanBytes(inspect.Size)))
	}
	if !cerrdefs.IsNotFound(err) {
		return backends.Fail(img.Check, fmt.Sprintf("inspect %s %s: %v", img.Key, img.Ref, err), d.startFix())
	}
	if backends.OnlyNever(img.Policies) {
		return backends.Fail(img.Check, fmt.Sprintf("%s %s is not on the host and its pull policy is \"never\"", img.Key, img.Ref),
			fmt.Sprintf("docker pull (or docker load) %s on the host, or allow another pull policy", img.Ref))
	}
	auth := ""
	job := backends.Job{Credentials: d.opts.Credentials}
	if cred, ok := job.CredentialFor(img.Ref); ok {
		auth, err = registry.EncodeAuthConfig(registry.AuthConfig{Username: cred.Username, Password: cred.Password, ServerAddress: cred.Registry})
		if err != nil {
			return backends.Fail(img.Check, fmt.Sprintf("encode the login for %s: %v", cred.Registry, err), "fix docker.auth_config in the berth config")
		}
	}
	dist, err := d.api.DistributionInspect(ctx, img.Ref, auth)
	if err != nil {
		return backends.Fail(img.Check, fmt.Sprintf("%s %s is not on the host, and its registry does not give it: %v", img.Key, img.Ref, err),
			fmt.Sprintf("check the name in %s; make the registry reachable from the Docker daemon and put its login in docker.auth_config; or docker pull/load it on the host", img.Key))
	}
	return backends.OK(img.Check, fmt.Sprintf("%s %s is not on the host; its registry has it (%s), so the first job that needs it pulls it", img.Key, img.Ref, dist.Descriptor.Digest))
}

// runnerBinary checks the gitlab-runner binary that cache and artifact
// stages call: docker.runner_binary on the host, else the helper image's.
func (d *doctor) runnerBinary(ctx context.Context) backends.Check {
	const name = "runner-binary"
	if d.cfg.RunnerBinary != "" {
		_, check := backends.RunnerBinaryCheck(name, d.cfg)
		return check
	}
	if !d.cfg.UseHelper {
		return backends.Warn(name, "docker.runner_binary is \"\" and docker.use_helper is false: cache and artifact stages run gitlab-runner from each job's image",
			"set docker.runner_binary to the host's gitlab-runner, or make sure every job image has one")
	}
	ref := d.cfg.HelperImage
	inspect, err := d.api.ImageInspect(ctx, ref)
	if cerrdefs.IsNotFound(err) {
		return backends.Warn(name, fmt.Sprintf("docker.runner_binary is \"\", and the helper image %s is not on the host to look into", ref),
			fmt.Sprintf("docker pull %s and run berth doctor again, or set docker.runner_binary to the host's gitlab-runner", ref))
	}
	if err != nil {
		return backends.Fail(name, fmt.Sprintf("inspect the helper image %s: %v", ref, err), d.startFix())
	}
	var env []string
	if inspect.Config != nil {
		env = inspect.Config.Env
	}
	dirs := backends.PathDirs(env)
	created, err := d.api.ContainerCreate(ctx, &container.Config{
		Image:      ref,
		Entrypoint: []string{"gitlab-runner"},
		Labels:     backends.DoctorJob(d.spec.Runner, d.spec.Backend).Labels(backends.DoctorRole),
	}, &container.HostConfig{NetworkMode: "none"}, nil, nil, backends.DoctorContainerName(d.spec.Runner, "helper"))
	if err != nil {
		return backends.Fail(name, fmt.Sprintf("create a container from the helper image %s to look into it: %v", ref, err), d.startFix())
	}
	defer d.remove(created.ID)
	for _, dir := range dirs {
		candidate := path.Join(dir, "gitlab-runner")
		st, err := d.api.ContainerStatPath(ctx, created.ID, candidate)
		if err != nil {
			continue
		}
		if st.Mode&os.ModeSymlink != 0 && st.LinkTarget != "" {
			target := st.LinkTarget
			if st, err = d.api.ContainerStatPath(ctx, created.ID, target); err != nil {
				continue
			}
			candidate += " -> " + target
		}
		if st.Mode.IsRegular() && st.Mode.Perm()&0o111 != 0 {
			return backends.OK(name, fmt.Sprintf("docker.runner_binary is \"\"; the helper image %s has %s", ref, candidate))
		}
	}
	return backends.Fail(name, fmt.Sprintf("docker.runner_binary is \"\", and the helper image %s has no executable gitlab-runner on its PATH (%s)", ref, strings.Join(dirs, ":")),
		"set docker.runner_binary to the host's gitlab-runner (it is mounted into the helper), or use a helper image that has one")
}

// remove removes one of doctor's containers on a fresh context.
func (d *doctor) remove(id string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_ = d.api.ContainerRemove(ctx, id, container.RemoveOptions{Force: true, RemoveVolumes: true})
}

func (d *doctor) mtu(ctx context.Context) backends.Check {
	facts := backends.MTUFacts{ConfiguredMTU: d.cfg.NetworkMTU, NestedMTU: d.spec.NestedMTU, UplinkCompared: d.unixSocket() != ""}
	if !facts.UplinkCompared {
		facts.NoUplinkReason = "the engine is remote, so this host's uplink is not compared"
	}
	bridge, err := d.api.NetworkInspect(ctx, "bridge", network.InspectOptions{})
	switch {
	case cerrdefs.IsNotFound(err):
		facts.Network, facts.NetworkMTU = "(none: the daemon runs without its default bridge)", 1500
	case err != nil:
		return backends.Fail("mtu", fmt.Sprintf("inspect the default bridge network: %v", err), d.startFix())
	default:
		facts.Network = fmt.Sprintf("bridge (%s)", orDefault(bridge.Options["com.docker.network.bridge.name"], "docker0"))
		facts.NetworkMTU = 1500
		if v, ok := bridge.Options["com.docker.network.driver.mtu"]; ok {
			if mtu, err := strconv.Atoi(v); err == nil && mtu > 0 {
				facts.NetworkMTU = mtu
			}
		}
	}
	return backends.JudgeMTU("mtu", facts)
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// engineDisk checks the room left where the daemon keeps images and
// containers, when that is on this host.
func (d *doctor) engineDisk(context.Context) backends.Check {
	const name = "engine-disk"
	root := d.info.DockerRootDir
	if d.unixSocket() == "" || root == "" {
		return backends.OK(name, "the engine is remote: its disk is not measured from here")
	}
	var st syscall.Statfs_t
	if err := syscall.Statfs(root, &st); err != nil {
		return backends.OK(name, fmt.Sprintf("the daemon's data root %s cannot be measured from here (%v)", root, err))
	}
	return backends.JudgeSpace(name, "the daemon's data root "+root, int64(st.Bavail)*st.Bsize, int64(st.Blocks)*st.Bsize, st.Ffree, st.Files, root)
}

// ProbeSpec is a short-lived container that a doctor check runs.
type ProbeSpec struct {
	Runner, Backend, What string
	Config                *container.Config
	HostConfig            *container.HostConfig
}

// RunProbe creates, starts and waits for a short-lived container labelled
// as doctor's (see [backends.DoctorJob]), returns its exit code and output,
// and removes it. An error is trouble creating, starting or waiting for
// it; a failed start (often the container's privileges) is a
// [ProbeStartError].
func RunProbe(ctx context.Context, api DoctorAPI, spec ProbeSpec) (exitCode int, output string, err error) {
	cfg := *spec.Config
	cfg.Labels = backends.DoctorJob(spec.Runner, spec.Backend).Labels(backends.DoctorRole)
	created, err := api.ContainerCreate(ctx, &cfg, spec.HostConfig, nil, nil, backends.DoctorContainerName(spec.Runner, spec.What))
	if err != nil {
		return 0, "", fmt.Errorf("create: %w", err)
	}
	defer func() {
		rctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = api.ContainerRemove(rctx, created.ID, container.RemoveOptions{Force: true, RemoveVolumes: true})
	}()
	if err := api.ContainerStart(ctx, created.ID, container.StartOptions{}); err != nil {
		return 0, "", &ProbeStartError{Err: err}
	}
	waitCh, errCh := api.ContainerWait(ctx, created.ID, container.WaitConditionNotRunning)
	select {
	case w := <-waitCh:
		exitCode = int(w.StatusCode)
	case err := <-errCh:
		return 0, "", fmt.Errorf("wait: %w", err)
	case <-ctx.Done():
		return 0, probeLogs(api, created.ID), fmt.Errorf("wait: %w", ctx.Err())
	}
	return exitCode, probeLogs(api, created.ID), nil
}

// ProbeStartError is a probe container the engine created but could not
// start.
type ProbeStartError struct{ Err error }

func (e *ProbeStartError) Error() string { return "start: " + e.Err.Error() }
func (e *ProbeStartError) Unwrap() error { return e.Err }

// IsProbeStartError reports whether err is a probe's failed start.
func IsProbeStartError(err error) bool {
	var start *ProbeStartError
	return errors.As(err, &start)
}

func probeLogs(api DoctorAPI, id string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	rc, err := api.ContainerLogs(ctx, id, container.LogsOptions{ShowStdout: true, ShowStderr: true, Tail: "20"})
	if err != nil {
		return fmt.Sprintf("(logs unavailable: %v)", err)
	}
	defer rc.Close()
	var out bytes.Buffer
	_, _ = stdcopy.StdCopy(&out, &out, io.LimitReader(rc, 64<<10))
	return strings.TrimSpace(out.String())
}
