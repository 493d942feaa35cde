// Package config holds berth's admin configuration: the TOML file, its
// defaults and validation, and the policy that bounds what a job may ask for.
// It is pure: nothing here talks to an engine.
package config

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
)

// DefaultPath is where berth looks for its config when neither --config nor
// $BERTH_CONFIG names one.
const DefaultPath = "/etc/berth/config.toml"

// Config is the admin's berth configuration.
type Config struct {
	// BuildsDir is the host directory under which each job gets its own
	// project directory. It is mounted into containers at the same path.
	BuildsDir string `toml:"builds_dir"`
	// CacheDir is the host directory under which each project keeps its
	// cache between jobs.
	CacheDir string `toml:"cache_dir"`
	// RunnerName names this runner registration in resource names and
	// labels. Give each registration that shares an engine its own name.
	RunnerName string `toml:"runner_name"`
	// GCGrace is how long after a job's timeout `berth gc` leaves what the
	// job left behind.
	GCGrace Duration `toml:"gc_grace"`

	Policy Policy `toml:"policy"`
	Docker Docker `toml:"docker"`
	Socket Socket `toml:"socket"`
	Podman Podman `toml:"podman"`
	Dind   Dind   `toml:"dind"`

	// Path is the file the config was read from, or "" for built-in defaults.
	Path string `toml:"-"`
}

// Policy bounds what a job may request.
type Policy struct {
	DefaultBackend  string   `toml:"default_backend"`
	AllowedBackends []string `toml:"allowed_backends"`
	// AllowedImages and AllowedServices are doublestar globs matched against
	// the image name as the job wrote it and its normalized form. Empty
	// allows every image.
	AllowedImages   []string `toml:"allowed_images"`
	AllowedServices []string `toml:"allowed_services"`
	// AllowedPullPolicies bounds the pull_policy a job may set. Empty
	// allows every policy.
	AllowedPullPolicies []string `toml:"allowed_pull_policies"`
	// ServicesLimit caps the number of services a job may start.
	ServicesLimit int `toml:"services_limit"`
	// Rules change these values for the jobs they select, by trusted job
	// data: [[policy.rule]] tables, the first match wins.
	Rules []Rule `toml:"rule"`
}

// Docker configures the job containers that the Docker-engine backends
// (socket, dind) create on the host daemon.
type Docker struct {
	// Host is the engine address, e.g. unix:///var/run/docker.sock. Empty
	// means $DOCKER_HOST, else the default socket.
	Host string `toml:"host"`

	// Image is the job image when a job sets no `image:`.
	Image string `toml:"image"`

	HelperImage string `toml:"helper_image"`
	// UseHelper runs get_sources, cache and artifact stages in the helper
	// container. When false every stage runs in the job container.
	UseHelper bool `toml:"use_helper"`
	// RunnerBinary is the host path (or a name looked up in PATH) of the
	// gitlab-runner binary mounted read-only into the container that runs
	// cache and artifact stages. Empty disables the mount.
	RunnerBinary string `toml:"runner_binary"`
	// BerthBinary is the host path of the static berth binary that berth
	// mounts into its own containers (the socket and podman guards, the
	// DinD DNS relay). Empty means the running executable; set it when
	// berth runs in a container, whose paths the engine cannot see.
	BerthBinary string `toml:"berth_binary"`
	// GuardLocalRegistries are the registries at a loopback or link-local
	// address ("host:port" as in image names, e.g. "127.0.0.1:5000") that
	// jobs may pull from, push to and log in to through the guarded socket
	// (socket and podman backends). The guard refuses every other registry
	// at such an address, which the engine would reach on the host's own
	// network.
	GuardLocalRegistries []string `toml:"guard_local_registries"`
	// GuardPublicPorts lets jobs publish container ports on every host
	// interface through the guarded socket, as plain Docker does. Off, a
	// port publishes on the job network's gateway address (socket), and
	// rootless Podman, which cannot bind there, refuses published ports.
	GuardPublicPorts bool `toml:"guard_public_ports"`

	// PullPolicy is used when a job sets none; the policies are tried in
	// order until one yields the image.
	PullPolicy []string `toml:"pull_policy"`
	// AuthConfig is a DOCKER_AUTH_CONFIG JSON document the admin provides.
	AuthConfig string `toml:"auth_config"`

	WaitForServicesTimeout Duration `toml:"wait_for_services_timeout"`
	// StopTimeout is how long a canceled stage's processes get after
	// SIGTERM before they are killed.
	StopTimeout Duration `toml:"stop_timeout"`
	// StageMode is how stage scripts reach the job's containers: "exec"
	// (one exec per stage in containers prepare started) or "attach" (one
	// container start per stage, as the docker executor does). Images
	// with an entrypoint always use attach.
	StageMode string `toml:"stage_mode"`
	// APIRetries is how many more times berth tries to connect to an
	// engine (the Docker daemon or the Podman service) that refuses, or
	// whose socket is missing, as while it restarts; APIRetryDelay is the
	// first wait, doubling up to 4 s. Requests the engine received are
	// never sent again.
	APIRetries    int      `toml:"api_retries"`
	APIRetryDelay Duration `toml:"api_retry_delay"`

	Memory      string   `toml:"memory"`
	MemorySwap  string   `toml:"memory_swap"`
	CPUs        string   `toml:"cpus"`
	PidsLimit   int64    `toml:"pids_limit"`
	ShmSize     string   `toml:"shm_size"`
	Ulimits     []string `toml:"ulimits"`
	CapAdd      []string `toml:"cap_add"`
	CapDrop     []string `toml:"cap_drop"`
	SecurityOpt []string `toml:"security_opt"`
	DNS         []string `toml:"dns"`
	DNSSearch   []string `toml:"dns_search"`
	ExtraHosts  []string `toml:"extra_hosts"`
	// Volumes are extra mounts, "host:container[:ro|rw]" binds or
	// "container" anonymous per-job volumes. Only the admin sets them.
	Volumes    []string `toml:"volumes"`
	NetworkMTU int      `toml:"network_mtu"`
	User       string   `toml:"user"`
}

