//go:build remote

package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/containers/podman/v5/pkg/bindings"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/api/types/registry"
	"github.com/docker/docker/pkg/jsonmessage"
)

// doctorReport is the documented shape of `berth doctor --json`.
type doctorReport struct {
	BerthVersion string `json:"berth_version"`
	Config       struct {
		Path       string   `json:"path"`
		Loaded     bool     `json:"loaded"`
		RunnerName string   `json:"runner_name"`
		Backends   []string `json:"backends"`
	} `json:"config"`
	Checks  []doctorCheck `json:"checks"`
	Summary struct {
		OK   int `json:"ok"`
		Warn int `json:"warn"`
		Fail int `json:"fail"`
		Skip int `json:"skip"`
	} `json:"summary"`
	OK bool `json:"ok"`
}

type doctorCheck struct {
	Backend string `json:"backend"`
	Name    string `json:"name"`
	Status  string `json:"status"`
	Detail  string `json:"detail"`
	Fix     string `json:"fix"`
}

// doctorChecks are the checks berth doctor runs, by group, in order.
var doctorChecks = map[string][]string{
	"config": {"file", "auth-config"},
	"host":   {"builds-dir", "cache-dir", "berth-binary"},
	"socket": {"engine", "api-version", "socket", "host-socket", "rootless", "helper-image", "job-image", "proxy-image", "runner-binary", "mtu", "engine-disk"},
	"dind":   {"engine", "api-version", "socket", "rootless", "helper-image", "job-image", "dind-image", "runner-binary", "mtu", "engine-disk", "dind-sidecar"},
	"podman": {"engine", "api-version", "socket", "rootless", "helper-image", "job-image", "proxy-image", "runner-binary", "mtu", "engine-disk", "dir-access", "nested"},
}

// doctorEnv is a test env whose policy allows every backend, with the
// sidecar in the capability form these hosts need and the podman test
// service.
func doctorEnv(t *testing.T, extraDocker string) *env {
	t.Helper()
	requireDocker(t)
	if _, err := dockerCli.ImageInspect(context.Background(), dindImage); err != nil {
		t.Fatalf("test image %s is missing: %v (run integration/provision.sh)", dindImage, err)
	}
	policy := "default_backend = \"socket\"\nallowed_backends = [\"socket\", \"dind\", \"podman\"]\n"
	return newPodmanEnv(t, options{policyTOML: policy, extraTOML: fmt.Sprintf("image = %q\n%s%s", debianImage, extraDocker, dindCapabilityCfg)})
}

// runDoctor runs `berth --config cfg doctor args...` and returns its exit
// code and output. Doctor bounds every check, so a run that outlives two
// minutes is a hang.
func runDoctor(t *testing.T, cfgPath string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, berthBinary, append([]string{"--config", cfgPath, "doctor"}, args...)...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("berth doctor hung for 2 minutes; output:\n%s\n%s", out.String(), errOut.String())
	}
	var exitErr *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &exitErr):
		code = exitErr.ExitCode()
	default:
		t.Fatalf("run berth doctor: %v", err)
	}
	return code, out.String(), errOut.String()
}

// doctorJSON runs `berth doctor --json` and decodes its report.
func doctorJSON(t *testing.T, cfgPath string) (int, *doctorReport) {
	t.Helper()
	code, stdout, stderr := runDoctor(t, cfgPath, "--json")
	var report doctorReport
	if err := json.Unmarshal([]byte(stdout), &report); err != nil {
		t.Fatalf("berth doctor --json printed no JSON report: %v\nstdout:\n%s\nstderr:\n%s", err, stdout, stderr)
	}
	return code, &report
}

func (r *doctorReport) check(t *testing.T, group, name string) doctorCheck {
	t.Helper()
	for _, c := range r.Checks {
		if c.Backend == group && c.Name == name {
			return c
		}
	}
	t.Fatalf("the report has no %s check %q", group, name)
	return doctorCheck{}
}

