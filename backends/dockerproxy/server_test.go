package dockerproxy

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// fakeDaemon answers create with the body it got, and upgrades attach to a
// raw echo stream the way dockerd does.
func fakeDaemon(t *testing.T) func(ctx context.Context) (net.Conn, error) {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "d.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/attach") {
			conn, buf, err := w.(http.Hijacker).Hijack()
			if err != nil {
				t.Error(err)
				return
			}
			defer conn.Close()
			io.WriteString(conn, "HTTP/1.1 101 UPGRADED\r\nContent-Type: application/vnd.docker.raw-stream\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n\r\n")
			line, _ := buf.ReadString('\n')
			io.WriteString(conn, "echo:"+line)
			return
		}
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]string{"path": r.URL.Path, "body": string(body)})
	}))
	srv.Listener = ln
	srv.Start()
	t.Cleanup(srv.Close)
	return func(ctx context.Context) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", sock)
	}
}

func TestHandler(t *testing.T) {
	dir := testBuildsDir(t)
	proxy := httptest.NewServer(Handler(newTestFilter(t, dir), fakeDaemon(t), t.Logf))
	t.Cleanup(proxy.Close)

	t.Run("refusal is a JSON message", func(t *testing.T) {
		resp, err := http.Post(proxy.URL+"/v1.41/containers/create", "application/json", strings.NewReader(create(`{"Privileged":true}`)))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var msg struct{ Message string }
		if err := json.NewDecoder(resp.Body).Decode(&msg); err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != http.StatusForbidden || !strings.Contains(msg.Message, "privileged containers are not allowed") {
			t.Errorf("got %d %q, want 403 naming privileged containers", resp.StatusCode, msg.Message)
		}
	})

	t.Run("forwarded create carries the job labels", func(t *testing.T) {
		resp, err := http.Post(proxy.URL+"/v1.41/containers/create", "application/json", strings.NewReader(`{"Image":"busybox"}`))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var got struct{ Path, Body string }
		if err := json.NewDecoder(resp.Body).Decode(&got); err != nil {
			t.Fatal(err)
		}
		if got.Path != "/v1.41/containers/create" || !strings.Contains(got.Body, `"berth.job.id":"7"`) {
			t.Errorf("got %+v, want the create with the job's labels", got)
		}
	})

	t.Run("attach upgrade passes both ways", func(t *testing.T) {
		conn, err := net.DialTimeout("tcp", strings.TrimPrefix(proxy.URL, "http://"), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(10 * time.Second))
		io.WriteString(conn, "POST /v1.41/containers/own/attach?stream=1&stdin=1&stdout=1 HTTP/1.1\r\nHost: docker\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n\r\n")
		br := bufio.NewReader(conn)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != http.StatusSwitchingProtocols {
			t.Fatalf("got status %d, want 101", resp.StatusCode)
		}
		io.WriteString(conn, "hello\n")
		line, err := br.ReadString('\n')
		if err != nil || line != "echo:hello\n" {
			t.Errorf("got %q (%v), want the echoed line", line, err)
		}
	})
}