// Socket configures the socket backend.
type Socket struct {
	// HostSocket is the host's Docker socket that is mounted into the job
	// container at /var/run/docker.sock.
	HostSocket string `toml:"host_socket"`
	// Guard puts berth's guarding proxy between the job and HostSocket
	// (default true): the job then gets a per-job socket through which it
	// sees and touches only what it created, and cannot start privileged
	// containers, bind host paths outside its builds dir or join host
	// namespaces. false mounts HostSocket itself, which is root on the host.
	Guard bool `toml:"guard"`
	// ProxyImage is the image the guarding proxy's container runs from
	// (berth's own static binary is mounted into it); empty means
	// docker.helper_image.
	ProxyImage string `toml:"proxy_image"`
}

// Duration is a time.Duration written in TOML as a string such as "30s".
type Duration struct{ time.Duration }

// UnmarshalText parses a Go duration string.
func (d *Duration) UnmarshalText(text []byte) error {
	v, err := time.ParseDuration(string(text))
	if err != nil {
		return fmt.Errorf("invalid duration %q: use a Go duration such as \"30s\" or \"2m\"", text)
	}
	d.Duration = v
	return nil
}

// MarshalText writes the duration as a Go duration string.
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// Default returns the built-in configuration.
func Default() *Config {
	return &Config{
		BuildsDir:  "/builds",
		CacheDir:   "/cache",
		RunnerName: "berth",
		GCGrace:    Duration{time.Hour},
		Policy: Policy{
			DefaultBackend:  "socket",
			AllowedBackends: []string{"socket"},
			ServicesLimit:   10,
		},
		Docker: Docker{
			HelperImage:            "registry.gitlab.com/gitlab-org/gitlab-runner/gitlab-runner-helper:x86_64-latest",
			UseHelper:              true,
			RunnerBinary:           "gitlab-runner",
			PullPolicy:             []string{PullAlways},
			WaitForServicesTimeout: Duration{30 * time.Second},
			StopTimeout:            Duration{2 * time.Second},
			StageMode:              "exec",
			APIRetries:             4,
			APIRetryDelay:          Duration{250 * time.Millisecond},
		},
		Socket: Socket{HostSocket: "/var/run/docker.sock", Guard: true},
		Podman: defaultPodman(),
		Dind:   defaultDind(),
	}
}

// Pull policies, as the docker executor names them.
const (
	PullAlways       = "always"
	PullIfNotPresent = "if-not-present"
	PullNever        = "never"
)