func (r *doctorReport) String() string {
	var b strings.Builder
	for _, c := range r.Checks {
		fmt.Fprintf(&b, "%-7s %-4s %-14s %s", c.Backend, c.Status, c.Name, c.Detail)
		if c.Fix != "" {
			fmt.Fprintf(&b, " [fix: %s]", c.Fix)
		}
		b.WriteString("\n")
	}
	return b.String()
}

// requireEveryCheck fails unless the report has exactly the documented
// checks of the groups, in order, each with a detail, and a fix on every
// WARN and FAIL.
func requireEveryCheck(t *testing.T, report *doctorReport, groups ...string) {
	t.Helper()
	got := map[string][]string{}
	for _, c := range report.Checks {
		got[c.Backend] = append(got[c.Backend], c.Name)
		if c.Detail == "" {
			t.Errorf("%s check %s has no detail", c.Backend, c.Name)
		}
		if (c.Status == "WARN" || c.Status == "FAIL") && c.Fix == "" {
			t.Errorf("%s check %s is %s without a fix: %s", c.Backend, c.Name, c.Status, c.Detail)
		}
		if !regexp.MustCompile(`^(OK|WARN|FAIL|SKIP)$`).MatchString(c.Status) {
			t.Errorf("%s check %s has status %q, want OK, WARN, FAIL or SKIP", c.Backend, c.Name, c.Status)
		}
	}
	for _, g := range groups {
		if strings.Join(got[g], ",") != strings.Join(doctorChecks[g], ",") {
			t.Errorf("got %s checks %v, want %v", g, got[g], doctorChecks[g])
		}
	}
}

