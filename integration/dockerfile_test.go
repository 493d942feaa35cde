package integration

import (
	"archive/tar"
	"bytes"
	"context"
	"debug/elf"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/BurntSushi/toml"
	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types"
	"github.com/docker/docker/api/types/build"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/pkg/stdcopy"

	"github.com/berthci/berth/config"
	"github.com/berthci/berth/integration/runner"
)

// The local stand-ins that provision.sh builds for the Dockerfile's base
// images (golang:1.26-bookworm and gitlab/gitlab-runner).
const (
	goBaseImage     = "berth-test/golang:1.26"
	runnerBaseImage = "berth-test/gitlab-runner:latest"
)

// TestDockerfile builds the repository's Dockerfile from the local base
// images, with the Go modules vendored from the local module cache, and
// checks the runner image: berth version reports the release build info and
// all three backends, the binary is static, the base's gitlab-runner and
// entrypoint are kept, and the configs are installed.
func TestDockerfile(t *testing.T) {
	requireDocker(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	for _, img := range []string{goBaseImage, runnerBaseImage} {
		if _, err := dockerCli.ImageInspect(ctx, img); err != nil {
			t.Fatalf("base image %s is missing: %v (run integration/provision.sh)", img, err)
		}
	}
	cli := buildKitCLI(t)

	_, thisFile, _, _ := runtime.Caller(0)
	root := filepath.Dir(filepath.Dir(thisFile))
	buildDir := dockerfileContext(t, root)

	version := "v0.0.0-dockerfile-test"
	commit := gitOutput(t, root, "rev-parse", "HEAD")
	if gitOutput(t, root, "status", "--porcelain") != "" {
		commit += "-dirty"
	}
	date := time.Now().UTC().Format(time.RFC3339)
	tag := fmt.Sprintf("berth-test/dockerfile-it:%d-%d", os.Getpid(), time.Now().UnixNano())

	// BERTH_FRESH_BUILD=1 (set by .ci/run's default fresh run): build as on
	// a fresh machine, with none of the Go cache mounts an earlier build
	// left, and remove them again afterwards.
	fresh := os.Getenv("BERTH_FRESH_BUILD") == "1"
	if fresh {
		removeBuildCache(t, func(r *build.CacheRecord) bool { return berthCacheMount(r) })
	}
	cacheBefore := buildCacheRecords(t, ctx)
	t.Cleanup(func() {
		removeImage(t, tag)
		removeBuildCache(t, func(r *build.CacheRecord) bool {
			return !cacheBefore[r.ID] && (fresh || r.Type != "exec.cachemount")
		})
	})
	build := exec.CommandContext(ctx, cli, "build", "--pull=false", "--progress=plain",
		"--build-arg", "GO_IMAGE="+goBaseImage,
		"--build-arg", "RUNNER_IMAGE="+runnerBaseImage,
		"--build-arg", "VERSION="+version,
		"--build-arg", "COMMIT="+commit,
		"--build-arg", "BUILD_DATE="+date,
		"-t", tag, buildDir)
	build.Env = append(os.Environ(), "DOCKER_BUILDKIT=1")
	start := time.Now()
	out, err := build.CombinedOutput()
	if err != nil {
		t.Fatalf("docker build: %v\n%s", err, lastLines(string(out), 60))
	}
	t.Logf("docker build took %s (the Go build cache is a BuildKit cache mount: the first build compiles everything)", time.Since(start).Round(time.Second))

	t.Run("berth version", func(t *testing.T) {
		out, code := runImage(t, ctx, &container.Config{Image: tag, Entrypoint: []string{"/usr/local/bin/berth"}, Cmd: []string{"version"}}, nil)
		if code != 0 {
			t.Fatalf("got exit code %d, want 0; output:\n%s", code, out)
		}
		for _, want := range []string{
			"berth " + version + "\n",
			"  commit:       " + commit + "\n",
			"  built:        " + date + "\n",
			"  go:           " + runtime.Version() + "\n",
			"  platform:     linux/" + runtime.GOARCH + "\n",
			"  backends:     dind, podman, socket\n",
		} {
			if !strings.Contains(out, want) {
				t.Errorf("got\n%s\nwant it to contain %q", out, want)
			}
		}
	})

	t.Run("berth version --json", func(t *testing.T) {
		out, code := runImage(t, ctx, &container.Config{Image: tag, Entrypoint: []string{"/usr/local/bin/berth"}, Cmd: []string{"version", "--json"}}, nil)
		if code != 0 {
			t.Fatalf("got exit code %d, want 0; output:\n%s", code, out)
		}
		var got struct {
			Version    string   `json:"version"`
			Commit     string   `json:"commit"`
			BuildDate  string   `json:"build_date"`
			GoVersion  string   `json:"go_version"`
			BuildTags  []string `json:"build_tags"`
			CGOEnabled bool     `json:"cgo_enabled"`
			Backends   []string `json:"backends"`
		}
		if err := json.Unmarshal([]byte(out), &got); err != nil {
			t.Fatalf("got %q, want JSON: %v", out, err)
		}
		if got.Version != version || got.Commit != commit || got.BuildDate != date || got.GoVersion != runtime.Version() {
			t.Errorf("got %+v, want version %s, commit %s, build date %s, %s", got, version, commit, date, runtime.Version())
		}
		if want := strings.Fields(runner.BuildTags); !slices.Equal(got.BuildTags, want) {
			t.Errorf("got build tags %v, want %v", got.BuildTags, want)
		}
		if got.CGOEnabled {
			t.Error("got cgo_enabled true, want a CGO_ENABLED=0 build")
		}
		if want := []string{"dind", "podman", "socket"}; !slices.Equal(got.Backends, want) {
			t.Errorf("got backends %v, want %v", got.Backends, want)
		}
	})

	t.Run("base entrypoint kept", func(t *testing.T) {
		// The stand-in's entrypoint is gitlab-runner itself (the official
		// image's is dumb-init and /entrypoint, which exec it): the runner
		// stage must leave it alone.
		out, code := runImage(t, ctx, &container.Config{Image: tag, Cmd: []string{"--version"}}, nil)
		if code != 0 || !strings.Contains(out, "gitlab-runner") {
			t.Errorf("got exit code %d and %q, want 0 and gitlab-runner's output", code, out)
		}
	})

	files := copyFromImage(t, ctx, tag, "/usr/local/bin/berth", "/etc/berth/config.toml", "/etc/berth/gitlab-runner-template.toml")

	t.Run("static binary", func(t *testing.T) {
		bin := files["/usr/local/bin/berth"]
		f, err := elf.Open(bin)
		if err != nil {
			t.Fatalf("open %s as ELF: %v", bin, err)
		}
		defer f.Close()
		for _, p := range f.Progs {
			if p.Type == elf.PT_INTERP {
				t.Error("got an ELF interpreter (PT_INTERP), want a static binary")
			}
		}
		if libs, err := f.ImportedLibraries(); err != nil || len(libs) > 0 {
			t.Errorf("got shared libraries %v (%v), want none", libs, err)
		}
		// busybox-static's image has no C library: only a static berth runs.
		out, code := runImage(t, ctx, &container.Config{Image: busyboxImage, Entrypoint: []string{"/berth"}, Cmd: []string{"version"}},
			&container.HostConfig{Binds: []string{bin + ":/berth:ro"}, NetworkMode: "none"})
		if code != 0 || !strings.HasPrefix(out, "berth "+version+"\n") {
			t.Errorf("in %s: got exit code %d and %q, want 0 and the version", busyboxImage, code, out)
		}
	})

	t.Run("berth config", func(t *testing.T) {
		got, err := os.ReadFile(files["/etc/berth/config.toml"])
		if err != nil {
			t.Fatal(err)
		}
		want, err := os.ReadFile(filepath.Join(root, "config", "example.toml"))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Error("got /etc/berth/config.toml different from config/example.toml")
		}
		if _, err := config.Load(files["/etc/berth/config.toml"], true); err != nil {
			t.Errorf("load /etc/berth/config.toml: %v", err)
		}
	})

	t.Run("registration template", func(t *testing.T) {
		type custom struct {
			ConfigExec  string   `toml:"config_exec"`
			ConfigArgs  []string `toml:"config_args"`
			PrepareExec string   `toml:"prepare_exec"`
			PrepareArgs []string `toml:"prepare_args"`
			RunExec     string   `toml:"run_exec"`
			RunArgs     []string `toml:"run_args"`
			CleanupExec string   `toml:"cleanup_exec"`
			CleanupArgs []string `toml:"cleanup_args"`
		}
		var tmpl struct {
			Runners []struct {
				Executor  string `toml:"executor"`
				BuildsDir string `toml:"builds_dir"`
				CacheDir  string `toml:"cache_dir"`
				Shell     string `toml:"shell"`
				Custom    custom `toml:"custom"`
			} `toml:"runners"`
		}
		md, err := toml.DecodeFile(files["/etc/berth/gitlab-runner-template.toml"], &tmpl)
		if err != nil {
			t.Fatalf("parse the registration template: %v", err)
		}
		if undecoded := md.Undecoded(); len(undecoded) > 0 {
			t.Errorf("got keys %v the test does not know, want it to check every key", undecoded)
		}
		if len(tmpl.Runners) != 1 {
			t.Fatalf("got %d [[runners]] entries, want 1 (gitlab-runner's template takes exactly one)", len(tmpl.Runners))
		}
		r := tmpl.Runners[0]
		const berth = "/usr/local/bin/berth"
		want := custom{
			ConfigExec: berth, ConfigArgs: []string{"config"},
			PrepareExec: berth, PrepareArgs: []string{"prepare"},
			RunExec: berth, RunArgs: []string{"run"},
			CleanupExec: berth, CleanupArgs: []string{"cleanup"},
		}
		if r.Executor != "custom" || r.BuildsDir == "" || r.CacheDir == "" || r.Shell != "bash" {
			t.Errorf("got executor %q, builds_dir %q, cache_dir %q, shell %q; want custom, both dirs set (gitlab-runner requires them), bash",
				r.Executor, r.BuildsDir, r.CacheDir, r.Shell)
		}
		if fmt.Sprint(r.Custom) != fmt.Sprint(want) {
			t.Errorf("got [runners.custom] %+v, want %+v", r.Custom, want)
		}
	})
}

