package config

import (
	"fmt"
	"strings"

	"github.com/bmatcuk/doublestar/v4"
	"github.com/distribution/reference"
	"github.com/docker/go-units"
)

// Request is what a job asks for. Every field is untrusted: whoever can push
// to the project writes it.
type Request struct {
	Backend      string // "" means the default backend
	Image        string
	Services     []string
	PullPolicies []string // the job image's; empty means the admin default
	// ServicePullPolicies are the pull policies the services ask for.
	ServicePullPolicies []string
	// Memory and CPUs are what the job asks for with BERTH_MEMORY and
	// BERTH_CPUS; "" means the ceiling.
	Memory string
	CPUs   string
}

// Decision is what policy grants a job.
type Decision struct {
	Backend string
	// PullPolicies are the job image's pull policies.
	PullPolicies []string
	// DefaultPullPolicies are for images whose job entry sets none.
	DefaultPullPolicies []string
	// Rule names the policy rule that applied, "" for none.
	Rule string
	// Memory (bytes) and NanoCPUs bound the job's containers; 0 keeps the
	// docker section's.
	Memory   int64
	NanoCPUs int64
	// DindPrivileged, LayerCache and SocketGuard are the rule's say on
	// the backends' settings; nil or "" keeps the config's.
	DindPrivileged *bool
	LayerCache     string
	SocketGuard    *bool
}

// RefusalError is a request that policy does not allow. It is the job's
// fault, not the infrastructure's.
type RefusalError struct {
	What    string // "backend", "image", "service", "pull policy", ...
	Value   string
	Project string
	Allowed []string
	Reason  string // set when the value is refused for another cause than the allow list
}

func (e *RefusalError) Error() string {
	if e.Reason != "" {
		return fmt.Sprintf("%s %q refused for project %s: %s", e.What, e.Value, e.Project, e.Reason)
	}
	return fmt.Sprintf("%s %q is not allowed for project %s (allowed: %s); ask your runner admin",
		e.What, e.Value, e.Project, strings.Join(e.Allowed, ", "))
}

// Decide checks a request against the policy and returns what the job gets.
// It is pure and checks every field, so a refusal happens before anything is
// created.
func (c *Config) Decide(subj Subject, req Request) (Decision, error) {
	eff := c.PolicyFor(subj)
	p := eff.Policy
	project := subj.ProjectPath
	if project == "" {
		project = fmt.Sprintf("id %d", subj.ProjectID)
	}
	if eff.Rule != "" {
		project += fmt.Sprintf(" (policy rule %s)", eff.Rule)
	}
	d := Decision{Backend: req.Backend, Rule: eff.Rule, DindPrivileged: eff.DindPrivileged, LayerCache: eff.LayerCache, SocketGuard: eff.SocketGuard}
	if d.Backend == "" {
		d.Backend = p.DefaultBackend
	}
	if !contains(p.AllowedBackends, d.Backend) {
		return Decision{}, &RefusalError{What: "backend", Value: d.Backend, Project: project, Allowed: p.AllowedBackends}
	}
	if err := checkImage("image", req.Image, p.AllowedImages, project); err != nil {
		return Decision{}, err
	}
	if p.ServicesLimit >= 0 && len(req.Services) > p.ServicesLimit {
		return Decision{}, &RefusalError{What: "services", Value: fmt.Sprint(len(req.Services)), Project: project,
			Reason: fmt.Sprintf("the job asks for %d services but policy.services_limit is %d; remove some services", len(req.Services), p.ServicesLimit)}
	}
	for _, s := range req.Services {
		if err := checkImage("service", s, p.AllowedServices, project); err != nil {
			return Decision{}, err
		}
	}
	d.DefaultPullPolicies = c.Docker.PullPolicy
	d.PullPolicies = c.Docker.PullPolicy
	var err error
	if d.Memory, err = requestSize("BERTH_MEMORY", req.Memory, eff.MaxMemory, project); err != nil {
		return Decision{}, err
	}
	if d.NanoCPUs, err = requestCPUs(req.CPUs, eff.MaxNanoCPUs, project); err != nil {
		return Decision{}, err
	}
	for _, pp := range req.ServicePullPolicies {
		if err := checkPullPolicy(pp, p.AllowedPullPolicies, project); err != nil {
			return Decision{}, err
		}
	}
	if len(req.PullPolicies) > 0 {
		d.PullPolicies = nil
		for _, pp := range req.PullPolicies {
			if err := checkPullPolicy(pp, p.AllowedPullPolicies, project); err != nil {
				return Decision{}, err
			}
			if !contains(d.PullPolicies, pp) {
				d.PullPolicies = append(d.PullPolicies, pp)
			}
		}
	}
	return d, nil
}

