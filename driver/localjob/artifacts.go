package localjob

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/bmatcuk/doublestar/v4"
)

// artifactDirName is a job's directory name in the artifacts directory.
func artifactDirName(job string) string {
	name := strings.Map(func(r rune) rune {
		if r == '/' || r == '\\' || r < ' ' {
			return '_'
		}
		return r
	}, job)
	if name == "." || name == ".." || name == "" {
		name = "_" + name
	}
	return name
}

// prepareOutputDir makes dir, which may lie in the work tree root,
// refusing a symbolic link on the way: a repository could carry
// .berth-exec as a link to elsewhere on the host. The first directory
// below root, when exec creates it, gets a .gitignore that makes git
// ignore all of it.
func prepareOutputDir(root, dir string) error {
	rel, err := filepath.Rel(root, dir)
	if err != nil || rel == "." || rel == ".." || strings.HasPrefix(rel, ".."+string(filepath.Separator)) {
		return os.MkdirAll(dir, 0o755)
	}
	cur := root
	for i, part := range strings.Split(rel, string(filepath.Separator)) {
		cur = filepath.Join(cur, part)
		info, err := os.Lstat(cur)
		created := false
		switch {
		case errors.Is(err, fs.ErrNotExist):
			if err := os.Mkdir(cur, 0o755); err != nil {
				return err
			}
			created = true
		case err != nil:
			return err
		case info.Mode()&fs.ModeSymlink != 0:
			return fmt.Errorf("%s is a symbolic link; berth exec writes artifacts only to a real directory: remove it or pass --artifacts-dir", cur)
		case !info.IsDir():
			return fmt.Errorf("%s is not a directory: remove it or pass --artifacts-dir", cur)
		}
		if i == 0 && created {
			ignore := filepath.Join(cur, ".gitignore")
			if err := os.WriteFile(ignore, []byte("# berth exec's output: not part of the repository\n*\n"), 0o644); err != nil {
				return err
			}
		}
	}
	return nil
}

// copyTree copies src into a fresh dst, leaving out what matches one of
// the exclude patterns (doublestar, relative to src, as GitLab matches
// artifacts:exclude). Symbolic links are copied as links, never followed;
// devices, sockets and pipes are left out. It returns the number of files
// copied.
func copyTree(src, dst string, exclude []string) (int, error) {
	if err := os.RemoveAll(dst); err != nil {
		return 0, err
	}
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return 0, err
	}
	files := 0
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil || rel == "." {
			return err
		}
		slashed := filepath.ToSlash(rel)
		for _, pattern := range exclude {
			pattern = strings.TrimPrefix(pattern, "./")
			if ok, _ := doublestar.Match(strings.TrimSuffix(pattern, "/"), slashed); ok {
				if d.IsDir() {
					return filepath.SkipDir
				}
				return nil
			}
		}
		target := filepath.Join(dst, rel)
		info, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case d.IsDir():
			return os.MkdirAll(target, 0o755)
		case info.Mode()&fs.ModeSymlink != 0:
			link, err := os.Readlink(p)
			if err != nil {
				return err
			}
			return os.Symlink(link, target)
		case info.Mode().IsRegular():
			files++
			return copyFile(p, target, info.Mode().Perm()|0o600)
		}
		return nil
	})
	return files, err
}