// TestDoctorPassesOnTheProvisionedHost runs berth doctor with every backend
// against the real engines: it exits 0 with no FAIL, in text and in JSON,
// and the JSON carries every check with the engines' real versions.
func TestDoctorPassesOnTheProvisionedHost(t *testing.T) {
	e := doctorEnv(t, "")
	conn := requirePodman(t)
	ctx := context.Background()
	version, err := dockerCli.ServerVersion(ctx)
	if err != nil {
		t.Fatal(err)
	}

	code, stdout, stderr := runDoctor(t, e.cfgPath)
	if code != 0 || strings.Contains(stdout, "FAIL ") {
		t.Fatalf("berth doctor: exit %d, want 0 with no FAIL\n%s\n%s", code, stdout, stderr)
	}
	for _, want := range []string{"\nconfig\n", "\nhost\n", "\ndind\n", "\npodman\n", "\nsocket\n", " 0 FAIL"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("text report lacks %q:\n%s", want, stdout)
		}
	}

	code, report := doctorJSON(t, e.cfgPath)
	if code != 0 || !report.OK || report.Summary.Fail != 0 || report.Summary.Skip != 0 {
		t.Fatalf("berth doctor --json: exit %d, ok %v, summary %+v; want 0, true, no FAIL or SKIP\n%s", code, report.OK, report.Summary, report)
	}
	if !report.Config.Loaded || report.Config.Path != e.cfgPath || report.Config.RunnerName != e.runner ||
		strings.Join(report.Config.Backends, ",") != "dind,podman,socket" || report.BerthVersion == "" {
		t.Errorf("got config %+v, version %q; want the test config with its three backends", report.Config, report.BerthVersion)
	}
	requireEveryCheck(t, report, "config", "host", "socket", "dind", "podman")

	for _, backend := range []string{"socket", "dind"} {
		engine := report.check(t, backend, "engine")
		if !strings.Contains(engine.Detail, "Docker "+version.Version) || !strings.Contains(engine.Detail, version.KernelVersion) {
			t.Errorf("%s engine: got %q, want Docker %s on kernel %s", backend, engine.Detail, version.Version, version.KernelVersion)
		}
		if api := report.check(t, backend, "api-version"); !strings.Contains(api.Detail, "negotiated API "+version.APIVersion) {
			t.Errorf("%s api-version: got %q, want the negotiated %s", backend, api.Detail, version.APIVersion)
		}
		if sock := report.check(t, backend, "socket"); !strings.Contains(sock.Detail, "/var/run/docker.sock") || !strings.Contains(sock.Detail, "can connect") {
			t.Errorf("%s socket: got %q, want the daemon's socket, reachable", backend, sock.Detail)
		}
		if img := report.check(t, backend, "job-image"); !strings.Contains(img.Detail, debianImage+" is present") {
			t.Errorf("%s job-image: got %q, want %s present", backend, img.Detail, debianImage)
		}
		if bin := report.check(t, backend, "runner-binary"); !strings.Contains(bin.Detail, standinPath) {
			t.Errorf("%s runner-binary: got %q, want %s", backend, bin.Detail, standinPath)
		}
		if mtu := report.check(t, backend, "mtu"); !strings.Contains(mtu.Detail, "MTU") {
			t.Errorf("%s mtu: got %q, want the default network's MTU", backend, mtu.Detail)
		}
	}
	if img := report.check(t, "dind", "dind-image"); !strings.Contains(img.Detail, dindImage+" is present") {
		t.Errorf("dind-image: got %q, want %s present", img.Detail, dindImage)
	}
	if side := report.check(t, "dind", "dind-sidecar"); !strings.Contains(side.Detail, "not privileged") || !strings.Contains(side.Detail, "mount, cgroups and iptables work") {
		t.Errorf("dind-sidecar: got %q, want the capability form to pass the probe", side.Detail)
	}
	if proxy := report.check(t, "socket", "proxy-image"); !strings.Contains(proxy.Detail, helperImage) {
		t.Errorf("socket proxy-image: got %q, want the helper image", proxy.Detail)
	}

	podVersion := bindings.ServiceVersion(conn).String()
	if engine := report.check(t, "podman", "engine"); !strings.Contains(engine.Detail, "Podman "+podVersion) || !strings.Contains(engine.Detail, podSocket) {
		t.Errorf("podman engine: got %q, want Podman %s at %s", engine.Detail, podVersion, podSocket)
	}
	if api := report.check(t, "podman", "api-version"); !strings.Contains(api.Detail, "libpod API "+podVersion) || !strings.Contains(api.Detail, "Docker-compatible API 1.") {
		t.Errorf("podman api-version: got %q, want libpod %s and the Docker-compatible version", api.Detail, podVersion)
	}
	if rl := report.check(t, "podman", "rootless"); rl.Status != "OK" || !strings.Contains(rl.Detail, fmt.Sprintf("rootless as uid %d", podUID)) {
		t.Errorf("podman rootless: got %s %q, want rootless as uid %d", rl.Status, rl.Detail, podUID)
	}
	if sock := report.check(t, "podman", "socket"); !strings.Contains(sock.Detail, podSocket) || !strings.Contains(sock.Detail, fmt.Sprintf("uid %d", podUID)) {
		t.Errorf("podman socket: got %q, want %s owned by uid %d", sock.Detail, podSocket, podUID)
	}
	if img := report.check(t, "podman", "helper-image"); !strings.Contains(img.Detail, helperImage+" is in the service user's store") {
		t.Errorf("podman helper-image: got %q, want %s in the store", img.Detail, helperImage)
	}
	if dirs := report.check(t, "podman", "dir-access"); !strings.Contains(dirs.Detail, e.root) || !strings.Contains(dirs.Detail, berthBinary) {
		t.Errorf("podman dir-access: got %q, want the builds dir and berth's binary reachable", dirs.Detail)
	}
	if t.Failed() {
		t.Logf("report:\n%s", report)
	}
}

