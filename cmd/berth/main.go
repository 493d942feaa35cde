// Command berth is a GitLab Runner custom executor driver that runs each job
// in containers through a backend: dind, socket or podman.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/docker/go-units"
	"github.com/sirupsen/logrus"
	"github.com/spf13/cobra"

	"github.com/berthci/berth/backends/dind"
	"github.com/berthci/berth/backends/dockerproxy"
	_ "github.com/berthci/berth/backends/podman"
	_ "github.com/berthci/berth/backends/socket"
	"github.com/berthci/berth/config"
	"github.com/berthci/berth/driver"
	"github.com/berthci/berth/internal/earlysignal"
)

func main() {
	// The signal handler is installed before the engine clients'
	// packages initialise (see package earlysignal).
	ctx, stop := earlysignal.Context(context.Background())
	code := run(ctx, os.Args[1:])
	stop()
	os.Exit(code)
}

// run executes the command line and decides the exit code; no other place
// in berth does.
func run(ctx context.Context, args []string) int {
	env := driver.Env(os.LookupEnv)
	codes, codesErr := driver.ExitCodesFromEnv(env)

	var (
		configPath string
		logFormat  string
		stageErr   error
	)
	// The default logger serves until the flags are parsed, and for help.
	log, _ := driver.NewLogger(os.Stderr, "text")
	// newDriver loads the config and builds the driver for a stage command.
	newDriver := func() (*driver.Driver, error) {
		path, explicit := config.ResolvePath(configPath)
		cfg, err := config.Load(path, explicit)
		if err != nil {
			return nil, &driver.Error{Class: driver.ErrSystem, Err: fmt.Errorf("berth config: %w", err)}
		}
		return &driver.Driver{Config: cfg, Env: env, Log: log, Stdout: os.Stdout, Stderr: os.Stderr}, nil
	}
	stage := func(fn func(d *driver.Driver) error) func(*cobra.Command, []string) error {
		return func(*cobra.Command, []string) error {
			d, err := newDriver()
			if err == nil {
				err = fn(d)
			}
			stageErr = err
			return nil
		}
	}

	root := &cobra.Command{
		Use:               "berth",
		Short:             "GitLab Runner custom executor: jobs in containers via dind, socket or podman",
		SilenceUsage:      true,
		SilenceErrors:     true,
		CompletionOptions: cobra.CompletionOptions{DisableDefaultCmd: true},
		PersistentPreRunE: func(*cobra.Command, []string) error {
			var err error
			log, err = driver.NewLogger(os.Stderr, logFormat)
			return err
		},
	}
	root.PersistentFlags().StringVar(&configPath, "config", "", "berth config file (default $BERTH_CONFIG, else "+config.DefaultPath+")")
	root.PersistentFlags().StringVar(&logFormat, "log-format", "text", "format of berth's own messages: text or json")

	root.AddCommand(
		&cobra.Command{
			Use:   "config",
			Short: "Print the job's runner configuration as JSON (config_exec)",
			Args:  cobra.NoArgs,
			RunE:  stage(func(d *driver.Driver) error { return d.Configure(ctx) }),
		},
		&cobra.Command{
			Use:   "prepare",
			Short: "Create the job's containers, network and services (prepare_exec)",
			Args:  cobra.NoArgs,
			RunE:  stage(func(d *driver.Driver) error { return d.Prepare(ctx) }),
		},
		&cobra.Command{
			Use:   "run SCRIPT STAGE",
			Short: "Run one stage script in the job's environment (run_exec)",
			Args:  cobra.ExactArgs(2),
			RunE: func(cmd *cobra.Command, args []string) error {
				return stage(func(d *driver.Driver) error { return d.Run(ctx, args[0], args[1]) })(cmd, args)
			},
		},
		&cobra.Command{
			Use:   "cleanup",
			Short: "Remove everything of the job (cleanup_exec)",
			Args:  cobra.NoArgs,
			RunE:  stage(func(d *driver.Driver) error { return d.Cleanup(ctx) }),
		},
		gcCommand(ctx, stage),
		doctorCommand(ctx, &stageErr, &configPath),
		execCommand(ctx, &configPath, &logFormat, &stageErr),
		dnsForwardCommand(ctx),
		dockerProxyCommand(ctx),
		policyCommand(&stageErr, func() (*config.Config, error) {
			path, explicit := config.ResolvePath(configPath)
			return config.Load(path, explicit)
		}),
		versionCommand(),
	)
	root.SetArgs(args)
	if err := root.Execute(); err != nil {
		fmt.Fprintf(os.Stderr, "berth: %v\n", err)
		return codes.System
	}
	if codesErr != nil {
		log.Warnf("%v; using %d and %d", codesErr, codes.Build, codes.System)
	}
	return exitCode(stageErr, codes, log)
}