// buildKitCLI returns a docker CLI that builds with BuildKit: one with the
// buildx plugin, or a 20.10-era CLI, which has BuildKit built in.
func buildKitCLI(t *testing.T) string {
	t.Helper()
	var candidates, tried []string
	if p, err := exec.LookPath("docker"); err == nil {
		candidates = append(candidates, p)
	}
	candidates = append(candidates, "/usr/bin/docker")
	for _, c := range candidates {
		out, err := exec.Command(c, "version", "--format", "{{.Client.Version}}").Output()
		if err != nil {
			tried = append(tried, fmt.Sprintf("%s: %v", c, err))
			continue
		}
		v := strings.TrimSpace(string(out))
		major, _ := strconv.Atoi(strings.SplitN(v, ".", 2)[0])
		if major > 0 && major < 23 {
			return c
		}
		if err := exec.Command(c, "buildx", "version").Run(); err == nil {
			return c
		}
		tried = append(tried, fmt.Sprintf("%s: client %s without the buildx plugin", c, v))
	}
	t.Fatalf("no docker CLI that builds with BuildKit (tried %s); install docker-buildx", strings.Join(tried, "; "))
	return ""
}

// dockerfileContext returns a build context for the repository at root:
// its files (tracked ones and new ones git does not ignore, as in the work
// tree) plus vendor/ from the local module cache, so the build needs no
// network.
func dockerfileContext(t *testing.T, root string) string {
	t.Helper()
	dir := t.TempDir()
	list := gitOutput(t, root, "ls-files", "-z", "--cached", "--others", "--exclude-standard")
	for _, name := range strings.Split(list, "\x00") {
		if name == "" {
			continue
		}
		src := filepath.Join(root, name)
		info, err := os.Lstat(src)
		if errors.Is(err, os.ErrNotExist) {
			continue // deleted in the work tree
		}
		if err != nil {
			t.Fatal(err)
		}
		if !info.Mode().IsRegular() {
			continue
		}
		data, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		dst := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(dst, data, info.Mode().Perm()); err != nil {
			t.Fatal(err)
		}
	}
	vendor := exec.Command("go", "mod", "vendor")
	vendor.Dir = dir
	vendor.Env = append(os.Environ(), "GOFLAGS=-mod=mod", "GOPROXY=off", "GOWORK=off", "GOTOOLCHAIN=local")
	if out, err := vendor.CombinedOutput(); err != nil {
		t.Fatalf("go mod vendor from the local module cache: %v\n%s", err, out)
	}
	return dir
}

