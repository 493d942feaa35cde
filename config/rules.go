package config

import (
	"errors"
	"fmt"
	"path"
	"sort"

	"github.com/bmatcuk/doublestar/v4"
	"github.com/docker/go-units"
)

// Rule changes the policy for the jobs it selects. Selectors read only
// trusted job data (the job payload), never job variables. The first rule
// whose selectors all match wins; a field the rule does not set keeps the
// [policy] value.
type Rule struct {
	// Name identifies the rule in refusals and `berth policy explain`.
	Name string `toml:"name"`

	// Projects are doublestar globs on the project path, e.g. "infra/**".
	Projects []string `toml:"projects"`
	// Namespaces are globs on the project's namespace path (the project path
	// without its last element), e.g. "group/sub".
	Namespaces []string `toml:"namespaces"`
	// Refs are globs on the ref the job runs for, e.g. "main" or "release/*".
	Refs []string `toml:"refs"`
	// Protected selects jobs on protected (true) or unprotected (false)
	// refs; unset selects both.
	Protected *bool `toml:"protected"`

	DefaultBackend      string   `toml:"default_backend"`
	AllowedBackends     []string `toml:"allowed_backends"`
	AllowedImages       []string `toml:"allowed_images"`
	AllowedServices     []string `toml:"allowed_services"`
	AllowedPullPolicies []string `toml:"allowed_pull_policies"`
	ServicesLimit       *int     `toml:"services_limit"`

	// MaxMemory and MaxCPUs are the ceilings of what a job may ask for
	// with BERTH_MEMORY and BERTH_CPUS; without them docker.memory and
	// docker.cpus are the ceilings.
	MaxMemory string `toml:"max_memory"`
	MaxCPUs   string `toml:"max_cpus"`

	// DindPrivileged, when false, runs the DinD sidecar without
	// --privileged, with the [dind] capability settings.
	DindPrivileged *bool `toml:"dind_privileged"`
	// LayerCache turns the DinD layer cache "off" or on ("project") for the
	// selected jobs.
	LayerCache string `toml:"layer_cache"`
	// SocketGuard, when false, gives the socket backend's jobs the host
	// socket itself, and the podman backend's jobs the service's own
	// socket, instead of the guarding proxy. Keep it for trusted projects
	// on protected refs.
	SocketGuard *bool `toml:"socket_guard"`
}

// Subject identifies the job from trusted data (the job response).
type Subject struct {
	ProjectPath string
	ProjectID   int64
	Ref         string
	Protected   bool
}

// Namespace is the project's namespace path.
func (s Subject) Namespace() string { return path.Dir(s.ProjectPath) }

func (r *Rule) matches(s Subject) bool {
	if r.Protected != nil && *r.Protected != s.Protected {
		return false
	}
	return matchAny(r.Projects, s.ProjectPath) && matchAny(r.Namespaces, s.Namespace()) && matchAny(r.Refs, s.Ref)
}

// matchAny reports whether value matches one of globs; no globs match all.
func matchAny(globs []string, value string) bool {
	if len(globs) == 0 {
		return true
	}
	for _, g := range globs {
		if ok, _ := doublestar.Match(g, value); ok {
			return true
		}
	}
	return false
}

// Effective is the policy for one job: [policy] with the matching rule
// applied.
type Effective struct {
	Policy
	// Rule is the name of the matching rule, "" for none.
	Rule string
	// MaxMemory and NanoCPUs are the ceilings in bytes and billionths of a
	// CPU; 0 means none.
	MaxMemory   int64
	MaxNanoCPUs int64

	// The rule's say on backend settings; nil or "" keeps the config's.
	DindPrivileged *bool
	LayerCache     string
	SocketGuard    *bool
}

