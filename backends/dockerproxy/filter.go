// Package dockerproxy is berth's guarding Docker socket proxy: a
// deny-by-default filter of Docker Engine API requests that lets a job
// create and touch only its own containers, networks and volumes, and a
// reverse proxy that serves it on a unix socket in front of the host daemon.
package dockerproxy

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/mount"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/api/types/volume"
	"golang.org/x/sys/unix"

	"github.com/berthci/berth/backends"
	"github.com/berthci/berth/internal/strictjson"
)

// RoleJobCreated is the berth.role label of what a job creates through the
// proxy. Only objects with it (and the job's selector labels) are the job's
// own.
const RoleJobCreated = "job-created"

// roleJobNetwork is the role of the job network berth creates, which the
// job's containers may join but not remove.
const roleJobNetwork = "network"

// MaxJSONBody caps JSON request bodies.
const MaxJSONBody = 1 << 20

// maxJSONDepth caps the nesting of JSON request bodies.
const maxJSONDepth = 32

// minAPIVersion is the oldest API version the proxy forwards: older ones let
// /containers/{id}/start carry a host config the create check never saw.
const minAPIVersion = "1.24"

// ErrNotFound is what an [Upstream] returns for an object the daemon does
// not have.
var ErrNotFound = errors.New("not found")

// Object is a daemon object's full id and labels. For a container, Binds
// are its bind mounts (HostConfig.Binds and Mounts of type bind): host
// paths as the engine will resolve them at its next start, and where they
// go in the container.
type Object struct {
	ID     string
	Labels map[string]string
	Binds  []Bind
	// Gateway is a network's IPv4 gateway address.
	Gateway string
	// Ports are the ports an image exposes ("80/tcp").
	Ports []string
	// Untagged: an image with neither a name nor a digest.
	Untagged bool
	// OnBuild are an image's ONBUILD triggers.
	OnBuild []string
	// Running: a container that is running (or paused, or restarting).
	Running bool
	// Volumes are where a container mounts volumes, named or anonymous,
	// and VolumeNames those volumes' names.
	Volumes, VolumeNames []string
}

// Upstream looks objects up on the real daemon. Each method honours ctx and
// returns an error wrapping ErrNotFound when the object does not exist.
type Upstream interface {
	Container(ctx context.Context, ref string) (Object, error)
	Network(ctx context.Context, ref string) (Object, error)
	Volume(ctx context.Context, name string) (Object, error)
	// ExecContainer returns the id of the container an exec instance runs in.
	ExecContainer(ctx context.Context, execID string) (string, error)
	// Image returns an image's id and labels, looked up by reference as
	// the engine resolves it.
	Image(ctx context.Context, ref string) (Object, error)
	// RunningContainers returns the ids of the running (not paused)
	// containers that carry every label of selector.
	RunningContainers(ctx context.Context, selector map[string]string) ([]string, error)
	// Pause freezes every process of a container; Unpause thaws it. Pause
	// of a container that is not running returns an error wrapping
	// ErrNotRunning.
	Pause(ctx context.Context, id string) error
	Unpause(ctx context.Context, id string) error
	// Pull pulls image ref with the registry credentials auth (the
	// X-Registry-Auth form; "" for none).
	Pull(ctx context.Context, ref, auth string) error
	// History returns what made each layer of image ref (created_by).
	History(ctx context.Context, ref string) ([]string, error)
	// Stop stops a container as POST /containers/{id}/stop with the
	// timeout t (seconds, "" for the container's own) and signal would.
	Stop(ctx context.Context, id, t, signal string) error
	// Images returns the images whose references match ref (a
	// repository name matches all its tags).
	Images(ctx context.Context, ref string) ([]Object, error)
	// ImagesLabelled returns the images that carry every label of
	// selector.
	ImagesLabelled(ctx context.Context, selector map[string]string) ([]Object, error)
	// Init has the engine create a container's process without running
	// it, its mounts made, and returns that process's host pid: Podman's
	// "init". An engine without it returns an error.
	Init(ctx context.Context, id string) (pid int, err error)
}

// ErrNotRunning is what [Upstream.Pause] returns for a container that is
// not running: it has no process that could act.
var ErrNotRunning = errors.New("container is not running")

// Refusal is a request the proxy does not forward. The server answers it
// with Status and a JSON {"message": ...} body, which the docker CLI prints.
type Refusal struct {
	Status  int
	Message string
}

func (r *Refusal) Error() string { return r.Message }

// refuse returns a 403 refusal naming what was refused and why.
func refuse(format string, args ...any) error {
	return &Refusal{Status: http.StatusForbidden, Message: "berth guarded Docker socket: " + fmt.Sprintf(format, args...)}
}

func notFound(format string, args ...any) error {
	return &Refusal{Status: http.StatusNotFound, Message: "berth guarded Docker socket: " + fmt.Sprintf(format, args...)}
}

// Config is what the proxy knows of its job, all from trusted flags.
type Config struct {
	// BuildsDir is the job's host builds directory, the only place binds
	// may come from. The proxy must see it at the same path.
	BuildsDir string
	// Labels are set on everything the job creates. They must hold
	// berth.runner, berth.job.id and berth.role=job-created.
	Labels map[string]string
	// Network is the job's network. A container the job starts on the
	// default network joins it instead, so that it reaches the job's
	// services and no other job reaches it. Empty keeps the engine's
	// default network.
	Network string
	// VerifyMounts checks a start's binds where the engine mounted them
	// rather than pausing the job: the engine initialises the container
	// (mounts made, nothing run) and the filter compares what is mounted
	// with what it checked, through /proc/<pid>/root (see [Filter] on
	// starts). For Podman, whose init makes this possible; the proxy must
	// see the engine's pids and may read other processes' roots.
	VerifyMounts bool
	// NoFreeze starts containers without pausing the job's other
	// containers first, for an engine that can neither pause nor
	// initialise (a rootless Docker on cgroup v1). There a job that swaps
	// a bind source for a symlink in the moment between the guard's check
	// and the engine's mount can still win.
	NoFreeze bool
	// NamesFile records the image names the job gives, for its cleanup
	// (see names.go; empty: none).
	NamesFile string
	// StepsFile records the step images the job's builds make, for its
	// cleanup (see buildcache.go; empty: none).
	StepsFile string
	// LeftFile records the images the job's given names left when it
	// moved them, for its cleanup (see names.go; empty: none).
	LeftFile string
	// SpoolDir holds image archives and build contexts while they are
	// checked (empty: the system's temporary directory).
	SpoolDir string
	// Ceilings bound the resources of what the job creates.
	Ceilings Ceilings
	// LocalRegistries are the registries at local addresses the job may
	// use (see registries.go).
	LocalRegistries []string
	// PublicPorts leaves published ports where the job binds them, every
	// host interface by default (see ports.go).
	PublicPorts bool
	// RootlessPorts: the engine binds published ports in the host's
	// network namespace, apart from the job network (rootless Podman).
	RootlessPorts bool
	// Podman: the engine is Podman, whose builds are Buildah's.
	Podman bool
	// HostNames are the engine host's own names, local as localhost is
	// (see registries.go).
	HostNames []string
	// PeersDir is the builds directory of every runner that shares it
	// (<builds_dir>), read-only, where other jobs' guards keep their
	// records of the image names their jobs gave (see names.go; empty:
	// none read).
	PeersDir string
}

// Filter decides on requests. It is safe for concurrent use.
//
// Bind sources are host paths in the job's builds dir, which the job can
// change at any time, and the engine resolves them again at every start,
// not only at create. So the filter checks them at create (resolved, in the
// builds dir) and again at every start, restart and unpause: each
// component from the builds dir down must be a real directory, no symlink.
// What keeps that check true until the engine mounts depends on the
// engine. Docker: the job's other running containers are paused from the
// check until the engine has answered, so nothing of the job can swap a
// component meanwhile. Podman (VerifyMounts): the engine initialises the
// container, which makes its mounts and runs nothing, and the filter then
// compares each mount in the container (by device and inode, through
// /proc/<pid>/root) with the directory it finds at the source without
// following symlinks; on any difference the container is stopped and the
// start refused. A swap can then only change what was mounted before the
// comparison, never after it. Restart policies, which
// would let the engine start a container with no request to check, are
// refused. docker cp is refused for containers with binds: the engine
// mounts them again for every copy while the job runs. Starts are checked
// one at a time.
type Filter struct {
	up           Upstream
	buildsDir    string
	labels       map[string]string
	selector     map[string]string
	network      string
	noFreeze     bool
	verifyMounts bool
	// mounted stats what is mounted at target in the container whose
	// process is pid (procMounted; a fake in tests).
	mounted         func(pid int, target string) (unix.Stat_t, error)
	spoolDir        string
	namesFile       string
	stepsFile       string
	leftFile        string
	ceilings        Ceilings
	localRegistries []string
	publicPorts     bool
	rootlessPorts   bool
	podman          bool
	hostNames       []string
	// peersDir, selfDir: where other jobs' records of given names are,
	// and this job's directory among them (see names.go).
	peersDir, selfDir string

	// gatewayIP is the job network's gateway, once looked up.
	gatewayMu sync.Mutex
	gatewayIP string

	// volumeMu: a create holds it for reading from its check until the
	// engine answered, a volume's removal for writing, so that a volume
	// checked as the job's is still there when the engine mounts it.
	volumeMu sync.RWMutex

	// startMu: a start holds it from its check until the engine
	// answered, so that two starts never freeze and thaw the job's
	// containers across each other.
	startMu sync.Mutex

	// built are the images this job's builds reported they made (see
	// buildcache.go).
	builtMu sync.Mutex
	built   []string

	// givenNames are the image names this job gave that were new then,
	// which it may move and remove (see images.go).
	namesMu    sync.Mutex
	givenNames map[string]bool
}

