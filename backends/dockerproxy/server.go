package dockerproxy

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/api/types/mount"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/client"
	"github.com/docker/docker/pkg/jsonmessage"
	"golang.org/x/net/netutil"
)

// Handler returns the proxy's HTTP handler: requests that pass f go to the
// daemon behind dial, with upgrades (attach, exec) passed through both ways
// and streamed responses (logs, pulls, builds) flushed as they come.
func Handler(f *Filter, dial func(ctx context.Context) (net.Conn, error), log func(format string, args ...any)) http.Handler {
	proxy := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.URL.Scheme = "http"
			pr.Out.URL.Host = "docker"
			pr.Out.Host = "docker"
		},
		Transport: &http.Transport{
			DialContext:       func(ctx context.Context, _, _ string) (net.Conn, error) { return dial(ctx) },
			DisableKeepAlives: true,
		},
		FlushInterval: -1,
		ModifyResponse: func(resp *http.Response) error {
			if rewrite, _ := resp.Request.Context().Value(rewriteKey{}).(func(*http.Response) error); rewrite != nil {
				return rewrite(resp)
			}
			return nil
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			log("forward %s %s: %v", r.Method, r.URL.Path, err)
			writeMessage(w, http.StatusBadGateway, "berth guarded Docker socket: the Docker daemon did not answer: "+err.Error())
		},
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// A JSON body is read whole while it is checked: it must come
		// within jsonBodyTimeout, so a slow sender cannot hold the guard.
		rc := http.NewResponseController(w)
		jsonBody := r.ContentLength != 0 && strings.HasPrefix(r.Header.Get("Content-Type"), "application/json")
		if jsonBody {
			_ = rc.SetReadDeadline(time.Now().Add(jsonBodyTimeout))
		}
		release, rewrite, err := f.checkForward(r.Context(), r)
		if jsonBody {
			_ = rc.SetReadDeadline(time.Time{})
		}
		if err != nil {
			var refusal *Refusal
			if errors.As(err, &refusal) {
				log("refused %s %s: %s", r.Method, r.URL.Path, refusal.Message)
				writeMessage(w, refusal.Status, refusal.Message)
				return
			}
			log("check %s %s: %v", r.Method, r.URL.Path, err)
			writeMessage(w, http.StatusBadGateway, "berth guarded Docker socket: "+err.Error())
			return
		}
		defer release()
		if rewrite != nil {
			r = r.WithContext(context.WithValue(r.Context(), rewriteKey{}, rewrite))
		}
		proxy.ServeHTTP(w, r)
	})
}

// The guard's own bounds: it serves one job, whose requests must not be
// able to exhaust it (or the host) by holding connections or half-sent
// bodies.
const (
	// maxConnections caps the connections served at once; more wait to
	// be accepted. With MaxJSONBody this bounds what bodies can hold.
	maxConnections = 128
	// jsonBodyTimeout bounds the reading of a JSON request body.
	jsonBodyTimeout = 30 * time.Second
)

// rewriteKey carries a request's answer rewrite to the proxy's
// ModifyResponse.
type rewriteKey struct{}

func writeMessage(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"message": msg})
}

