package backends

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"net"
	"os"
	"os/user"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/berthci/berth/config"
)

// Status is the verdict of one `berth doctor` check.
type Status string

// Check statuses. Only FAIL makes doctor exit non-zero.
const (
	// StatusOK: the check passed.
	StatusOK Status = "OK"
	// StatusWarn: jobs work, but something is likely to bite.
	StatusWarn Status = "WARN"
	// StatusFail: jobs on this backend fail (or the config does not load)
	// until the fix is applied.
	StatusFail Status = "FAIL"
	// StatusSkip: not checked, because a check it needs (the engine's
	// answer) failed.
	StatusSkip Status = "SKIP"
)

// Check is the result of one doctor check.
type Check struct {
	// Name identifies the check within its backend, e.g. "engine"; the
	// names are stable, for scripts reading `berth doctor --json`.
	Name   string
	Status Status
	// Detail says what was found.
	Detail string
	// Fix says what to do; set on WARN and FAIL.
	Fix string
}

// DoctorOptions are what a backend's checks get from `berth doctor`.
type DoctorOptions struct {
	// Credentials are the admin's registry logins (docker.auth_config),
	// with which registries are asked about images that are not present.
	Credentials []Credential
	// CheckTimeout bounds each check, so a dead or hung engine makes the
	// check fail instead of hanging doctor.
	CheckTimeout time.Duration
}

// Doctor is an optional capability: a backend that can check its engine
// and what its jobs need, for `berth doctor`.
type Doctor interface {
	// Doctor runs the backend's checks and returns every one of them, in a
	// fixed order, whatever fails: a check whose prerequisite failed is
	// StatusSkip. It honours ctx and bounds each check by
	// opts.CheckTimeout, so it returns even when the engine hangs. It
	// changes nothing: the short-lived containers its checks create carry
	// the labels of [DoctorJob] and are removed before it returns.
	Doctor(ctx context.Context, opts DoctorOptions) []Check
}

// NeededImage is an image a backend needs, for doctor's image checks.
type NeededImage struct {
	// Check is the check's name, e.g. "helper-image".
	Check string
	// Ref is the image reference.
	Ref string
	// Key is the config key that sets it, e.g. "docker.helper_image".
	Key string
	// Policies are the pull policies it is fetched with.
	Policies []string
	// Unused, when set, says why the backend does not need the image; the
	// check then passes with that detail.
	Unused string
}

// NeededJobImages are the images of [docker] that every backend's jobs
// need: the helper image and the default job image.
func NeededJobImages(cfg config.Docker) []NeededImage {
	helper := NeededImage{Check: "helper-image", Ref: cfg.HelperImage, Key: "docker.helper_image", Policies: []string{config.PullIfNotPresent}}
	if !cfg.UseHelper {
		helper.Unused = "not used for stages: docker.use_helper is false"
	}
	job := NeededImage{Check: "job-image", Ref: cfg.Image, Key: "docker.image", Policies: cfg.PullPolicy}
	if cfg.Image == "" {
		job.Unused = "docker.image is not set: a job without `image:` fails with a message asking for one"
	}
	return []NeededImage{helper, job}
}

// OnlyNever reports whether pull policies never pull.
func OnlyNever(policies []string) bool {
	for _, p := range policies {
		if p != config.PullNever {
			return false
		}
	}
	return len(policies) > 0
}

// SocketGuardUse says how the admin's config guards job sockets: whether
// some jobs get the guarding proxy and which settings give some jobs the
// raw socket.
func SocketGuardUse(cfg *config.Config, guard bool) (guarded bool, unguardedBy []string) {
	guarded = guard
	if !guard {
		unguardedBy = append(unguardedBy, "guard = false")
	}
	for _, r := range cfg.Policy.Rules {
		if r.SocketGuard == nil {
			continue
		}
		if *r.SocketGuard {
			guarded = true
		} else {
			unguardedBy = append(unguardedBy, fmt.Sprintf("policy rule %q", r.Name))
		}
	}
	return guarded, unguardedBy
}