// NewFilter returns the filter for a job.
func NewFilter(cfg Config, up Upstream) (*Filter, error) {
	dir := filepath.Clean(cfg.BuildsDir)
	if !filepath.IsAbs(dir) || dir == "/" {
		return nil, fmt.Errorf("builds dir %q must be an absolute path below /", cfg.BuildsDir)
	}
	if resolved, err := filepath.EvalSymlinks(dir); err == nil {
		dir = resolved
	}
	selector := map[string]string{}
	for _, k := range []string{backends.LabelRunner, backends.LabelJobID} {
		v := cfg.Labels[k]
		if v == "" {
			return nil, fmt.Errorf("the proxy's labels lack %s", k)
		}
		selector[k] = v
	}
	if cfg.Labels[backends.LabelRole] != RoleJobCreated {
		return nil, fmt.Errorf("the proxy's labels must set %s=%s", backends.LabelRole, RoleJobCreated)
	}
	labels := map[string]string{}
	for k, v := range cfg.Labels {
		labels[k] = v
	}
	return &Filter{up: up, buildsDir: dir, labels: labels, selector: selector, network: cfg.Network, noFreeze: cfg.NoFreeze || cfg.VerifyMounts, verifyMounts: cfg.VerifyMounts, mounted: procMounted, spoolDir: cfg.SpoolDir, namesFile: cfg.NamesFile, stepsFile: cfg.StepsFile, leftFile: cfg.LeftFile, ceilings: cfg.Ceilings, localRegistries: cfg.LocalRegistries, publicPorts: cfg.PublicPorts, rootlessPorts: cfg.RootlessPorts, podman: cfg.Podman, hostNames: lowerAll(cfg.HostNames), peersDir: cfg.PeersDir, selfDir: peerName(filepath.Clean(cfg.BuildsDir))}, nil
}

func lowerAll(list []string) []string {
	out := make([]string, 0, len(list))
	for _, s := range list {
		if s != "" {
			out = append(out, strings.ToLower(strings.TrimSuffix(s, ".")))
		}
	}
	return out
}

var hexName = regexp.MustCompile(`^[0-9a-fA-F]+$`)

var versionPrefix = regexp.MustCompile(`^/v([0-9]{1,4})\.([0-9]{1,4})(/.*)$`)

// Check decides on r. It returns nil for a request to forward, after
// rewriting r in place (labels added, references resolved to full ids, list
// filters narrowed to the job's own objects), a *Refusal for a request the
// job may not make, or another error when the daemon could not be asked.
func (f *Filter) Check(ctx context.Context, r *http.Request) error {
	release, err := f.CheckHold(ctx, r)
	if err == nil {
		release()
	}
	return err
}

// CheckHold is [Filter.Check] for a request that is then forwarded: on nil
// error the caller must call release once the daemon has answered (a start
// keeps the job's other containers paused until then).
func (f *Filter) CheckHold(ctx context.Context, r *http.Request) (release func(), err error) {
	release, _, err = f.checkForward(ctx, r)
	return release, err
}

// checkForward is CheckHold that also returns how the daemon's answer must
// be rewritten before the job sees it (nil: as it is).
func (f *Filter) checkForward(ctx context.Context, r *http.Request) (release func(), rewrite func(*http.Response) error, err error) {
	rq := &request{Request: r, ctx: ctx, f: f}
	if err := rq.check(); err != nil {
		rq.releaseHeld()
		return nil, nil, err
	}
	return rq.releaseHeld, rq.rewrite, nil
}

func (r *request) check() error {
	if r.URL == nil || r.URL.Opaque != "" || r.URL.RawPath != "" {
		return refuse("escaped or opaque request paths are not allowed")
	}
	p := r.URL.Path
	if p == "" || p[0] != '/' || path.Clean(p) != p || strings.Contains(p, "\x00") {
		return refuse("request path %q is not in clean form", p)
	}
	prefix := ""
	if m := versionPrefix.FindStringSubmatch(p); m != nil {
		major, _ := strconv.Atoi(m[1])
		minor, _ := strconv.Atoi(m[2])
		if major < 1 || (major == 1 && minor < 24) {
			return refuse("API version %s.%s is older than %s; use a newer docker client", m[1], m[2], minAPIVersion)
		}
		prefix, p = p[:len(p)-len(m[3])], m[3]
	}
	query, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return refuse("malformed query string: %v", err)
	}
	for k, vs := range query {
		if len(vs) > 1 && k != "t" && k != "names" {
			return refuse("query parameter %q is repeated", k)
		}
	}
	r.prefix, r.query = prefix, query
	segs := strings.Split(p[1:], "/")
	keys, known := queryKeys(r.Method, segs)
	if known {
		if err := r.allowQuery(keys...); err != nil {
			return err
		}
	}
	asked := len(query)
	if err := r.route(segs); err != nil {
		return err
	}
	if !known && asked > 0 {
		// An endpoint the table does not know takes no parameters.
		return refuse("%s %s: query parameters are not allowed here", r.Method, r.URL.Path)
	}
	r.URL.RawQuery = r.query.Encode()
	return nil
}

// apiQueryKeys are the query parameters the Docker API defines for each
// endpoint the guard may let through, by method, resource and action (the
// last path segment; "*" for a resource's object itself). Every request's
// keys must be among its endpoint's, exactly: Podman reads keys without
// regard to case and has keys of its own (a push's destination), which
// would reach it unchecked.
var apiQueryKeys = map[string][]string{
	"GET _ping": nil, "HEAD _ping": nil, "GET version": nil, "GET info": nil, "POST auth": nil,
	"GET containers/json":     {"all", "limit", "size", "filters", "before", "since"},
	"POST containers/create":  {"name", "platform"},
	"GET containers/top":      {"ps_args"},
	"GET containers/logs":     {"follow", "stdout", "stderr", "since", "until", "timestamps", "tail", "details"},
	"GET containers/export":   nil,
	"GET containers/stats":    {"stream", "one-shot"},
	"POST containers/resize":  {"h", "w"},
	"POST containers/start":   {"detachKeys"},
	"POST containers/stop":    {"t", "signal"},
	"POST containers/restart": {"t", "signal"},
	"POST containers/kill":    {"signal"},
	"POST containers/update":  nil,
	"POST containers/rename":  {"name"},
	"POST containers/pause":   nil, "POST containers/unpause": nil,
	"POST containers/attach": {"detachKeys", "logs", "stream", "stdin", "stdout", "stderr"},
	"GET containers/ws":      {"detachKeys", "logs", "stream", "stdin", "stdout", "stderr"},
	"POST containers/wait":   {"condition"},
	"DELETE containers":      {"v", "force", "link"},
	"GET containers/archive": {"path"}, "HEAD containers/archive": {"path"},
	"PUT containers/archive": {"path", "noOverwriteDirNonDir", "copyUIDGID"},
	"POST containers/exec":   nil,
	"POST exec/start":        nil, "POST exec/resize": {"h", "w"}, "GET exec/json": nil,
	"GET images/json":       {"all", "filters", "shared-size", "digests"},
	"GET images/history":    nil,
	"POST images/create":    {"fromImage", "fromSrc", "repo", "tag", "message", "changes", "platform"},
	"POST images/push":      {"tag"},
	"POST images/tag":       {"repo", "tag"},
	"DELETE images":         {"force", "noprune"},
	"GET images/search":     {"term", "limit", "filters"},
	"GET images/get":        {"names"},
	"POST images/load":      {"quiet"},
	"POST build":            buildQuery,
	"GET networks":          {"filters"},
	"GET networks/*":        {"verbose", "scope"},
	"POST networks/create":  nil,
	"DELETE networks":       nil,
	"POST networks/connect": nil, "POST networks/disconnect": nil,
	"GET volumes":         {"filters"},
	"POST volumes/create": nil,
	"GET volumes/*":       nil,
	"DELETE volumes":      {"force"},
}

// queryKeys returns the query parameters the Docker API defines for the
// endpoint of a request, and whether the table knows the endpoint.
func queryKeys(method string, segs []string) ([]string, bool) {
	if method == http.MethodDelete || len(segs) == 1 {
		keys, ok := apiQueryKeys[method+" "+segs[0]]
		return keys, ok
	}
	if keys, ok := apiQueryKeys[method+" "+segs[0]+"/"+segs[len(segs)-1]]; ok {
		return keys, true
	}
	keys, ok := apiQueryKeys[method+" "+segs[0]+"/*"]
	return keys, ok
}

// request is one request being checked.
type request struct {
	*http.Request
	ctx    context.Context
	f      *Filter
	prefix string
	query  url.Values
	// held is released once the daemon has answered the request.
	held   []func()
	heldMu sync.Mutex
	// rewrite, if set, edits the daemon's answer.
	rewrite func(*http.Response) error
}

func (r *request) hold(release func()) { r.held = append(r.held, release) }

