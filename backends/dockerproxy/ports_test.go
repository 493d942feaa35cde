package dockerproxy

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/go-connections/nat"
)

func TestPublishedPorts(t *testing.T) {
	gw := "10.9.0.1"
	tests := map[string]struct {
		cfg     Config
		body    string
		want    nat.PortMap // the forwarded bindings
		wantMsg string      // a refusal
	}{
		"no address: the job network's gateway": {
			body: `{"Image":"busybox:latest","HostConfig":{"PortBindings":{"8080/tcp":[{"HostIp":"","HostPort":""}]}}}`,
			want: nat.PortMap{"8080/tcp": {{HostIP: gw}}},
		},
		"every interface: the gateway, the host port kept": {
			body: `{"Image":"busybox:latest","HostConfig":{"PortBindings":{"80/tcp":[{"HostIp":"0.0.0.0","HostPort":"8080"},{"HostIp":"::","HostPort":"8081"}]}}}`,
			want: nat.PortMap{"80/tcp": {{HostIP: gw, HostPort: "8080"}, {HostIP: gw, HostPort: "8081"}}},
		},
		"loopback and the gateway as given": {
			body: `{"Image":"busybox:latest","HostConfig":{"PortBindings":{"80/tcp":[{"HostIp":"127.0.0.1","HostPort":"8080"},{"HostIp":"10.9.0.1"}]}}}`,
			want: nat.PortMap{"80/tcp": {{HostIP: "127.0.0.1", HostPort: "8080"}, {HostIP: gw}}},
		},
		"another host address": {
			body:    `{"Image":"busybox:latest","HostConfig":{"PortBindings":{"80/tcp":[{"HostIp":"192.0.2.5"}]}}}`,
			wantMsg: `publishing port 80/tcp on 192.0.2.5 is not allowed: ports publish on the job network's address 10.9.0.1`,
		},
		"-P: every exposed port, the image's too, on the gateway": {
			body: `{"Image":"busybox:latest","ExposedPorts":{"9000/tcp":{}},"HostConfig":{"PublishAllPorts":true,"PortBindings":{"9000/tcp":[{"HostPort":"9999"}]}}}`,
			want: nat.PortMap{"9000/tcp": {{HostIP: gw, HostPort: "9999"}}, "80/tcp": {{HostIP: gw}}},
		},
		"rootless Podman: refused": {
			cfg:     Config{RootlessPorts: true},
			body:    `{"Image":"busybox:latest","HostConfig":{"PortBindings":{"80/tcp":[{"HostPort":"8080"}]}}}`,
			wantMsg: "publishing port 80/tcp is not available on this rootless Podman",
		},
		"rootless Podman: -P refused": {
			cfg:     Config{RootlessPorts: true},
			body:    `{"Image":"busybox:latest","HostConfig":{"PublishAllPorts":true}}`,
			wantMsg: "publishing all ports (-P) is not available",
		},
		"rootless Podman: loopback allowed": {
			cfg:  Config{RootlessPorts: true},
			body: `{"Image":"busybox:latest","HostConfig":{"PortBindings":{"80/tcp":[{"HostIp":"127.0.0.1"}]}}}`,
			want: nat.PortMap{"80/tcp": {{HostIP: "127.0.0.1"}}},
		},
		"public ports allowed by the admin": {
			cfg:  Config{PublicPorts: true, RootlessPorts: true},
			body: `{"Image":"busybox:latest","HostConfig":{"PortBindings":{"80/tcp":[{"HostIp":"0.0.0.0","HostPort":"80"}]}}}`,
			want: nat.PortMap{"80/tcp": {{HostIP: "0.0.0.0", HostPort: "80"}}},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			cfg := tc.cfg
			cfg.BuildsDir, cfg.Labels, cfg.Network = testBuildsDir(t), jobLabels, "jobnet"
			f, err := NewFilter(cfg, fakeUpstream{})
			if err != nil {
				t.Fatal(err)
			}
			req := httptest.NewRequest("POST", "/v1.41/containers/create", strings.NewReader(tc.body))
			req.Header.Set("Content-Type", "application/json")
			err = f.Check(context.Background(), req)
			if tc.wantMsg != "" {
				var refusal *Refusal
				if !errors.As(err, &refusal) || !strings.Contains(refusal.Message, tc.wantMsg) {
					t.Fatalf("got %v, want a refusal containing %q", err, tc.wantMsg)
				}
				return
			}
			if err != nil {
				t.Fatalf("got %v, want the request forwarded", err)
			}
			data, err := io.ReadAll(req.Body)
			if err != nil {
				t.Fatal(err)
			}
			var got container.CreateRequest
			if err := json.Unmarshal(data, &got); err != nil {
				t.Fatal(err)
			}
			if got.HostConfig.PublishAllPorts {
				t.Error("PublishAllPorts forwarded: the engine would publish on every interface")
			}
			if !reflect.DeepEqual(got.HostConfig.PortBindings, tc.want) {
				t.Errorf("got bindings %v, want %v", got.HostConfig.PortBindings, tc.want)
			}
		})
	}
}