// TestDoctorLooksIntoTheHelperImage runs doctor with docker.runner_binary
// "": each engine's check creates a container from the helper image to find
// its gitlab-runner, and removes it (newEnv's cleanups find no leftovers).
func TestDoctorLooksIntoTheHelperImage(t *testing.T) {
	e := doctorEnv(t, "")
	data, err := os.ReadFile(e.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	noBinary := regexp.MustCompile(`(?m)^runner_binary = .*$`).ReplaceAll(data, []byte(`runner_binary = ""`))
	path := filepath.Join(e.root, "no-runner-binary.toml")
	if err := os.WriteFile(path, noBinary, 0o644); err != nil {
		t.Fatal(err)
	}
	code, report := doctorJSON(t, path)
	if code != 0 {
		t.Fatalf("exit %d, want 0\n%s", code, report)
	}
	for _, backend := range []string{"socket", "dind", "podman"} {
		if c := report.check(t, backend, "runner-binary"); c.Status != "OK" || !strings.Contains(c.Detail, "the helper image "+helperImage+" has /usr/bin/gitlab-runner") {
			t.Errorf("%s runner-binary: got %s %q, want the helper image's gitlab-runner", backend, c.Status, c.Detail)
		}
	}
}

// TestDoctorPodmanServiceStopped stops the rootless podman service: doctor
// reports podman's engine FAIL with how to start the service, skips what
// needs it, exits non-zero, and still passes socket and dind. The service
// is always started again.
func TestDoctorPodmanServiceStopped(t *testing.T) {
	e := doctorEnv(t, "")
	// Registered after newPodmanEnv's leftover check, so it runs before it.
	t.Cleanup(func() { startEngines(t) })
	stopEngine(t, "/run/berth-test/podman.pid")

	code, report := doctorJSON(t, e.cfgPath)
	if code != 1 || report.OK {
		t.Errorf("exit %d, ok %v; want 1 and false with podman down\n%s", code, report.OK, report)
	}
	requireEveryCheck(t, report, "config", "host", "socket", "dind", "podman")
	engine := report.check(t, "podman", "engine")
	if engine.Status != "FAIL" || !strings.Contains(engine.Detail, podSocket) {
		t.Errorf("podman engine: got %s %q, want a FAIL naming %s", engine.Status, engine.Detail, podSocket)
	}
	for _, want := range []string{"systemctl --user enable --now podman.socket", "podman system service", "[podman] socket"} {
		if !strings.Contains(engine.Fix, want) {
			t.Errorf("podman engine fix %q lacks %q", engine.Fix, want)
		}
	}
	for _, name := range []string{"api-version", "rootless", "helper-image", "job-image", "proxy-image", "mtu", "engine-disk"} {
		if c := report.check(t, "podman", name); c.Status != "SKIP" {
			t.Errorf("podman %s: got %s %q, want SKIP with the service down", name, c.Status, c.Detail)
		}
	}
	for _, c := range report.Checks {
		if c.Backend != "podman" && c.Status == "FAIL" {
			t.Errorf("%s %s: got FAIL (%s), want the other backends unaffected", c.Backend, c.Name, c.Detail)
		}
	}
	for _, backend := range []string{"socket", "dind"} {
		if c := report.check(t, backend, "engine"); c.Status != "OK" {
			t.Errorf("%s engine: got %s %q, want OK", backend, c.Status, c.Detail)
		}
	}

	code, stdout, _ := runDoctor(t, e.cfgPath)
	if code != 1 || !regexp.MustCompile(`FAIL +engine`).MatchString(stdout) || !strings.Contains(stdout, "fix: start the rootless Podman service") {
		t.Errorf("text report: exit %d, want 1 with the engine FAIL and its fix:\n%s", code, stdout)
	}
	if t.Failed() {
		t.Logf("report:\n%s", report)
	}
}

// TestDoctorBrokenConfig gives doctor configs that do not load: it reports
// the config FAIL naming the key, checks nothing else, and exits non-zero.
func TestDoctorBrokenConfig(t *testing.T) {
	tests := map[string]struct {
		body    string
		wantKey string
	}{
		"unparseable TOML":  {body: "builds_dir = \"/tmp/x\n", wantKey: `key "builds_dir"`},
		"unclosed array":    {body: "[docker]\nimage = [1\n", wantKey: "docker.image"},
		"bad value":         {body: "[dind]\nmtu = 70000\n", wantKey: "dind.mtu"},
		"bad backend":       {body: "[policy]\ndefault_backend = \"vm\"\n", wantKey: "policy.default_backend"},
		"unknown key":       {body: "[docker]\nimagee = \"debian\"\n", wantKey: "docker.imagee"},
		"wrong type":        {body: "[docker]\npids_limit = \"many\"\n", wantKey: "docker.pids_limit"},
		"named but missing": {wantKey: "config file not found"},
	}
	dir := t.TempDir()
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(dir, strings.ReplaceAll(name, " ", "-")+".toml")
			if tc.body != "" {
				if err := os.WriteFile(path, []byte(tc.body), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			code, report := doctorJSON(t, path)
			if code != 1 || report.OK || report.Config.Loaded || len(report.Checks) != 1 {
				t.Fatalf("exit %d, ok %v, loaded %v; want 1, false, false and only the config check\n%s", code, report.OK, report.Config.Loaded, report)
			}
			c := report.Checks[0]
			if c.Backend != "config" || c.Name != "file" || c.Status != "FAIL" || !strings.Contains(c.Detail, tc.wantKey) || c.Fix == "" {
				t.Errorf("got %+v, want a config file FAIL naming %q, with a fix", c, tc.wantKey)
			}
			code, stdout, _ := runDoctor(t, path)
			if code != 1 || !strings.Contains(stdout, "FAIL") || !strings.Contains(stdout, tc.wantKey) || !strings.Contains(stdout, "fix: ") {
				t.Errorf("text report: exit %d, want 1 naming %q with a fix:\n%s", code, tc.wantKey, stdout)
			}
		})
	}
}

