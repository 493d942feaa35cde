package runner

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

// BuildTags are the tags berth is built with.
const BuildTags = "remote exclude_graphdriver_btrfs exclude_graphdriver_devicemapper containers_image_openpgp"

// BuildBerth builds a static berth binary, as released, from the module in
// dir to out.
func BuildBerth(dir, out string) error {
	build := exec.Command("go", "build", "-tags", BuildTags, "-o", out, "./cmd/berth")
	build.Dir = dir
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		return fmt.Errorf("build berth: %w", err)
	}
	return nil
}

// MakeRepo commits files in a new work tree and clones it to the bare
// repository bare, returning its file:// URL for jobs to fetch.
func MakeRepo(work, bare string, files map[string]string) (string, error) {
	for name, content := range files {
		p := filepath.Join(work, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return "", err
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			return "", err
		}
	}
	for _, args := range [][]string{
		{"-C", work, "init", "-q", "-b", "main"},
		{"-C", work, "add", "-A"},
		{"-C", work, "-c", "user.name=berth", "-c", "user.email=berth@localhost", "commit", "-q", "-m", "test"},
		{"clone", "-q", "--bare", work, bare},
	} {
		if out, err := exec.Command("git", args...).CombinedOutput(); err != nil {
			return "", fmt.Errorf("git %v: %v\n%s", args, err, out)
		}
	}
	return "file://" + bare, nil
}
