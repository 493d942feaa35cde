//go:build remote

package podman

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/containers/podman/v5/libpod/define"
	"github.com/containers/podman/v5/pkg/bindings"
	"github.com/containers/podman/v5/pkg/bindings/containers"
	"github.com/containers/podman/v5/pkg/bindings/images"
	"github.com/containers/podman/v5/pkg/bindings/network"
	"github.com/containers/podman/v5/pkg/bindings/system"
	"github.com/containers/podman/v5/pkg/domain/entities/types"
	"github.com/containers/podman/v5/pkg/specgen"

	"github.com/berthci/berth/backends"
	"github.com/berthci/berth/config"
)

// minLibpodMajor is the oldest Podman whose API the v5 bindings speak.
const minLibpodMajor = 4

// defaultNetwork is Podman's default network.
const defaultNetwork = "podman"

// Doctor checks the rootless Podman service for podman jobs: the service
// and its versions, its socket, rootless mode, the images, the
// gitlab-runner binary, the default network's MTU, free disk, and whether
// the service's user can reach the builds and cache directories. See
// [backends.Doctor].
func (b *Backend) Doctor(ctx context.Context, opts backends.DoctorOptions) []backends.Check {
	d := &doctor{b: b, opts: opts}
	run := func(name string, check func(ctx context.Context) backends.Check) backends.Check {
		return backends.RunCheck(ctx, opts.CheckTimeout, name, check)
	}
	checks := []backends.Check{run("engine", d.engine)}
	reachable := checks[0].Status == backends.StatusOK
	needEngine := func(name string, check func(ctx context.Context) backends.Check) backends.Check {
		if !reachable {
			return backends.Skip(name, "the Podman service does not answer (see the engine check)")
		}
		return run(name, func(ctx context.Context) backends.Check { return check(withConn{ctx, d.conn}) })
	}
	checks = append(checks, needEngine("api-version", d.apiVersion))
	checks = append(checks, run("socket", d.socket))
	checks = append(checks, needEngine("rootless", d.rootless))
	guarded, _ := backends.SocketGuardUse(b.full, b.podman.Guard)
	proxy := backends.NeededImage{Check: "proxy-image", Ref: b.cfg.HelperImage, Key: "docker.helper_image (the guard's image)", Policies: []string{config.PullIfNotPresent}}
	switch {
	case !b.podman.JobSocket:
		proxy.Unused = "not used: [podman] job_socket is false"
	case !guarded:
		proxy.Unused = "not used: [podman] guard is false and no policy rule turns it on"
	}
	for _, img := range append(backends.NeededJobImages(b.cfg), proxy) {
		checks = append(checks, needEngine(img.Check, func(ctx context.Context) backends.Check { return d.image(ctx, img) }))
	}
	if b.cfg.RunnerBinary != "" {
		checks = append(checks, run("runner-binary", d.runnerBinary))
	} else {
		checks = append(checks, needEngine("runner-binary", d.runnerBinary))
	}
	checks = append(checks, needEngine("mtu", d.mtu))
	checks = append(checks, needEngine("engine-disk", d.engineDisk))
	checks = append(checks, run("dir-access", d.dirAccess))
	checks = append(checks, run("nested", d.nested))
	return checks
}

type doctor struct {
	b    *Backend
	opts backends.DoctorOptions
	// conn and info come from the engine check.
	conn context.Context
	info *define.Info
}

// startFix says how to get the service running.
func (d *doctor) startFix() string {
	owner := "the runner user"
	if fi, err := os.Stat(filepath.Dir(d.b.socketPath)); err == nil {
		if uid, _, ok := backends.FileOwner(fi); ok && uid != 0 {
			owner = fmt.Sprintf("uid %d", uid)
		}
	}
	return fmt.Sprintf("start the rootless Podman service as %s: systemctl --user enable --now podman.socket (with loginctl enable-linger for that user), or podman system service --time=0 unix://%s; or set [podman] socket in the berth config",
		owner, d.b.socketPath)
}

