package driver

import (
	"fmt"
	"strconv"
)

// ExitCodes are the exit codes the runner asks for.
type ExitCodes struct {
	Build  int
	System int
	// BuildExitCodeFile is where the user script's own exit code goes.
	BuildExitCodeFile string
}

// ExitCodesFromEnv reads BUILD_FAILURE_EXIT_CODE, SYSTEM_FAILURE_EXIT_CODE
// and BUILD_EXIT_CODE_FILE. Outside the runner (berth version, policy) they
// default to 1 and 2; a set but invalid value is an error.
func ExitCodesFromEnv(env Env) (ExitCodes, error) {
	codes := ExitCodes{Build: 1, System: 2}
	for _, v := range []struct {
		key string
		dst *int
	}{{"BUILD_FAILURE_EXIT_CODE", &codes.Build}, {"SYSTEM_FAILURE_EXIT_CODE", &codes.System}} {
		raw, ok := env(v.key)
		if !ok || raw == "" {
			continue
		}
		n, err := strconv.Atoi(raw)
		if err != nil || n <= 0 || n > 255 {
			return codes, fmt.Errorf("%s=%q is not an exit code from 1 to 255", v.key, raw)
		}
		*v.dst = n
	}
	codes.BuildExitCodeFile, _ = env("BUILD_EXIT_CODE_FILE")
	return codes, nil
}
