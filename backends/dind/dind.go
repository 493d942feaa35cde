// Package dind is the dind backend: every job gets its own Docker daemon in
// a Docker-in-Docker sidecar on the job network, reachable as "docker" over
// TLS with certificates berth makes per job. The job's docker commands go to
// that daemon and never touch the host's.
package dind

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/docker/docker/client"
	"github.com/sirupsen/logrus"

	"github.com/berthci/berth/backends"
	"github.com/berthci/berth/backends/dockerengine"
	"github.com/berthci/berth/config"
)

// Name is the backend's name in BERTH_BACKEND and the config.
const Name = "dind"

// Where the job finds the daemon, as GitLab's DinD documentation sets it up.
const (
	jobCertDir    = "/certs/client"
	sidecarCerts  = "/certs/server"
	tlsPort       = 2376
	plainPort     = 2375
	sidecarAlias  = "docker"
	innerDataPath = "/var/lib/docker"
)

// Container and volume roles of the dind backend, in the berth.role label.
const (
	roleSidecar   = "dind"
	roleDNS       = "dind-dns"
	roleCacheLock = "dind-cache-lock"
	roleCache     = "dind-cache"
)

func init() {
	backends.Register(Name, func(cfg *config.Config, log logrus.FieldLogger) (backends.Backend, error) {
		return New(cfg, log)
	})
}

// Backend is the dind backend.
type Backend struct {
	// RelayBinary is the static berth binary that runs the job's DNS relay;
	// empty means the running executable.
	RelayBinary string

	cfg    *config.Config
	cli    *client.Client
	engine *dockerengine.Engine
	log    logrus.FieldLogger
}

// New returns a dind backend for the admin config. It does not contact the
// engine.
func New(cfg *config.Config, log logrus.FieldLogger) (*Backend, error) {
	cli, err := dockerengine.NewClient(cfg.Docker)
	if err != nil {
		return nil, err
	}
	engine, err := dockerengine.New(cli, cfg.Docker, dockerengine.Options{}, log)
	if err != nil {
		return nil, err
	}
	return &Backend{cfg: cfg, cli: cli, engine: engine, log: log}, nil
}

// Describe returns the host daemon's version and how the job's sidecar
// runs: with TLS or without, privileged or with the capability set.
func (b *Backend) Describe(ctx context.Context, job *backends.Job) (string, error) {
	v, err := b.engine.Describe(ctx, job)
	if err != nil {
		return "", err
	}
	p, _, err := b.plan(job)
	if err != nil {
		// Prepare reports the refusal itself.
		return v, nil
	}
	tls, security := "TLS", "privileged"
	if !p.tls {
		tls = "no TLS"
	}
	if !p.privileged {
		security = "capabilities"
	}
	return fmt.Sprintf("%s, sidecar %s, %s, %s", v, b.cfg.Dind.Image, tls, security), nil
}

// plan is what one job's sidecar looks like.
type plan struct {
	tls      bool
	aliases  []string // the sidecar's hostnames on the job network
	override *backends.Service
	certDir  string
	cache    bool // the job wants the project's layer cache
	// privileged runs the sidecar --privileged; else with the [dind]
	// capability settings.
	privileged bool
}

// Prepare creates the job's network and services, then the sidecar, waits
// for its daemon to answer an authenticated ping, and creates the job
// containers with the client certificates. See [backends.Backend.Prepare].
func (b *Backend) Prepare(ctx context.Context, job *backends.Job) error {
	p, rest, err := b.plan(job)
	if err != nil {
		return err
	}
	withoutDind := *job
	withoutDind.Services = rest
	engine, err := dockerengine.New(b.cli, b.cfg.Docker, dockerengine.Options{
		JobBinds: func(*backends.Job) []string {
			if !p.tls {
				return nil
			}
			return []string{filepath.Join(p.certDir, "client") + ":" + jobCertDir + ":ro"}
		},
		JobEnv: func(*backends.Job) []string {
			if !p.tls {
				return []string{fmt.Sprintf("DOCKER_HOST=tcp://%s:%d", sidecarAlias, plainPort), "DOCKER_TLS_CERTDIR="}
			}
			return []string{fmt.Sprintf("DOCKER_HOST=tcp://%s:%d", sidecarAlias, tlsPort),
				"DOCKER_TLS_VERIFY=1", "DOCKER_CERT_PATH=" + jobCertDir, "DOCKER_TLS_CERTDIR=/certs"}
		},
		BeforeStageContainers: func(ctx context.Context, job *backends.Job) error {
			return b.startSidecar(ctx, job, p)
		},
	}, b.log)
	if err != nil {
		return err
	}
	return engine.Prepare(ctx, &withoutDind)
}

