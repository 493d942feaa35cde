package localjob

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func requireGit(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("no git on this machine")
	}
}

func runGit(t *testing.T, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command("git", append([]string{"-c", "user.name=t", "-c", "user.email=t@example.com"}, args...)...)
	cmd.Dir = dir
	cmd.Env = gitEnv()
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("git %v: %v\n%s", args, err, out)
	}
	return strings.TrimSpace(string(out))
}

func writeFiles(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for name, content := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// treeDigest hashes every file's path, mode and content under dir, and
// its time of change, except objects': git refreshes the time of objects
// it reuses rather than writing them again (as git add does), which is no
// change to the repository.
func treeDigest(t *testing.T, dir string) string {
	t.Helper()
	h := sha256.New()
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		h.Write([]byte(rel + "\x00" + info.Mode().String() + "\x00"))
		if !strings.HasPrefix(rel, "objects/") {
			h.Write([]byte(info.ModTime().String() + "\x00"))
		}
		if info.Mode().IsRegular() {
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			h.Write(data)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// TestSnapshotCarriesUncommittedChangesWithoutTouchingTheRepository makes
// a work tree with a modified, a deleted, a staged new and an untracked
// file, publishes its snapshot, fetches it as get_sources does, and checks
// what the job gets and that the user's .git did not change at all.
func TestSnapshotCarriesUncommittedChangesWithoutTouchingTheRepository(t *testing.T) {
	requireGit(t)
	ctx := context.Background()
	work := filepath.Join(t.TempDir(), "my project")
	if err := os.MkdirAll(work, 0o755); err != nil {
		t.Fatal(err)
	}
	runGit(t, work, "init", "-q", "-b", "main")
	writeFiles(t, work, map[string]string{"a.txt": "a1\n", "gone.txt": "x\n", "sub/b.txt": "b1\n", ".gitignore": "*.tmp\n"})
	runGit(t, work, "add", "-A")
	runGit(t, work, "commit", "-q", "-m", "first")
	writeFiles(t, work, map[string]string{"a.txt": "a2\n", "staged.txt": "new\n", "untracked.txt": "u\n", "ignored.tmp": "i\n"})
	runGit(t, work, "add", "staged.txt")
	if err := os.Remove(filepath.Join(work, "gone.txt")); err != nil {
		t.Fatal(err)
	}
	head := runGit(t, work, "rev-parse", "HEAD")
	before := treeDigest(t, filepath.Join(work, ".git"))

	tree, err := OpenWorkTree(ctx, filepath.Join(work, "sub"))
	if err != nil {
		t.Fatal(err)
	}
	if tree.Root != work || tree.Head != head || tree.Branch != "main" || tree.ProjectPath != "local/my-project" || tree.DefaultBranch != "main" {
		t.Errorf("got work tree %+v", tree)
	}
	snap, err := tree.Snapshot(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if !snap.Dirty || snap.Commit == head {
		t.Errorf("got snapshot %s (dirty %v), want a new commit on top of %s", snap.Commit, snap.Dirty, head)
	}
	if want := []string{"a.txt", "gone.txt", "staged.txt"}; !reflect.DeepEqual(snap.Changed, want) {
		t.Errorf("got changed %v, want %v", snap.Changed, want)
	}
	if want := []string{"untracked.txt"}; !reflect.DeepEqual(snap.Untracked, want) {
		t.Errorf("got untracked %v, want %v (ignored files are not named)", snap.Untracked, want)
	}

	bare := filepath.Join(t.TempDir(), "source.git")
	if err := snap.Publish(ctx, bare, "refs/heads/main", 20); err != nil {
		t.Fatal(err)
	}
	if got := treeDigest(t, filepath.Join(work, ".git")); got != before {
		t.Errorf("the user's .git changed")
	}
	if out := runGit(t, work, "status", "--porcelain"); !strings.Contains(out, "M a.txt") || !strings.Contains(out, "A  staged.txt") || !strings.Contains(out, "?? untracked.txt") {
		t.Errorf("the work tree's status changed:\n%s", out)
	}

	// What get_sources does in the helper container.
	clone := filepath.Join(t.TempDir(), "group", "app")
	if err := os.MkdirAll(clone, 0o755); err != nil {
		t.Fatal(err)
	}
	runGit(t, clone, "init", "-q")
	runGit(t, clone, "remote", "add", "origin", bare)
	runGit(t, clone, "fetch", "-q", "--no-tags", "origin", "+refs/heads/main:refs/remotes/origin/main")
	runGit(t, clone, "checkout", "-q", "-f", snap.Commit)
	got := listFiles(t, clone)
	var files []string
	for _, f := range got {
		if !strings.HasPrefix(f, ".git/") {
			files = append(files, f)
		}
	}
	if want := []string{".gitignore", "a.txt", "staged.txt", "sub/b.txt"}; !reflect.DeepEqual(files, want) {
		t.Errorf("the job got %v, want %v", files, want)
	}
	if data, _ := os.ReadFile(filepath.Join(clone, "a.txt")); string(data) != "a2\n" {
		t.Errorf("got a.txt %q, want the uncommitted a2", data)
	}
	if parent := runGit(t, clone, "rev-parse", "HEAD^"); parent != head {
		t.Errorf("got parent %s, want HEAD %s", parent, head)
	}
}

func TestCleanWorkTreeIsHead(t *testing.T) {
	requireGit(t)
	ctx := context.Background()
	work := t.TempDir()
	runGit(t, work, "init", "-q", "-b", "trunk")
	writeFiles(t, work, map[string]string{"a": "a"})
	runGit(t, work, "add", "-A")
	runGit(t, work, "commit", "-q", "-m", "only")
	runGit(t, work, "remote", "add", "origin", "git@gitlab.example.com:group/sub/app.git")
	runGit(t, work, "tag", "v1.0")
	runGit(t, work, "checkout", "-q", "--detach")
	tree, err := OpenWorkTree(ctx, work)
	if err != nil {
		t.Fatal(err)
	}
	if tree.ProjectPath != "group/sub/app" || tree.Branch != "" || tree.Tag != "v1.0" || tree.RefName() != "v1.0" || tree.DefaultBranch != "trunk" {
		t.Errorf("got work tree %+v", tree)
	}
	snap, err := tree.Snapshot(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if snap.Dirty || snap.Commit != tree.Head || snap.Message != "only" {
		t.Errorf("got snapshot %+v, want HEAD itself", snap)
	}
	if id := tree.ProjectID(); id < 1<<40 || id >= 1<<41 {
		t.Errorf("got project id %d, want it in [2^40, 2^41)", id)
	}
}

func TestNoCommitYet(t *testing.T) {
	requireGit(t)
	work := t.TempDir()
	runGit(t, work, "init", "-q")
	if _, err := OpenWorkTree(context.Background(), work); err == nil || !strings.Contains(err.Error(), "no commit yet") {
		t.Errorf("got %v, want an error saying to commit first", err)
	}
	if _, err := OpenWorkTree(context.Background(), t.TempDir()); err == nil || !strings.Contains(err.Error(), "not in a git work tree") {
		t.Errorf("got %v, want an error saying it is not a work tree", err)
	}
}

func TestProjectPathFromURL(t *testing.T) {
	tests := map[string]string{
		"git@gitlab.com:group/app.git":                    "group/app",
		"https://gitlab.example.com/group/sub/app.git":    "group/sub/app",
		"ssh://git@gitlab.example.com:2222/group/app":     "group/app",
		"https://user:token@gitlab.com/a/b.git":           "a/b",
		"/srv/git/app.git":                                "",
		"file:///srv/git/group/app.git":                   "",
		"git@host:single.git":                             "",
		"https://gitlab.com/group/../etc":                 "",
		"":                                                "",
		"https://gitlab.com/group/.hidden/app.git":        "",
		"https://gitlab.com/group/app%20with%20space.git": "",
	}
	for in, want := range tests {
		if got := projectPathFromURL(in); got != want {
			t.Errorf("projectPathFromURL(%q): got %q, want %q", in, got, want)
		}
	}
}