func gitOutput(t *testing.T, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command("git", append([]string{"-C", dir}, args...)...)
	out, err := cmd.Output()
	if err != nil {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		t.Fatalf("git %v in %s: %v %s (the test builds from a git checkout)", args, dir, err, stderr)
	}
	return strings.TrimSpace(string(out))
}

// runImage runs a container to its end and returns its output and exit code.
func runImage(t *testing.T, ctx context.Context, cfg *container.Config, host *container.HostConfig) (string, int) {
	t.Helper()
	created, err := dockerCli.ContainerCreate(ctx, cfg, host, nil, nil, "")
	if err != nil {
		t.Fatalf("create a container of %s: %v", cfg.Image, err)
	}
	defer removeContainer(t, created.ID)
	if err := dockerCli.ContainerStart(ctx, created.ID, container.StartOptions{}); err != nil {
		t.Fatalf("start a container of %s: %v", cfg.Image, err)
	}
	waitC, errC := dockerCli.ContainerWait(ctx, created.ID, container.WaitConditionNotRunning)
	var code int
	select {
	case w := <-waitC:
		code = int(w.StatusCode)
	case err := <-errC:
		t.Fatalf("wait for the container of %s: %v", cfg.Image, err)
	}
	logs, err := dockerCli.ContainerLogs(ctx, created.ID, container.LogsOptions{ShowStdout: true, ShowStderr: true})
	if err != nil {
		t.Fatalf("logs of the container of %s: %v", cfg.Image, err)
	}
	defer logs.Close()
	var out bytes.Buffer
	if _, err := stdcopy.StdCopy(&out, &out, logs); err != nil {
		t.Fatalf("read the logs of the container of %s: %v", cfg.Image, err)
	}
	return out.String(), code
}

