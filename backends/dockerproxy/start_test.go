package dockerproxy

import (
	"context"
	"errors"
	"io"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// startUpstream is fakeUpstream with bind sources on "own" and a record of
// what was paused, to check the start sequence.
type startUpstream struct {
	fakeUpstream
	binds    []string
	running  []string
	pauseErr map[string]error

	mu     sync.Mutex
	events []string
}

func (u *startUpstream) record(e string) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.events = append(u.events, e)
}

func (u *startUpstream) Container(ctx context.Context, ref string) (Object, error) {
	obj, err := u.fakeUpstream.Container(ctx, ref)
	if err == nil && obj.ID == fakeContainers["own"].ID {
		obj.Binds = nil
		for _, b := range u.binds {
			obj.Binds = append(obj.Binds, Bind{Source: b, Target: "/h"})
		}
		u.record("inspect own")
	}
	return obj, err
}

func (u *startUpstream) Stop(_ context.Context, id, t, _ string) error {
	u.record("stop " + id[:3] + " t=" + t)
	return nil
}

func (u *startUpstream) Init(_ context.Context, id string) (int, error) {
	u.record("init " + id[:3])
	return 4242, nil
}

func (u *startUpstream) RunningContainers(context.Context, map[string]string) ([]string, error) {
	return u.running, nil
}

func (u *startUpstream) Pause(_ context.Context, id string) error {
	if err := u.pauseErr[id]; err != nil {
		return err
	}
	u.record("pause " + id[:3])
	return nil
}

func (u *startUpstream) Unpause(_ context.Context, id string) error {
	u.record("unpause " + id[:3])
	return nil
}

func TestStartChecksBindsWhileTheJobIsPaused(t *testing.T) {
	dir := testBuildsDir(t)
	if err := os.MkdirAll(filepath.Join(dir, "project", "swap", "real"), 0o755); err != nil {
		t.Fatal(err)
	}
	good := filepath.Join(dir, "project", "swap", "real")
	tests := map[string]struct {
		binds    []string
		noFreeze bool
		verify   bool
		// mounted is what the engine mounted, for verify
		mounted  string
		pauseErr map[string]error
		wantMsg  string
		want     []string
	}{
		"real directories": {
			binds: []string{good, filepath.Join(dir, "project", "not", "yet")},
			want:  []string{"pause bld", "pause own", "inspect own", "unpause own", "unpause bld"},
		},
		"swapped for a symlink": {
			binds:   []string{filepath.Join(dir, "project", "escape")},
			wantMsg: "is a symlink",
			want:    []string{"pause bld", "pause own", "inspect own", "unpause own", "unpause bld"},
		},
		"symlink above": {
			binds:   []string{filepath.Join(dir, "project", "inside", "x")},
			wantMsg: "project/inside is a symlink",
			want:    []string{"pause bld", "pause own", "inspect own", "unpause own", "unpause bld"},
		},
		"outside the builds dir": {
			binds:   []string{"/etc"},
			wantMsg: "binds must come from the job's builds directory",
			want:    []string{"pause bld", "pause own", "inspect own", "unpause own", "unpause bld"},
		},
		"unclean": {
			binds:   []string{dir + "/project/../../../x"},
			wantMsg: "not a clean absolute path",
			want:    []string{"pause bld", "pause own", "inspect own", "unpause own", "unpause bld"},
		},
		"pause fails": {
			binds:    []string{good},
			pauseErr: map[string]error{fakeContainers["own2"].ID: errors.New("cgroup gone")},
			wantMsg:  "pausing the job's container",
			want:     []string{"pause bld", "unpause bld"},
		},
		"already stopped": {
			binds:    []string{good},
			pauseErr: map[string]error{fakeContainers["own2"].ID: ErrNotRunning},
			want:     []string{"pause bld", "inspect own", "unpause bld"},
		},
		"engine cannot pause": {
			binds:    []string{good},
			noFreeze: true,
			want:     []string{"inspect own"},
		},
		"podman: mounted what was checked": {
			binds:   []string{good},
			verify:  true,
			mounted: good,
			want:    []string{"inspect own", "init own"},
		},
		"podman: swapped in the moment before the mount": {
			binds:   []string{good},
			verify:  true,
			mounted: filepath.Dir(dir),
			wantMsg: "the engine mounted something else at /h",
			want:    []string{"inspect own", "init own", "stop own t=0"},
		},
		"podman: swapped for a symlink before the check": {
			binds:   []string{filepath.Join(dir, "project", "escape")},
			verify:  true,
			wantMsg: "is a symlink",
			want:    []string{"inspect own"},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			up := &startUpstream{
				binds: tc.binds, pauseErr: tc.pauseErr,
				// The target, its proxy, the build container and another
				// container of the job run; "pause own" is the other one.
				running: []string{fakeContainers["build"].ID, fakeContainers["own2"].ID, fakeContainers["own"].ID, fakeContainers["proxy"].ID},
			}
			// The first inspection is the ownership check.
			tc.want = append([]string{"inspect own"}, tc.want...)
			f, err := NewFilter(Config{BuildsDir: dir, Labels: jobLabels, NoFreeze: tc.noFreeze, VerifyMounts: tc.verify}, up)
			if err != nil {
				t.Fatal(err)
			}
			f.mounted = func(pid int, target string) (unix.Stat_t, error) {
				var st unix.Stat_t
				if pid != 4242 || target != "/h" {
					t.Errorf("checked %s in process %d, want /h in 4242", target, pid)
				}
				return st, unix.Stat(tc.mounted, &st)
			}
			req := httptest.NewRequest("POST", "/v1.41/containers/own/start", nil)
			release, err := f.CheckHold(context.Background(), req)
			if tc.wantMsg == "" {
				if err != nil {
					t.Fatalf("got %v, want the start forwarded", err)
				}
				release()
			} else if err == nil || !strings.Contains(err.Error(), tc.wantMsg) {
				t.Fatalf("got %v, want a refusal containing %q", err, tc.wantMsg)
			}
			if !slices.Equal(up.events, tc.want) {
				t.Errorf("got %q, want %q", up.events, tc.want)
			}
			// The lock is free again.
			if !f.startMu.TryLock() {
				t.Fatal("the start lock is still held")
			}
			f.startMu.Unlock()
		})
	}
}

