package driver

import (
	"context"
	"debug/elf"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/berthci/berth/backends"
	"github.com/berthci/berth/config"
)

// Doctor's defaults: each check's deadline, and the bound on one
// backend's whole run, which only an engine that hangs on every call
// reaches.
const (
	defaultCheckTimeout = 10 * time.Second
	backendDoctorBound  = 3 * time.Minute
)

// Groups of the checks that belong to no backend.
const (
	DoctorGroupConfig = "config"
	DoctorGroupHost   = "host"
)

// DoctorOptions are the settings of one `berth doctor` run.
type DoctorOptions struct {
	// ConfigPath is the config file; Explicit says whether the user named
	// it (a missing default file means the built-in defaults).
	ConfigPath string
	Explicit   bool
	// JSON prints the report as JSON instead of text.
	JSON bool
	// CheckTimeout bounds each check; 0 means 10 s.
	CheckTimeout time.Duration
	// Open makes a backend; nil means [backends.Open].
	Open func(name string, cfg *config.Config, log logrus.FieldLogger) (backends.Backend, error)
}

// DoctorReport is the outcome of `berth doctor`, and the document that
// `berth doctor --json` prints.
type DoctorReport struct {
	BerthVersion string        `json:"berth_version"`
	Config       DoctorConfig  `json:"config"`
	Checks       []DoctorCheck `json:"checks"`
	Summary      DoctorSummary `json:"summary"`
	OK           bool          `json:"ok"`
}

// DoctorConfig says which config doctor checked.
type DoctorConfig struct {
	// Path is the config file; "" when the built-in defaults apply.
	Path string `json:"path"`
	// Loaded is false when the config did not load; only the config
	// checks ran then.
	Loaded     bool     `json:"loaded"`
	RunnerName string   `json:"runner_name"`
	Backends   []string `json:"backends"`
}

// DoctorCheck is one check's result. Backend is the backend's name, or
// "config" or "host" for the checks that belong to none.
type DoctorCheck struct {
	Backend string          `json:"backend"`
	Name    string          `json:"name"`
	Status  backends.Status `json:"status"`
	Detail  string          `json:"detail"`
	Fix     string          `json:"fix"`
}

// DoctorSummary counts the checks by status.
type DoctorSummary struct {
	OK   int `json:"ok"`
	Warn int `json:"warn"`
	Fail int `json:"fail"`
	Skip int `json:"skip"`
}

// Doctor checks the config, the host and every backend the config allows,
// writes the report to w, and returns a build-class error when a check
// failed, so that `berth doctor` exits non-zero.
func Doctor(ctx context.Context, w io.Writer, opts DoctorOptions) error {
	report := RunDoctor(ctx, opts)
	var err error
	if opts.JSON {
		err = WriteDoctorJSON(w, report)
	} else {
		err = WriteDoctorText(w, report)
	}
	if err != nil {
		return systemErr(fmt.Errorf("write the doctor report: %w", err))
	}
	if !report.OK {
		return buildErr(fmt.Errorf("berth doctor: %d of %d checks failed; each FAIL says what to do", report.Summary.Fail, len(report.Checks)))
	}
	return nil
}

// RunDoctor runs every check and returns the report. It never stops at a
// failure: a config that does not load ends the run after the config
// checks, and a backend that fails never stops the others, which run at
// the same time.
func RunDoctor(ctx context.Context, opts DoctorOptions) *DoctorReport {
	report := &DoctorReport{BerthVersion: Version, Config: DoctorConfig{Path: opts.ConfigPath, Backends: []string{}}}
	add := func(group string, checks ...backends.Check) {
		for _, c := range checks {
			report.Checks = append(report.Checks, DoctorCheck{Backend: group, Name: c.Name, Status: c.Status, Detail: c.Detail, Fix: c.Fix})
		}
	}
	cfg, fileCheck := loadForDoctor(opts.ConfigPath, opts.Explicit)
	add(DoctorGroupConfig, fileCheck)
	if cfg != nil {
		report.Config.Loaded = true
		report.Config.Path = cfg.Path
		report.Config.RunnerName = cfg.RunnerName
		report.Config.Backends = cfg.AllBackends()
		creds, authCheck := authConfigCheck(cfg)
		add(DoctorGroupConfig, authCheck)
		add(DoctorGroupHost,
			backends.DirCheck("builds-dir", "builds_dir", cfg.BuildsDir),
			backends.DirCheck("cache-dir", "cache_dir", cfg.CacheDir),
			berthBinaryCheck(cfg))
		timeout := opts.CheckTimeout
		if timeout <= 0 {
			timeout = defaultCheckTimeout
		}
		results := doctorBackends(ctx, cfg, opts.Open, backends.DoctorOptions{Credentials: creds, CheckTimeout: timeout})
		for _, name := range report.Config.Backends {
			add(name, results[name]...)
		}
	}
	report.OK = true
	for _, c := range report.Checks {
		switch c.Status {
		case backends.StatusOK:
			report.Summary.OK++
		case backends.StatusWarn:
			report.Summary.Warn++
		case backends.StatusFail:
			report.Summary.Fail++
			report.OK = false
		case backends.StatusSkip:
			report.Summary.Skip++
		}
	}
	return report
}

