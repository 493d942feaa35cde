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
// every stage container: the stage script arrives on stdin of the first
// shell found.
const DetectShell = `if [ -x /usr/local/bin/bash ]; then
	exec /usr/local/bin/bash 
elif [ -x /usr/bin/bash ]; then
	exec /usr/bin/bash 
elif [ -x /bin/bash ]; then
	exec /bin/bash 
elif [ -x /usr/local/bin/sh ]; then
	exec /usr/local/bin/sh 
elif [ -x /usr/bin/sh ]; then
	exec /usr/bin/sh 
elif [ -x /bin/sh ]; then
	exec /bin/sh 
elif [ -x /busybox/sh ]; then
	exec /busybox/sh 
else
	echo shell not found
	exit 1
fi

`

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
// set, else the running executable, with symlinks resolved so that it can
// be bind-mounted.
func SelfBinary(override, purpose string) (string, error) {
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