// A restart is a stop by the guard, then a checked start: the running
// container must not run while its binds are checked.
func TestRestartStopsBeforeTheCheckedStart(t *testing.T) {
	dir := testBuildsDir(t)
	up := &startUpstream{binds: []string{filepath.Join(dir, "project", "escape")}}
	f, err := NewFilter(Config{BuildsDir: dir, Labels: jobLabels}, up)
	if err != nil {
		t.Fatal(err)
	}
	req := httptest.NewRequest("POST", "/v1.41/containers/own/restart?t=3", nil)
	_, err = f.CheckHold(context.Background(), req)
	if err == nil || !strings.Contains(err.Error(), "is a symlink") {
		t.Fatalf("got %v, want the swapped bind refused", err)
	}
	if want := []string{"inspect own", "stop own t=3", "inspect own"}; !slices.Equal(up.events, want) {
		t.Errorf("got %q, want %q", up.events, want)
	}
	up.binds, up.events = nil, nil
	req = httptest.NewRequest("POST", "/v1.41/containers/own/restart?t=3", nil)
	release, err := f.CheckHold(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	release()
	if req.URL.Path != "/v1.41/containers/"+fakeContainers["own"].ID+"/start" || req.URL.RawQuery != "" {
		t.Errorf("got %s?%s, want a start of the container", req.URL.Path, req.URL.RawQuery)
	}
}

// procMounted finds what a process has at a path, symlinks resolved in
// its own root: here this test's own process.
func TestProcMountedStatsInTheProcessRoot(t *testing.T) {
	dir := t.TempDir()
	if err := os.Symlink(dir, filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	var want unix.Stat_t
	if err := unix.Stat(dir, &want); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{dir, filepath.Join(dir, "link")} {
		got, err := procMounted(os.Getpid(), p)
		if err != nil {
			t.Fatal(err)
		}
		if got.Dev != want.Dev || got.Ino != want.Ino {
			t.Errorf("%s: got %d/%d, want %d/%d", p, got.Dev, got.Ino, want.Dev, want.Ino)
		}
	}
	if _, err := procMounted(os.Getpid(), filepath.Join(dir, "missing")); err == nil {
		t.Error("a missing path was stat'ed")
	}
}

// A create with a named volume runs with the job's containers paused: the
// engine copies the image's content into an empty volume in the host's
// view, following a symlink a running container that mounts the volume
// would put there meanwhile. One without runs as it comes. Where the job
// cannot be paused, a mount beneath a bind's target is refused: the
// runtime makes it through the bound directory, which the job can change.
func TestCreateWithAVolumeWhileTheJobIsPaused(t *testing.T) {
	dir := testBuildsDir(t)
	running := []string{fakeContainers["build"].ID, fakeContainers["own"].ID, fakeContainers["proxy"].ID}
	paused := []string{"pause bld", "inspect own", "pause own", "unpause own", "unpause bld"}
	for name, tc := range map[string]struct {
		hostConfig string
		noFreeze   bool
		want       []string
		wantMsg    string
	}{
		"a named volume by -v":          {hostConfig: `{"Binds":["ownvol:/data"]}`, want: paused},
		"a named volume mount":          {hostConfig: `{"Mounts":[{"Type":"volume","Source":"ownvol","Target":"/data"}]}`, want: paused},
		"an anonymous volume":           {hostConfig: `{"Binds":["/data"]}`},
		"a bind":                        {hostConfig: `{"Binds":["@B/project/data:/data"]}`},
		"podman: tmpfs beneath a bind":  {hostConfig: `{"Binds":["@B/project/data:/t"],"Tmpfs":{"/t/x":""}}`, noFreeze: true, wantMsg: "a mount at /t/x beneath the bind at /t is not allowed"},
		"podman: volume beneath a bind": {hostConfig: `{"Binds":["@B/project/data:/t","ownvol:/t/v"]}`, noFreeze: true, wantMsg: "beneath the bind at /t"},
		"podman: a bind beneath a bind": {hostConfig: `{"Binds":["@B/project/data:/t","@B/project:/t/p"]}`, noFreeze: true, wantMsg: "beneath the bind at /t"},
		"podman: beside a bind":         {hostConfig: `{"Binds":["@B/project/data:/t","ownvol:/tv"],"Tmpfs":{"/t2":""}}`, noFreeze: true},
	} {
		t.Run(name, func(t *testing.T) {
			up := &startUpstream{running: running}
			f, err := NewFilter(Config{BuildsDir: dir, Labels: jobLabels, NoFreeze: tc.noFreeze}, up)
			if err != nil {
				t.Fatal(err)
			}
			body := create(strings.ReplaceAll(tc.hostConfig, "@B", dir))
			req := httptest.NewRequest("POST", "/v1.41/containers/create", strings.NewReader(body))
			req.Header.Set("Content-Type", ct)
			release, err := f.CheckHold(context.Background(), req)
			if tc.wantMsg != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantMsg) {
					t.Fatalf("got %v, want a refusal containing %q", err, tc.wantMsg)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			release()
			if !slices.Equal(up.events, tc.want) {
				t.Errorf("got %q, want %q", up.events, tc.want)
			}
		})
	}
}

// A create goes to the engine with the image's id, checked, not its name,
// which the engine would look up again; and a volume's removal waits
// until a create that may mount it has been answered.
func TestCreateIsPinnedToWhatWasChecked(t *testing.T) {
	dir := testBuildsDir(t)
	f, err := NewFilter(Config{BuildsDir: dir, Labels: jobLabels}, &startUpstream{})
	if err != nil {
		t.Fatal(err)
	}
	req := httptest.NewRequest("POST", "/v1.41/containers/create", strings.NewReader(`{"Image":"busybox:latest","HostConfig":{"ContainerIDFile":"/home/x/id"}}`))
	req.Header.Set("Content-Type", ct)
	release, err := f.CheckHold(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(req.Body)
	if !strings.Contains(string(body), `"Image":"sha256:shared"`) || strings.Contains(string(body), "/home/x/id") {
		t.Errorf("got %s, want the image by its id and no ContainerIDFile", body)
	}
	removed := make(chan error, 1)
	go func() {
		del := httptest.NewRequest("DELETE", "/v1.41/volumes/ownvol", nil)
		rel, err := f.CheckHold(context.Background(), del)
		if err == nil {
			rel()
		}
		removed <- err
	}()
	select {
	case err := <-removed:
		t.Fatalf("the volume's removal was checked while a create was under way: %v", err)
	case <-time.After(100 * time.Millisecond):
	}
	release()
	if err := <-removed; err != nil {
		t.Fatal(err)
	}
}
