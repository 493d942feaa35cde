package main

import (
	"bytes"
	"encoding/json"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/berthci/berth/backends"
	"github.com/berthci/berth/driver"
)

func TestVersionCommand(t *testing.T) {
	tests := map[string]struct {
		args  []string
		check func(t *testing.T, out string)
	}{
		"text": {check: func(t *testing.T, out string) {
			for _, want := range []string{
				"berth " + driver.Version + "\n",
				"  go:           " + runtime.Version() + "\n",
				"  platform:     " + runtime.GOOS + "/" + runtime.GOARCH + "\n",
				"  backends:     " + strings.Join(backends.Available(), ", ") + "\n",
				"  commit:       ",
			} {
				if !strings.Contains(out, want) {
					t.Errorf("got %q, want it to contain %q", out, want)
				}
			}
		}},
		"json": {args: []string{"--json"}, check: func(t *testing.T, out string) {
			var got versionInfo
			if err := json.Unmarshal([]byte(out), &got); err != nil {
				t.Fatalf("got %q, want JSON: %v", out, err)
			}
			if got.Version != driver.Version || got.GoVersion != runtime.Version() || got.OS != runtime.GOOS || got.Arch != runtime.GOARCH {
				t.Errorf("got %+v, want version %s, %s, %s/%s", got, driver.Version, runtime.Version(), runtime.GOOS, runtime.GOARCH)
			}
			for _, name := range []string{"dind", "socket"} {
				if !slices.Contains(got.Backends, name) {
					t.Errorf("got backends %v, want %s among them", got.Backends, name)
				}
			}
			all := append(slices.Clone(got.Backends), got.MissingBackends...)
			slices.Sort(all)
			if !slices.Equal(all, backends.Names()) {
				t.Errorf("got backends %v and missing %v, want together %v", got.Backends, got.MissingBackends, backends.Names())
			}
		}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			cmd := versionCommand()
			var out bytes.Buffer
			cmd.SetOut(&out)
			cmd.SetArgs(tc.args)
			if err := cmd.Execute(); err != nil {
				t.Fatalf("got %v, want no error", err)
			}
			tc.check(t, out.String())
		})
	}
}

func TestWriteVersion(t *testing.T) {
	tests := map[string]struct {
		info versionInfo
		want string
	}{
		"release build": {
			info: versionInfo{
				BuildInfo: driver.BuildInfo{Version: "v0.3.0", Commit: "abc123", BuildDate: "2026-11-29T10:00:00Z", GoVersion: "go1.26.8", OS: "linux", Arch: "amd64", BuildTags: []string{"remote", "containers_image_openpgp"}},
				Backends:  []string{"dind", "podman", "socket"},
			},
			want: "berth v0.3.0\n" +
				"  commit:       abc123\n" +
				"  built:        2026-11-29T10:00:00Z\n" +
				"  go:           go1.26.8\n" +
				"  platform:     linux/amd64\n" +
				"  backends:     dind, podman, socket\n" +
				"  build tags:   remote, containers_image_openpgp\n",
		},
		"checkout build without podman, with cgo": {
			info: versionInfo{
				BuildInfo:       driver.BuildInfo{Version: "0.1.0-dev", Commit: "abc123-dirty", CommitTime: "2026-11-28T09:00:00Z", GoVersion: "go1.26.8", OS: "linux", Arch: "arm64", CGOEnabled: true},
				Backends:        []string{"dind", "socket"},
				MissingBackends: []string{"podman"},
			},
			want: "berth 0.1.0-dev\n" +
				"  commit:       abc123-dirty (2026-11-28T09:00:00Z)\n" +
				"  go:           go1.26.8\n" +
				"  platform:     linux/arm64\n" +
				"  backends:     dind, socket\n" +
				"  not built in: podman\n" +
				"  cgo:          " + cgoWarning + "\n",
		},
		"unknown commit": {
			info: versionInfo{BuildInfo: driver.BuildInfo{Version: "0.1.0-dev", GoVersion: "go1.26.8", OS: "linux", Arch: "amd64"}, Backends: []string{"socket"}},
			want: "berth 0.1.0-dev\n" +
				"  commit:       " + unknownCommit + "\n" +
				"  go:           go1.26.8\n" +
				"  platform:     linux/amd64\n" +
				"  backends:     socket\n",
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			var out bytes.Buffer
			if err := writeVersion(&out, tc.info); err != nil {
				t.Fatal(err)
			}
			if got := out.String(); got != tc.want {
				t.Errorf("got\n%s\nwant\n%s", got, tc.want)
			}
		})
	}
}