// DoctorJobID is the job id on the labels of the short-lived containers
// that doctor's checks create, so that `berth gc` reaps one that a killed
// doctor left behind. GitLab job ids never come near it.
const DoctorJobID int64 = math.MaxInt64

// DoctorRole is the berth.role label of doctor's containers.
const DoctorRole = "doctor"

// DoctorJob is the job that doctor's containers are labelled with: the
// runner's, with [DoctorJobID], created now, expiring after a minute.
func DoctorJob(runner, backend string) *Job {
	return &Job{ID: DoctorJobID, Runner: runner, Backend: backend, ProjectPath: "berth-doctor", Created: time.Now(), Timeout: time.Minute}
}

// DoctorContainerName is a unique name for one of doctor's containers.
func DoctorContainerName(runner, what string) string {
	return fmt.Sprintf("berth-%s-doctor-%s-%d-%d", runner, what, os.Getpid(), time.Now().UnixNano()%1_000_000)
}

// OK, Warn, Fail and Skip make checks.
func OK(name, detail string) Check { return Check{Name: name, Status: StatusOK, Detail: detail} }

// Warn is a WARN check with its fix.
func Warn(name, detail, fix string) Check {
	return Check{Name: name, Status: StatusWarn, Detail: detail, Fix: fix}
}

// Fail is a FAIL check with its fix.
func Fail(name, detail, fix string) Check {
	return Check{Name: name, Status: StatusFail, Detail: detail, Fix: fix}
}

// Skip is a check that was not run, and why.
func Skip(name, why string) Check {
	return Check{Name: name, Status: StatusSkip, Detail: "not checked: " + why}
}

// RunCheck runs one check with its own deadline. A check that does not
// return by then (a library that ignores ctx) fails; its goroutine is left
// to finish on its own, since doctor exits soon after.
func RunCheck(ctx context.Context, timeout time.Duration, name string, check func(ctx context.Context) Check) Check {
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	done := make(chan Check, 1)
	go func() {
		defer func() {
			if r := recover(); r != nil {
				done <- Fail(name, fmt.Sprintf("the check crashed: %v", r), "report this as a berth bug")
			}
		}()
		done <- check(ctx)
	}()
	select {
	case c := <-done:
		if c.Status != StatusOK && ctx.Err() != nil && c.Status != StatusSkip {
			c.Detail += fmt.Sprintf(" (no answer within %s)", timeout)
		}
		return c
	case <-time.After(timeout + time.Second):
		return Fail(name, fmt.Sprintf("no answer within %s", timeout), HungFix("the engine", "systemctl restart docker, or the Podman service"))
	}
}

// HungFix is the fix for an engine that accepts connections but does not
// answer in time.
func HungFix(what, restart string) string {
	return fmt.Sprintf("%s accepts connections but does not answer: look at its log and restart it (%s), then run berth doctor again", what, restart)
}

