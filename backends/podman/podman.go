//go:build remote

// Package podman is the podman backend: each job's containers run in a
// rootless Podman service, reached through its API socket with the podman/v5
// bindings, so no root daemon and no privileged container is involved.
package podman

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/containers/podman/v5/libpod/define"
	"github.com/containers/podman/v5/pkg/bindings"
	"github.com/containers/podman/v5/pkg/bindings/system"
	"github.com/containers/podman/v5/pkg/errorhandling"
	"github.com/sirupsen/logrus"

	"github.com/berthci/berth/backends"
	"github.com/berthci/berth/config"
)

// Name is the backend's name in BERTH_BACKEND and the config.
const Name = "podman"

func init() {
	backends.Register(Name, func(cfg *config.Config, log logrus.FieldLogger) (backends.Backend, error) {
		return New(cfg, log)
	})
}

// Resource roles, stored in the berth.role label.
const (
	roleNetwork = "network"
	roleBuild   = "build"
	roleHelper  = "helper"
	roleService = "service"
	roleProbe   = "probe"
	roleVolume  = "volume"
)

// Backend is the podman backend. It keeps no state between stages beyond a
// lazily opened connection.
type Backend struct {
	// ProxyBinary is the static berth binary that runs the job's guarding
	// proxy; empty means the running executable.
	ProxyBinary string

	cfg    config.Docker
	podman config.Podman
	// full is the whole admin config, for doctor's checks.
	full   *config.Config
	limits config.Limits
	mounts []config.Mount
	log    logrus.FieldLogger

	socketPath string

	mu      sync.Mutex
	connCtx context.Context // carries the bindings' connection
	owner   owner

	// The service's info is asked once per process, in the background
	// from Describe on: the query costs most of a second.
	infoOnce sync.Once
	infoDone chan struct{}
	info     *define.Info
	infoErr  error
}

// owner is the user the rootless service runs as: the owner of its socket.
type owner struct{ uid, gid int }

// New returns a podman backend for the admin config. It does not contact
// the service.
func New(cfg *config.Config, log logrus.FieldLogger) (*Backend, error) {
	limits, err := cfg.Docker.Limits()
	if err != nil {
		return nil, err
	}
	mounts, err := cfg.Docker.Mounts()
	if err != nil {
		return nil, err
	}
	path := cfg.Podman.SocketPath()
	if path == "" {
		path = defaultSocketPath()
	}
	return &Backend{cfg: cfg.Docker, podman: cfg.Podman, full: cfg, limits: limits, mounts: mounts, log: log, socketPath: path}, nil
}

// defaultSocketPath is the rootless socket of the user berth runs as.
func defaultSocketPath() string {
	if dir := os.Getenv("XDG_RUNTIME_DIR"); dir != "" {
		return dir + "/podman/podman.sock"
	}
	return fmt.Sprintf("/run/user/%d/podman/podman.sock", os.Getuid())
}

// startHint says how to get a rootless service running.
const startHint = "start the rootless Podman service as the runner user (systemctl --user enable --now podman.socket, and loginctl enable-linger for that user), or set [podman] socket in the berth config"

