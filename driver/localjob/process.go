package localjob

import (
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

// The exit codes exec asks of its stage commands, as gitlab-runner does.
const (
	buildFailureExitCode  = 1
	systemFailureExitCode = 2
)

// defaultGracefulKillTimeout is how long a stage command gets after SIGTERM
// before SIGKILL.
const defaultGracefulKillTimeout = 10 * time.Second

// protocolEnv are the variables the runner sets for a custom executor;
// exec sets its own and drops any it inherited.
var protocolEnv = map[string]bool{
	"BUILD_FAILURE_EXIT_CODE": true, "SYSTEM_FAILURE_EXIT_CODE": true, "BUILD_EXIT_CODE_FILE": true,
	"JOB_RESPONSE_FILE": true, "TMPDIR": true,
}

// hostEnv is the environment exec passes on to its stage commands: its own,
// without job variables or protocol values it may have inherited (when exec
// itself runs inside a job, say).
func hostEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		key, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(key, "CUSTOM_ENV_") || strings.HasPrefix(key, "BERTH_RESOLVED_") || protocolEnv[key] {
			continue
		}
		env = append(env, kv)
	}
	return env
}

// call runs one berth stage command the way gitlab-runner runs a custom
// executor's: a new process in its own process group, stdout and stderr to
// the job log, and on ctx's end SIGTERM to the group, then SIGKILL after
// grace. It returns the exit code, -1 when the process was killed by a
// signal; err is only for a command that could not start.
func call(ctx context.Context, binary string, args, env []string, stdout, stderr io.Writer, grace time.Duration) (int, error) {
	cmd := exec.Command(binary, args...)
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = stdout, stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return -1, err
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var err error
	select {
	case err = <-done:
	case <-ctx.Done():
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		select {
		case err = <-done:
		case <-time.After(grace):
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			err = <-done
		}
	}
	var exitErr *exec.ExitError
	switch {
	case err == nil:
		return 0, nil
	case errors.As(err, &exitErr):
		return exitErr.ExitCode(), nil
	}
	return -1, err
}