// releaseHeld releases what the request holds, once: it may be called from
// the answer's headers and again when the answer ends.
func (r *request) releaseHeld() {
	r.heldMu.Lock()
	held := r.held
	r.held = nil
	r.heldMu.Unlock()
	for i := len(held) - 1; i >= 0; i-- {
		held[i]()
	}
}

func (r *request) setPath(segs ...string) { r.URL.Path = r.prefix + "/" + strings.Join(segs, "/") }

func (r *request) route(segs []string) error {
	m := r.Method
	if segs[0] == "libpod" || (len(segs) > 1 && segs[1] == "libpod") {
		return refuse("the Podman API (%s) is not available through the guarded socket: use the docker CLI, which speaks the Docker-compatible API, or ask the admin for [podman] guard = false", r.URL.Path)
	}
	switch segs[0] {
	case "_ping":
		if len(segs) == 1 && (m == http.MethodGet || m == http.MethodHead) {
			return r.noBody()
		}
	case "version", "info":
		if len(segs) == 1 && m == http.MethodGet {
			return r.noBody()
		}
	case "auth":
		if len(segs) == 1 && m == http.MethodPost {
			data, err := r.jsonBody()
			if err != nil {
				return err
			}
			var login struct {
				ServerAddress string `json:"serveraddress"`
			}
			if err := json.Unmarshal(data, &login); err != nil {
				return refuse("login: bad JSON body: %v", err)
			}
			return r.f.checkAuthServer(login.ServerAddress)
		}
	case "containers":
		return r.containers(segs)
	case "exec":
		return r.exec(segs)
	case "images":
		return r.images(segs)
	case "build":
		if len(segs) == 1 && m == http.MethodPost {
			return r.build()
		}
		return refuse("%s %s is not allowed: only the classic image build (POST /build) is", m, r.URL.Path)
	case "networks":
		return r.networks(segs)
	case "volumes":
		return r.volumes(segs)
	case "session", "grpc":
		return refuse("BuildKit (%s) is not available: build with the classic builder (set DOCKER_BUILDKIT=0)", "/"+segs[0])
	}
	return refuse("%s /%s is not allowed: the job may only build, pull, push and run its own containers", m, strings.Join(segs, "/"))
}

func (r *request) notAllowed() error {
	return refuse("%s %s is not allowed", r.Method, r.URL.Path)
}

// hasBody reports whether the request carries a body or may.
func (r *request) hasBody() bool { return r.ContentLength != 0 || len(r.TransferEncoding) > 0 }

func (r *request) noBody() error {
	if r.hasBody() {
		return refuse("%s %s takes no request body", r.Method, r.URL.Path)
	}
	return nil
}

func (r *request) mediaType() string {
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil {
		return ""
	}
	return mt
}

// jsonBody reads a JSON body that the endpoint requires and checks its
// keys.
func (r *request) jsonBody() ([]byte, error) {
	what := r.Method + " " + r.URL.Path
	switch {
	case len(r.TransferEncoding) > 0:
		return nil, refuse("%s: chunked request bodies are not allowed; send a Content-Length", what)
	case r.ContentLength == 0:
		return nil, refuse("%s: the request body is empty; it must be a JSON document", what)
	case r.ContentLength < 0:
		return nil, refuse("%s: the request body has no length", what)
	case r.ContentLength > MaxJSONBody:
		return nil, refuse("%s: the request body of %d bytes is over the %d byte limit", what, r.ContentLength, MaxJSONBody)
	case r.mediaType() != "application/json":
		return nil, refuse("%s: the request body must be application/json, not %q", what, r.Header.Get("Content-Type"))
	}
	if r.Body == nil {
		return nil, refuse("%s: the request body is missing", what)
	}
	// Exactly the announced length, so a body costs at most MaxJSONBody.
	data := make([]byte, r.ContentLength)
	if n, err := io.ReadFull(r.Body, data); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
			return nil, refuse("%s: the request body is shorter than its Content-Length (%d of %d bytes)", what, n, r.ContentLength)
		}
		return nil, refuse("%s: reading the request body failed after %d of %d bytes: %v", what, n, r.ContentLength, err)
	}
	if err := strictjson.CheckKeys(data, maxJSONDepth); err != nil {
		return nil, refuse("%s: bad JSON body: %v", what, err)
	}
	r.setBody(data)
	return data, nil
}

// decode reads the JSON body into v.
func (r *request) decode(v any) error {
	data, err := r.jsonBody()
	if err != nil {
		return err
	}
	if err := strictjson.Decode(data, maxJSONDepth, v); err != nil {
		return refuse("%s %s: bad JSON body: %v", r.Method, r.URL.Path, err)
	}
	return nil
}

// encode replaces the body with v, so the daemon sees exactly what was
// checked and nothing the Docker API types do not know.
func (r *request) encode(v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode the checked request body: %w", err)
	}
	r.setBody(data)
	return nil
}

func (r *request) setBody(data []byte) {
	r.Body = io.NopCloser(bytes.NewReader(data))
	r.ContentLength = int64(len(data))
	r.TransferEncoding = nil
	r.Header.Del("Content-Length")
	r.Header.Del("Transfer-Encoding")
}

// tarBody accepts a streamed tar body (build contexts, archives, image
// loads), chunked or not.
func (r *request) tarBody() error {
	if !r.hasBody() {
		return nil
	}
	if mt := r.mediaType(); mt != "application/x-tar" {
		return refuse("%s %s: the request body must be application/x-tar, not %q", r.Method, r.URL.Path, r.Header.Get("Content-Type"))
	}
	return nil
}