// conn opens the connection on first use and returns ctx carrying it. The
// returned context keeps ctx's deadline and cancellation.
func (b *Backend) conn(ctx context.Context) (context.Context, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.connCtx == nil {
		// A missing socket may be a service that is restarting: connect
		// retries it, and only then is the path examined.
		connCtx, err := b.connect(ctx)
		fi, statErr := os.Stat(b.socketPath)
		if err != nil {
			if statErr == nil && fi.Mode()&os.ModeSocket == 0 {
				return nil, fmt.Errorf("podman socket %s is not a socket; %s", b.socketPath, startHint)
			}
			return nil, fmt.Errorf("connect to podman at %s: %w; %s", b.socketPath, err, startHint)
		}
		if statErr != nil {
			return nil, fmt.Errorf("podman socket %s: %w; %s", b.socketPath, statErr, startHint)
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		if !ok {
			return nil, fmt.Errorf("podman socket %s: cannot read its owner", b.socketPath)
		}
		b.connCtx = connCtx
		b.owner = owner{uid: int(st.Uid), gid: int(st.Gid)}
	}
	return withConn{ctx, b.connCtx}, nil
}

// connect opens the bindings' connection, retrying while the service
// refuses (it may be restarting) as [config.Docker] api_retries says, and
// makes its later connections retry the same way. The connection outlives
// every call, so it is opened on a context that is never canceled; calls
// bring their own (see withConn).
func (b *Backend) connect(ctx context.Context) (context.Context, error) {
	retry := backends.DialRetry{Attempts: b.cfg.APIRetries, Delay: b.cfg.APIRetryDelay.Duration}
	delay := retry.Delay
	for attempt := 0; ; attempt++ {
		connCtx, err := bindings.NewConnection(context.Background(), "unix://"+b.socketPath)
		if err == nil {
			if c, cerr := bindings.GetClient(connCtx); cerr == nil {
				// The bindings' attach needs the transport to stay an
				// *http.Transport, so the dialer is wrapped, not the
				// transport.
				if tr, ok := c.Client.Transport.(*http.Transport); ok && tr.DialContext != nil {
					tr.DialContext = retry.Wrap(tr.DialContext)
				}
			}
			return connCtx, nil
		}
		if !backends.TransientDialError(err) || attempt >= retry.Attempts {
			return nil, err
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(delay):
		}
		delay = min(2*delay, 4*time.Second)
	}
}

// checkService refuses a rootful service when the admin demands rootless.
// Prepare calls it; the later stages of the job trust that check, since
// podman's info query costs most of a second.
func (b *Backend) checkService(ctx context.Context) error {
	info, err := b.serviceInfo(ctx)
	if err != nil {
		return err
	}
	if b.podman.RequireRootless && !info.Host.Security.Rootless {
		return fmt.Errorf("podman at %s runs as root but [podman] require_rootless is true: point [podman] socket at a rootless service (systemctl --user enable --now podman.socket as the runner user)", b.socketPath)
	}
	return nil
}

// startInfo starts the query of the service's info, once.
func (b *Backend) startInfo(ctx context.Context) {
	b.infoOnce.Do(func() {
		b.infoDone = make(chan struct{})
		go func() {
			defer close(b.infoDone)
			b.info, b.infoErr = system.Info(ctx, nil)
		}()
	})
}

// serviceInfo waits for the service's info.
func (b *Backend) serviceInfo(ctx context.Context) (*define.Info, error) {
	b.startInfo(ctx)
	select {
	case <-b.infoDone:
	case <-ctx.Done():
		return nil, fmt.Errorf("query podman at %s: %w", b.socketPath, ctx.Err())
	}
	if b.infoErr != nil {
		return nil, fmt.Errorf("query podman at %s: %w; %s", b.socketPath, b.infoErr, startHint)
	}
	return b.info, nil
}

// withConn is ctx with the bindings' connection values of conn: the
// bindings find their client in the context, while cancellation must come
// from the caller's context.
type withConn struct {
	context.Context
	conn context.Context
}

func (c withConn) Value(key any) any {
	if v := c.conn.Value(key); v != nil {
		return v
	}
	return c.Context.Value(key)
}

// Describe returns the service's version for the job log.
func (b *Backend) Describe(ctx context.Context, job *backends.Job) (string, error) {
	ctx, err := b.conn(ctx)
	if err != nil {
		return "", err
	}
	// The version is the one the service sent with the connection's
	// ping; the info that prepare's rootless check needs is asked for
	// meanwhile.
	b.startInfo(ctx)
	version := bindings.ServiceVersion(ctx)
	mode := "rootful"
	if b.owner.uid != 0 {
		mode = fmt.Sprintf("rootless as uid %d", b.owner.uid)
	}
	desc := fmt.Sprintf("Podman %s, %s", version, mode)
	switch {
	case !b.podman.JobSocket:
	case b.guarded(job):
		desc += ", guarded socket"
	default:
		desc += ", service socket unguarded"
	}
	return desc, nil
}

// code returns the HTTP status of a Podman API error, or 0.
func code(err error) int {
	var model *errorhandling.ErrorModel
	if errors.As(err, &model) {
		return model.ResponseCode
	}
	var value errorhandling.ErrorModel
	if errors.As(err, &value) {
		return value.ResponseCode
	}
	return 0
}

func isNotFound(err error) bool { return code(err) == http.StatusNotFound }

// gone reports whether a removal succeeded or found the object already
// gone. Podman answers 500 (Docker: 409) when a removal is already under
// way, and 404 when it finished first.
func gone(err error) bool {
	return err == nil || isNotFound(err)
}

// Job resource names.
func networkName(job *backends.Job) string         { return job.Name() }
func buildContainerName(job *backends.Job) string  { return job.Name() + "-build" }
func helperContainerName(job *backends.Job) string { return job.Name() + "-helper" }
func probeContainerName(job *backends.Job, i int) string {
	return fmt.Sprintf("%s-probe-%d", job.Name(), i)
}
func serviceContainerName(job *backends.Job, i int) string {
	return fmt.Sprintf("%s-svc-%d", job.Name(), i)
}
func volumeName(job *backends.Job, i int) string { return fmt.Sprintf("%s-vol-%d", job.Name(), i) }

// selectorFilters selects every resource of the job.
func selectorFilters(job *backends.Job) map[string][]string {
	var labels []string
	for k, v := range job.Selector() {
		labels = append(labels, k+"="+v)
	}
	return map[string][]string{"label": labels}
}
