package dockerproxy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/client"
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
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			log("forward %s %s: %v", r.Method, r.URL.Path, err)
			writeMessage(w, http.StatusBadGateway, "berth guarded Docker socket: the Docker daemon did not answer: "+err.Error())
		},
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := f.Check(r.Context(), r); err != nil {
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
		proxy.ServeHTTP(w, r)
	})
}

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
	f, err := NewFilter(cfg, clientUpstream{cli})
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

// clientUpstream looks objects up with the Docker client.
type clientUpstream struct{ cli *client.Client }

func notFoundErr(err error) error {
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
	return obj, nil
}

func (c clientUpstream) Network(ctx context.Context, ref string) (Object, error) {
	if err := validRef(ref); err != nil {
		return Object{}, err
	}
	info, err := c.cli.NetworkInspect(ctx, ref, network.InspectOptions{})
	if err != nil {
		return Object{}, notFoundErr(err)
	}
	return Object{ID: info.ID, Labels: info.Labels}, nil
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