// allowQuery refuses query parameters not in allowed.
func (r *request) allowQuery(allowed ...string) error {
	for k := range r.query {
		if !contains(allowed, k) {
			return refuse("%s %s: query parameter %q is not allowed", r.Method, r.URL.Path, k)
		}
	}
	return nil
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// matches reports whether labels carry the job's selector.
func (f *Filter) matches(labels map[string]string) bool {
	for k, v := range f.selector {
		if labels[k] != v {
			return false
		}
	}
	return true
}

func (f *Filter) owned(labels map[string]string) bool {
	return f.matches(labels) && labels[backends.LabelRole] == RoleJobCreated
}

// ownContainer resolves ref to the full id of a container the job created.
func (r *request) ownContainer(ref string) (string, error) {
	if ref == "" {
		return "", refuse("empty container reference")
	}
	obj, err := r.f.up.Container(r.ctx, ref)
	if errors.Is(err, ErrNotFound) {
		return "", notFound("No such container: %s", ref)
	}
	if err != nil {
		return "", fmt.Errorf("look up container %q: %w", ref, err)
	}
	if !r.f.owned(obj.Labels) {
		return "", refuse("container %q was not created by this job; the job may only use containers it created", ref)
	}
	return obj.ID, nil
}

// usableNetwork checks a network a job container joins: the default bridge,
// the job's network or one the job created. It returns the reference to
// forward: the job's network in place of the default one, when the filter
// has it.
func (r *request) usableNetwork(ref string) (string, error) {
	switch ref {
	case "bridge", "default", "":
		if r.f.network == "" {
			return ref, nil
		}
		ref = r.f.network
	case "none":
		return ref, nil
	case "host":
		return "", refuse("network %q is not allowed; use the default network or one the job created", ref)
	}
	// The engine gets the network's full id, never a name: a name can be
	// removed and taken again, and the engine resolves a name it no longer
	// knows as an id prefix, another job's network's perhaps.
	obj, err := r.f.up.Network(r.ctx, ref)
	if errors.Is(err, ErrNotFound) {
		return "", notFound("network %s not found", ref)
	}
	if err != nil {
		return "", fmt.Errorf("look up network %q: %w", ref, err)
	}
	if !r.f.owned(obj.Labels) && !(r.f.matches(obj.Labels) && obj.Labels[backends.LabelRole] == roleJobNetwork) {
		return "", refuse("network %q does not belong to this job; use the default network or one the job created", ref)
	}
	return obj.ID, nil
}

// berthNamePrefix starts the names of what berth makes for jobs (see
// backends.JobName): a job may not take such a name, which a later job's
// prepare would use.
const berthNamePrefix = "berth-"

func checkName(kind, name string) error {
	if strings.HasPrefix(strings.TrimPrefix(name, "/"), berthNamePrefix) {
		return refuse("%s name %q is not allowed: names starting with %q are berth's own, for the jobs it prepares; choose another name", kind, name, berthNamePrefix)
	}
	return nil
}

func (r *request) ownNetwork(ref string) (string, error) {
	obj, err := r.f.up.Network(r.ctx, ref)
	if errors.Is(err, ErrNotFound) {
		return "", notFound("network %s not found", ref)
	}
	if err != nil {
		return "", fmt.Errorf("look up network %q: %w", ref, err)
	}
	if !r.f.owned(obj.Labels) {
		return "", refuse("network %q was not created by this job", ref)
	}
	return obj.ID, nil
}

func (r *request) ownVolume(name string) error {
	obj, err := r.f.up.Volume(r.ctx, name)
	if errors.Is(err, ErrNotFound) {
		return notFound("volume %q does not exist; create it first with `docker volume create %s` so that berth labels it and removes it with the job", name, name)
	}
	if err != nil {
		return fmt.Errorf("look up volume %q: %w", name, err)
	}
	if !r.f.owned(obj.Labels) {
		return refuse("volume %q was not created by this job", name)
	}
	return nil
}

// withLabels returns user labels without berth's namespace, plus the job's
// ownership labels: a job cannot forge or drop them.
func (f *Filter) withLabels(user map[string]string) map[string]string {
	out := map[string]string{}
	for k, v := range user {
		if !strings.HasPrefix(strings.ToLower(k), backends.LabelPrefix) {
			out[k] = v
		}
	}
	for k, v := range f.labels {
		out[k] = v
	}
	return out
}

// narrowList adds the job's labels to a list request's filters.
func (r *request) narrowList() error {
	args := filters.NewArgs()
	if raw := r.query.Get("filters"); raw != "" {
		parsed, err := filters.FromJSON(raw)
		if err != nil {
			return refuse("bad filters parameter: %v", err)
		}
		args = parsed
	}
	keys := make([]string, 0, len(r.f.selector))
	for k := range r.f.selector {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		args.Add("label", k+"="+r.f.selector[k])
	}
	args.Add("label", backends.LabelRole+"="+RoleJobCreated)
	raw, err := filters.ToJSON(args)
	if err != nil {
		return fmt.Errorf("encode list filters: %w", err)
	}
	r.query.Set("filters", raw)
	// Podman 4.3 ORs several label filters of a list: keep only the job's
	// own objects in the answer, whatever the engine did with the filters.
	r.rewrite = r.f.keepOwn
	return nil
}

// keepOwn drops from a list answer (containers, networks, or volumes
// wrapped in {"Volumes": [...]}) every object that is not the job's own.
func (f *Filter) keepOwn(resp *http.Response) error {
	return keepWhere(resp, func(e listEntry) bool { return f.owned(e.Labels) })
}

// listEntry is what a list answer's entry is judged by.
type listEntry struct {
	Labels      map[string]string
	RepoTags    []string
	RepoDigests []string
}

// keepVisibleImages drops from an image list the images another
// project's jobs built, which the job may not inspect either.
func (f *Filter) keepVisibleImages(resp *http.Response) error {
	return keepWhere(resp, func(e listEntry) bool {
		return f.objectKind(Object{Labels: e.Labels, Untagged: len(e.RepoTags) == 0 && len(e.RepoDigests) == 0}) != imageForeign
	})
}

// keepWhere drops from a list answer every object whose labels keep
// does not accept.
func keepWhere(resp *http.Response, accept func(listEntry) bool) error {
	if resp.StatusCode != http.StatusOK {
		return nil
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, 256<<20))
	resp.Body.Close()
	if err != nil {
		return fmt.Errorf("read the list answer: %w", err)
	}
	keep := func(items []json.RawMessage) ([]json.RawMessage, error) {
		out := []json.RawMessage{}
		for _, item := range items {
			var obj listEntry
			if err := json.Unmarshal(item, &obj); err != nil {
				return nil, fmt.Errorf("decode a list entry: %w", err)
			}
			if accept(obj) {
				out = append(out, item)
			}
		}
		return out, nil
	}
	var out []byte
	if trimmed := bytes.TrimSpace(data); len(trimmed) > 0 && trimmed[0] == '{' {
		var wrapped map[string]json.RawMessage
		if err := json.Unmarshal(data, &wrapped); err != nil {
			return fmt.Errorf("decode the list answer: %w", err)
		}
		var items []json.RawMessage
		if raw := wrapped["Volumes"]; len(raw) > 0 && string(raw) != "null" {
			if err := json.Unmarshal(raw, &items); err != nil {
				return fmt.Errorf("decode the volume list: %w", err)
			}
		}
		kept, err := keep(items)
		if err != nil {
			return err
		}
		if wrapped["Volumes"], err = json.Marshal(kept); err != nil {
			return err
		}
		if out, err = json.Marshal(wrapped); err != nil {
			return err
		}
	} else {
		var items []json.RawMessage
		if err := json.Unmarshal(data, &items); err != nil {
			return fmt.Errorf("decode the list answer: %w", err)
		}
		kept, err := keep(items)
		if err != nil {
			return err
		}
		if out, err = json.Marshal(kept); err != nil {
			return err
		}
	}
	resp.Body = io.NopCloser(bytes.NewReader(out))
	resp.ContentLength = int64(len(out))
	resp.Header.Set("Content-Length", strconv.Itoa(len(out)))
	resp.Header.Del("Transfer-Encoding")
	resp.TransferEncoding = nil
	return nil
}

func (r *request) containers(segs []string) error {
	m := r.Method
	if len(segs) == 2 {
		switch {
		case segs[1] == "json" && m == http.MethodGet:
			if err := r.noBody(); err != nil {
				return err
			}
			return r.narrowList()
		case segs[1] == "create" && m == http.MethodPost:
			return r.createContainer()
		case segs[1] == "prune":
			return refuse("container prune is not allowed; berth removes the job's containers at cleanup")
		case m == http.MethodDelete:
			if r.query.Get("link") != "" && r.query.Get("link") != "0" && r.query.Get("link") != "false" {
				return refuse("removing container links is not allowed")
			}
			id, err := r.ownContainer(segs[1])
			if err != nil {
				return err
			}
			r.setPath("containers", id)
			// Its anonymous volumes go with it: they carry no labels, so
			// nothing could find them afterwards.
			r.query.Set("v", "1")
			return r.noBody()
		}
		return r.notAllowed()
	}
	if len(segs) < 3 || len(segs) > 4 {
		return r.notAllowed()
	}
	action := strings.Join(segs[2:], "/")
	type rule struct{ methods, body string }
	rules := map[string]rule{
		"json": {"GET", ""}, "top": {"GET", ""}, "logs": {"GET", ""},
		"export": {"GET", ""}, "stats": {"GET", ""}, "attach/ws": {"GET", ""},
		"start": {"POST", ""}, "stop": {"POST", ""}, "restart": {"POST", ""}, "kill": {"POST", ""},
		"pause": {"POST", ""}, "unpause": {"POST", ""}, "wait": {"POST", ""}, "resize": {"POST", ""},
		"rename": {"POST", ""}, "attach": {"POST", ""},
		"update": {"POST", "update"}, "exec": {"POST", "exec"},
		"archive": {"GET HEAD PUT", "tar"},
	}
	rl, ok := rules[action]
	if !ok || !contains(strings.Fields(rl.methods), m) {
		return r.notAllowed()
	}
	id, err := r.ownContainer(segs[1])
	if err != nil {
		return err
	}
	segs[1] = id
	r.setPath(segs...)
	switch {
	case action == "top":
		// The engine runs ps on the host with these options and keeps
		// the lines whose PID column is one of the container's: options
		// that rename another column to PID, or add every process's
		// environment (BSD e), showed other jobs' processes and secrets.
		if args := r.query.Get("ps_args"); args != "" && args != "-ef" && args != "aux" && args != "-f" {
			return refuse("docker top options %q are not allowed (allowed: none, -ef, -f, aux): the engine runs ps on the host with them", args)
		}
		return r.noBody()
	case action == "rename":
		if err := checkName("container", r.query.Get("name")); err != nil {
			return err
		}
		return r.noBody()
	case action == "restart":
		// A running container would go on running (and could swap its
		// own bind sources) while its binds are checked, and the engine
		// mounts them again when it stops and starts it. So the guard
		// stops it first, then checks, then has the engine start it.
		if err := r.noBody(); err != nil {
			return err
		}
		if err := r.allowQuery("t", "signal"); err != nil {
			return err
		}
		if err := r.f.up.Stop(r.ctx, id, r.query.Get("t"), r.query.Get("signal")); err != nil && !errors.Is(err, ErrNotFound) {
			return fmt.Errorf("stop container %.12s for its restart: %w", id, err)
		}
		r.query = url.Values{}
		segs[2] = "start"
		r.setPath(segs...)
		return r.holdStart(id)
	case action == "start" || action == "unpause":
		if err := r.noBody(); err != nil {
			return err
		}
		return r.holdStart(id)
	case action == "attach" || action == "attach/ws":
		// Podman's attach initialises a created container, which mounts
		// its binds: check them as for a start, and hold until the
		// engine's answer begins. The stream lasts as long as the
		// container, so nothing is held past that.
		if err := r.noBody(); err != nil {
			return err
		}
		if err := r.holdStart(id); err != nil {
			return err
		}
		r.rewrite = func(*http.Response) error {
			r.releaseHeld()
			return nil
		}
		return nil
	case rl.body == "update":
		var upd container.UpdateConfig
		if err := r.decode(&upd); err != nil {
			return err
		}
		if err := checkResources(&upd.Resources); err != nil {
			return err
		}
		if err := checkRestartPolicy(upd.RestartPolicy); err != nil {
			return err
		}
		if err := r.f.ceilings.bound(&upd.Resources, true); err != nil {
			return err
		}
		return r.encode(&upd)
	case rl.body == "exec":
		var opts container.ExecOptions
		if err := r.decode(&opts); err != nil {
			return err
		}
		if opts.Privileged {
			return refuse("privileged exec is not allowed")
		}
		return r.encode(&opts)
	case action == "archive":
		// The engine mounts a container's binds again for every copy into
		// or out of it, following symlinks as at a start, while the job
		// (the docker CLI streaming the copy among it) runs: no pause can
		// cover that. Containers with host binds have no docker cp.
		obj, err := r.f.up.Container(r.ctx, id)
		if err != nil {
			return fmt.Errorf("look up container %q: %w", id, err)
		}
		if len(obj.Binds) > 0 {
			sources := make([]string, len(obj.Binds))
			for i, b := range obj.Binds {
				sources[i] = b.Source
			}
			return refuse("docker cp is not available for a container with bind mounts (%s): the engine would mount them again for the copy; copy through the builds directory, which the container binds, instead", strings.Join(sources, ", "))
		}
		// The engine mounts the volumes too, at their destinations as it
		// resolves them in the container when the copy comes, and its
		// hosts, hostname and resolv.conf files beneath them: a process
		// that can write in the container or in one of its volumes could
		// swap a directory or file on the way for a symlink meanwhile.
		// So a copy with volumes is for a container that does not run,
		// whose volumes no running container of the job mounts too, with
		// no volume beneath another, and no start or unpause of any
		// container of the job until the copy is done.
		if len(obj.Volumes) > 0 {
			if obj.Running {
				return refuse("docker cp is not available for a running container with volumes (%s): the engine would mount them again for the copy while the container runs; copy before it starts or after it stopped", strings.Join(obj.Volumes, ", "))
			}
			if a, b, nested := nestedPaths(obj.Volumes); nested {
				return refuse("docker cp is not available for a container with a volume at %s beneath another at %s", b, a)
			}
			r.f.startMu.Lock()
			r.hold(r.f.startMu.Unlock)
			if err := r.volumesAtRest(obj); err != nil {
				return err
			}
		}
		if m == http.MethodPut {
			// The docker CLI sends its archive as text/plain, the Docker
			// client's default for a body without a type.
			if r.hasBody() && r.mediaType() == "text/plain" {
				return nil
			}
			return r.tarBody()
		}
	}
	return r.noBody()
}