// SocketCheck examines a unix socket berth uses: that it is a socket, its
// owner and mode, and whether this process can connect to it. what names
// it ("the Docker daemon's socket") and startFix says how to start what
// should listen on it.
func SocketCheck(name, path, what, startFix string) Check {
	fi, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return Fail(name, fmt.Sprintf("%s %s does not exist", what, path), startFix)
	}
	if err != nil {
		return Fail(name, fmt.Sprintf("%s %s: %v", what, path, err), fmt.Sprintf("run berth as a user that can reach %s, or as root", path))
	}
	if fi.Mode()&fs.ModeSocket == 0 {
		return Fail(name, fmt.Sprintf("%s %s is not a socket (mode %s)", what, path, fi.Mode()), startFix)
	}
	owner := describeOwner(fi)
	detail := fmt.Sprintf("%s %s, %s, mode %04o", what, path, owner, fi.Mode().Perm())
	conn, err := net.DialTimeout("unix", path, 3*time.Second)
	if err != nil {
		switch {
		case errors.Is(err, syscall.EACCES) || errors.Is(err, syscall.EPERM):
			return Fail(name, fmt.Sprintf("%s; %s cannot connect: permission denied", detail, Me()),
				fmt.Sprintf("run berth as root or as the socket's owner, or add its user to the socket's group (usermod -aG %s %s)", groupName(fi), myName()))
		case errors.Is(err, syscall.ECONNREFUSED):
			return Fail(name, detail+"; nothing listens on it (connection refused)", startFix)
		default:
			return Fail(name, fmt.Sprintf("%s; connect: %v", detail, err), startFix)
		}
	}
	conn.Close()
	detail += "; " + Me() + " can connect"
	if fi.Mode().Perm()&0o002 != 0 {
		return Warn(name, detail+"; it is writable by every local user", fmt.Sprintf("chmod o-w %s: whoever can write it controls the engine", path))
	}
	return OK(name, detail)
}

// Me describes the user berth runs as, e.g. "root (uid 0)".
func Me() string { return fmt.Sprintf("%s (uid %d)", myName(), os.Getuid()) }

func myName() string {
	if u, err := user.LookupId(strconv.Itoa(os.Getuid())); err == nil {
		return u.Username
	}
	return strconv.Itoa(os.Getuid())
}

// FileOwner returns the uid and gid of a file.
func FileOwner(fi fs.FileInfo) (uid, gid int, ok bool) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, 0, false
	}
	return int(st.Uid), int(st.Gid), true
}

func describeOwner(fi fs.FileInfo) string {
	uid, gid, ok := FileOwner(fi)
	if !ok {
		return "owner unknown"
	}
	name := strconv.Itoa(uid)
	if u, err := user.LookupId(name); err == nil {
		name = u.Username
	}
	return fmt.Sprintf("owner %s (uid %d), group %s (gid %d)", name, uid, groupName(fi), gid)
}

func groupName(fi fs.FileInfo) string {
	_, gid, ok := FileOwner(fi)
	if !ok {
		return "?"
	}
	if g, err := user.LookupGroupId(strconv.Itoa(gid)); err == nil {
		return g.Name
	}
	return strconv.Itoa(gid)
}

// RunnerBinaryCheck checks docker.runner_binary on the host: found and
// executable. It returns the resolved path ("" when none is configured or
// it is broken) for the engine-specific part of the check.
func RunnerBinaryCheck(name string, cfg config.Docker) (string, Check) {
	if cfg.RunnerBinary == "" {
		return "", Check{}
	}
	where := "the helper container"
	if !cfg.UseHelper {
		where = "the job container"
	}
	path, err := ResolveRunnerBinary(cfg.RunnerBinary)
	if err != nil {
		return "", Fail(name, err.Error(), "install gitlab-runner on the host and set docker.runner_binary to its full path, or set it to \"\" and use a helper image that has its own")
	}
	fi, err := os.Stat(path)
	if err != nil {
		return "", Fail(name, fmt.Sprintf("docker.runner_binary %s: %v", path, err), "fix docker.runner_binary in the berth config")
	}
	if !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 {
		return "", Fail(name, fmt.Sprintf("docker.runner_binary %s is not an executable file (mode %s)", path, fi.Mode()),
			fmt.Sprintf("chmod 0755 %s, or point docker.runner_binary at the gitlab-runner binary", path))
	}
	return path, OK(name, fmt.Sprintf("host %s (mode %04o), mounted at %s in %s", path, fi.Mode().Perm(), RunnerBinaryPath, where))
}

