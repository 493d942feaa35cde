package config

import (
	"errors"
	"fmt"
	"time"

	"github.com/docker/go-units"
)

// Dind configures the dind backend's Docker-in-Docker sidecar.
type Dind struct {
	// Image is the sidecar image; its entrypoint must behave like the
	// official docker:dind one for a first argument "dockerd".
	Image string `toml:"image"`
	// PullPolicy is how the sidecar image is pulled.
	PullPolicy []string `toml:"pull_policy"`

	// Privileged runs the sidecar --privileged. Hosts where that fails
	// (nested or hardened VMs lacking a capability) use the capability form
	// below instead, with an image whose entrypoint remounts cgroups.
	Privileged  bool     `toml:"privileged"`
	CapAdd      []string `toml:"cap_add"`
	CapDrop     []string `toml:"cap_drop"`
	SecurityOpt []string `toml:"security_opt"`
	// Devices are "host[:container[:perms]]" device mappings.
	Devices []string `toml:"devices"`

	// ReadyTimeout bounds the wait for the inner daemon's authenticated
	// /_ping.
	ReadyTimeout Duration `toml:"ready_timeout"`
	// MTU of the inner daemon's networks; 0 uses the job network's.
	MTU                int      `toml:"mtu"`
	RegistryMirrors    []string `toml:"registry_mirrors"`
	InsecureRegistries []string `toml:"insecure_registries"`

	// AllowTLSDisabled lets a job set DOCKER_TLS_CERTDIR="" (GitLab's "TLS
	// disabled" recipe) to get a plain daemon on port 2375.
	AllowTLSDisabled bool `toml:"allow_tls_disabled"`
	// AllowServiceOverrides lets a job's dind service set entrypoint or
	// command. On a privileged sidecar that is a root shell on the host.
	AllowServiceOverrides bool `toml:"allow_service_overrides"`

	// LayerCache is "off" or "project": keep the inner daemon's
	// /var/lib/docker in a volume per project between jobs.
	LayerCache string `toml:"layer_cache"`
	// LayerCacheMaxSize prunes the inner build cache and dangling images at
	// cleanup down to this size, e.g. "10g". Empty never prunes.
	LayerCacheMaxSize string `toml:"layer_cache_max_size"`
}

// Layer cache modes.
const (
	LayerCacheOff     = "off"
	LayerCacheProject = "project"
)

func defaultDind() Dind {
	return Dind{
		Image:        "docker:dind",
		PullPolicy:   []string{PullIfNotPresent},
		Privileged:   true,
		ReadyTimeout: Duration{60 * time.Second},
		LayerCache:   LayerCacheOff,
	}
}

// LayerCacheMaxBytes parses LayerCacheMaxSize; 0 means no limit.
func (d Dind) LayerCacheMaxBytes() int64 {
	n, _ := units.RAMInBytes(d.LayerCacheMaxSize)
	return n
}

func (d Dind) validate() error {
	var errs []error
	if _, err := NormalizeImage(d.Image); err != nil {
		errs = append(errs, fmt.Errorf("dind.image: %v", err))
	}
	if len(d.PullPolicy) == 0 {
		errs = append(errs, errors.New("dind.pull_policy: must name at least one pull policy"))
	}
	for _, p := range d.PullPolicy {
		if !validPullPolicy(p) {
			errs = append(errs, fmt.Errorf("dind.pull_policy: unknown pull policy %q (use always, if-not-present or never)", p))
		}
	}
	if d.ReadyTimeout.Duration <= 0 {
		errs = append(errs, errors.New("dind.ready_timeout: must be positive, e.g. \"60s\""))
	}
	if d.MTU != 0 && (d.MTU < 576 || d.MTU > 65535) {
		errs = append(errs, fmt.Errorf("dind.mtu: %d must be 0 (the job network's) or between 576 and 65535", d.MTU))
	}
	if d.LayerCache != LayerCacheOff && d.LayerCache != LayerCacheProject {
		errs = append(errs, fmt.Errorf("dind.layer_cache: %q must be \"off\" or \"project\"", d.LayerCache))
	}
	if d.LayerCacheMaxSize != "" {
		if n, err := units.RAMInBytes(d.LayerCacheMaxSize); err != nil || n <= 0 {
			errs = append(errs, fmt.Errorf("dind.layer_cache_max_size: %q is not a size such as \"10g\"", d.LayerCacheMaxSize))
		}
	}
	return errors.Join(errs...)
}