// exitCode maps a stage's classified error to the runner's exit codes.
func exitCode(err error, codes driver.ExitCodes, log *logrus.Logger) int {
	if err == nil {
		return 0
	}
	var classified *driver.Error
	if errors.As(err, &classified) && classified.ScriptExitCode != 0 {
		if codes.BuildExitCodeFile != "" {
			if werr := os.WriteFile(codes.BuildExitCodeFile, []byte(strconv.Itoa(classified.ScriptExitCode)), 0o644); werr != nil {
				log.Errorf("write BUILD_EXIT_CODE_FILE: %v", werr)
				return codes.System
			}
		}
		return codes.Build
	}
	switch {
	case errors.Is(err, driver.ErrCanceled):
		log.Warnf("stopped: %v", err)
		return codes.Build
	case errors.Is(err, driver.ErrBuild):
		log.Error(err)
		return codes.Build
	default:
		log.Error(err)
		return codes.System
	}
}

// gcCommand is `berth gc`, which admins run from a timer.
func gcCommand(ctx context.Context, stage func(func(*driver.Driver) error) func(*cobra.Command, []string) error) *cobra.Command {
	var opts driver.GCOptions
	cmd := &cobra.Command{
		Use:   "gc [--dry-run] [--grace DURATION]",
		Short: "Remove what killed or crashed jobs of this runner left behind (run it from a timer)",
		Long: `gc lists the resources that carry this runner's berth labels in every backend the
config allows, and the job directories under builds_dir, grouped by job. A job is
expired once its timeout (from the job response) plus gc_grace have passed since its
prepare; its resources are then removed with the backend's own cleanup. Resources
without berth's labels, and jobs within their time, are never touched.`,
		Args: cobra.NoArgs,
		RunE: stage(func(d *driver.Driver) error { return d.GC(ctx, opts) }),
	}
	cmd.Flags().BoolVar(&opts.DryRun, "dry-run", false, "print the table and remove nothing")
	cmd.Flags().DurationVar(&opts.Grace, "grace", 0, "override gc_grace for this run, e.g. 30m")
	return cmd
}

// dnsForwardCommand is the DNS relay that berth runs inside a dind job's
// network; admins never call it.
func dnsForwardCommand(ctx context.Context) *cobra.Command {
	var listen, upstream string
	cmd := &cobra.Command{
		Use:    "dns-forward",
		Short:  "Relay DNS to Docker's embedded resolver (runs in a dind job's relay container)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			return dind.ForwardDNS(ctx, listen, upstream)
		},
	}
	cmd.Flags().StringVar(&listen, "listen", ":53", "address to serve on")
	cmd.Flags().StringVar(&upstream, "upstream", "127.0.0.11:53", "resolver to relay to")
	return cmd
}

