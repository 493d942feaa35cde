package config

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestDefaultValidates(t *testing.T) {
	if err := Default().Validate(); err != nil {
		t.Fatalf("got %v, want the defaults to validate", err)
	}
}

const fullConfig = `builds_dir = "/srv/builds"
cache_dir = "/srv/cache"
runner_name = "ci-1"

[policy]
default_backend = "socket"
allowed_backends = ["socket", "dind"]
allowed_images = ["registry.example.com/**", "docker.io/library/*"]
allowed_services = ["docker.io/library/postgres:*"]
allowed_pull_policies = ["always", "if-not-present"]
services_limit = 3

[docker]
host = "unix:///run/docker.sock"
image = "alpine:3"
helper_image = "registry.example.com/helper:1"
use_helper = false
runner_binary = "/usr/bin/gitlab-runner"
pull_policy = ["if-not-present", "always"]
auth_config = '{"auths":{}}'
wait_for_services_timeout = "1m30s"
stop_timeout = "5s"
stage_mode = "attach"
memory = "512m"
memory_swap = "-1"
cpus = "1.5"
pids_limit = 100
shm_size = "64m"
ulimits = ["nofile=1024:2048"]
cap_add = ["NET_ADMIN"]
cap_drop = ["ALL"]
security_opt = ["no-new-privileges"]
dns = ["1.1.1.1"]
dns_search = ["example.com"]
extra_hosts = ["gw:host-gateway", "db:10.0.0.2"]
volumes = ["/srv/certs:/certs:ro", "/scratch"]
network_mtu = 1400
user = "1000:1000"

[socket]
host_socket = "/run/docker.sock"
`

func TestParseFullConfig(t *testing.T) {
	cfg, err := Parse("full.toml", []byte(fullConfig))
	if err != nil {
		t.Fatalf("got %v, want no error", err)
	}
	// Built from the defaults so that sections this TOML leaves out keep
	// theirs.
	want := Default()
	want.BuildsDir = "/srv/builds"
	want.CacheDir = "/srv/cache"
	want.RunnerName = "ci-1"
	want.Policy = Policy{
		DefaultBackend:      "socket",
		AllowedBackends:     []string{"socket", "dind"},
		AllowedImages:       []string{"registry.example.com/**", "docker.io/library/*"},
		AllowedServices:     []string{"docker.io/library/postgres:*"},
		AllowedPullPolicies: []string{"always", "if-not-present"},
		ServicesLimit:       3,
	}
	want.Docker = Docker{
		Host:                   "unix:///run/docker.sock",
		Image:                  "alpine:3",
		HelperImage:            "registry.example.com/helper:1",
		UseHelper:              false,
		RunnerBinary:           "/usr/bin/gitlab-runner",
		PullPolicy:             []string{"if-not-present", "always"},
		AuthConfig:             `{"auths":{}}`,
		WaitForServicesTimeout: Duration{90 * time.Second},
		StopTimeout:            Duration{5 * time.Second},
		StageMode:              "attach",
		APIRetries:             4,
		APIRetryDelay:          Duration{250 * time.Millisecond},
		Memory:                 "512m",
		MemorySwap:             "-1",
		CPUs:                   "1.5",
		PidsLimit:              100,
		ShmSize:                "64m",
		Ulimits:                []string{"nofile=1024:2048"},
		CapAdd:                 []string{"NET_ADMIN"},
		CapDrop:                []string{"ALL"},
		SecurityOpt:            []string{"no-new-privileges"},
		DNS:                    []string{"1.1.1.1"},
		DNSSearch:              []string{"example.com"},
		ExtraHosts:             []string{"gw:host-gateway", "db:10.0.0.2"},
		Volumes:                []string{"/srv/certs:/certs:ro", "/scratch"},
		NetworkMTU:             1400,
		User:                   "1000:1000",
	}
	want.Socket = Socket{HostSocket: "/run/docker.sock", Guard: true}
	want.Path = "full.toml"
	if !reflect.DeepEqual(cfg, want) {
		t.Errorf("got %+v, want %+v", cfg, want)
	}
}