// volumesAtRest refuses while a running container of the job mounts one
// of obj's volumes, which it could change while the engine mounts them.
func (r *request) volumesAtRest(obj Object) error {
	ids, err := r.f.up.RunningContainers(r.ctx, r.f.selector)
	if err != nil {
		return fmt.Errorf("list the job's running containers: %w", err)
	}
	for _, id := range ids {
		other, err := r.f.up.Container(r.ctx, id)
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			return fmt.Errorf("look up container %q: %w", id, err)
		}
		for _, v := range other.VolumeNames {
			if contains(obj.VolumeNames, v) {
				return refuse("docker cp is not available now: container %.12s, which runs, mounts the volume %s too, and could change it while the engine mounts it for the copy; stop that container first", id, v)
			}
		}
	}
	return nil
}

// holdStart checks the binds of container id before the engine starts it
// and holds what makes the check last until the engine has answered: the
// filter's start lock and the job's other running containers paused, or
// on Podman the mounts compared once made (see [Filter]).
func (r *request) holdStart(id string) error {
	r.f.startMu.Lock()
	r.hold(r.f.startMu.Unlock)
	if !r.f.noFreeze {
		if err := r.freezeJob(id); err != nil {
			return err
		}
	}
	obj, err := r.f.up.Container(r.ctx, id)
	if errors.Is(err, ErrNotFound) {
		return notFound("No such container: %s", id)
	}
	if err != nil {
		return fmt.Errorf("look up container %q: %w", id, err)
	}
	for _, b := range obj.Binds {
		if err := r.f.checkBindSourceNow(b.Source); err != nil {
			return err
		}
	}
	if r.f.verifyMounts && len(obj.Binds) > 0 {
		return r.verifyMounts(obj)
	}
	return nil
}

// verifyMounts has the engine initialise container obj, which mounts its
// binds without running anything, and compares each mount with what its
// source is now, found without following a symlink. On a difference the
// container is stopped, which unmounts what it got, and the start refused.
func (r *request) verifyMounts(obj Object) error {
	pid, err := r.f.up.Init(r.ctx, obj.ID)
	if errors.Is(err, ErrNotFound) {
		return notFound("No such container: %s", obj.ID)
	}
	if err != nil {
		return fmt.Errorf("initialise container %.12s to check its mounts: %w", obj.ID, err)
	}
	for _, b := range obj.Binds {
		if err := r.f.verifyMount(pid, b); err != nil {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if serr := r.f.up.Stop(ctx, obj.ID, "0", ""); serr != nil && !errors.Is(serr, ErrNotFound) {
				return fmt.Errorf("%w; and stopping the container failed: %v", err, serr)
			}
			return err
		}
	}
	return nil
}

// verifyMount compares what the container whose process is pid has at
// b.Target with what lies at b.Source now.
func (f *Filter) verifyMount(pid int, b Bind) error {
	src, err := f.openBeneath(b.Source)
	if err != nil {
		return err
	}
	if src < 0 {
		return refuse("bind source %q is not allowed now: it vanished while the container started; bind the real directory, and do not replace a bound directory", b.Source)
	}
	var want unix.Stat_t
	err = unix.Fstat(src, &want)
	unix.Close(src)
	if err != nil {
		return fmt.Errorf("stat %s: %w", b.Source, err)
	}
	got, err := f.mounted(pid, b.Target)
	if err != nil {
		return fmt.Errorf("check what the engine mounted at %s: %w", b.Target, err)
	}
	if got.Dev != want.Dev || got.Ino != want.Ino {
		return refuse("bind source %q is not allowed now: the engine mounted something else at %s than the directory found there, because a path component was swapped while the container started; the container was stopped. Bind the real directory, and do not replace a bound directory with a symlink", b.Source, b.Target)
	}
	return nil
}

// procMounted stats target in the root of process pid, resolving every
// symlink on the way within that root, as the runtime did when it mounted.
func procMounted(pid int, target string) (unix.Stat_t, error) {
	var st unix.Stat_t
	root, err := unix.Open(fmt.Sprintf("/proc/%d/root", pid), unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return st, fmt.Errorf("open the container's root (the guard must share the engine's pid namespace and may read other processes' roots): %w", err)
	}
	defer unix.Close(root)
	fd, err := unix.Openat2(root, strings.TrimPrefix(target, "/"), &unix.OpenHow{
		Flags:   unix.O_PATH | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS,
	})
	if err != nil {
		return st, err
	}
	defer unix.Close(fd)
	err = unix.Fstat(fd, &st)
	return st, err
}

// freezeJob pauses every running container of the job but target and the
// proxy itself, and holds their unpausing.
func (r *request) freezeJob(target string) error {
	ids, err := r.f.up.RunningContainers(r.ctx, r.f.selector)
	if err != nil {
		return fmt.Errorf("list the job's running containers: %w", err)
	}
	for _, id := range ids {
		if id == target {
			continue
		}
		obj, err := r.f.up.Container(r.ctx, id)
		if errors.Is(err, ErrNotFound) {
			continue // gone: nothing of it runs
		}
		if err != nil {
			return fmt.Errorf("look up container %q: %w", id, err)
		}
		if obj.Labels[backends.LabelRole] == RoleProxy {
			continue
		}
		err = r.f.up.Pause(r.ctx, id)
		if errors.Is(err, ErrNotRunning) || errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			return refuse("cannot start a container now: pausing the job's container %.12s while the start is checked failed: %v; try again", id, err)
		}
		r.hold(func() {
			// The request's context may be gone; the thaw must happen.
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			_ = r.f.up.Unpause(ctx, id)
		})
	}
	return nil
}

// checkRestartPolicy refuses restart policies: with one the engine starts
// the container again by itself, with no request whose binds the filter
// could check.
func checkRestartPolicy(p container.RestartPolicy) error {
	if p.Name == "" || p.Name == container.RestartPolicyDisabled {
		return nil
	}
	return refuse("restart policy %q is not allowed: the engine would restart the container without the guard checking its binds again; start it again with `docker start`", p.Name)
}

func (r *request) exec(segs []string) error {
	if len(segs) != 3 {
		return r.notAllowed()
	}
	switch {
	case segs[2] == "json" && r.Method == http.MethodGet:
	case (segs[2] == "start" || segs[2] == "resize") && r.Method == http.MethodPost:
	default:
		return r.notAllowed()
	}
	cid, err := r.f.up.ExecContainer(r.ctx, segs[1])
	if errors.Is(err, ErrNotFound) {
		return notFound("No such exec instance: %s", segs[1])
	}
	if err != nil {
		return fmt.Errorf("look up exec %q: %w", segs[1], err)
	}
	if _, err := r.ownContainer(cid); err != nil {
		return err
	}
	if segs[2] == "start" {
		var opts container.ExecStartOptions
		if err := r.decode(&opts); err != nil {
			return err
		}
		return r.encode(&opts)
	}
	return r.noBody()
}

// buildQuery lists the classic builder's parameters.
var buildQuery = []string{"t", "q", "remote", "nocache", "rm", "forcerm", "pull", "squash", "isolation",
	"cpusetcpus", "networkmode", "cpusetmems", "cpushares", "cpuquota", "cpuperiod", "memory", "memswap",
	"cgroupparent", "shmsize", "dockerfile", "target", "ulimits", "buildargs", "labels", "cachefrom",
	"session", "platform", "buildid", "version", "outputs", "extrahosts"}