// ErrNotFound reports an explicitly named config file that does not exist.
var ErrNotFound = errors.New("config file not found")

// Load reads the config file at path over the defaults and validates it.
// When explicit is false a missing file yields the defaults.
func Load(path string, explicit bool) (*Config, error) {
	cfg := Default()
	data, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) && !explicit {
			return cfg, cfg.Validate()
		}
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("%w: %s: create it (see config/example.toml) or fix --config/$BERTH_CONFIG", ErrNotFound, path)
		}
		return nil, fmt.Errorf("read config: %w", err)
	}
	if err := cfg.decode(path, data); err != nil {
		return nil, err
	}
	cfg.Path = path
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return cfg, nil
}

// Parse decodes TOML text over the defaults and validates it; name is used
// in error messages.
func Parse(name string, data []byte) (*Config, error) {
	cfg := Default()
	if err := cfg.decode(name, data); err != nil {
		return nil, err
	}
	cfg.Path = name
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return cfg, nil
}

func (c *Config) decode(name string, data []byte) error {
	md, err := toml.NewDecoder(bytes.NewReader(data)).Decode(c)
	if err != nil {
		var perr toml.ParseError
		if errors.As(err, &perr) {
			key := ""
			if perr.LastKey != "" {
				key = fmt.Sprintf(" (key %q)", perr.LastKey)
			}
			return fmt.Errorf("%s:%d%s: %s", name, perr.Position.Line, key, perr.Message)
		}
		return fmt.Errorf("%s: %w", name, err)
	}
	if undecoded := md.Undecoded(); len(undecoded) > 0 {
		var msgs []string
		for _, k := range undecoded {
			msgs = append(msgs, fmt.Sprintf("%s:%d: unknown key %q", name, keyLine(data, k), k.String()))
		}
		sort.Strings(msgs)
		return fmt.Errorf("%s (see config/example.toml for the valid keys)", strings.Join(msgs, "; "))
	}
	return nil
}

// keyLine finds the line a key was written on, since the TOML decoder does
// not report positions of keys it did not decode.
func keyLine(data []byte, k toml.Key) int {
	if len(k) == 0 {
		return 0
	}
	last := regexp.QuoteMeta(k[len(k)-1])
	table := regexp.QuoteMeta(strings.Join(k[:len(k)-1], "."))
	keyRe := regexp.MustCompile(`^\s*(?:"` + last + `"|` + last + `)\s*=`)
	headerRe := regexp.MustCompile(`^\s*\[\[?\s*` + regexp.QuoteMeta(k.String()) + `\s*\]\]?`)
	tableRe := regexp.MustCompile(`^\s*\[\[?\s*` + table + `\s*\]\]?`)
	anyTableRe := regexp.MustCompile(`^\s*\[`)
	inTable := len(k) == 1
	sc := bufio.NewScanner(bytes.NewReader(data))
	for line := 1; sc.Scan(); line++ {
		text := sc.Text()
		if headerRe.MatchString(text) {
			return line
		}
		if anyTableRe.MatchString(text) {
			inTable = len(k) > 1 && tableRe.MatchString(text)
			continue
		}
		if inTable && keyRe.MatchString(text) {
			return line
		}
	}
	// A dotted key ("docker.x = 1") or an inline table ("docker = { x = 1 }").
	anywhereRe := regexp.MustCompile(`(^|[\s{,.])(?:"` + last + `"|` + last + `)\s*=`)
	sc = bufio.NewScanner(bytes.NewReader(data))
	for line := 1; sc.Scan(); line++ {
		if anywhereRe.MatchString(sc.Text()) {
			return line
		}
	}
	return 0
}

// ResolvePath picks the config file: the flag, else $BERTH_CONFIG, else the
// default path. explicit reports whether the user named the file.
func ResolvePath(flag string) (path string, explicit bool) {
	if flag != "" {
		return flag, true
	}
	if env := os.Getenv("BERTH_CONFIG"); env != "" {
		return env, true
	}
	return DefaultPath, false
}