// TestDoctorPrivilegedDindAgreesWithTheEngine sets [dind] privileged =
// true: doctor's sidecar check passes exactly when this host's Docker
// starts privileged containers (the test hosts cannot: their VMs lack a
// capability), and on FAIL says to use the capability form.
func TestDoctorPrivilegedDindAgreesWithTheEngine(t *testing.T) {
	requireDocker(t)
	policy := "default_backend = \"socket\"\nallowed_backends = [\"socket\", \"dind\"]\n"
	e := newEnv(t, options{policyTOML: policy, extraTOML: fmt.Sprintf("\n[dind]\nimage = %q\nprivileged = true\n", dindImage)})
	privilegedWorks := privilegedContainersStart(t, e)

	code, report := doctorJSON(t, e.cfgPath)
	side := report.check(t, "dind", "dind-sidecar")
	switch {
	case privilegedWorks && (side.Status != "OK" || code != 0):
		t.Errorf("privileged containers start here, but doctor says %s %q (exit %d)", side.Status, side.Detail, code)
	case !privilegedWorks && (side.Status != "FAIL" || code != 1 || !strings.Contains(side.Fix, "privileged = false") || !strings.Contains(side.Fix, "cap_add")):
		t.Errorf("privileged containers fail here, but doctor says %s %q, fix %q (exit %d); want a FAIL pointing at the capability form", side.Status, side.Detail, side.Fix, code)
	}
	if c := report.check(t, "socket", "engine"); c.Status != "OK" {
		t.Errorf("socket engine: got %s, want OK beside dind's result", c.Status)
	}
}