func (r *request) build() error {
	if err := r.allowQuery(buildQuery...); err != nil {
		return err
	}
	for _, k := range []string{"remote", "cgroupparent", "session", "outputs"} {
		if v := r.query.Get(k); v != "" && !(k == "outputs" && (v == "[]" || v == "null")) {
			return refuse("build parameter %s is not allowed", k)
		}
	}
	if v := r.query.Get("version"); v != "" && v != "1" {
		return refuse("BuildKit builds (version=%s) are not available: build with the classic builder (set DOCKER_BUILDKIT=0)", v)
	}
	if v := r.query.Get("isolation"); v != "" && v != "default" {
		return refuse("build isolation %q is not allowed", v)
	}
	// RUN steps join the job's network, as its containers do.
	if mode := r.query.Get("networkmode"); mode != "none" {
		id, err := r.usableNetwork(mode)
		if err != nil {
			return err
		}
		if id != "" && id != "default" {
			r.query.Set("networkmode", id)
		}
	}
	var labels map[string]string
	if raw := r.query.Get("labels"); raw != "" {
		if err := strictjson.Decode([]byte(raw), 2, &labels); err != nil {
			return refuse("bad labels parameter: %v", err)
		}
	}
	data, err := json.Marshal(r.f.withLabels(labels))
	if err != nil {
		return err
	}
	r.query.Set("labels", string(data))
	for _, name := range r.query["t"] {
		if err := r.imageTarget(name); err != nil {
			return err
		}
	}
	if err := r.boundBuild(); err != nil {
		return err
	}
	if err := r.boundBuildCache(); err != nil {
		return err
	}
	if err := r.tarBody(); err != nil {
		return err
	}
	// What the Dockerfile would fetch (buildcheck.go).
	return r.checkBuild()
}

func (r *request) networks(segs []string) error {
	m := r.Method
	switch {
	case len(segs) == 1 && m == http.MethodGet:
		if err := r.noBody(); err != nil {
			return err
		}
		return r.narrowList()
	case len(segs) == 2 && segs[1] == "create" && m == http.MethodPost:
		return r.createNetwork()
	case len(segs) == 2 && segs[1] == "prune":
		return refuse("network prune is not allowed")
	case len(segs) == 2 && m == http.MethodGet:
		if contains([]string{"bridge", "default", "none", "host"}, segs[1]) {
			return refuse("inspecting the shared network %q is not allowed: it lists other jobs' containers", segs[1])
		}
		if _, err := r.usableNetwork(segs[1]); err != nil {
			return err
		}
		return r.noBody()
	case len(segs) == 2 && m == http.MethodDelete:
		id, err := r.ownNetwork(segs[1])
		if err != nil {
			return err
		}
		r.setPath("networks", id)
		return r.noBody()
	case len(segs) == 3 && m == http.MethodPost && (segs[2] == "connect" || segs[2] == "disconnect"):
		ref, err := r.usableNetwork(segs[1])
		if err != nil {
			return err
		}
		r.setPath("networks", ref, segs[2])
		if segs[2] == "disconnect" {
			var opts network.DisconnectOptions
			if err := r.decode(&opts); err != nil {
				return err
			}
			id, err := r.ownContainer(opts.Container)
			if err != nil {
				return err
			}
			opts.Container = id
			return r.encode(&opts)
		}
		var opts network.ConnectOptions
		if err := r.decode(&opts); err != nil {
			return err
		}
		id, err := r.ownContainer(opts.Container)
		if err != nil {
			return err
		}
		opts.Container = id
		if opts.EndpointConfig != nil {
			if err := checkEndpoint(opts.EndpointConfig, segs[1]); err != nil {
				return err
			}
			if len(opts.EndpointConfig.DriverOpts) > 0 {
				return refuse("endpoint driver options are not allowed")
			}
			if err := r.checkLinks(opts.EndpointConfig.Links); err != nil {
				return err
			}
		}
		return r.encode(&opts)
	}
	return r.notAllowed()
}

// checkEndpoint refuses the endpoint fields the engine would take over the
// network the request names: dockerd joins EndpointSettings.NetworkID, not
// the key it was checked by.
func checkEndpoint(ep *network.EndpointSettings, name string) error {
	if ep.NetworkID != "" || ep.EndpointID != "" || ep.Gateway != "" || ep.IPAddress != "" || ep.IPPrefixLen != 0 ||
		ep.IPv6Gateway != "" || ep.GlobalIPv6Address != "" || ep.GlobalIPv6PrefixLen != 0 {
		return refuse("endpoint settings for network %q may not set NetworkID, EndpointID, Gateway, IPAddress or their IPv6 forms (use IPAMConfig for a fixed address)", name)
	}
	return nil
}

func (r *request) createNetwork() error {
	var req network.CreateRequest
	if err := r.decode(&req); err != nil {
		return err
	}
	if err := checkName("network", req.Name); err != nil {
		return err
	}
	// Both engines keep a container's networks by name and look the name
	// up again at start; a name gone by then is tried as an id prefix,
	// perhaps another job's network's.
	if hexName.MatchString(req.Name) {
		return refuse("network name %q is not allowed: a name of hex digits only would be taken for another network's id once this network is gone; add a letter beyond f or a dash", req.Name)
	}
	switch {
	case req.Driver != "" && req.Driver != "bridge":
		return refuse("network driver %q is not allowed; only bridge networks", req.Driver)
	case req.Scope != "" && req.Scope != "local":
		return refuse("network scope %q is not allowed", req.Scope)
	case req.Ingress || req.ConfigOnly || req.ConfigFrom != nil:
		return refuse("ingress and config-only networks are not allowed")
	}
	for k := range req.Options {
		if k != "com.docker.network.driver.mtu" {
			return refuse("network option %q is not allowed", k)
		}
	}
	if req.IPAM != nil && (req.IPAM.Driver != "" && req.IPAM.Driver != "default" || len(req.IPAM.Options) > 0) {
		return refuse("IPAM drivers and options are not allowed")
	}
	// A subnet of the job's choosing could take the engine's address pools
	// from every later job, or route the host's traffic to a job's
	// container (a subnet around a resolver or the metadata address).
	if req.IPAM != nil && len(req.IPAM.Config) > 0 {
		return refuse("choosing a network's subnet, range or gateway is not allowed; the engine picks them")
	}
	req.Labels = r.f.withLabels(req.Labels)
	return r.encode(&req)
}