func removeContainer(t *testing.T, id string) {
	t.Helper()
	err := dockerCli.ContainerRemove(context.Background(), id, container.RemoveOptions{Force: true})
	if err != nil && !cerrdefs.IsNotFound(err) {
		t.Errorf("remove container %s: %v", id, err)
	}
}

// copyFromImage copies regular files out of the image into a temporary
// directory and returns each one's local path by its path in the image.
func copyFromImage(t *testing.T, ctx context.Context, ref string, paths ...string) map[string]string {
	t.Helper()
	created, err := dockerCli.ContainerCreate(ctx, &container.Config{Image: ref, Entrypoint: []string{"/usr/local/bin/berth"}}, nil, nil, nil, "")
	if err != nil {
		t.Fatalf("create a container of %s: %v", ref, err)
	}
	defer removeContainer(t, created.ID)
	dir := t.TempDir()
	// The bind mount in the static binary check needs a path dockerd can read.
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	local := map[string]string{}
	for i, p := range paths {
		rc, _, err := dockerCli.CopyFromContainer(ctx, created.ID, p)
		if err != nil {
			t.Fatalf("copy %s out of %s: %v", p, ref, err)
		}
		tr := tar.NewReader(rc)
		hdr, err := tr.Next()
		if err != nil || hdr.Typeflag != tar.TypeReg {
			rc.Close()
			t.Fatalf("copy %s out of %s: got %v (%v), want a regular file", p, ref, hdr, err)
		}
		dst := filepath.Join(dir, fmt.Sprintf("%d-%s", i, filepath.Base(p)))
		f, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, os.FileMode(hdr.Mode).Perm())
		if err == nil {
			_, err = io.Copy(f, tr)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
		}
		rc.Close()
		if err != nil {
			t.Fatalf("copy %s out of %s: %v", p, ref, err)
		}
		local[p] = dst
	}
	return local
}

// buildCacheRecords returns the IDs of the engine's build cache records.
func buildCacheRecords(t *testing.T, ctx context.Context) map[string]bool {
	t.Helper()
	du, err := dockerCli.DiskUsage(ctx, types.DiskUsageOptions{Types: []types.DiskUsageObject{types.BuildCacheObject}})
	if err != nil {
		t.Fatalf("list the build cache: %v", err)
	}
	ids := map[string]bool{}
	for _, r := range du.BuildCache {
		ids[r.ID] = true
	}
	return ids
}

// berthCacheMount reports whether r is one of the Go cache mounts of
// berth's Dockerfile (its description quotes the RUN line, which names the
// module).
func berthCacheMount(r *build.CacheRecord) bool {
	return r.Type == "exec.cachemount" && strings.Contains(r.Description, "github.com/berthci/berth/")
}

// removeBuildCache removes the build cache records drop selects: after a
// build, those it added (its context, layers and intermediate stages;
// BuildKit leaves no dangling images), the Go cache mounts that make the
// next build fast only when asked to. A record still in use belongs to
// someone else's running build.
func removeBuildCache(t *testing.T, drop func(*build.CacheRecord) bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// A record goes only once no other record builds on it, so repeat
	// until a pass removes nothing; left is then what stays.
	var left []*build.CacheRecord
	for pass := 0; ; pass++ {
		du, err := dockerCli.DiskUsage(ctx, types.DiskUsageOptions{Types: []types.DiskUsageObject{types.BuildCacheObject}})
		if err != nil {
			t.Errorf("list the build cache: %v", err)
			return
		}
		left = nil
		for _, r := range du.BuildCache {
			if drop(r) {
				left = append(left, r)
			}
		}
		if len(left) == 0 || pass == 10 {
			break
		}
		removed := 0
		for _, r := range left {
			rep, err := dockerCli.BuildCachePrune(ctx, build.CachePruneOptions{All: true, Filters: filters.NewArgs(filters.Arg("id", r.ID))})
			if err != nil {
				t.Errorf("remove build cache record %s (%s): %v", r.ID, r.Description, err)
				return
			}
			removed += len(rep.CachesDeleted)
		}
		if removed == 0 {
			break
		}
	}
	for _, r := range left {
		if r.InUse {
			t.Logf("build cache record %s (%s) is in use by another build; left", r.ID, r.Description)
		} else {
			t.Errorf("build cache record %s (%s, %s) was not removed", r.ID, r.Type, r.Description)
		}
	}
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
