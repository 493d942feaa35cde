//go:build remote

package podman

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestSplitRef(t *testing.T) {
	tests := map[string]struct{ repo, tag string }{
		"busybox":                              {"busybox", "latest"},
		"busybox:1.36":                         {"busybox", "1.36"},
		"127.0.0.1:5000/group/app":             {"127.0.0.1:5000/group/app", "latest"},
		"127.0.0.1:5000/group/app:v2":          {"127.0.0.1:5000/group/app", "v2"},
		"quay.io/podman/stable@sha256:0123abc": {"quay.io/podman/stable", ""},
	}
	for ref, want := range tests {
		t.Run(ref, func(t *testing.T) {
			repo, tag := splitRef(ref)
			if repo != want.repo || tag != want.tag {
				t.Errorf("got %q %q, want %q %q", repo, tag, want.repo, want.tag)
			}
		})
	}
}

func TestUnreachable(t *testing.T) {
	const uid, gid = 4242, 4242
	// t.TempDir's parent is private; the uid must get through /tmp.
	root, err := os.MkdirTemp("", "berth-unreachable-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(root) })
	if err := os.Chmod(root, 0o755); err != nil {
		t.Fatal(err)
	}
	open := filepath.Join(root, "open")
	closed := filepath.Join(root, "closed")
	for _, dir := range []string{open, closed} {
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(closed, 0o700); err != nil {
		t.Fatal(err)
	}
	private := filepath.Join(open, "private-binary")
	if err := os.WriteFile(private, nil, 0o700); err != nil {
		t.Fatal(err)
	}
	public := filepath.Join(open, "public-binary")
	if err := os.WriteFile(public, nil, 0o755); err != nil {
		t.Fatal(err)
	}
	tests := map[string]struct {
		path        string
		want        os.FileMode
		wantBlocker string // "" means reachable
	}{
		"a directory to come, under open ones": {path: filepath.Join(open, "builds", "x")},
		"under a closed directory":             {path: filepath.Join(closed, "builds"), wantBlocker: closed},
		"the closed directory itself":          {path: closed, wantBlocker: closed},
		"a binary others may run":              {path: public, want: 0o5},
		"a binary only its owner may run":      {path: private, want: 0o5, wantBlocker: private},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got := unreachable(tc.path, uid, gid, tc.want)
			if tc.wantBlocker == "" && got != "" || tc.wantBlocker != "" && !strings.Contains(got, tc.wantBlocker+" is mode") {
				t.Errorf("got %q, want blocker %q", got, tc.wantBlocker)
			}
		})
	}
}