// requestSize bounds a job's memory request by the ceiling.
func requestSize(what, v string, ceiling int64, project string) (int64, error) {
	if v == "" {
		return 0, nil
	}
	n, err := units.RAMInBytes(v)
	if err != nil || n <= 0 {
		return 0, &RefusalError{What: what, Value: v, Project: project, Reason: "not a size such as \"512m\" or \"2g\""}
	}
	if ceiling > 0 && n > ceiling {
		return 0, &RefusalError{What: what, Value: v, Project: project,
			Reason: fmt.Sprintf("the ceiling is %s; ask for less or ask your runner admin", units.BytesSize(float64(ceiling)))}
	}
	return n, nil
}

// requestCPUs bounds a job's CPU request by the ceiling.
func requestCPUs(v string, ceiling int64, project string) (int64, error) {
	if v == "" {
		return 0, nil
	}
	n, err := parseCPUs(v)
	if err != nil {
		return 0, &RefusalError{What: "BERTH_CPUS", Value: v, Project: project, Reason: err.Error()}
	}
	if ceiling > 0 && n > ceiling {
		return 0, &RefusalError{What: "BERTH_CPUS", Value: v, Project: project,
			Reason: fmt.Sprintf("the ceiling is %g CPUs; ask for less or ask your runner admin", float64(ceiling)/1e9)}
	}
	return n, nil
}

func checkPullPolicy(pp string, allowed []string, project string) error {
	if !validPullPolicy(pp) {
		return &RefusalError{What: "pull policy", Value: pp, Project: project,
			Reason: "unknown pull policy; use always, if-not-present or never"}
	}
	if len(allowed) > 0 && !contains(allowed, pp) {
		return &RefusalError{What: "pull policy", Value: pp, Project: project, Allowed: allowed}
	}
	return nil
}

// NormalizeImage parses an image name as the engine will and returns its
// fully qualified form, e.g. "busybox" becomes
// "docker.io/library/busybox:latest".
func NormalizeImage(name string) (string, error) {
	if name == "" {
		return "", fmt.Errorf("empty image name")
	}
	if len(name) > 512 {
		return "", fmt.Errorf("image name is %d bytes long; the limit is 512", len(name))
	}
	ref, err := reference.ParseNormalizedNamed(name)
	if err != nil {
		return "", fmt.Errorf("invalid image name %q: %v", name, err)
	}
	return reference.TagNameOnly(ref).String(), nil
}

func checkImage(what, name string, allowed []string, project string) error {
	normalized, err := NormalizeImage(name)
	if err != nil {
		return &RefusalError{What: what, Value: name, Project: project,
			Reason: err.Error() + "; use a name such as \"registry.example.com/group/image:tag\""}
	}
	if len(allowed) == 0 {
		return nil
	}
	for _, g := range allowed {
		if ok, _ := doublestar.Match(g, name); ok {
			return nil
		}
		if ok, _ := doublestar.Match(g, normalized); ok {
			return nil
		}
	}
	return &RefusalError{What: what, Value: name, Project: project, Allowed: allowed}
}