// PolicyFor returns the policy that applies to the subject.
func (c *Config) PolicyFor(s Subject) Effective {
	e := Effective{Policy: c.Policy}
	limits, _ := c.Docker.Limits()
	e.MaxMemory, e.MaxNanoCPUs = limits.Memory, limits.NanoCPUs
	for i := range c.Policy.Rules {
		r := &c.Policy.Rules[i]
		if !r.matches(s) {
			continue
		}
		e.Rule = r.Name
		if e.Rule == "" {
			e.Rule = fmt.Sprintf("#%d", i+1)
		}
		if r.DefaultBackend != "" {
			e.DefaultBackend = r.DefaultBackend
		}
		if r.AllowedBackends != nil {
			e.AllowedBackends = r.AllowedBackends
		}
		if r.AllowedImages != nil {
			e.AllowedImages = r.AllowedImages
		}
		if r.AllowedServices != nil {
			e.AllowedServices = r.AllowedServices
		}
		if r.AllowedPullPolicies != nil {
			e.AllowedPullPolicies = r.AllowedPullPolicies
		}
		if r.ServicesLimit != nil {
			e.ServicesLimit = *r.ServicesLimit
		}
		if r.MaxMemory != "" {
			e.MaxMemory, _ = units.RAMInBytes(r.MaxMemory)
		}
		if r.MaxCPUs != "" {
			e.MaxNanoCPUs, _ = parseCPUs(r.MaxCPUs)
		}
		e.DindPrivileged, e.LayerCache, e.SocketGuard = r.DindPrivileged, r.LayerCache, r.SocketGuard
		break
	}
	return e
}

func (r *Rule) validate(i int, base Policy) error {
	var errs []error
	name := fmt.Sprintf("policy.rule[%d]", i)
	if r.Name != "" {
		name = fmt.Sprintf("policy.rule %q", r.Name)
	}
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: "+format, append([]any{name}, args...)...))
	}
	for _, g := range append(append(append(append(append([]string{}, r.Projects...), r.Namespaces...), r.Refs...), r.AllowedImages...), r.AllowedServices...) {
		if !validGlob(g) {
			bad("invalid glob %q", g)
		}
	}
	allowed := base.AllowedBackends
	if r.AllowedBackends != nil {
		allowed = r.AllowedBackends
		if len(allowed) == 0 {
			bad("allowed_backends must list at least one backend")
		}
	}
	def := base.DefaultBackend
	if r.DefaultBackend != "" {
		def = r.DefaultBackend
	}
	if len(allowed) > 0 && !contains(allowed, def) {
		bad("default backend %q is not in the rule's allowed backends %v", def, allowed)
	}
	for _, p := range r.AllowedPullPolicies {
		if !validPullPolicy(p) {
			bad("unknown pull policy %q", p)
		}
	}
	if r.ServicesLimit != nil && *r.ServicesLimit < 0 {
		bad("services_limit must be 0 or more")
	}
	if r.MaxMemory != "" {
		if n, err := units.RAMInBytes(r.MaxMemory); err != nil || n <= 0 {
			bad("max_memory %q is not a size such as \"2g\"", r.MaxMemory)
		}
	}
	if r.MaxCPUs != "" {
		if _, err := parseCPUs(r.MaxCPUs); err != nil {
			bad("max_cpus %q is not a positive number such as \"1.5\"", r.MaxCPUs)
		}
	}
	if r.LayerCache != "" && r.LayerCache != LayerCacheOff && r.LayerCache != LayerCacheProject {
		bad("layer_cache %q must be \"off\" or \"project\"", r.LayerCache)
	}
	return errors.Join(errs...)
}

// AllBackends lists every backend that [policy] or a rule allows, sorted:
// the backends that cleanup and gc must look in.
func (c *Config) AllBackends() []string {
	seen := map[string]bool{}
	for _, b := range c.Policy.AllowedBackends {
		seen[b] = true
	}
	for _, r := range c.Policy.Rules {
		for _, b := range r.AllowedBackends {
			seen[b] = true
		}
	}
	out := make([]string, 0, len(seen))
	for b := range seen {
		out = append(out, b)
	}
	sort.Strings(out)
	return out
}