func TestParseKeepsDefaultsForUnsetKeys(t *testing.T) {
	cfg, err := Parse("partial.toml", []byte("runner_name = \"r2\"\n"))
	if err != nil {
		t.Fatalf("got %v, want no error", err)
	}
	def := Default()
	if cfg.RunnerName != "r2" {
		t.Errorf("got runner_name %q, want %q", cfg.RunnerName, "r2")
	}
	if cfg.BuildsDir != def.BuildsDir || cfg.Docker.HelperImage != def.Docker.HelperImage || !reflect.DeepEqual(cfg.Docker.PullPolicy, def.Docker.PullPolicy) {
		t.Errorf("got %+v, want the defaults for unset keys", cfg)
	}
}

func TestParseErrorsNameFileLineAndKey(t *testing.T) {
	tests := map[string]struct {
		toml string
		want []string
	}{
		"unknown top-level key": {
			toml: "builds_dir = \"/b\"\nbuild_dir = \"/typo\"\n",
			want: []string{"cfg.toml:2:", `unknown key "build_dir"`},
		},
		"unknown key inside docker": {
			toml: "[policy]\nservices_limit = 2\n\n[docker]\nmemory = \"1g\"\nprivileged = true\n",
			want: []string{"cfg.toml:6:", `unknown key "docker.privileged"`},
		},
		"unknown key written as a dotted key": {
			toml: "runner_name = \"a\"\ndocker.privileged = true\n",
			want: []string{"cfg.toml:2:", `unknown key "docker.privileged"`},
		},
		"unknown key in an inline table": {
			toml: "runner_name = \"a\"\ndocker = { privileged = true }\n",
			want: []string{"cfg.toml:2:", `unknown key "docker.privileged"`},
		},
		"unknown key under an indented header": {
			toml: "[policy]\nservices_limit = 1\n\n  [docker]\n  privileged = true\n",
			want: []string{"cfg.toml:5:", `unknown key "docker.privileged"`},
		},
		"unknown table": {
			toml: "runner_name = \"a\"\n[kubernetes]\n",
			want: []string{"cfg.toml:2:", `unknown key "kubernetes"`},
		},
		"wrong type at top level": {
			toml: "runner_name = \"a\"\nbuilds_dir = 5\n",
			want: []string{"cfg.toml", "line 2", `"builds_dir"`, "incompatible types"},
		},
		"wrong type inside docker": {
			toml: "[docker]\nuse_helper = \"yes\"\n",
			want: []string{"cfg.toml", "line 2", `"docker.use_helper"`, "incompatible types"},
		},
		"bad duration": {
			toml: "[docker]\n\nstop_timeout = \"5 seconds\"\n",
			want: []string{"cfg.toml:3", "stop_timeout", "Go duration"},
		},
		"syntax error": {
			toml: "runner_name = \"a\"\nbuilds_dir = \n",
			want: []string{"cfg.toml:2"},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			_, err := Parse("cfg.toml", []byte(tc.toml))
			if err == nil {
				t.Fatalf("got no error, want one containing %q", tc.want)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("got %q, want it to contain %q", err, w)
				}
			}
		})
	}
}