// loadForDoctor loads the config and judges it: the "file" check.
func loadForDoctor(path string, explicit bool) (*config.Config, backends.Check) {
	const name = "file"
	cfg, err := config.Load(path, explicit)
	if err != nil {
		fix := fmt.Sprintf("fix the key the message names in %s; config/example.toml documents every key and its default", path)
		if errors.Is(err, config.ErrNotFound) {
			fix = "create it (see config/example.toml), or point --config or $BERTH_CONFIG at the config gitlab-runner's config_args name"
		}
		return nil, backends.Fail(name, err.Error(), fix)
	}
	if cfg.Path == "" {
		if _, statErr := os.Stat(path); errors.Is(statErr, fs.ErrNotExist) {
			return cfg, backends.Warn(name, fmt.Sprintf("no config file at %s: the built-in defaults apply", path),
				"pass the config the runner uses (--config PATH, as in config_args), or create "+path+" from config/example.toml")
		}
	}
	detail := fmt.Sprintf("%s loads and is valid: runner_name %q, backends %s (default %s)",
		cfg.Path, cfg.RunnerName, strings.Join(cfg.AllBackends(), ", "), cfg.Policy.DefaultBackend)
	if n := len(cfg.Policy.Rules); n > 0 {
		detail += fmt.Sprintf(", %d policy rules", n)
	}
	return cfg, backends.OK(name, detail)
}

// authConfigCheck parses docker.auth_config, whose logins the image checks
// use.
func authConfigCheck(cfg *config.Config) ([]backends.Credential, backends.Check) {
	const name = "auth-config"
	if cfg.Docker.AuthConfig == "" {
		return nil, backends.OK(name, "docker.auth_config is not set: images come from public registries or with the job's own logins")
	}
	creds, err := parseAuthConfig(cfg.Docker.AuthConfig)
	if err != nil {
		return nil, backends.Fail(name, "docker.auth_config: "+err.Error(),
			`set docker.auth_config to a Docker config.json document: {"auths": {"registry.example.com": {"auth": "base64 of user:password"}}}`)
	}
	var registries []string
	for _, c := range creds {
		registries = append(registries, backends.NormalizeRegistry(c.Registry))
	}
	sort.Strings(registries)
	return creds, backends.OK(name, fmt.Sprintf("docker.auth_config has logins for %s", strings.Join(registries, ", ")))
}

// berthBinaryCheck checks that berth is a static binary: the guarding
// proxy and the DinD DNS relay run it inside images of any libc.
func berthBinaryCheck(cfg *config.Config) backends.Check {
	const name = "berth-binary"
	self, err := backends.SelfBinary("", "", "doctor")
	if err != nil {
		return backends.Warn(name, err.Error(), "run berth from its installed path")
	}
	f, err := elf.Open(self)
	if err != nil {
		return backends.Warn(name, fmt.Sprintf("%s: cannot read it as an ELF binary: %v", self, err), "install the static linux build of berth")
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			var users []string
			if guarded, _ := backends.SocketGuardUse(cfg, cfg.Socket.Guard); guarded {
				users = append(users, "the socket guard")
			}
			for _, b := range cfg.AllBackends() {
				if b == "dind" {
					users = append(users, "the DinD DNS relay")
				}
			}
			return backends.Warn(name, fmt.Sprintf("%s is dynamically linked: %s run it inside other images, where its C library may be missing", self, orDefault(strings.Join(users, " and "), "berth's helper containers")),
				"build berth with CGO_ENABLED=0 (see the README)")
		}
	}
	return backends.OK(name, self+" is statically linked, so berth's own helper containers can run it in any image")
}