func (r *request) volumes(segs []string) error {
	m := r.Method
	switch {
	case len(segs) == 1 && m == http.MethodGet:
		if err := r.noBody(); err != nil {
			return err
		}
		return r.narrowList()
	case len(segs) == 2 && segs[1] == "create" && m == http.MethodPost:
		var opts volume.CreateOptions
		if err := r.decode(&opts); err != nil {
			return err
		}
		if opts.Driver != "" && opts.Driver != "local" {
			return refuse("volume driver %q is not allowed", opts.Driver)
		}
		if len(opts.DriverOpts) > 0 {
			return refuse("volume driver options (%s) are not allowed: they can mount host paths or devices", strings.Join(sortedKeys(opts.DriverOpts), ", "))
		}
		if opts.ClusterVolumeSpec != nil {
			return refuse("cluster volumes are not allowed")
		}
		if err := checkName("volume", opts.Name); err != nil {
			return err
		}
		opts.Labels = r.f.withLabels(opts.Labels)
		return r.encode(&opts)
	case len(segs) == 2 && segs[1] == "prune":
		return refuse("volume prune is not allowed")
	case len(segs) == 2 && (m == http.MethodGet || m == http.MethodDelete):
		if m == http.MethodDelete {
			// Not while a create that mounts a volume is checked and
			// made: the engine would make the volume anew, unlabelled.
			r.f.volumeMu.Lock()
			r.hold(r.f.volumeMu.Unlock)
		}
		if err := r.ownVolume(segs[1]); err != nil {
			return err
		}
		return r.noBody()
	}
	return r.notAllowed()
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func (r *request) createContainer() error {
	if err := r.allowQuery("name", "platform"); err != nil {
		return err
	}
	r.f.volumeMu.RLock()
	r.hold(r.f.volumeMu.RUnlock)
	if err := checkName("container", r.query.Get("name")); err != nil {
		return err
	}
	var req container.CreateRequest
	if err := r.decode(&req); err != nil {
		return err
	}
	if req.Config == nil {
		req.Config = &container.Config{}
	}
	req.Config.Labels = r.f.withLabels(req.Config.Labels)
	// An anonymous volume's path: Podman reads "src:dst" here as a bind.
	for target := range req.Config.Volumes {
		if !strings.HasPrefix(target, "/") || strings.ContainsAny(target, ":,=") {
			return refuse("volume %q is not allowed: give an absolute path in the container, with no colon, comma or equals sign", target)
		}
	}

	// No host config is the engine's defaults: the default network, no
	// limits. It gets the job's network and the ceilings as any other.
	if req.HostConfig == nil {
		req.HostConfig = &container.HostConfig{}
	}
	if err := r.checkHostConfig(req.HostConfig); err != nil {
		return err
	}
	if err := r.holdCreate(req.Config, req.HostConfig); err != nil {
		return err
	}
	if err := r.publishPorts(req.Config, req.HostConfig); err != nil {
		return err
	}
	if req.NetworkingConfig != nil {
		endpoints := map[string]*network.EndpointSettings{}
		for name, ep := range req.NetworkingConfig.EndpointsConfig {
			ref, err := r.usableNetwork(name)
			if err != nil {
				return err
			}
			endpoints[ref] = ep
			if ep != nil {
				if err := checkEndpoint(ep, name); err != nil {
					return err
				}
				if len(ep.DriverOpts) > 0 {
					return refuse("endpoint driver options on network %q are not allowed", name)
				}
				if err := r.checkLinks(ep.Links); err != nil {
					return err
				}
			}
		}
		req.NetworkingConfig.EndpointsConfig = endpoints
	}
	// Last, once the request's shape is checked. By the id checked: the
	// engine would look the name up again, and another job could make it
	// another image in that moment.
	imageID, err := r.containerImage(req.Config.Image)
	if err != nil {
		return err
	}
	if imageID != "" {
		req.Config.Image = imageID
	}
	return r.encode(&req)
}

// checkResources refuses the resource settings that reach host devices or
// cgroups.
func checkResources(res *container.Resources) error {
	switch {
	case len(res.Devices) > 0:
		return refuse("devices are not allowed")
	case len(res.DeviceRequests) > 0:
		return refuse("device requests (GPUs) are not allowed")
	case len(res.DeviceCgroupRules) > 0:
		return refuse("device cgroup rules are not allowed")
	case res.CgroupParent != "":
		return refuse("CgroupParent is not allowed")
	case res.CPUShares > 1024:
		return refuse("CPU shares of %d are over the default 1024: a job may not take CPU from other jobs", res.CPUShares)
	//lint:ignore SA1019 a deprecated field the engine may still apply is refused, not used
	case res.KernelMemory != 0 || res.KernelMemoryTCP != 0:
		return refuse("kernel memory limits are not allowed")
	case res.CPUCount != 0 || res.CPUPercent != 0 || res.IOMaximumIOps != 0 || res.IOMaximumBandwidth != 0:
		return refuse("Windows-only resource settings (CPUCount, CPUPercent, IOMaximum*) are not allowed")
	}
	return nil
}

var securityOptAllowed = map[string]bool{
	"no-new-privileges": true, "no-new-privileges=true": true, "no-new-privileges:true": true,
	"no-new-privileges=false": true, "no-new-privileges:false": true,
}

func (r *request) checkHostConfig(h *container.HostConfig) error {
	switch {
	case h.Privileged:
		return refuse("privileged containers are not allowed; ask your runner admin for the dind backend")
	case len(h.CapAdd) > 0:
		return refuse("adding capabilities (%s) is not allowed", strings.Join(h.CapAdd, ", "))
	case len(h.VolumesFrom) > 0:
		return refuse("VolumesFrom is not allowed; mount volumes the job created")
	case len(h.Sysctls) > 0:
		return refuse("sysctls are not allowed")
	case h.MaskedPaths != nil || h.ReadonlyPaths != nil:
		return refuse("overriding the masked and read-only /proc and /sys paths is not allowed")
	case h.Runtime != "":
		return refuse("runtime %q is not allowed; use the default runtime", h.Runtime)
	case h.UsernsMode != "":
		return refuse("UsernsMode %q is not allowed", h.UsernsMode)
	case h.CgroupnsMode != "" && h.CgroupnsMode != "private":
		return refuse("CgroupnsMode %q is not allowed", h.CgroupnsMode)
	case h.Cgroup != "":
		return refuse("Cgroup %q is not allowed", h.Cgroup)
	case h.VolumeDriver != "":
		return refuse("volume driver %q is not allowed", h.VolumeDriver)
	case len(h.StorageOpt) > 0:
		return refuse("storage options are not allowed")
	case h.OomScoreAdj < 0:
		return refuse("a negative OomScoreAdj is not allowed")
	case len(h.Annotations) > 0:
		return refuse("annotations are not allowed: they configure the runtime on the host")
	case h.Isolation != "" && h.Isolation != "default":
		return refuse("isolation %q is not allowed", h.Isolation)
	}
	switch h.LogConfig.Type {
	case "", "json-file", "local", "none":
	default:
		return refuse("log driver %q is not allowed", h.LogConfig.Type)
	}
	// Only the size and rotation options: Podman's json-file takes a
	// "path" on the host to write the log to.
	for k := range h.LogConfig.Config {
		switch k {
		case "max-size", "max-file", "compress":
		default:
			return refuse("log option %q is not allowed (allowed: max-size, max-file, compress)", k)
		}
	}
	for _, opt := range h.SecurityOpt {
		if !securityOptAllowed[opt] {
			return refuse("security option %q is not allowed (only no-new-privileges)", opt)
		}
	}
	if err := checkResources(&h.Resources); err != nil {
		return err
	}
	if err := checkRestartPolicy(h.RestartPolicy); err != nil {
		return err
	}
	if err := r.f.ceilings.boundHost(h); err != nil {
		return err
	}
	switch nm := string(h.NetworkMode); {
	case contains([]string{"", "default", "bridge"}, nm):
		if r.f.network != "" {
			id, err := r.usableNetwork(nm)
			if err != nil {
				return err
			}
			h.NetworkMode = container.NetworkMode(id)
		}
	case nm == "none":
	case strings.HasPrefix(nm, "container:"):
		mode, err := r.namespaceMode("NetworkMode", nm)
		if err != nil {
			return err
		}
		h.NetworkMode = container.NetworkMode(mode)
	case nm == "host" || strings.Contains(nm, ":"):
		return refuse("NetworkMode %q is not allowed; use the default network or one the job created", nm)
	default:
		id, err := r.usableNetwork(nm)
		if err != nil {
			return err
		}
		h.NetworkMode = container.NetworkMode(id)
	}
	mode, err := r.namespaceMode("PidMode", string(h.PidMode), "")
	if err != nil {
		return err
	}
	h.PidMode = container.PidMode(mode)
	if mode, err = r.namespaceMode("IpcMode", string(h.IpcMode), "", "none", "private", "shareable"); err != nil {
		return err
	}
	h.IpcMode = container.IpcMode(mode)
	if h.UTSMode != "" {
		return refuse("UTSMode %q is not allowed", h.UTSMode)
	}
	if err := r.checkLinks(h.Links); err != nil {
		return err
	}
	// Podman joins a tmpfs's path and options with a colon and reads the
	// options from the path if it holds some.
	for p, opts := range h.Tmpfs {
		if !strings.HasPrefix(p, "/") || path.Clean(p) != p || strings.ContainsAny(p, ":,=") {
			return refuse("tmpfs path %q is not allowed: give a clean absolute path, with no colon, comma or equals sign, and the options as its value", p)
		}
		if err := checkTmpfsOptions(p, opts); err != nil {
			return err
		}
	}
	// A client-side field; a newer Podman removes the file it names.
	h.ContainerIDFile = ""
	var binds []string
	for _, bind := range h.Binds {
		if !strings.Contains(bind, ":") {
			// An anonymous volume ("-v /data"): as a volume mount, so
			// that it gets the job's labels.
			h.Mounts = append(h.Mounts, mount.Mount{Type: mount.TypeVolume, Target: bind})
			continue
		}
		checked, err := r.checkBind(bind)
		if err != nil {
			return err
		}
		binds = append(binds, checked)
	}
	h.Binds = binds
	for i := range h.Mounts {
		if err := r.checkMount(&h.Mounts[i]); err != nil {
			return err
		}
	}
	return nil
}

// holdCreate guards what the engine does by path in the host's view when
// it creates and starts the container. At create, Docker copies the
// image's content into an empty named volume, following a symlink that
// another container of the job, which mounts the volume, puts there
// meanwhile: so a create with a named volume runs with the job's other
// containers paused, as a start does. At start, the runtime makes every
// mount beneath a bind's target through the bound directory, which the
// job can change meanwhile: where the job cannot be paused (Podman here)
// such a mount is refused.
func (r *request) holdCreate(cfg *container.Config, h *container.HostConfig) error {
	var bindTargets, targets []string
	named := false
	for _, b := range h.Binds {
		parts := strings.Split(b, ":")
		if len(parts) >= 2 {
			if strings.HasPrefix(parts[0], "/") {
				bindTargets = append(bindTargets, path.Clean(parts[1]))
			} else {
				named = true
			}
			targets = append(targets, path.Clean(parts[1]))
		}
	}
	for _, m := range h.Mounts {
		if m.Type == mount.TypeBind {
			bindTargets = append(bindTargets, path.Clean(m.Target))
		}
		if m.Type == mount.TypeVolume && m.Source != "" {
			named = true
		}
		targets = append(targets, path.Clean(m.Target))
	}
	for t := range h.Tmpfs {
		targets = append(targets, path.Clean(t))
	}
	for t := range cfg.Volumes {
		targets = append(targets, path.Clean(t))
	}
	if r.f.noFreeze {
		for _, b := range bindTargets {
			for _, t := range targets {
				if beneath(t, b) {
					return refuse("a mount at %s beneath the bind at %s is not allowed on this engine: the runtime would make it through the bound directory, which the job can change meanwhile; mount it outside %s", t, b, b)
				}
			}
		}
		return nil
	}
	if named {
		r.f.startMu.Lock()
		r.hold(r.f.startMu.Unlock)
		return r.freezeJob("")
	}
	return nil
}

// namespaceMode checks a namespace mode: one of plain, or
// container:<a container of the job's>, which it resolves to the full id.
func (r *request) namespaceMode(field, mode string, plain ...string) (string, error) {
	if contains(plain, mode) {
		return mode, nil
	}
	if ref, ok := strings.CutPrefix(mode, "container:"); ok {
		if r.f.podman {
			// Podman starts a container's dependencies with it, with
			// no request whose binds the guard could check.
			return "", refuse("%s %q is not allowed on Podman: Podman would start %s with this container, unchecked; share what you need through the job's network or a volume", field, mode, ref)
		}
		id, err := r.ownContainer(ref)
		if err != nil {
			return "", err
		}
		return "container:" + id, nil
	}
	return "", refuse("%s %q is not allowed", field, mode)
}

func (r *request) checkLinks(links []string) error {
	for _, link := range links {
		name, _, _ := strings.Cut(link, ":")
		if _, err := r.ownContainer(strings.TrimPrefix(name, "/")); err != nil {
			return err
		}
	}
	return nil
}

// checkBind checks a "source:target[:mode]" bind and returns it with the
// source resolved.
func (r *request) checkBind(bind string) (string, error) {
	parts := strings.Split(bind, ":")
	switch {
	case len(parts) == 1:
		return bind, nil // an anonymous volume, removed with its container
	case len(parts) > 3:
		return "", refuse("bind %q has too many fields", bind)
	}
	if len(parts) == 3 {
		for _, opt := range strings.Split(parts[2], ",") {
			// Docker's options that change nothing outside the
			// container; Podman's U (chown the source), O (overlay),
			// idmap and SELinux relabelling z/Z are not among them.
			switch opt {
			case "ro", "rw", "nocopy", "consistent", "cached", "delegated", "private", "rprivate", "slave", "rslave":
			default:
				return "", refuse("bind option %q in %q is not allowed (allowed: ro, rw, nocopy, consistent, cached, delegated, private, rprivate, slave, rslave)", opt, bind)
			}
		}
	}
	if err := mountField("bind "+bind, parts[1]); err != nil {
		return "", err
	}
	source := parts[0]
	if !strings.HasPrefix(source, "/") {
		if err := r.ownVolume(source); err != nil {
			return "", err
		}
		return bind, nil
	}
	resolved, err := r.f.hostPath(source)
	if err != nil {
		return "", err
	}
	if err := mountField("bind source "+source+" (resolved)", resolved); err != nil {
		return "", err
	}
	parts[0] = resolved
	return strings.Join(parts, ":"), nil
}

// mountField refuses a comma, an equals sign or a colon in a mount's
// field: Podman writes a mount out as "key=value,..." options and reads it
// back, so a field holding them would add options of the job's choosing
// (another source, another volume), and reports binds as
// "source:target:options", which a colon in either would misplace for the
// checks at start.
func mountField(what, value string) error {
	if strings.ContainsAny(value, ",=:") {
		return refuse("%s: %q may not hold a comma, an equals sign or a colon", what, value)
	}
	return nil
}

// beneath reports whether clean path p lies strictly beneath dir.
func beneath(p, dir string) bool {
	return p != dir && strings.HasPrefix(p, strings.TrimSuffix(dir, "/")+"/")
}

// nestedPaths reports two container paths of which the second lies
// beneath the first, if any.
func nestedPaths(paths []string) (string, string, bool) {
	for _, a := range paths {
		for _, b := range paths {
			if beneath(path.Clean(b), path.Clean(a)) {
				return a, b, true
			}
		}
	}
	return "", "", false
}

func (r *request) checkMount(m *mount.Mount) error {
	if m.ImageOptions != nil || m.ClusterOptions != nil {
		return refuse("image and cluster mount options are not allowed")
	}
	for _, field := range []struct{ name, value string }{{"Source", m.Source}, {"Target", m.Target}, {"Consistency", string(m.Consistency)}} {
		if err := mountField("mount "+field.name, field.value); err != nil {
			return err
		}
	}
	if m.BindOptions != nil {
		if err := mountField("mount BindOptions.Propagation", string(m.BindOptions.Propagation)); err != nil {
			return err
		}
	}
	switch m.Type {
	case mount.TypeBind:
		resolved, err := r.f.hostPath(m.Source)
		if err != nil {
			return err
		}
		if err := mountField("mount Source "+m.Source+" (resolved)", resolved); err != nil {
			return err
		}
		m.Source = resolved
		if m.BindOptions != nil {
			if p := m.BindOptions.Propagation; p == mount.PropagationShared || p == mount.PropagationRShared {
				return refuse("bind propagation %q is not allowed", p)
			}
		}
	case mount.TypeVolume:
		if m.VolumeOptions != nil && m.VolumeOptions.Subpath != "" {
			return refuse("volume subpaths are not allowed; mount the volume and use the path in it")
		}
		// The docker CLI sends an empty driver configuration with
		// volume-label; only a driver or its options reach the host.
		if dc := m.VolumeOptions; dc != nil && dc.DriverConfig != nil {
			if (dc.DriverConfig.Name != "" && dc.DriverConfig.Name != "local") || len(dc.DriverConfig.Options) > 0 {
				return refuse("volume driver configuration in mounts is not allowed: it can mount host paths or devices")
			}
			dc.DriverConfig = nil
		}
		if m.Source != "" {
			return r.ownVolume(m.Source)
		}
		// A volume the engine makes for the mount gets the job's labels,
		// never ones of the job's choosing, so cleanup and gc find it.
		if m.VolumeOptions == nil {
			m.VolumeOptions = &mount.VolumeOptions{}
		}
		m.VolumeOptions.Labels = r.f.withLabels(m.VolumeOptions.Labels)
	case mount.TypeTmpfs:
		if m.TmpfsOptions != nil && len(m.TmpfsOptions.Options) > 0 {
			return refuse("tmpfs mount options for %s are not allowed; give a size and mode", m.Target)
		}
	default:
		return refuse("mount type %q is not allowed", m.Type)
	}
	return nil
}

// hostPath checks that a bind source lies in the job's builds dir after
// cleaning and resolving symlinks, and returns the resolved path. A path
// whose tail does not exist yet resolves through its deepest existing
// ancestor (the daemon creates the rest).
func (f *Filter) hostPath(source string) (string, error) {
	if !filepath.IsAbs(source) {
		return "", refuse("bind source %q is not an absolute path", source)
	}
	resolved, err := resolveExisting(filepath.Clean(source))
	if err != nil {
		return "", refuse("bind source %q cannot be resolved: %v", source, err)
	}
	if resolved != f.buildsDir && !strings.HasPrefix(resolved, f.buildsDir+"/") {
		return "", refuse("bind mount of %q is not allowed: binds must come from the job's builds directory %s", source, f.buildsDir)
	}
	return resolved, nil
}

// checkBindSourceNow checks a bind source right before the engine resolves
// it: it must lie in the builds dir, and each component from there down
// that exists must be a real directory (the last may be a file), never a
// symlink. The engine creates what does not exist yet.
func (f *Filter) checkBindSourceNow(source string) error {
	fd, err := f.openBeneath(source)
	if fd >= 0 {
		unix.Close(fd)
	}
	return err
}

// openBeneath opens source (O_PATH) one component at a time from the
// builds dir down with O_NOFOLLOW, as openat2's
// RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS would, refusing a symlink or a
// non-directory on the way. It returns -1 and no error when a component
// does not exist.
func (f *Filter) openBeneath(source string) (int, error) {
	clean := filepath.Clean(source)
	if clean != source || !filepath.IsAbs(source) {
		return -1, refuse("bind source %q is not a clean absolute path; create the container again", source)
	}
	rel, err := filepath.Rel(f.buildsDir, clean)
	if err != nil || rel == ".." || strings.HasPrefix(rel, "../") {
		return -1, refuse("bind mount of %q is not allowed: binds must come from the job's builds directory %s", source, f.buildsDir)
	}
	dir, err := unix.Open(f.buildsDir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("open the builds directory %s: %w", f.buildsDir, err)
	}
	if rel == "." {
		return dir, nil
	}
	parts := strings.Split(rel, "/")
	for i, part := range parts {
		next, err := unix.Openat(dir, part, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		unix.Close(dir)
		if errors.Is(err, unix.ENOENT) {
			return -1, nil // the engine creates the rest as directories
		}
		if err != nil {
			return -1, refuse("bind source %q cannot be checked at %s: %v", source, filepath.Join(parts[:i+1]...), err)
		}
		var st unix.Stat_t
		if err := unix.Fstat(next, &st); err != nil {
			unix.Close(next)
			return -1, fmt.Errorf("stat %s: %w", filepath.Join(f.buildsDir, filepath.Join(parts[:i+1]...)), err)
		}
		dir = next
		switch mode := st.Mode & unix.S_IFMT; {
		case mode == unix.S_IFLNK:
			unix.Close(dir)
			return -1, refuse("bind source %q is not allowed now: %s is a symlink, and the engine would follow it at this start; bind the real directory, and do not replace a bound directory with a symlink", source, filepath.Join(parts[:i+1]...))
		case mode != unix.S_IFDIR && i < len(parts)-1:
			unix.Close(dir)
			return -1, refuse("bind source %q is not allowed now: %s is not a directory", source, filepath.Join(parts[:i+1]...))
		}
	}
	return dir, nil
}

func resolveExisting(p string) (string, error) {
	var rest []string
	for i := 0; i < 4096; i++ {
		resolved, err := filepath.EvalSymlinks(p)
		if err == nil {
			return filepath.Join(append([]string{resolved}, rest...)...), nil
		}
		if !errors.Is(err, os.ErrNotExist) {
			return "", err
		}
		if _, lerr := os.Lstat(p); lerr == nil {
			return "", fmt.Errorf("%s is a dangling symlink", p)
		}
		parent := filepath.Dir(p)
		if parent == p {
			return "", err
		}
		rest = append([]string{filepath.Base(p)}, rest...)
		p = parent
	}
	return "", errors.New("path too deep")
}