func TestValidateRules(t *testing.T) {
	tests := map[string]struct {
		mutate func(c *Config)
		want   string
	}{
		"relative builds_dir":         {func(c *Config) { c.BuildsDir = "builds" }, "builds_dir"},
		"root builds_dir":             {func(c *Config) { c.BuildsDir = "/builds/.." }, "builds_dir"},
		"relative cache_dir":          {func(c *Config) { c.CacheDir = "./cache" }, "cache_dir"},
		"runner_name uppercase":       {func(c *Config) { c.RunnerName = "Berth" }, "runner_name"},
		"runner_name empty":           {func(c *Config) { c.RunnerName = "" }, "runner_name"},
		"runner_name too long":        {func(c *Config) { c.RunnerName = strings.Repeat("a", 33) }, "runner_name"},
		"runner_name leading dash":    {func(c *Config) { c.RunnerName = "-a" }, "runner_name"},
		"no allowed backends":         {func(c *Config) { c.Policy.AllowedBackends = nil }, "policy.allowed_backends"},
		"default backend not allowed": {func(c *Config) { c.Policy.DefaultBackend = "dind" }, "policy.default_backend"},
		"unknown allowed pull policy": {func(c *Config) { c.Policy.AllowedPullPolicies = []string{"sometimes"} }, "policy.allowed_pull_policies"},
		"bad image glob":              {func(c *Config) { c.Policy.AllowedImages = []string{"registry/["} }, "invalid glob"},
		"empty service glob":          {func(c *Config) { c.Policy.AllowedServices = []string{""} }, "invalid glob"},
		"negative services_limit":     {func(c *Config) { c.Policy.ServicesLimit = -1 }, "policy.services_limit"},
		"no pull policy":              {func(c *Config) { c.Docker.PullPolicy = nil }, "docker.pull_policy"},
		"unknown pull policy":         {func(c *Config) { c.Docker.PullPolicy = []string{"Always"} }, "docker.pull_policy"},
		"helper without image":        {func(c *Config) { c.Docker.HelperImage = "" }, "docker.helper_image"},
		"negative services timeout":   {func(c *Config) { c.Docker.WaitForServicesTimeout = Duration{-time.Second} }, "docker.wait_for_services_timeout"},
		"negative stop_timeout":       {func(c *Config) { c.Docker.StopTimeout = Duration{-time.Second} }, "docker.stop_timeout"},
		"stop_timeout over 5m":        {func(c *Config) { c.Docker.StopTimeout = Duration{6 * time.Minute} }, "docker.stop_timeout"},
		"unknown stage_mode":          {func(c *Config) { c.Docker.StageMode = "fork" }, "docker.stage_mode"},
		"bad memory":                  {func(c *Config) { c.Docker.Memory = "lots" }, "docker.memory"},
		"zero memory":                 {func(c *Config) { c.Docker.Memory = "0" }, "docker.memory"},
		"bad memory_swap":             {func(c *Config) { c.Docker.MemorySwap = "-2" }, "docker.memory_swap"},
		"bad shm_size":                {func(c *Config) { c.Docker.ShmSize = "x" }, "docker.shm_size"},
		"cpus not a number":           {func(c *Config) { c.Docker.CPUs = "two" }, "docker.cpus"},
		"cpus zero":                   {func(c *Config) { c.Docker.CPUs = "0" }, "docker.cpus"},
		"cpus too many":               {func(c *Config) { c.Docker.CPUs = "2000" }, "docker.cpus"},
		"cpus NaN":                    {func(c *Config) { c.Docker.CPUs = "NaN" }, "docker.cpus"},
		"cpus rounding to zero":       {func(c *Config) { c.Docker.CPUs = "0.0000000001" }, "docker.cpus"},
		"negative pids_limit":         {func(c *Config) { c.Docker.PidsLimit = -1 }, "docker.pids_limit"},
		"ulimit without value":        {func(c *Config) { c.Docker.Ulimits = []string{"nofile"} }, "docker.ulimits"},
		"ulimit soft over hard":       {func(c *Config) { c.Docker.Ulimits = []string{"nofile=2048:1024"} }, "docker.ulimits"},
		"ulimit unknown name":         {func(c *Config) { c.Docker.Ulimits = []string{"bogus=1:2"} }, "docker.ulimits"},
		"extra_hosts without ip":      {func(c *Config) { c.Docker.ExtraHosts = []string{"db"} }, "docker.extra_hosts"},
		"extra_hosts bad ip":          {func(c *Config) { c.Docker.ExtraHosts = []string{"db:not-an-ip"} }, "docker.extra_hosts"},
		"extra_hosts empty name":      {func(c *Config) { c.Docker.ExtraHosts = []string{":10.0.0.1"} }, "docker.extra_hosts"},
		"dns not an ip":               {func(c *Config) { c.Docker.DNS = []string{"dns.example.com"} }, "docker.dns"},
		"security_opt bare word":      {func(c *Config) { c.Docker.SecurityOpt = []string{"unconfined"} }, "docker.security_opt"},
		"volume relative target":      {func(c *Config) { c.Docker.Volumes = []string{"data"} }, "docker.volumes"},
		"volume relative source":      {func(c *Config) { c.Docker.Volumes = []string{"data:/data"} }, "docker.volumes"},
		"volume target is root":       {func(c *Config) { c.Docker.Volumes = []string{"/srv:/"} }, "docker.volumes"},
		"volume bad mode":             {func(c *Config) { c.Docker.Volumes = []string{"/srv:/srv:z"} }, "docker.volumes"},
		"volume too many parts":       {func(c *Config) { c.Docker.Volumes = []string{"/a:/b:ro:x"} }, "docker.volumes"},
		"network_mtu too small":       {func(c *Config) { c.Docker.NetworkMTU = 100 }, "docker.network_mtu"},
		"network_mtu too big":         {func(c *Config) { c.Docker.NetworkMTU = 70000 }, "docker.network_mtu"},
		"relative host socket":        {func(c *Config) { c.Socket.HostSocket = "docker.sock" }, "socket.host_socket"},
		"empty host socket":           {func(c *Config) { c.Socket.HostSocket = "" }, "socket.host_socket"},
		"empty default backend":       {func(c *Config) { c.Policy.DefaultBackend = "" }, "policy.default_backend"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			cfg := Default()
			tc.mutate(cfg)
			err := cfg.Validate()
			if err == nil {
				t.Fatalf("got no error, want one naming %q", tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %q, want it to name %q", err, tc.want)
			}
		})
	}
}