// dockerProxyCommand is the guarding Docker socket proxy that berth runs in a
// socket job's proxy container; admins never call it.
func dockerProxyCommand(ctx context.Context) *cobra.Command {
	var listen, upstream, buildsDir, network, peersDir string
	var labels, ulimits, localRegistries []string
	var ceilings dockerproxy.Ceilings
	var publicPorts bool
	var localNames []string
	cmd := &cobra.Command{
		Use:    "docker-proxy",
		Short:  "Serve a job's guarded Docker socket (runs in a socket job's proxy container)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			cfg := dockerproxy.Config{BuildsDir: buildsDir, Network: network, PeersDir: peersDir, Labels: map[string]string{}}
			for _, l := range labels {
				k, v, ok := strings.Cut(l, "=")
				if !ok || k == "" {
					return fmt.Errorf("--label %q: want key=value", l)
				}
				cfg.Labels[k] = v
			}
			for _, u := range ulimits {
				parsed, err := units.ParseUlimit(u)
				if err != nil {
					return fmt.Errorf("--ulimit %q: %w", u, err)
				}
				ceilings.Ulimits = append(ceilings.Ulimits, parsed)
			}
			cfg.Ceilings = ceilings
			cfg.LocalRegistries = localRegistries
			cfg.PublicPorts = publicPorts
			cfg.HostNames = localNames
			logf := func(format string, args ...any) { fmt.Fprintf(os.Stderr, format+"\n", args...) }
			return dockerproxy.Serve(ctx, cfg, listen, upstream, logf)
		},
	}
	cmd.Flags().StringVar(&listen, "listen", "/run/berth-docker/docker.sock", "unix socket to serve the job on")
	cmd.Flags().StringVar(&upstream, "upstream", "unix:///var/run/docker.sock", "Docker daemon to forward to")
	cmd.Flags().StringVar(&buildsDir, "builds-dir", "", "the job's builds directory, the only allowed bind source")
	cmd.Flags().StringArrayVar(&labels, "label", nil, "key=value label set on what the job creates (repeatable)")
	cmd.Flags().StringVar(&network, "network", "", "the job's network, which containers on the default network join instead")
	cmd.Flags().Int64Var(&ceilings.Memory, "memory", 0, "memory ceiling in bytes of what the job creates (0: none)")
	cmd.Flags().Int64Var(&ceilings.MemorySwap, "memory-swap", 0, "memory+swap ceiling in bytes (-1: unlimited swap)")
	cmd.Flags().Int64Var(&ceilings.NanoCPUs, "nano-cpus", 0, "CPU ceiling in billionths of a CPU")
	cmd.Flags().Int64Var(&ceilings.PidsLimit, "pids-limit", 0, "pids ceiling")
	cmd.Flags().Int64Var(&ceilings.ShmSize, "shm-size", 0, "/dev/shm size ceiling in bytes")
	cmd.Flags().StringArrayVar(&ulimits, "ulimit", nil, "name=soft:hard ulimit ceiling (repeatable)")
	cmd.Flags().StringArrayVar(&localRegistries, "local-registry", nil, "a registry at a loopback or link-local address the job may use (repeatable)")
	cmd.Flags().BoolVar(&publicPorts, "public-ports", false, "leave published ports on every host interface, as the job gives them")
	cmd.Flags().StringArrayVar(&localNames, "local-name", nil, "a name the engine's host resolves to a local address (repeatable)")
	cmd.Flags().StringVar(&peersDir, "peers-dir", "", "the runner's directory of job directories, where other jobs' guards record the image names their jobs gave")
	return cmd
}

// policyCommand is `berth policy explain`, for admins debugging their rules.
func policyCommand(result *error, load func() (*config.Config, error)) *cobra.Command {
	var responsePath, backend string
	explain := &cobra.Command{
		Use:   "explain --job-response FILE [--backend NAME]",
		Short: "Show which policy rule a job gets and what it is granted",
		Long: "Reads a job payload (the JSON gitlab-runner writes to JOB_RESPONSE_FILE) and prints\n" +
			"the matching [[policy.rule]] and the decision prepare would make. Exits 1 when refused.",
		Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			cfg, err := load()
			if err != nil {
				*result = &driver.Error{Class: driver.ErrSystem, Err: fmt.Errorf("berth config: %w", err)}
				return nil
			}
			*result = driver.Explain(os.Stdout, cfg, responsePath, backend)
			return nil
		},
	}
	explain.Flags().StringVar(&responsePath, "job-response", "", "job payload JSON file (required)")
	explain.Flags().StringVar(&backend, "backend", "", "BERTH_BACKEND the job sets (default: from the payload's variables)")
	_ = explain.MarkFlagRequired("job-response")
	policy := &cobra.Command{Use: "policy", Short: "Inspect the admin policy"}
	policy.AddCommand(explain)
	return policy
}
