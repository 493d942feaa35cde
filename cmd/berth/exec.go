package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/berthci/berth/driver"
	"github.com/berthci/berth/driver/localjob"
)

// execCommand is `berth exec`, which runs one job of a .gitlab-ci.yml on
// this machine through berth's own stage commands. Its outcome goes to
// *result, for run to map to the exit code: 0 when the job succeeded, the
// build failure code when the job failed, the system failure code when
// exec could not run it.
func execCommand(ctx context.Context, configPath, logFormat *string, result *error) *cobra.Command {
	var opts localjob.Options
	cmd := &cobra.Command{
		Use:   "exec [--backend NAME] [-f .gitlab-ci.yml] [--var KEY=VALUE]... JOB",
		Short: "Run one job of a .gitlab-ci.yml locally, through the stages gitlab-runner would drive",
		Long: `exec runs JOB of the .gitlab-ci.yml at the root of the git work tree you are in (or the
file -f names) on this machine, through the same backends and stage commands that
gitlab-runner drives: config, prepare, run for each stage, and cleanup, always.

The job gets the work tree's HEAD plus your uncommitted changes to tracked files;
untracked files are left out, and exec names them. image:, services:, variables:,
before_script:, script:, after_script:, default:, extends:, !reference, rules: and
inherit: work as in GitLab. Every other key that exec cannot honour is named in a
warning that says what exec did instead.

Caches stay in the berth config's cache directory, keyed by project and cache key,
for the next exec of the project. Artifacts are copied to
<work tree>/.berth-exec/artifacts/<job>/ (or --artifacts-dir), where later execs
of jobs that need them find them.

The backend is --backend, else the job's BERTH_BACKEND, within the berth config's
policy. Exit status: 0 when the job succeeded, 1 when it failed, 2 when exec could
not run it (a bad file, an unknown job, engine or berth config trouble).`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			if len(args) == 0 {
				return listJobs(opts.File)
			}
			self, err := os.Executable()
			if err != nil {
				return fmt.Errorf("find the berth executable: %w", err)
			}
			opts.Binary = self
			opts.Job = args[0]
			opts.Version = driver.Version
			opts.Stdout, opts.Stderr = os.Stdout, os.Stderr
			if *configPath != "" {
				abs, err := filepath.Abs(*configPath)
				if err != nil {
					return err
				}
				opts.Args = append(opts.Args, "--config", abs)
			}
			opts.Args = append(opts.Args, "--log-format", *logFormat)
			if opts.Dir, err = os.Getwd(); err != nil {
				return err
			}
			*result = localjob.Run(ctx, opts)
			return nil
		},
	}
	cmd.Flags().StringVarP(&opts.File, "file", "f", "", "the .gitlab-ci.yml (default: the one at the work tree's root)")
	cmd.Flags().StringVar(&opts.Backend, "backend", "", "the job's BERTH_BACKEND: socket, dind or podman (default: the job's, else the config's default)")
	cmd.Flags().StringArrayVar(&opts.Vars, "var", nil, "KEY=VALUE variable over the file's, as a pipeline variable (repeatable)")
	cmd.Flags().StringVar(&opts.ArtifactsDir, "artifacts-dir", "", "where each job's artifacts go, in a directory named after it (default: <work tree>/.berth-exec/artifacts)")
	return cmd
}

// listJobs is the error for `berth exec` without a job: it names the
// runnable ones.
func listJobs(file string) error {
	dir, err := os.Getwd()
	if err != nil {
		return err
	}
	if file == "" {
		tree, err := localjob.OpenWorkTree(context.Background(), dir)
		if err != nil {
			return fmt.Errorf("name the job to run: berth exec JOB (%v)", err)
		}
		file = filepath.Join(tree.Root, ".gitlab-ci.yml")
	}
	p, err := localjob.ParseFile(file)
	if err != nil {
		return fmt.Errorf("name the job to run: berth exec JOB (%v)", err)
	}
	return fmt.Errorf("name the job to run: berth exec JOB; runnable jobs of %s: %s", file, joinOrNone(p.Jobs()))
}

func joinOrNone(names []string) string {
	if len(names) == 0 {
		return "none"
	}
	out := names[0]
	for _, n := range names[1:] {
		out += ", " + n
	}
	return out
}