// doctorBackends runs every backend's checks at once and returns them by
// backend name.
func doctorBackends(ctx context.Context, cfg *config.Config, open func(string, *config.Config, logrus.FieldLogger) (backends.Backend, error), opts backends.DoctorOptions) map[string][]backends.Check {
	if open == nil {
		open = backends.Open
	}
	// The backends' job-log lines are not doctor's output.
	quiet := logrus.New()
	quiet.SetOutput(io.Discard)
	names := cfg.AllBackends()
	results := make(map[string][]backends.Check, len(names))
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, name := range names {
		wg.Add(1)
		go func() {
			defer wg.Done()
			checks := doctorBackend(ctx, name, cfg, open, quiet, opts)
			mu.Lock()
			results[name] = checks
			mu.Unlock()
		}()
	}
	wg.Wait()
	return results
}

// doctorBackend runs one backend's checks, bounded so that one backend
// never holds up the report.
func doctorBackend(ctx context.Context, name string, cfg *config.Config, open func(string, *config.Config, logrus.FieldLogger) (backends.Backend, error), log logrus.FieldLogger, opts backends.DoctorOptions) []backends.Check {
	backend, err := open(name, cfg, log)
	if err != nil {
		return []backends.Check{backends.Fail("open", err.Error(),
			fmt.Sprintf("fix the [%s] settings, or remove %s from policy.allowed_backends and the rules' allowed_backends", name, name))}
	}
	doctor, ok := backend.(backends.Doctor)
	if !ok {
		return []backends.Check{backends.Warn("checks", "this backend has no doctor checks", "check its engine by hand")}
	}
	done := make(chan []backends.Check, 1)
	ctx, cancel := context.WithTimeout(ctx, backendDoctorBound)
	defer cancel()
	go func() {
		defer func() {
			if r := recover(); r != nil {
				done <- []backends.Check{backends.Fail("checks", fmt.Sprintf("the checks crashed: %v", r), "report this as a berth bug")}
			}
		}()
		done <- doctor.Doctor(ctx, opts)
	}()
	select {
	case checks := <-done:
		return checks
	case <-ctx.Done():
		return []backends.Check{backends.Fail("checks", fmt.Sprintf("the checks did not finish within %s", backendDoctorBound), "the engine hangs: restart it, then run berth doctor again")}
	}
}

// WriteDoctorJSON writes the report as one JSON document.
func WriteDoctorJSON(w io.Writer, report *DoctorReport) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(report)
}

// WriteDoctorText writes the report for people: the checks grouped by
// backend, each with its status, and the fix under every WARN and FAIL.
func WriteDoctorText(w io.Writer, report *DoctorReport) error {
	var b strings.Builder
	cfgName := orDefault(report.Config.Path, "built-in defaults")
	fmt.Fprintf(&b, "berth %s doctor: config %s", report.BerthVersion, cfgName)
	if len(report.Config.Backends) > 0 {
		fmt.Fprintf(&b, ", backends %s", strings.Join(report.Config.Backends, ", "))
	}
	b.WriteString("\n")
	width := 0
	for _, c := range report.Checks {
		width = max(width, len(c.Name))
	}
	group := ""
	for _, c := range report.Checks {
		if c.Backend != group {
			group = c.Backend
			fmt.Fprintf(&b, "\n%s\n", group)
		}
		// Continuation lines (a config with several errors) stay in the
		// detail column.
		indent := "\n" + strings.Repeat(" ", 2+4+2+width+2)
		fmt.Fprintf(&b, "  %-4s  %-*s  %s\n", c.Status, width, c.Name, strings.ReplaceAll(c.Detail, "\n", indent))
		if c.Fix != "" && (c.Status == backends.StatusWarn || c.Status == backends.StatusFail) {
			fmt.Fprintf(&b, "  %-4s  %-*s  fix: %s\n", "", width, "", strings.ReplaceAll(c.Fix, "\n", indent))
		}
	}
	s := report.Summary
	fmt.Fprintf(&b, "\n%d OK, %d WARN, %d FAIL, %d SKIP\n", s.OK, s.Warn, s.Fail, s.Skip)
	_, err := io.WriteString(w, b.String())
	return err
}