// UplinkMTU returns the interface of the host's IPv4 default route (the one
// with the lowest metric) and its MTU.
func UplinkMTU() (string, int, error) {
	f, err := os.Open("/proc/net/route")
	if err != nil {
		return "", 0, err
	}
	defer f.Close()
	best, bestMetric := "", math.MaxInt
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		// Iface Destination Gateway Flags RefCnt Use Metric Mask ...
		if len(fields) < 8 || fields[1] != "00000000" || fields[7] != "00000000" {
			continue
		}
		if metric, err := strconv.Atoi(fields[6]); err == nil && metric < bestMetric {
			best, bestMetric = fields[0], metric
		}
	}
	if best == "" {
		return "", 0, errors.New("no IPv4 default route")
	}
	iface, err := net.InterfaceByName(best)
	if err != nil {
		return "", 0, err
	}
	return best, iface.MTU, nil
}

// MTUFacts are what the MTU check of a backend judges.
type MTUFacts struct {
	// Network names the engine's default network, e.g. `bridge "docker0"`.
	Network string
	// NetworkMTU is its MTU.
	NetworkMTU int
	// ConfiguredMTU is docker.network_mtu (0: the engine's default).
	ConfiguredMTU int
	// NestedMTU is an MTU set for networks inside the job network
	// (dind.mtu); 0 for none.
	NestedMTU int
	// UplinkCompared says whether the host's uplink bounds the job
	// network's packets; false for a remote engine, or rootless networking
	// that terminates TCP on the host.
	UplinkCompared bool
	// NoUplinkReason says why the uplink is not compared.
	NoUplinkReason string
}

// JudgeMTU turns the MTU facts into the check: WARN when the MTU of job
// networks exceeds the host's uplink, when docker.network_mtu differs from
// the default network's, or when a nested network is larger than its job
// network.
func JudgeMTU(name string, f MTUFacts) Check {
	jobMTU := f.NetworkMTU
	detail := fmt.Sprintf("default network %s MTU %d", f.Network, f.NetworkMTU)
	if f.ConfiguredMTU > 0 {
		jobMTU = f.ConfiguredMTU
		detail += fmt.Sprintf("; job networks MTU %d (docker.network_mtu)", f.ConfiguredMTU)
	} else {
		detail += "; job networks get the same (docker.network_mtu = 0)"
	}
	var problems, fixes []string
	if f.UplinkCompared {
		iface, uplink, err := UplinkMTU()
		switch {
		case err != nil:
			detail += fmt.Sprintf("; host uplink unknown (%v)", err)
		default:
			detail += fmt.Sprintf("; host uplink %s MTU %d", iface, uplink)
			if jobMTU > uplink {
				problems = append(problems, fmt.Sprintf("job networks' MTU %d exceeds the uplink's %d: large packets to outside hosts are dropped (pulls and git fetches hang)", jobMTU, uplink))
				fixes = append(fixes, fmt.Sprintf("set docker.network_mtu = %d in the berth config", uplink))
			} else if f.NetworkMTU > uplink {
				problems = append(problems, fmt.Sprintf("the default network's MTU %d exceeds the uplink's %d", f.NetworkMTU, uplink))
				fixes = append(fixes, fmt.Sprintf("set the engine's default MTU to %d (dockerd: \"mtu\" in /etc/docker/daemon.json)", uplink))
			}
		}
	} else if f.NoUplinkReason != "" {
		detail += "; " + f.NoUplinkReason
	}
	if f.ConfiguredMTU > 0 && f.ConfiguredMTU != f.NetworkMTU {
		problems = append(problems, fmt.Sprintf("docker.network_mtu %d differs from the default network's %d", f.ConfiguredMTU, f.NetworkMTU))
		fixes = append(fixes, "give the engine's default network and docker.network_mtu the same MTU, the uplink's or less")
	}
	if f.NestedMTU > jobMTU {
		problems = append(problems, fmt.Sprintf("dind.mtu %d exceeds the job network's %d", f.NestedMTU, jobMTU))
		fixes = append(fixes, fmt.Sprintf("set dind.mtu to %d or less, or 0 for the job network's", jobMTU))
	}
	if len(problems) > 0 {
		return Warn(name, detail+"; "+strings.Join(problems, "; "), strings.Join(fixes, "; "))
	}
	return OK(name, detail)
}

