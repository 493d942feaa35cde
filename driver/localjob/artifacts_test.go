package localjob

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCopyTreeExcludesAndKeepsLinksAsLinks(t *testing.T) {
	src := t.TempDir()
	writeFiles(t, src, map[string]string{
		"dist/app":            "bin",
		"dist/tmp/scratch.o":  "o",
		"dist/lib/x.o":        "o",
		"dist/lib/keep.so":    "so",
		"report.xml":          "<xml/>",
		"coverage/index.html": "html",
	})
	secret := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(secret, []byte("host secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(secret, filepath.Join(src, "dist", "link")); err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(t.TempDir(), "out")
	writeFiles(t, dst, map[string]string{"stale.txt": "from the last run"})
	n, err := copyTree(src, dst, []string{"dist/**/*.o", "coverage/", "dist/tmp"})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := strings.Join(listFiles(t, dst), ","), "dist/app,dist/lib/keep.so,report.xml"; got != want || n != 3 {
		t.Errorf("got %d files %s, want %s", n, got, want)
	}
	link, err := os.Readlink(filepath.Join(dst, "dist", "link"))
	if err != nil || link != secret {
		t.Errorf("got link %q, %v; want the link itself, not its target's content", link, err)
	}
}

func TestPrepareOutputDir(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, ".berth-exec", "artifacts")
	if err := prepareOutputDir(root, dir); err != nil {
		t.Fatal(err)
	}
	if data, err := os.ReadFile(filepath.Join(root, ".berth-exec", ".gitignore")); err != nil || !strings.Contains(string(data), "*") {
		t.Errorf("got .gitignore %q, %v; want one ignoring everything", data, err)
	}

	// An existing directory of the user's gets no .gitignore.
	out := filepath.Join(root, "out")
	if err := os.Mkdir(out, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := prepareOutputDir(root, filepath.Join(out, "artifacts")); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(out, ".gitignore")); err == nil {
		t.Errorf("wrote a .gitignore into the user's own directory")
	}

	// A link in the way is refused.
	evil := t.TempDir()
	if err := os.Symlink(t.TempDir(), filepath.Join(evil, ".berth-exec")); err != nil {
		t.Fatal(err)
	}
	if err := prepareOutputDir(evil, filepath.Join(evil, ".berth-exec", "artifacts")); err == nil || !strings.Contains(err.Error(), "symbolic link") {
		t.Errorf("got %v, want the symbolic link refused", err)
	}
}

func TestArtifactDirName(t *testing.T) {
	for in, want := range map[string]string{"build": "build", "test: [a, b]": "test: [a, b]", "build/linux": "build_linux", "..": "_..", ".": "_."} {
		if got := artifactDirName(in); got != want {
			t.Errorf("artifactDirName(%q): got %q, want %q", in, got, want)
		}
	}
}
