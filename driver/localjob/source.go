package localjob

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"io/fs"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"time"
)

// WorkTree is the git work tree a job runs from. exec only reads it: it
// writes no file, index entry, ref or object there. (git refreshes the
// time of an existing object it would write again, as git add does, and
// does so in the repository exec reads objects from too.)
type WorkTree struct {
	// Root is the work tree's top directory.
	Root string
	// Objects is the repository's object directory.
	Objects string
	// Head is the commit HEAD names.
	Head string
	// Branch is HEAD's branch; empty when HEAD is detached.
	Branch string
	// Tag is a tag pointing at HEAD when it is detached.
	Tag           string
	DefaultBranch string
	// ProjectPath is the GitLab path of the origin remote, such as
	// group/app, else local/<directory name>.
	ProjectPath string
	// projectKey identifies the project for its id: the remote's project
	// path, else the work tree's directory.
	projectKey string
	UserName   string
	UserEmail  string
}

// gitEnv is the environment of git commands exec runs: no inherited
// repository overrides, and no opportunistic index refresh, which would
// write to the user's index.
func gitEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		key, _, _ := strings.Cut(kv, "=")
		switch key {
		case "GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_OBJECT_DIRECTORY", "GIT_ALTERNATE_OBJECT_DIRECTORIES",
			"GIT_COMMON_DIR", "GIT_NAMESPACE", "GIT_CEILING_DIRECTORIES":
			continue
		}
		env = append(env, kv)
	}
	return append(env, append([]string{"GIT_OPTIONAL_LOCKS=0", "LC_ALL=C", "GIT_TERMINAL_PROMPT=0"}, extra...)...)
}

// git runs git in dir and returns its trimmed stdout.
func git(ctx context.Context, dir string, env []string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "git", args...)
	cmd.Dir = dir
	cmd.Env = env
	if env == nil {
		cmd.Env = gitEnv()
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		var exitErr *exec.ExitError
		if errors.Is(err, exec.ErrNotFound) {
			return "", errors.New("git is not installed: berth exec needs git on the host")
		}
		if errors.As(err, &exitErr) {
			return "", fmt.Errorf("git %s: %s", strings.Join(args, " "), strings.TrimSpace(stderr.String()))
		}
		return "", fmt.Errorf("git %s: %w", strings.Join(args, " "), err)
	}
	return strings.TrimRight(stdout.String(), "\n"), nil
}

// OpenWorkTree finds the git work tree that holds dir.
func OpenWorkTree(ctx context.Context, dir string) (*WorkTree, error) {
	root, err := git(ctx, dir, nil, "rev-parse", "--show-toplevel")
	if err != nil {
		return nil, fmt.Errorf("%s is not in a git work tree (%v): berth exec runs a job of the work tree you are in", dir, err)
	}
	w := &WorkTree{Root: root}
	common, err := git(ctx, root, nil, "rev-parse", "--git-common-dir")
	if err != nil {
		return nil, err
	}
	if !filepath.IsAbs(common) {
		common = filepath.Join(root, common)
	}
	w.Objects = filepath.Join(common, "objects")
	if w.Head, err = git(ctx, root, nil, "rev-parse", "--verify", "-q", "HEAD^{commit}"); err != nil {
		return nil, fmt.Errorf("the git work tree %s has no commit yet: commit your files first (berth exec runs the committed tree plus uncommitted changes to tracked files)", root)
	}
	w.Branch, _ = git(ctx, root, nil, "symbolic-ref", "-q", "--short", "HEAD")
	if w.Branch == "" {
		if tags, _ := git(ctx, root, nil, "tag", "--points-at", "HEAD"); tags != "" {
			w.Tag = strings.SplitN(tags, "\n", 2)[0]
		}
	}
	w.DefaultBranch = w.defaultBranch(ctx)
	remote, _ := git(ctx, root, nil, "config", "--get", "remote.origin.url")
	if p := projectPathFromURL(remote); p != "" {
		w.ProjectPath, w.projectKey = p, "remote:"+p
	} else {
		w.ProjectPath, w.projectKey = "local/"+sanitizeSegment(filepath.Base(root)), "dir:"+root
	}
	w.UserName, _ = git(ctx, root, nil, "config", "--get", "user.name")
	w.UserEmail, _ = git(ctx, root, nil, "config", "--get", "user.email")
	return w, nil
}