// Serve runs the proxy on the unix socket listen until ctx ends, forwarding
// to the daemon at upstream ("unix:///path").
func Serve(ctx context.Context, cfg Config, listen, upstream string, log func(format string, args ...any)) error {
	u, err := url.Parse(upstream)
	if err != nil || u.Scheme != "unix" || u.Path == "" {
		return fmt.Errorf("upstream %q must be unix:///path/to/docker.sock", upstream)
	}
	dial := func(ctx context.Context) (net.Conn, error) {
		return (&net.Dialer{Timeout: 10 * time.Second}).DialContext(ctx, "unix", u.Path)
	}
	cli, err := client.NewClientWithOpts(client.WithHost(upstream), client.WithAPIVersionNegotiation())
	if err != nil {
		return fmt.Errorf("docker client for %s: %w", upstream, err)
	}
	defer cli.Close()
	httpc := engineHTTP(dial)
	podman, err := isPodman(ctx, httpc)
	if err != nil {
		return fmt.Errorf("ask the engine at %s what it is: %w", upstream, err)
	}
	rootless, cgroupVersion, hostName, err := engineInfo(ctx, httpc)
	if err != nil {
		return fmt.Errorf("ask the engine at %s what it can do: %w", upstream, err)
	}
	if hostName != "" {
		cfg.HostNames = append(cfg.HostNames, hostName)
		if short, _, ok := strings.Cut(hostName, "."); ok {
			cfg.HostNames = append(cfg.HostNames, short)
		}
	}
	switch {
	case podman:
		cfg.Podman = true
		cfg.VerifyMounts = true
		cfg.RootlessPorts = rootless
	case rootless && cgroupVersion == "1":
		cfg.NoFreeze = true
		log("WARNING: a rootless engine on cgroup v1 cannot pause containers, so a start is checked without pausing the job's other containers: a job that swaps a bind source for a symlink at that moment can still win the race")
	}
	if cfg.SpoolDir == "" {
		cfg.SpoolDir = filepath.Dir(listen)
	}
	if cfg.NamesFile == "" {
		engine := EngineDocker
		if podman {
			engine = EnginePodman
		}
		cfg.NamesFile = filepath.Join(filepath.Dir(listen), givenNamesFile(engine))
		cfg.LeftFile = filepath.Join(filepath.Dir(listen), leftImagesFile(engine))
	}
	if cfg.StepsFile == "" && !podman {
		cfg.StepsFile = filepath.Join(filepath.Dir(listen), stepImagesFile)
	}
	f, err := NewFilter(cfg, clientUpstream{cli: cli, http: httpc})
	if err != nil {
		return err
	}
	if err := os.Remove(listen); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove the old proxy socket: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(listen), 0o755); err != nil {
		return fmt.Errorf("create the proxy socket's directory: %w", err)
	}
	ln, err := net.Listen("unix", listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", listen, err)
	}
	// Job containers may run as any user.
	if err := os.Chmod(listen, 0o666); err != nil {
		ln.Close()
		return fmt.Errorf("open up the proxy socket: %w", err)
	}
	srv := &http.Server{Handler: Handler(f, dial, log), ReadHeaderTimeout: 30 * time.Second, MaxHeaderBytes: 1 << 20}
	ln = netutil.LimitListener(ln, maxConnections)
	go func() {
		<-ctx.Done()
		shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(shutdown)
	}()
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// clientUpstream looks objects up with the Docker client, and asks for
// what the client has no call for (Podman's init) over http.
type clientUpstream struct {
	cli  *client.Client
	http *http.Client
}

// engineHTTP is a plain HTTP client for the engine's socket.
func engineHTTP(dial func(ctx context.Context) (net.Conn, error)) *http.Client {
	return &http.Client{Transport: &http.Transport{
		DialContext:       func(ctx context.Context, _, _ string) (net.Conn, error) { return dial(ctx) },
		DisableKeepAlives: true,
	}, Timeout: 60 * time.Second}
}

// isPodman reports whether the engine is Podman: it answers Podman's own
// ping, which Docker does not have.
func isPodman(ctx context.Context, httpc *http.Client) (bool, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://engine/v4.0.0/libpod/_ping", nil)
	if err != nil {
		return false, err
	}
	resp, err := httpc.Do(req)
	if err != nil {
		return false, err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<16))
	return resp.StatusCode == http.StatusOK, nil
}