// privilegedContainersStart reports whether this host's Docker starts a
// privileged container; the container carries the env's labels.
func privilegedContainersStart(t *testing.T, e *env) bool {
	t.Helper()
	ctx := context.Background()
	created, err := dockerCli.ContainerCreate(ctx, &container.Config{Image: busyboxImage, Cmd: []string{"true"}, Labels: map[string]string{"berth.runner": e.runner}},
		&container.HostConfig{Privileged: true, NetworkMode: "none"}, nil, nil, "")
	if err != nil {
		t.Fatalf("create a privileged container: %v", err)
	}
	defer func() {
		if err := dockerCli.ContainerRemove(ctx, created.ID, container.RemoveOptions{Force: true}); err != nil {
			t.Errorf("remove the privileged container: %v", err)
		}
	}()
	return dockerCli.ContainerStart(ctx, created.ID, container.StartOptions{}) == nil
}

// TestDoctorAbsentImagesAskTheRegistry points the default job image at one
// that only the local registry has, and the guard's image at one it lacks:
// doctor asks the registry (with docker.auth_config's login), pulls
// nothing, passes the first on both engines and fails the second.
func TestDoctorAbsentImagesAskTheRegistry(t *testing.T) {
	requireDocker(t)
	conn := requirePodman(t)
	ctx := context.Background()
	present := registryAddr + "/berth-it/doctor:present"
	missing := registryAddr + "/berth-it/doctor:missing"
	auth, err := registry.EncodeAuthConfig(registry.AuthConfig{Username: registryUser, Password: registryPass, ServerAddress: registryAddr})
	if err != nil {
		t.Fatal(err)
	}
	if err := dockerCli.ImageTag(ctx, busyboxImage, present); err != nil {
		t.Fatal(err)
	}
	push, err := dockerCli.ImagePush(ctx, present, image.PushOptions{RegistryAuth: auth})
	if err == nil {
		err = jsonmessage.DisplayJSONMessagesStream(push, &bytes.Buffer{}, 0, false, nil)
		push.Close()
	}
	if _, rmErr := dockerCli.ImageRemove(ctx, present, image.RemoveOptions{}); rmErr != nil {
		t.Errorf("untag %s: %v", present, rmErr)
	}
	if err != nil {
		t.Fatalf("push %s to the local registry: %v", present, err)
	}
	removePodmanImage(t, conn, present)
	for _, ref := range []string{present, missing} {
		if _, err := dockerCli.ImageInspect(ctx, ref); err == nil {
			t.Fatalf("%s is on the host; the test needs it absent", ref)
		}
	}

	policy := "default_backend = \"socket\"\nallowed_backends = [\"socket\", \"podman\"]\n"
	authConfig := fmt.Sprintf(`{"auths": {%q: {"username": %q, "password": %q}}}`, registryAddr, registryUser, registryPass)
	extra := fmt.Sprintf("image = %q\nauth_config = '%s'\n\n[socket]\nproxy_image = %q\n", present, authConfig, missing)
	e := newPodmanEnv(t, options{policyTOML: policy, extraTOML: extra})

	code, report := doctorJSON(t, e.cfgPath)
	if code != 1 {
		t.Errorf("exit %d, want 1 for the missing proxy image", code)
	}
	if c := report.check(t, "socket", "job-image"); c.Status != "OK" || !strings.Contains(c.Detail, "its registry has it (sha256:") {
		t.Errorf("socket job-image: got %s %q, want OK from the registry's digest", c.Status, c.Detail)
	}
	if c := report.check(t, "podman", "job-image"); c.Status != "OK" || !strings.Contains(c.Detail, "registry lists tag present") {
		t.Errorf("podman job-image: got %s %q, want OK from the registry's tags", c.Status, c.Detail)
	}
	if c := report.check(t, "socket", "proxy-image"); c.Status != "FAIL" || !strings.Contains(c.Detail, missing) || !strings.Contains(c.Fix, "socket.proxy_image") {
		t.Errorf("socket proxy-image: got %s %q (fix %q), want a FAIL naming %s and its key", c.Status, c.Detail, c.Fix, missing)
	}
	if _, err := dockerCli.ImageInspect(ctx, present); err == nil {
		t.Errorf("doctor pulled %s; it must only ask the registry", present)
	}
	if t.Failed() {
		t.Logf("report:\n%s", report)
	}
}