func TestValidateAcceptsEdgeValues(t *testing.T) {
	tests := map[string]func(c *Config){
		"memory_swap unlimited":  func(c *Config) { c.Docker.MemorySwap = "-1" },
		"mtu zero":               func(c *Config) { c.Docker.NetworkMTU = 0 },
		"mtu bounds":             func(c *Config) { c.Docker.NetworkMTU = 576 },
		"stop_timeout 5m":        func(c *Config) { c.Docker.StopTimeout = Duration{5 * time.Minute} },
		"extra host ipv6":        func(c *Config) { c.Docker.ExtraHosts = []string{"db:::1"} },
		"no helper, no image":    func(c *Config) { c.Docker.UseHelper = false; c.Docker.HelperImage = "" },
		"security_opt key value": func(c *Config) { c.Docker.SecurityOpt = []string{"seccomp=/etc/seccomp.json"} },
		"services_limit zero":    func(c *Config) { c.Policy.ServicesLimit = 0 },
		"runner name 32 chars":   func(c *Config) { c.RunnerName = strings.Repeat("a", 32) },
	}
	for name, mutate := range tests {
		t.Run(name, func(t *testing.T) {
			cfg := Default()
			mutate(cfg)
			if err := cfg.Validate(); err != nil {
				t.Errorf("got %v, want no error", err)
			}
		})
	}
}

func TestValidateReportsEveryProblem(t *testing.T) {
	cfg := Default()
	cfg.BuildsDir = "rel"
	cfg.Docker.Memory = "lots"
	cfg.Docker.NetworkMTU = 1
	err := cfg.Validate()
	if err == nil {
		t.Fatal("got no error, want three")
	}
	for _, key := range []string{"builds_dir", "docker.memory", "docker.network_mtu"} {
		if !strings.Contains(err.Error(), key) {
			t.Errorf("got %q, want it to name %q", err, key)
		}
	}
}

