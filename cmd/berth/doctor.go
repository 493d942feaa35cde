package main

import (
	"context"
	"os"

	"github.com/spf13/cobra"

	"github.com/berthci/berth/config"
	"github.com/berthci/berth/driver"
)

// doctorCommand is `berth doctor`, which checks the config, the host and
// every backend the config allows. Its result goes to *result, for run to
// turn into the exit code: 0 without a FAIL, the build-failure code (1)
// with one.
func doctorCommand(ctx context.Context, result *error, configPath *string) *cobra.Command {
	var opts driver.DoctorOptions
	cmd := &cobra.Command{
		Use:   "doctor [--json]",
		Short: "Check the config, the host and every configured backend, and say what to fix",
		Long: `doctor checks that the berth config loads, then the host (the builds and cache
directories and their free disk, berth's own binary) and every backend that the
policy or a rule allows: the engine and its versions, API version, socket
permissions, rootless or rootful, the images jobs need (present, or what their
registry says), the gitlab-runner binary for the helper, the default network's
MTU, the engine's free disk, and for dind a short-lived container with the
sidecar's privileges. Each check says OK, WARN, FAIL or SKIP, with the fix on
WARN and FAIL lines. It exits 1 when a check FAILs.`,
		Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			opts.ConfigPath, opts.Explicit = config.ResolvePath(*configPath)
			*result = driver.Doctor(ctx, os.Stdout, opts)
			return nil
		},
	}
	cmd.Flags().BoolVar(&opts.JSON, "json", false, "print the report as JSON")
	cmd.Flags().DurationVar(&opts.CheckTimeout, "timeout", 0, "deadline of each check (default 10s)")
	return cmd
}