// Validate checks values that the TOML types cannot.
func (c *Config) Validate() error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: "+format, append([]any{key}, args...)...))
	}
	for key, dir := range map[string]string{"builds_dir": c.BuildsDir, "cache_dir": c.CacheDir} {
		if !filepath.IsAbs(dir) || filepath.Clean(dir) == "/" {
			bad(key, "%q must be an absolute directory other than /", dir)
		}
	}
	if !nameRe.MatchString(c.RunnerName) {
		bad("runner_name", "%q must be 1-32 characters of a-z, 0-9 and '-', starting with a letter or digit", c.RunnerName)
	}
	if c.Docker.APIRetries < 0 || c.Docker.APIRetries > 20 {
		bad("docker.api_retries", "%d must be 0 to 20", c.Docker.APIRetries)
	}
	if c.Docker.APIRetryDelay.Duration < 0 || c.Docker.APIRetryDelay.Duration > time.Minute {
		bad("docker.api_retry_delay", "%s must be between 0s and 1m", c.Docker.APIRetryDelay)
	}
	if c.GCGrace.Duration < 0 {
		bad("gc_grace", "%s must not be negative", c.GCGrace)
	}
	if len(c.Policy.AllowedBackends) == 0 {
		bad("policy.allowed_backends", "must list at least one backend")
	}
	if !contains(c.Policy.AllowedBackends, c.Policy.DefaultBackend) {
		bad("policy.default_backend", "%q is not in policy.allowed_backends %v", c.Policy.DefaultBackend, c.Policy.AllowedBackends)
	}
	for _, p := range c.Policy.AllowedPullPolicies {
		if !validPullPolicy(p) {
			bad("policy.allowed_pull_policies", "unknown pull policy %q (use always, if-not-present or never)", p)
		}
	}
	for _, g := range append(append([]string{}, c.Policy.AllowedImages...), c.Policy.AllowedServices...) {
		if !validGlob(g) {
			bad("policy.allowed_images/allowed_services", "invalid glob %q", g)
		}
	}
	if c.Policy.ServicesLimit < 0 {
		bad("policy.services_limit", "must be 0 or more")
	}
	for i := range c.Policy.Rules {
		if err := c.Policy.Rules[i].validate(i, c.Policy); err != nil {
			errs = append(errs, err)
		}
	}
	if len(c.Docker.PullPolicy) == 0 {
		bad("docker.pull_policy", "must name at least one pull policy")
	}
	for _, p := range c.Docker.PullPolicy {
		if !validPullPolicy(p) {
			bad("docker.pull_policy", "unknown pull policy %q (use always, if-not-present or never)", p)
		} else if allowed := c.Policy.AllowedPullPolicies; len(allowed) > 0 && !contains(allowed, p) {
			bad("docker.pull_policy", "%q is not in policy.allowed_pull_policies %v", p, allowed)
		}
	}
	if c.Docker.HelperImage == "" && c.Docker.UseHelper {
		bad("docker.helper_image", "must be set when docker.use_helper is true")
	}
	if c.Docker.WaitForServicesTimeout.Duration < 0 {
		bad("docker.wait_for_services_timeout", "must not be negative")
	}
	if c.Docker.StopTimeout.Duration < 0 || c.Docker.StopTimeout.Duration > 5*time.Minute {
		bad("docker.stop_timeout", "must be between 0s and 5m")
	}
	if c.Docker.StageMode != "exec" && c.Docker.StageMode != "attach" {
		bad("docker.stage_mode", "unknown stage mode %q (use \"exec\" or \"attach\")", c.Docker.StageMode)
	}
	if err := c.Docker.validateLimits(); err != nil {
		errs = append(errs, err)
	}
	for _, r := range c.Docker.GuardLocalRegistries {
		if r == "" || strings.ContainsAny(r, "/ \t") || strings.Contains(r, "://") {
			bad("docker.guard_local_registries", "%q is not a registry host[:port] such as \"127.0.0.1:5000\"", r)
		}
	}
	if err := c.Dind.validate(); err != nil {
		errs = append(errs, err)
	}
	if err := c.Podman.validate(); err != nil {
		errs = append(errs, err)
	}
	if c.Socket.HostSocket == "" || !filepath.IsAbs(c.Socket.HostSocket) {
		bad("socket.host_socket", "%q must be an absolute path", c.Socket.HostSocket)
	}
	return errors.Join(errs...)
}

var nameRe = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,31}$`)

func validPullPolicy(p string) bool {
	return p == PullAlways || p == PullIfNotPresent || p == PullNever
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}