func (d *doctor) engine(ctx context.Context) backends.Check {
	conn, err := bindings.NewConnection(ctx, "unix://"+d.b.socketPath)
	if errors.Is(err, context.DeadlineExceeded) {
		return backends.Fail("engine", fmt.Sprintf("connect to Podman at %s: %v", d.b.socketPath, err),
			backends.HungFix("the Podman service", "systemctl --user restart podman.socket podman.service as its user"))
	}
	if err != nil {
		return backends.Fail("engine", fmt.Sprintf("connect to Podman at %s: %v", d.b.socketPath, err), d.startFix())
	}
	info, err := system.Info(withConn{ctx, conn}, nil)
	if err != nil {
		return backends.Fail("engine", fmt.Sprintf("Podman at %s answers its ping but not its info: %v", d.b.socketPath, err), d.startFix())
	}
	d.conn, d.info = conn, info
	h := info.Host
	distro := strings.TrimSpace(h.Distribution.Distribution + " " + h.Distribution.Version)
	if h.Distribution.Codename != "" {
		distro += " (" + h.Distribution.Codename + ")"
	}
	return backends.OK("engine", fmt.Sprintf("Podman %s at %s on %s, kernel %s, %s/%s, runtime %s, cgroup %s (%s), network %s, storage %s",
		info.Version.Version, d.b.socketPath, distro, h.Kernel, h.OS, h.Arch, h.OCIRuntime.Name, h.CgroupsVersion, h.CgroupManager, h.NetworkBackend, info.Store.GraphDriverName))
}

func (d *doctor) apiVersion(ctx context.Context) backends.Check {
	libpod := bindings.ServiceVersion(d.conn)
	compat := "unknown"
	if c, err := bindings.GetClient(ctx); err == nil {
		if resp, err := c.DoRequest(ctx, nil, http.MethodGet, "/_ping", nil, nil); err == nil {
			resp.Body.Close()
			if v := resp.Header.Get("API-Version"); v != "" {
				compat = v
			}
		}
	}
	detail := fmt.Sprintf("libpod API %s (berth's bindings need %d.0.0 or later); Docker-compatible API %s (what the jobs' docker CLI talks to)", libpod, minLibpodMajor, compat)
	if libpod.Major < minLibpodMajor {
		return backends.Fail("api-version", detail, fmt.Sprintf("upgrade Podman to %d.0 or later (Debian 12 has 4.3.1)", minLibpodMajor))
	}
	return backends.OK("api-version", detail)
}

func (d *doctor) socket(context.Context) backends.Check {
	check := backends.SocketCheck("socket", d.b.socketPath, "the Podman service's socket", d.startFix())
	if check.Status == backends.StatusFail {
		return check
	}
	// berth gives each job's directories to the socket's owner, which only
	// root can; otherwise berth must be that user.
	fi, err := os.Stat(d.b.socketPath)
	if err != nil {
		return check
	}
	uid, _, _ := backends.FileOwner(fi)
	if me := os.Getuid(); me != 0 && me != uid {
		return backends.Fail("socket", fmt.Sprintf("%s; but berth runs as %s, neither root nor the socket's owner (uid %d), so the service's containers cannot write the job directories berth makes", check.Detail, backends.Me(), uid),
			fmt.Sprintf("run gitlab-runner and berth as uid %d (the service's user), or as root", uid))
	}
	return check
}

func (d *doctor) rootless(context.Context) backends.Check {
	h := d.info.Host
	if !h.Security.Rootless {
		detail := fmt.Sprintf("the service at %s runs as root", d.b.socketPath)
		if d.b.podman.RequireRootless {
			return backends.Fail("rootless", detail+" and [podman] require_rootless is true",
				"point [podman] socket at a rootless service: systemctl --user enable --now podman.socket as the runner user, and loginctl enable-linger for it")
		}
		return backends.Warn("rootless", detail+" ([podman] require_rootless = false): its containers' root is the host's root",
			"run the service rootless as the runner user and set [podman] require_rootless = true; berth's podman backend is built for rootless")
	}
	detail := "rootless"
	if fi, err := os.Stat(d.b.socketPath); err == nil {
		if uid, _, ok := backends.FileOwner(fi); ok {
			detail += fmt.Sprintf(" as uid %d (the socket's owner)", uid)
		}
	}
	var maps []string
	for _, m := range h.IDMappings.UIDMap {
		if m.Size == 1 {
			maps = append(maps, fmt.Sprintf("%d to host %d", m.ContainerID, m.HostID))
			continue
		}
		maps = append(maps, fmt.Sprintf("%d-%d to host %d-%d", m.ContainerID, m.ContainerID+m.Size-1, m.HostID, m.HostID+m.Size-1))
	}
	if len(maps) > 0 {
		detail += "; container uids " + strings.Join(maps, ", ")
	}
	if len(h.IDMappings.UIDMap) < 2 {
		return backends.Warn("rootless", detail+"; no subordinate uid range: images with files of other users fail to unpack",
			"give the service's user a range in /etc/subuid and /etc/subgid (usermod --add-subuids 100000-165535 --add-subgids 100000-165535 USER), then podman system migrate as that user")
	}
	return backends.OK("rootless", detail)
}

