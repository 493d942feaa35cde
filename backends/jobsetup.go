package backends

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// RunnerBinaryPath is where the gitlab-runner binary is mounted, ahead of
// any copy the image has on PATH.
const RunnerBinaryPath = "/usr/local/bin/gitlab-runner"

// DetectShell is the docker executor's shell detection, the command of
// every stage container in attach mode: the stage script arrives on stdin
// of the first shell found, which is the container's PID 1.
var DetectShell = detectShell("exec $s ")

// StageExec is the command of each stage's exec in exec mode: the stage
// script arrives on stdin of the shell DetectShell would pick. When that
// shell exits, every process the stage left is killed, as they die with
// an attached stage container's PID 1.
var StageExec = detectShell(`"$s"; rc=$?; kill -KILL -1 2>/dev/null; exit $rc`)

// StageKeepalive is the command of a stage container in exec mode: it idles
// as PID 1 while the stages run as execs. On SIGTERM (a canceled stage's
// stop) it passes the signal to every process in the container and waits
// for them, until the stop's grace ends in SIGKILL. Without a `sleep` in
// the image it idles on its stdin, which is kept open.
const StageKeepalive = `trap 'kill -TERM -1 2>/dev/null; wait; while kill -0 -1 2>/dev/null; do sleep 0.1 2>/dev/null || sleep 1; done; exit 0' TERM
while :; do sleep 3600 & wait $!; [ $? = 127 ] && break; done
while :; do read -r _ || sleep 1; done
`

// stageShells are the shells the docker executor looks for, in order.
var stageShells = []string{"/usr/local/bin/bash", "/usr/bin/bash", "/bin/bash", "/usr/local/bin/sh", "/usr/bin/sh", "/bin/sh", "/busybox/sh"}

// detectShell sets $s to the first of stageShells present and runs then.
func detectShell(then string) string {
	var b strings.Builder
	for i, sh := range stageShells {
		kw := "elif"
		if i == 0 {
			kw = "if"
		}
		fmt.Fprintf(&b, "%s [ -x %s ]; then\n\ts=%s\n", kw, sh, sh)
	}
	b.WriteString("else\n\techo shell not found\n\texit 1\nfi\n")
	b.WriteString(then + "\n")
	return b.String()
}

// Stage modes: how stage scripts reach a job's containers.
const (
	// StageModeExec starts each stage container once, in prepare, with
	// StageKeepalive, and runs every stage as an exec: one round trip
	// instead of a container start per stage.
	StageModeExec = "exec"
	// StageModeAttach starts the stopped container once per stage with the
	// script on its stdin, exactly as the docker executor does. Images
	// with an entrypoint always run this way: their entrypoint must wrap
	// every stage's shell.
	StageModeAttach = "attach"
)

// LabelStageMode records a stage container's mode, for run.
const LabelStageMode = "berth.stage-mode"

// StageMode is the mode of a stage container: exec when the admin allows
// it, sets no ulimits (an exec'd process gets the engine's limits, not the
// container's) and the container's effective entrypoint (the job's
// override, else the image's) is empty.
func StageMode(configured string, ulimits bool, override, imageEntrypoint []string) string {
	if configured != StageModeExec || ulimits {
		return StageModeAttach
	}
	effective := imageEntrypoint
	if override != nil {
		effective = override
	}
	for _, arg := range effective {
		if arg != "" {
			return StageModeAttach
		}
	}
	return StageModeExec
}

// ResolveRunnerBinary resolves the admin's docker.runner_binary (a path, or
// a name looked up in the host's PATH) to the real file to mount, or "" for
// none.
func ResolveRunnerBinary(name string) (string, error) {
	if name == "" {
		return "", nil
	}
	path := name
	if !strings.Contains(name, "/") {
		found, err := exec.LookPath(name)
		if err != nil {
			return "", fmt.Errorf("docker.runner_binary %q is not on the host's PATH: install gitlab-runner, set runner_binary to its full path, or set it to \"\" when the helper image has its own", name)
		}
		path = found
	}
	path, err := filepath.EvalSymlinks(path)
	if err != nil {
		return "", fmt.Errorf("docker.runner_binary %q: %w; fix the path in the berth config", name, err)
	}
	return path, nil
}

// HealthPorts are the TCP ports a service may listen on: HEALTHCHECK_TCP_PORT
// when the service's variables set it, else the ports the image exposes
// ("8080/tcp" form), at most 20, as with the docker executor.
func HealthPorts(svc Service, exposed []string) []int {
	for i := len(svc.Env) - 1; i >= 0; i-- {
		key, v, _ := strings.Cut(svc.Env[i], "=")
		if strings.EqualFold(key, "HEALTHCHECK_TCP_PORT") {
			if port, err := strconv.Atoi(v); err == nil && port > 0 && port < 65536 {
				return []int{port}
			}
		}
	}
	var ports []int
	for _, p := range exposed {
		number, proto, _ := strings.Cut(p, "/")
		if proto != "" && proto != "tcp" {
			continue
		}
		if port, err := strconv.Atoi(number); err == nil && port > 0 && port < 65536 {
			ports = append(ports, port)
		}
	}
	sort.Ints(ports)
	if len(ports) > 20 {
		ports = ports[:20]
	}
	return ports
}

// SelfBinary returns the static berth binary that berth's own helper
// containers (the guarding proxy, the DinD DNS relay) run: override when
// set, else the admin's hostPath ([docker] berth_binary) as it is, else
// the running executable, with symlinks resolved so that it can be
// bind-mounted.
func SelfBinary(override, hostPath, purpose string) (string, error) {
	if override == "" && hostPath != "" {
		// A path on the engine's host, which berth may not see itself.
		return hostPath, nil
	}
	self, err := override, error(nil)
	if self == "" {
		self, err = os.Executable()
	}
	if err == nil {
		self, err = filepath.EvalSymlinks(self)
	}
	if err != nil {
		return "", fmt.Errorf("find berth's own binary for %s: %w", purpose, err)
	}
	return self, nil
}