func (w *WorkTree) defaultBranch(ctx context.Context) string {
	if ref, err := git(ctx, w.Root, nil, "symbolic-ref", "-q", "--short", "refs/remotes/origin/HEAD"); err == nil && ref != "" {
		return strings.TrimPrefix(ref, "origin/")
	}
	for _, b := range []string{"main", "master"} {
		if _, err := git(ctx, w.Root, nil, "show-ref", "--verify", "-q", "refs/heads/"+b); err == nil {
			return b
		}
	}
	if w.Branch != "" {
		return w.Branch
	}
	if branches, _ := git(ctx, w.Root, nil, "for-each-ref", "--format=%(refname:short)", "refs/heads/"); branches != "" && !strings.Contains(branches, "\n") {
		return branches
	}
	return "main"
}

// ProjectID is a stable id for the project, far above GitLab's project ids
// so that exec's cache directories never meet a real project's.
func (w *WorkTree) ProjectID() int64 {
	h := fnv.New64a()
	h.Write([]byte(w.projectKey))
	return 1<<40 + int64(h.Sum64()%(1<<40))
}

// RefName is CI_COMMIT_REF_NAME: the branch, else the tag, else HEAD's
// short commit.
func (w *WorkTree) RefName() string {
	switch {
	case w.Branch != "":
		return w.Branch
	case w.Tag != "":
		return w.Tag
	}
	return w.Head[:8]
}