func (d *doctor) image(ctx context.Context, img backends.NeededImage) backends.Check {
	if img.Unused != "" {
		return backends.OK(img.Check, img.Unused)
	}
	exists, err := images.Exists(ctx, img.Ref, nil)
	if err != nil {
		return backends.Fail(img.Check, fmt.Sprintf("look up %s %s: %v", img.Key, img.Ref, err), d.startFix())
	}
	if exists {
		detail := fmt.Sprintf("%s %s is in the service user's store", img.Key, img.Ref)
		if inspect, err := images.GetImage(ctx, img.Ref, nil); err == nil {
			detail += fmt.Sprintf(" (%s, %s)", shortID(inspect.ID), backends.HumanBytes(inspect.Size))
		}
		return backends.OK(img.Check, detail)
	}
	if backends.OnlyNever(img.Policies) {
		return backends.Fail(img.Check, fmt.Sprintf("%s %s is not in the service user's store and its pull policy is \"never\"", img.Key, img.Ref),
			fmt.Sprintf("podman pull (or podman load) %s as the service's user, or allow another pull policy", img.Ref))
	}
	found, err := d.registryHas(ctx, img.Ref)
	if err != nil {
		return backends.Fail(img.Check, fmt.Sprintf("%s %s is not in the service user's store, and its registry does not give it: %v", img.Key, img.Ref, err),
			fmt.Sprintf("check the name in %s; make the registry reachable (and in the user's registries.conf) and put its login in docker.auth_config; or podman pull/load it as the service's user", img.Key))
	}
	return backends.OK(img.Check, fmt.Sprintf("%s %s is not in the service user's store; %s, so the first job that needs it pulls it", img.Key, img.Ref, found))
}

// registryHas asks the image's registry for the tags of its repository,
// which needs no pull: Podman has no distribution inspect.
func (d *doctor) registryHas(ctx context.Context, ref string) (string, error) {
	repo, tag := splitRef(ref)
	c, err := bindings.GetClient(ctx)
	if err != nil {
		return "", err
	}
	header := http.Header{}
	job := backends.Job{Credentials: d.opts.Credentials}
	if cred, ok := job.CredentialFor(ref); ok {
		// X-Registry-Config carries logins by registry, which Podman's
		// search honours (its X-Registry-Auth needs a server address the
		// bindings do not send).
		doc, err := json.Marshal(map[string]map[string]string{backends.RegistryOf(ref): {"username": cred.Username, "password": cred.Password}})
		if err != nil {
			return "", err
		}
		header.Set("X-Registry-Config", base64.URLEncoding.EncodeToString(doc))
	}
	params := url.Values{"term": {repo}, "listTags": {"true"}, "limit": {"1000"}}
	resp, err := c.DoRequest(ctx, nil, http.MethodGet, "/images/search", params, header)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var results []types.ImageSearchReport
	if err := resp.Process(&results); err != nil {
		return "", err
	}
	if tag == "" {
		return fmt.Sprintf("its registry answers for %s (%d tags)", repo, len(results)), nil
	}
	for _, r := range results {
		if r.Tag == tag {
			return fmt.Sprintf("its registry lists tag %s of %s", tag, r.Name), nil
		}
	}
	return "", fmt.Errorf("the registry lists %d tags of %s, none of them %q", len(results), repo, tag)
}

// splitRef splits an image reference as written into its repository and
// tag ("latest" when none); a digest reference has no tag to look for.
func splitRef(ref string) (repo, tag string) {
	if name, _, ok := strings.Cut(ref, "@"); ok {
		return name, ""
	}
	slash := strings.LastIndexByte(ref, '/')
	if colon := strings.LastIndexByte(ref, ':'); colon > slash {
		return ref[:colon], ref[colon+1:]
	}
	return ref, "latest"
}