// Disk space thresholds of the directory checks.
const (
	diskFailBytes   = 1 << 30
	diskWarnBytes   = 5 << 30
	diskWarnPercent = 10
)

// DirCheck checks a directory berth writes to (key names its config key):
// that it exists or can be created, and that its file system has room.
// Below 1 GiB or 1% of inodes free is a FAIL, below 5 GiB or 10% a WARN.
func DirCheck(name, key, dir string) Check {
	probe, exists := dir, true
	for {
		fi, err := os.Stat(probe)
		if err == nil {
			if !fi.IsDir() {
				return Fail(name, fmt.Sprintf("%s %s: %s is not a directory", key, dir, probe), fmt.Sprintf("remove %s or set %s to another directory", probe, key))
			}
			break
		}
		// ENOTDIR: a file above; walking up finds it.
		if !errors.Is(err, fs.ErrNotExist) && !errors.Is(err, syscall.ENOTDIR) {
			return Fail(name, fmt.Sprintf("%s %s: %v", key, dir, err), fmt.Sprintf("make %s reachable by %s, or set %s to another directory", probe, Me(), key))
		}
		exists = false
		parent := filepath.Dir(probe)
		if parent == probe {
			break
		}
		probe = parent
	}
	var detail string
	if exists {
		detail = fmt.Sprintf("%s %s exists", key, dir)
	} else {
		detail = fmt.Sprintf("%s %s does not exist yet (berth creates it under %s)", key, dir, probe)
	}
	if err := syscall.Access(probe, 2 /* W_OK */); err != nil {
		return Fail(name, fmt.Sprintf("%s, but %s cannot write %s: %v", detail, Me(), probe, err),
			fmt.Sprintf("mkdir -p %s && chown %s %s, or set %s to a directory berth can write", dir, myName(), dir, key))
	}
	var st syscall.Statfs_t
	if err := syscall.Statfs(probe, &st); err != nil {
		return Warn(name, fmt.Sprintf("%s; free space unknown: %v", detail, err), "check the file system by hand (df -h "+probe+")")
	}
	return JudgeSpace(name, detail, int64(st.Bavail)*st.Bsize, int64(st.Blocks)*st.Bsize, st.Ffree, st.Files, probe)
}

// JudgeSpace judges free bytes and inodes of the file system holding path.
func JudgeSpace(name, detail string, free, total int64, freeInodes, inodes uint64, path string) Check {
	pct := 100.0
	if total > 0 {
		pct = float64(free) * 100 / float64(total)
	}
	inodePct := 100.0
	if inodes > 0 {
		inodePct = float64(freeInodes) * 100 / float64(inodes)
	}
	detail = fmt.Sprintf("%s; %s free of %s (%.0f%%), %.0f%% of inodes free", detail, HumanBytes(free), HumanBytes(total), pct, inodePct)
	fix := fmt.Sprintf("free space on the file system of %s (old images: docker image prune; what killed jobs left: berth gc), or move the directory to a larger disk", path)
	switch {
	case free < diskFailBytes || inodePct < 1:
		return Fail(name, detail+": nearly full", fix)
	case free < diskWarnBytes || pct < diskWarnPercent || inodePct < diskWarnPercent:
		return Warn(name, detail+": getting full", fix)
	}
	return OK(name, detail)
}

// HumanBytes writes a size in binary units, e.g. "72.1 GiB".
func HumanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// PathDirs returns the absolute PATH directories of an image's environment
// (KEY=VALUE), or the usual ones when it sets no PATH.
func PathDirs(env []string) []string {
	value := "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "PATH="); ok {
			value = v
		}
	}
	var dirs []string
	for _, dir := range strings.Split(value, ":") {
		if path.IsAbs(dir) {
			dirs = append(dirs, dir)
		}
	}
	return dirs
}