// Init initialises a container with Podman's libpod API (204, or 304 when
// it already is or runs) and returns its process's pid.
func (c clientUpstream) Init(ctx context.Context, id string) (int, error) {
	if err := validRef(id); err != nil {
		return 0, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://engine/v4.0.0/libpod/containers/"+url.PathEscape(id)+"/init", nil)
	if err != nil {
		return 0, err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return 0, err
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusNoContent, http.StatusNotModified:
	case http.StatusNotFound:
		return 0, fmt.Errorf("%w: %s", ErrNotFound, bytes.TrimSpace(body))
	default:
		return 0, fmt.Errorf("the engine's init: %s: %s", resp.Status, bytes.TrimSpace(body))
	}
	info, err := c.cli.ContainerInspect(ctx, id)
	if err != nil {
		return 0, notFoundErr(err)
	}
	if info.State == nil || info.State.Pid <= 0 {
		return 0, fmt.Errorf("the engine reports no process for the initialised container %.12s", id)
	}
	return info.State.Pid, nil
}

func notFoundErr(err error) error {
	if err == nil {
		return nil
	}
	if cerrdefs.IsNotFound(err) {
		return fmt.Errorf("%w: %v", ErrNotFound, err)
	}
	return err
}

// validRef refuses references that would change the lookup's URL path.
func validRef(ref string) error {
	if ref == "" || strings.ContainsAny(ref, "/?#%\x00") || ref == "." || ref == ".." {
		return fmt.Errorf("%w: invalid reference %q", ErrNotFound, ref)
	}
	return nil
}

func (c clientUpstream) Container(ctx context.Context, ref string) (Object, error) {
	if err := validRef(ref); err != nil {
		return Object{}, err
	}
	info, err := c.cli.ContainerInspect(ctx, ref)
	if err != nil {
		return Object{}, notFoundErr(err)
	}
	obj := Object{ID: info.ID}
	if info.Config != nil {
		obj.Labels = info.Config.Labels
	}
	if info.ContainerJSONBase != nil && info.State != nil {
		obj.Running = info.State.Running || info.State.Paused || info.State.Restarting
	}
	for _, m := range info.Mounts {
		if m.Type == mount.TypeVolume {
			obj.Volumes = append(obj.Volumes, m.Destination)
			obj.VolumeNames = append(obj.VolumeNames, m.Name)
		}
	}
	if info.HostConfig != nil {
		for _, bind := range info.HostConfig.Binds {
			parts := strings.Split(bind, ":")
			if len(parts) >= 2 && strings.HasPrefix(parts[0], "/") {
				obj.Binds = append(obj.Binds, Bind{Source: parts[0], Target: parts[1]})
			}
		}
		for _, m := range info.HostConfig.Mounts {
			if m.Type == mount.TypeBind {
				obj.Binds = append(obj.Binds, Bind{Source: m.Source, Target: m.Target})
			}
		}
	}
	return obj, nil
}

func (c clientUpstream) Image(ctx context.Context, ref string) (Object, error) {
	if ref == "" || strings.ContainsAny(ref, "?#%\x00") {
		return Object{}, fmt.Errorf("%w: invalid image reference %q", ErrNotFound, ref)
	}
	info, err := c.cli.ImageInspect(ctx, ref)
	if err != nil {
		return Object{}, notFoundErr(err)
	}
	obj := Object{ID: info.ID, Untagged: len(info.RepoTags) == 0 && len(info.RepoDigests) == 0}
	if info.Config != nil {
		obj.Labels = info.Config.Labels
		obj.OnBuild = info.Config.OnBuild
		for p := range info.Config.ExposedPorts {
			obj.Ports = append(obj.Ports, string(p))
		}
	}
	return obj, nil
}

func (c clientUpstream) History(ctx context.Context, ref string) ([]string, error) {
	items, err := c.cli.ImageHistory(ctx, ref)
	if err != nil {
		return nil, notFoundErr(err)
	}
	lines := make([]string, len(items))
	for i, it := range items {
		lines[i] = it.CreatedBy
	}
	return lines, nil
}

func (c clientUpstream) Pull(ctx context.Context, ref, auth string) error {
	rc, err := c.cli.ImagePull(ctx, ref, image.PullOptions{RegistryAuth: auth})
	if err != nil {
		return err
	}
	defer rc.Close()
	// The progress ends in an error message when the pull failed.
	return jsonmessage.DisplayJSONMessagesStream(rc, io.Discard, 0, false, nil)
}

func (c clientUpstream) Stop(ctx context.Context, id, t, signal string) error {
	opts := container.StopOptions{Signal: signal}
	if t != "" {
		n, err := strconv.Atoi(t)
		if err != nil {
			return &Refusal{Status: http.StatusBadRequest, Message: fmt.Sprintf("berth guarded Docker socket: restart timeout %q is not a number of seconds", t)}
		}
		opts.Timeout = &n
	}
	return notFoundErr(c.cli.ContainerStop(ctx, id, opts))
}

func (c clientUpstream) Images(ctx context.Context, ref string) ([]Object, error) {
	list, err := c.cli.ImageList(ctx, image.ListOptions{All: true, Filters: filters.NewArgs(filters.Arg("reference", ref))})
	if err != nil {
		return nil, err
	}
	out := make([]Object, 0, len(list))
	for _, img := range list {
		out = append(out, Object{ID: img.ID, Labels: img.Labels, Untagged: len(img.RepoTags) == 0 && len(img.RepoDigests) == 0})
	}
	return out, nil
}

func (c clientUpstream) ImagesLabelled(ctx context.Context, selector map[string]string) ([]Object, error) {
	args := filters.NewArgs()
	for k, v := range selector {
		args.Add("label", k+"="+v)
	}
	list, err := c.cli.ImageList(ctx, image.ListOptions{Filters: args})
	if err != nil {
		return nil, err
	}
	out := make([]Object, 0, len(list))
	for _, img := range list {
		// Podman 4.3 combines several label filters differently.
		if labelsMatch(img.Labels, selector) {
			out = append(out, Object{ID: img.ID, Labels: img.Labels})
		}
	}
	return out, nil
}

func (c clientUpstream) RunningContainers(ctx context.Context, selector map[string]string) ([]string, error) {
	args := filters.NewArgs(filters.Arg("status", "running"))
	for k, v := range selector {
		args.Add("label", k+"="+v)
	}
	list, err := c.cli.ContainerList(ctx, container.ListOptions{Filters: args})
	if err != nil {
		return nil, err
	}
	ids := make([]string, 0, len(list))
	for _, ctr := range list {
		// Podman 4.3 ORs several label filters: check them all here.
		if labelsMatch(ctr.Labels, selector) {
			ids = append(ids, ctr.ID)
		}
	}
	return ids, nil
}

func labelsMatch(labels, selector map[string]string) bool {
	for k, v := range selector {
		if labels[k] != v {
			return false
		}
	}
	return true
}

func (c clientUpstream) Pause(ctx context.Context, id string) error {
	if err := c.cli.ContainerPause(ctx, id); err != nil {
		if cerrdefs.IsNotFound(err) {
			return notFoundErr(err)
		}
		// Exited meanwhile, or already paused: nothing of it can act.
		if info, ierr := c.cli.ContainerInspect(ctx, id); ierr == nil && info.State != nil && (!info.State.Running || info.State.Paused) {
			return fmt.Errorf("%w: %v", ErrNotRunning, err)
		}
		return err
	}
	return nil
}

func (c clientUpstream) Unpause(ctx context.Context, id string) error {
	return c.cli.ContainerUnpause(ctx, id)
}

// engineInfo reports whether the engine is rootless and its cgroup
// version. A rootless engine on cgroup v1 cannot pause containers, which
// have no cgroup of their own to freeze. Podman's Docker-compatible /info
// says Rootless; Docker's says name=rootless among its security options.
func engineInfo(ctx context.Context, httpc *http.Client) (rootless bool, cgroupVersion, name string, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://docker/info", nil)
	if err != nil {
		return false, "", "", err
	}
	resp, err := httpc.Do(req)
	if err != nil {
		return false, "", "", err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return false, "", "", fmt.Errorf("GET /info: %s", resp.Status)
	}
	var info struct {
		CgroupVersion   string
		Rootless        bool
		SecurityOptions []string
		Name            string
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&info); err != nil {
		return false, "", "", fmt.Errorf("GET /info: %w", err)
	}
	for _, opt := range info.SecurityOptions {
		if strings.Contains(opt, "name=rootless") {
			info.Rootless = true
		}
	}
	return info.Rootless, info.CgroupVersion, info.Name, nil
}

func (c clientUpstream) Network(ctx context.Context, ref string) (Object, error) {
	if err := validRef(ref); err != nil {
		return Object{}, err
	}
	info, err := c.cli.NetworkInspect(ctx, ref, network.InspectOptions{})
	if err != nil {
		return Object{}, notFoundErr(err)
	}
	obj := Object{ID: info.ID, Labels: info.Labels}
	for _, c := range info.IPAM.Config {
		if ip := net.ParseIP(c.Gateway); ip != nil && ip.To4() != nil {
			obj.Gateway = c.Gateway
			break
		}
	}
	return obj, nil
}

func (c clientUpstream) Volume(ctx context.Context, name string) (Object, error) {
	if err := validRef(name); err != nil {
		return Object{}, err
	}
	info, err := c.cli.VolumeInspect(ctx, name)
	if err != nil {
		return Object{}, notFoundErr(err)
	}
	return Object{ID: info.Name, Labels: info.Labels}, nil
}

func (c clientUpstream) ExecContainer(ctx context.Context, execID string) (string, error) {
	if err := validRef(execID); err != nil {
		return "", err
	}
	info, err := c.cli.ContainerExecInspect(ctx, execID)
	if err != nil {
		return "", notFoundErr(err)
	}
	return info.ContainerID, nil
}

// WaitReady polls the proxy's /_ping on the unix socket sock until it
// answers or ctx ends.
func WaitReady(ctx context.Context, sock string) error {
	httpc := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{Timeout: time.Second}).DialContext(ctx, "unix", sock)
		},
		DisableKeepAlives: true,
	}, Timeout: 2 * time.Second}
	var last error
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://docker/_ping", nil)
		if err != nil {
			return err
		}
		resp, err := httpc.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("status %s", resp.Status)
		}
		last = err
		select {
		case <-ctx.Done():
			return fmt.Errorf("the guarded Docker socket %s did not answer: %w (last: %v)", sock, ctx.Err(), last)
		case <-time.After(20 * time.Millisecond):
		}
	}
}