var segmentRe = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]*$`) })

// projectPathFromURL returns group/project from a remote URL, or "" when
// the URL names no GitLab-style project (a local path, say).
func projectPathFromURL(raw string) string {
	raw = strings.TrimSpace(raw)
	var p string
	switch {
	case raw == "":
		return ""
	case strings.Contains(raw, "://"):
		u, err := url.Parse(raw)
		if err != nil || u.Scheme == "file" {
			return ""
		}
		p = u.Path
	case strings.HasPrefix(raw, "/") || strings.HasPrefix(raw, "."):
		return ""
	default:
		// scp-like: user@host:group/project.git
		_, rest, ok := strings.Cut(raw, ":")
		if !ok {
			return ""
		}
		p = rest
	}
	p = strings.TrimSuffix(strings.Trim(p, "/"), ".git")
	parts := strings.Split(p, "/")
	if len(parts) < 2 {
		return ""
	}
	for _, s := range parts {
		if !segmentRe().MatchString(s) || strings.HasSuffix(s, ".") {
			return ""
		}
	}
	return p
}

// sanitizeSegment makes a directory name a valid project path segment.
func sanitizeSegment(s string) string {
	out := strings.Map(func(r rune) rune {
		if r < 128 && (r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '-' || r == '.') {
			return r
		}
		return '-'
	}, s)
	out = strings.Trim(out, ".-")
	if out == "" {
		return "project"
	}
	return out
}

// Snapshot is what a job checks out: HEAD, or a commit on top of it
// holding the uncommitted changes to tracked files.
type Snapshot struct {
	Commit string
	// Dirty is true when Commit holds uncommitted changes.
	Dirty bool
	// Changed are the files whose uncommitted changes Commit holds.
	Changed []string
	// Untracked are the files the job does not get.
	Untracked []string
	// Files are the tracked files, for rules:exists.
	Files []string
	// Commit's message, author and time, for the CI_COMMIT_* variables.
	Message, Author string
	Timestamp       time.Time

	// objects holds the objects of the snapshot commit, outside the
	// user's repository.
	objects string
	tree    *WorkTree
}

// Snapshot records the work tree's state in a commit without touching the
// user's repository: the index is a copy and the new objects go to tmp.
func (w *WorkTree) Snapshot(ctx context.Context, tmp string) (*Snapshot, error) {
	s := &Snapshot{objects: filepath.Join(tmp, "objects"), tree: w}
	for _, d := range []string{"pack", "info"} {
		if err := os.MkdirAll(filepath.Join(s.objects, d), 0o755); err != nil {
			return nil, err
		}
	}
	index := filepath.Join(tmp, "index")
	env := gitEnv("GIT_INDEX_FILE="+index, "GIT_OBJECT_DIRECTORY="+s.objects, "GIT_ALTERNATE_OBJECT_DIRECTORIES="+w.Objects)
	userIndex, err := git(ctx, w.Root, nil, "rev-parse", "--git-path", "index")
	if err != nil {
		return nil, err
	}
	if !filepath.IsAbs(userIndex) {
		userIndex = filepath.Join(w.Root, userIndex)
	}
	if err := copyFile(userIndex, index, 0o600); err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("copy the git index: %w", err)
		}
		if _, err := git(ctx, w.Root, env, "read-tree", "HEAD"); err != nil {
			return nil, err
		}
	}
	if _, err := git(ctx, w.Root, env, "add", "-u"); err != nil {
		return nil, fmt.Errorf("record the uncommitted changes: %w", err)
	}
	tree, err := git(ctx, w.Root, env, "write-tree")
	if err != nil {
		return nil, err
	}
	headTree, err := git(ctx, w.Root, env, "rev-parse", "HEAD^{tree}")
	if err != nil {
		return nil, err
	}
	s.Commit = w.Head
	if tree != headTree {
		s.Dirty = true
		ident := []string{"GIT_AUTHOR_NAME=berth exec", "GIT_AUTHOR_EMAIL=berth-exec@localhost",
			"GIT_COMMITTER_NAME=berth exec", "GIT_COMMITTER_EMAIL=berth-exec@localhost"}
		msg := fmt.Sprintf("berth exec: uncommitted changes on top of %s", w.Head[:8])
		if s.Commit, err = git(ctx, w.Root, append(env, ident...), "commit-tree", tree, "-p", w.Head, "-m", msg); err != nil {
			return nil, err
		}
		changed, err := git(ctx, w.Root, env, "diff", "--name-only", "-z", w.Head, s.Commit)
		if err != nil {
			return nil, err
		}
		s.Changed = splitNUL(changed)
	}
	files, err := git(ctx, w.Root, env, "ls-files", "-z")
	if err != nil {
		return nil, err
	}
	s.Files = splitNUL(files)
	untracked, err := git(ctx, w.Root, env, "ls-files", "-z", "--others", "--exclude-standard")
	if err != nil {
		return nil, err
	}
	s.Untracked = splitNUL(untracked)
	info, err := git(ctx, w.Root, env, "log", "-1", "--format=%an <%ae>%x00%cI%x00%B", s.Commit)
	if err != nil {
		return nil, err
	}
	parts := strings.SplitN(info, "\x00", 3)
	if len(parts) == 3 {
		s.Author = parts[0]
		s.Timestamp, _ = time.Parse(time.RFC3339, parts[1])
		s.Message = strings.TrimRight(parts[2], "\n")
	}
	return s, nil
}

// ReadFile reads a file of the snapshot by its work-tree-relative path.
func (s *Snapshot) ReadFile(rel string) ([]byte, error) {
	if err := checkRelPath(rel); err != nil {
		return nil, err
	}
	return os.ReadFile(filepath.Join(s.tree.Root, filepath.FromSlash(rel)))
}

// Publish makes a bare repository at dir holding the snapshot commit as
// ref, depth commits deep (0: all), for get_sources to fetch from. The
// user's repository is only read, by git upload-pack.
func (s *Snapshot) Publish(ctx context.Context, dir, ref string, depth int) error {
	if _, err := git(ctx, "/", nil, "init", "-q", "--bare", dir); err != nil {
		return fmt.Errorf("make the job's copy of the repository: %w", err)
	}
	// upload-pack in the user's repository sees the snapshot's own
	// objects through the alternate; the copy gets them all.
	uploadPack := "GIT_ALTERNATE_OBJECT_DIRECTORIES=" + shellQuote(s.objects) + " git-upload-pack"
	from := s.tree.Root
	args := []string{"fetch", "-q", "--no-tags", "--upload-pack", uploadPack}
	if depth > 0 {
		// Only the git protocol honours --depth; a plain path is local.
		from = "file://" + s.tree.Root
		args = append(args, "--depth", fmt.Sprint(depth))
	}
	args = append(args, from, s.Commit+":"+ref)
	if _, err := git(ctx, dir, nil, args...); err != nil {
		return fmt.Errorf("copy the work tree's commit into the job: %w", err)
	}
	return nil
}

func splitNUL(s string) []string {
	var out []string
	for _, p := range strings.Split(s, "\x00") {
		if p != "" {
			out = append(out, p)
		}
	}
	return out
}

func copyFile(src, dst string, mode fs.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// chownTree gives a tree to the owner of like, when exec runs as root and
// they differ: the podman backend's containers run as its user, and git
// there refuses a repository of another owner.
func chownTree(root, like string) error {
	if os.Getuid() != 0 {
		return nil
	}
	info, err := os.Stat(like)
	if err != nil {
		return err
	}
	st, ok := info.Sys().(*syscall.Stat_t)
	if !ok || st.Uid == 0 {
		return nil
	}
	return filepath.WalkDir(root, func(p string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, int(st.Uid), int(st.Gid))
	})
}