// runnerBinary checks the gitlab-runner binary that cache and artifact
// stages call: docker.runner_binary on the host, readable by the
// service's user, else the helper image's.
func (d *doctor) runnerBinary(ctx context.Context) backends.Check {
	const name = "runner-binary"
	cfg := d.b.cfg
	if cfg.RunnerBinary != "" {
		path, check := backends.RunnerBinaryCheck(name, cfg)
		if check.Status != backends.StatusOK {
			return check
		}
		if uid, gid, ok := d.serviceUser(); ok && uid != 0 {
			if blocker := unreachable(path, uid, gid, 0o5); blocker != "" {
				return backends.Fail(name, fmt.Sprintf("%s; but the service's user (uid %d) cannot read and run it: %s", check.Detail, uid, blocker),
					fmt.Sprintf("chmod o+rx %s (and o+x on its directories), or install gitlab-runner where uid %d can read it", path, uid))
			}
		}
		return check
	}
	if !cfg.UseHelper {
		return backends.Warn(name, "docker.runner_binary is \"\" and docker.use_helper is false: cache and artifact stages run gitlab-runner from each job's image",
			"set docker.runner_binary to the host's gitlab-runner, or make sure every job image has one")
	}
	ref := cfg.HelperImage
	exists, err := images.Exists(ctx, ref, nil)
	if err != nil {
		return backends.Fail(name, fmt.Sprintf("look up the helper image %s: %v", ref, err), d.startFix())
	}
	if !exists {
		return backends.Warn(name, fmt.Sprintf("docker.runner_binary is \"\", and the helper image %s is not in the service user's store to look into", ref),
			fmt.Sprintf("podman pull %s as the service's user and run berth doctor again, or set docker.runner_binary to the host's gitlab-runner", ref))
	}
	inspect, err := images.GetImage(ctx, ref, nil)
	if err != nil {
		return backends.Fail(name, fmt.Sprintf("inspect the helper image %s: %v", ref, err), d.startFix())
	}
	s := specgen.NewSpecGenerator(ref, false)
	s.Name = backends.DoctorContainerName(d.b.full.RunnerName, "helper")
	s.Labels = backends.DoctorJob(d.b.full.RunnerName, Name).Labels(backends.DoctorRole)
	s.NetNS = specgen.Namespace{NSMode: specgen.NoNetwork}
	s.Entrypoint = []string{"gitlab-runner"}
	if _, err := containers.CreateWithSpec(ctx, s, nil); err != nil {
		return backends.Fail(name, fmt.Sprintf("create a container from the helper image %s to look into it: %v", ref, err), d.startFix())
	}
	defer d.remove(s.Name)
	var env []string
	if inspect.Config != nil {
		env = inspect.Config.Env
	}
	dirs := backends.PathDirs(env)
	for _, dir := range dirs {
		candidate := path.Join(dir, "gitlab-runner")
		st, err := containers.Stat(ctx, s.Name, candidate)
		if err != nil || st == nil {
			continue
		}
		if st.Mode&fs.ModeSymlink != 0 && st.LinkTarget != "" {
			target := st.LinkTarget
			if st, err = containers.Stat(ctx, s.Name, target); err != nil || st == nil {
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
func (d *doctor) remove(name string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, _ = containers.Remove(withConn{ctx, d.conn}, name, new(containers.RemoveOptions).WithForce(true).WithVolumes(true).WithTimeout(0))
}

func (d *doctor) mtu(ctx context.Context) backends.Check {
	facts := backends.MTUFacts{ConfiguredMTU: d.b.cfg.NetworkMTU, UplinkCompared: !d.info.Host.Security.Rootless}
	if !facts.UplinkCompared {
		facts.NoUplinkReason = "rootless networking (slirp4netns or pasta) relays the job networks' traffic through the host's own TCP/IP stack, so the uplink's MTU does not limit them"
	}
	net, err := network.Inspect(ctx, defaultNetwork, nil)
	switch {
	case isNotFound(err):
		facts.Network, facts.NetworkMTU = fmt.Sprintf("(none named %q)", defaultNetwork), 1500
	case err != nil:
		return backends.Fail("mtu", fmt.Sprintf("inspect Podman's default network %q: %v", defaultNetwork, err), d.startFix())
	default:
		facts.Network = fmt.Sprintf("%q (%s %s)", net.Name, net.Driver, net.NetworkInterface)
		facts.NetworkMTU = 1500
		if v, ok := net.Options["mtu"]; ok {
			if _, err := fmt.Sscan(v, &facts.NetworkMTU); err != nil {
				facts.NetworkMTU = 1500
			}
		}
	}
	return backends.JudgeMTU("mtu", facts)
}

func (d *doctor) engineDisk(context.Context) backends.Check {
	const name = "engine-disk"
	root := d.info.Store.GraphRoot
	var st syscall.Statfs_t
	if err := syscall.Statfs(root, &st); err != nil {
		return backends.OK(name, fmt.Sprintf("the service's image store %s cannot be measured from here (%v)", root, err))
	}
	return backends.JudgeSpace(name, "the service's image store "+root, int64(st.Bavail)*st.Bsize, int64(st.Blocks)*st.Bsize, st.Ffree, st.Files, root)
}

// serviceUser is the owner of the service's socket.
func (d *doctor) serviceUser() (uid, gid int, ok bool) {
	fi, err := os.Stat(d.b.socketPath)
	if err != nil {
		return 0, 0, false
	}
	return backends.FileOwner(fi)
}

// dirAccess checks that the service's user can reach the builds and cache
// directories: berth gives it each job's own, but their parents must let
// it through.
func (d *doctor) dirAccess(context.Context) backends.Check {
	const name = "dir-access"
	uid, gid, ok := d.serviceUser()
	if !ok {
		return backends.Skip(name, "the service's socket is missing (see the socket check)")
	}
	if uid == 0 {
		return backends.OK(name, "the service runs as root, which reaches every directory")
	}
	var reached []string
	for _, dir := range []struct{ key, path string }{{"builds_dir", d.b.full.BuildsDir}, {"cache_dir", d.b.full.CacheDir}} {
		if blocker := unreachable(dir.path, uid, gid, 0); blocker != "" {
			return backends.Fail(name, fmt.Sprintf("the service's user (uid %d) cannot reach %s %s: %s", uid, dir.key, dir.path, blocker),
				fmt.Sprintf("chmod o+x on the directories above %s, or set %s to a directory uid %d can reach", dir.path, dir.key, uid))
		}
		reached = append(reached, dir.key+" "+dir.path)
	}
	// The guarding proxy runs berth's own binary in the service's
	// containers.
	if guarded, _ := backends.SocketGuardUse(d.b.full, d.b.podman.Guard); guarded && d.b.podman.JobSocket {
		self, err := backends.SelfBinary(d.b.ProxyBinary, d.b.cfg.BerthBinary, "the guarded Podman socket")
		if err != nil {
			return backends.Fail(name, err.Error(), "run berth from a regular file")
		}
		if blocker := unreachable(self, uid, gid, 0o5); blocker != "" {
			return backends.Fail(name, fmt.Sprintf("the service's user (uid %d) cannot read and run berth's binary %s, which the guarding proxy runs: %s", uid, self, blocker),
				fmt.Sprintf("install berth where uid %d can read it (e.g. /usr/local/bin, mode 0755)", uid))
		}
		reached = append(reached, "berth's binary "+self)
	}
	return backends.OK(name, fmt.Sprintf("the service's user (uid %d) can reach %s; berth gives it each job's own directories", uid, strings.Join(reached, " and ")))
}

// unreachable returns why uid (with primary group gid) cannot reach p: a
// directory above it it may not search, or p itself lacking the want bits
// (0o5 read and execute; 0 for none). Directories that do not exist yet
// are skipped: berth creates them searchable. "" means reachable.
func unreachable(p string, uid, gid int, want os.FileMode) string {
	allowed := func(fi os.FileInfo, bits os.FileMode) bool {
		fuid, fgid, ok := backends.FileOwner(fi)
		if !ok {
			return true
		}
		perm := fi.Mode().Perm()
		switch {
		case fuid == uid:
			return perm>>6&bits == bits
		case fgid == gid:
			return perm>>3&bits == bits
		}
		return perm&bits == bits
	}
	if want != 0 {
		if fi, err := os.Stat(p); err == nil && !allowed(fi, want) {
			return fmt.Sprintf("%s is mode %04o", p, fi.Mode().Perm())
		}
	}
	for dir := filepath.Dir(p); ; dir = filepath.Dir(dir) {
		if fi, err := os.Stat(dir); err == nil && fi.IsDir() && !allowed(fi, 0o1) {
			return fmt.Sprintf("%s is mode %04o, owner uid %d", dir, fi.Mode().Perm(), ownerUID(fi))
		}
		if dir == "/" || dir == "." {
			break
		}
	}
	if want == 0 {
		if fi, err := os.Stat(p); err == nil && fi.IsDir() && !allowed(fi, 0o1) {
			return fmt.Sprintf("%s is mode %04o, owner uid %d", p, fi.Mode().Perm(), ownerUID(fi))
		}
	}
	return ""
}

func ownerUID(fi os.FileInfo) int {
	uid, _, _ := backends.FileOwner(fi)
	return uid
}

// nested checks what [podman] nested needs on the host: /dev/fuse.
func (d *doctor) nested(context.Context) backends.Check {
	const name = "nested"
	if !d.b.podman.Nested {
		return backends.OK(name, "[podman] nested is false: job containers get no extra privileges")
	}
	fi, err := os.Stat("/dev/fuse")
	if err != nil || fi.Mode()&fs.ModeDevice == 0 {
		return backends.Fail(name, "[podman] nested is true but the host has no /dev/fuse for the inner podman's fuse-overlayfs",
			"modprobe fuse (and add fuse to /etc/modules), or set [podman] nested = false")
	}
	return backends.OK(name, "[podman] nested is true; /dev/fuse is there for the inner podman")
}