func TestParseNamesFileOnValidationError(t *testing.T) {
	_, err := Parse("admin.toml", []byte("runner_name = \"Bad Name\"\n"))
	if err == nil {
		t.Fatal("got no error, want a validation error")
	}
	for _, w := range []string{"admin.toml", "runner_name"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("got %q, want it to contain %q", err, w)
		}
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	valid := filepath.Join(dir, "valid.toml")
	writeFile(t, valid, "runner_name = \"loaded\"\n")
	invalid := filepath.Join(dir, "invalid.toml")
	writeFile(t, invalid, "runner_name = \"\"\n")
	missing := filepath.Join(dir, "missing.toml")

	t.Run("missing default path gives defaults", func(t *testing.T) {
		cfg, err := Load(missing, false)
		if err != nil {
			t.Fatalf("got %v, want no error", err)
		}
		if !reflect.DeepEqual(cfg, Default()) {
			t.Errorf("got %+v, want the defaults", cfg)
		}
	})
	t.Run("missing explicit path is ErrNotFound", func(t *testing.T) {
		_, err := Load(missing, true)
		if !errors.Is(err, ErrNotFound) {
			t.Fatalf("got %v, want ErrNotFound", err)
		}
		if !strings.Contains(err.Error(), missing) {
			t.Errorf("got %q, want it to name %s", err, missing)
		}
	})
	t.Run("existing file", func(t *testing.T) {
		cfg, err := Load(valid, true)
		if err != nil {
			t.Fatalf("got %v, want no error", err)
		}
		if cfg.RunnerName != "loaded" || cfg.Path != valid {
			t.Errorf("got runner %q path %q, want %q and %q", cfg.RunnerName, cfg.Path, "loaded", valid)
		}
	})
	t.Run("invalid file names the path", func(t *testing.T) {
		_, err := Load(invalid, false)
		if err == nil || !strings.Contains(err.Error(), invalid) {
			t.Errorf("got %v, want an error naming %s", err, invalid)
		}
	})
	t.Run("directory is a read error", func(t *testing.T) {
		_, err := Load(dir, false)
		if err == nil {
			t.Fatal("got no error, want a read error")
		}
		if errors.Is(err, ErrNotFound) {
			t.Errorf("got %v, want an error that is not ErrNotFound", err)
		}
	})
}

func TestResolvePath(t *testing.T) {
	tests := map[string]struct {
		flag, env    string
		wantPath     string
		wantExplicit bool
	}{
		"flag beats env":   {flag: "/flag.toml", env: "/env.toml", wantPath: "/flag.toml", wantExplicit: true},
		"env":              {env: "/env.toml", wantPath: "/env.toml", wantExplicit: true},
		"default":          {wantPath: DefaultPath, wantExplicit: false},
		"flag without env": {flag: "/flag.toml", wantPath: "/flag.toml", wantExplicit: true},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			t.Setenv("BERTH_CONFIG", tc.env)
			path, explicit := ResolvePath(tc.flag)
			if path != tc.wantPath || explicit != tc.wantExplicit {
				t.Errorf("got (%q, %v), want (%q, %v)", path, explicit, tc.wantPath, tc.wantExplicit)
			}
		})
	}
}

func TestDuration(t *testing.T) {
	tests := map[string]struct {
		text    string
		want    time.Duration
		wantErr bool
	}{
		"seconds":     {text: "30s", want: 30 * time.Second},
		"compound":    {text: "1m30s", want: 90 * time.Second},
		"zero":        {text: "0s", want: 0},
		"no unit":     {text: "30", wantErr: true},
		"words":       {text: "thirty seconds", wantErr: true},
		"empty":       {text: "", wantErr: true},
		"millisecond": {text: "250ms", want: 250 * time.Millisecond},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			var d Duration
			err := d.UnmarshalText([]byte(tc.text))
			if tc.wantErr {
				if err == nil {
					t.Fatalf("got %v, want an error", d.Duration)
				}
				return
			}
			if err != nil {
				t.Fatalf("got %v, want no error", err)
			}
			if d.Duration != tc.want {
				t.Errorf("got %v, want %v", d.Duration, tc.want)
			}
			text, err := d.MarshalText()
			if err != nil {
				t.Fatal(err)
			}
			var back Duration
			if err := back.UnmarshalText(text); err != nil || back != d {
				t.Errorf("got %v (%v) after a round trip of %q, want %v", back, err, text, d)
			}
		})
	}
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}