// plan reads the job's DinD requests: a `*dind*` service, which the sidecar
// serves instead of a second daemon, and DOCKER_TLS_CERTDIR.
func (b *Backend) plan(job *backends.Job) (*plan, []backends.Service, error) {
	p := &plan{tls: true, aliases: []string{sidecarAlias}, certDir: certDir(job)}
	var rest []backends.Service
	env := append([]string{}, job.Env...)
	for i := range job.Services {
		svc := job.Services[i]
		if !strings.Contains(strings.ToLower(svc.Name), "dind") {
			rest = append(rest, svc)
			continue
		}
		if len(svc.Entrypoint) > 0 || len(svc.Command) > 0 {
			if !b.cfg.Dind.AllowServiceOverrides {
				return nil, nil, &config.RefusalError{What: "dind service", Value: svc.Name, Project: job.ProjectPath,
					Reason: "a job may not set entrypoint or command on the DinD sidecar (on a privileged container that is a root shell); remove them, or ask the runner admin for dind.allow_service_overrides"}
			}
			p.override = &svc
		}
		for _, a := range svc.Aliases {
			if !contains(p.aliases, a) {
				p.aliases = append(p.aliases, a)
			}
		}
		env = append(env, svc.Env...)
	}
	for _, svc := range rest {
		for _, a := range svc.Aliases {
			if contains(p.aliases, a) {
				return nil, nil, &config.RefusalError{What: "service alias", Value: a, Project: job.ProjectPath,
					Reason: fmt.Sprintf("service %q may not take the name of the DinD sidecar; choose another alias", svc.Name)}
			}
		}
	}
	if v, ok := lookupEnv(env, "DOCKER_TLS_CERTDIR"); ok && v == "" {
		if !b.cfg.Dind.AllowTLSDisabled {
			return nil, nil, &config.RefusalError{What: "DOCKER_TLS_CERTDIR", Value: "", Project: job.ProjectPath,
				Reason: "a DinD daemon without TLS (plain port 2375) is not allowed on this runner; remove DOCKER_TLS_CERTDIR: \"\" and use tcp://docker:2376, or ask the runner admin for dind.allow_tls_disabled"}
		}
		p.tls = false
	}
	mode := b.cfg.Dind.LayerCache
	if job.Policy.LayerCache != "" {
		mode = job.Policy.LayerCache
	}
	if v, _ := lookupEnv(job.Env, "BERTH_DIND_CACHE"); mode == config.LayerCacheProject && !strings.EqualFold(v, "off") {
		p.cache = true
	}
	p.privileged = b.cfg.Dind.Privileged
	if job.Policy.DindPrivileged != nil {
		p.privileged = *job.Policy.DindPrivileged
	}
	return p, rest, nil
}

// Run runs a stage in the job or helper container.
func (b *Backend) Run(ctx context.Context, job *backends.Job, stage backends.Stage) (int, error) {
	return b.engine.Run(ctx, job, stage)
}

// Cleanup prunes the layer cache the job used, when the admin bounds its
// size, then removes the job's containers, network, throwaway volumes and
// certificates. The cache volume stays, unlocked. See
// [backends.Backend.Cleanup].
func (b *Backend) Cleanup(ctx context.Context, job *backends.Job) error {
	var errs []error
	if err := b.pruneCache(ctx, job); err != nil {
		b.log.Warnf("prune the DinD layer cache: %v", err)
	}
	errs = append(errs, b.engine.Cleanup(ctx, job))
	if err := os.RemoveAll(certDir(job)); err != nil {
		errs = append(errs, fmt.Errorf("remove the job's DinD certificates: %w", err))
	}
	return errors.Join(errs...)
}

// ListJobs lists the runner's dind jobs on the host daemon, for `berth gc`.
// See [backends.JobLister].
func (b *Backend) ListJobs(ctx context.Context, runner string) ([]backends.JobRecord, error) {
	return b.engine.ListBackendJobs(ctx, runner, Name)
}

// certDir holds the job's certificates beside, not inside, its builds
// directory, so the job never sees the server key.
func certDir(job *backends.Job) string {
	if job.BuildsDir == "" {
		return ""
	}
	return job.BuildsDir + ".dind-certs"
}

func lookupEnv(env []string, key string) (string, bool) {
	for i := len(env) - 1; i >= 0; i-- {
		if k, v, ok := strings.Cut(env[i], "="); ok && k == key {
			return v, true
		}
	}
	return "", false
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if strings.EqualFold(v, s) {
			return true
		}
	}
	return false
}
