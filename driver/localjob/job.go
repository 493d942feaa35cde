package localjob

import (
	"fmt"
	"time"
)

// Job is one job of a .gitlab-ci.yml, resolved: extends, default: and
// !reference applied, rules evaluated, and every key exec does not honour
// as GitLab would recorded in Notes.
type Job struct {
	Name  string
	Stage string

	Image    Image
	Services []Service
	// Variables are the file's global and job variables, the matched rule's
	// and the command line's, later ones overriding earlier ones, not yet
	// expanded.
	Variables []Variable

	BeforeScript []string
	Script       []string
	AfterScript  []string

	Caches    []Cache
	Artifacts *Artifacts
	// Dependencies are the jobs whose artifacts download_artifacts restores,
	// from earlier `berth exec` runs of them.
	Dependencies []string

	// Timeout is the job's timeout; 0 means GitLab's default of 1 hour.
	Timeout time.Duration
	// NodeTotal is parallel:'s count (CI_NODE_TOTAL); exec runs node 1.
	NodeTotal int
	// Environment is environment:name, for CI_ENVIRONMENT_NAME.
	Environment    string
	EnvironmentURL string

	// Notes name every key that exec does not honour as GitLab would, and
	// what it did instead.
	Notes []Note
}

// Image is the job's image:.
type Image struct {
	Name       string
	Entrypoint []string
	PullPolicy []string
}

// Service is one entry of services:.
type Service struct {
	Name       string
	Alias      string
	Entrypoint []string
	Command    []string
	Variables  []Variable
	PullPolicy []string
}

// Variable is a CI/CD variable.
type Variable struct {
	Key   string
	Value string
	// Raw is expand: false: the value is used as written.
	Raw bool
}

// Cache is one entry of cache:.
type Cache struct {
	Key          string
	FallbackKeys []string
	Paths        []string
	Untracked    bool
	// When is on_success, on_failure or always.
	When string
	// Policy is pull-push, pull or push.
	Policy string
	Line   int
}

// Artifacts is the job's artifacts:.
type Artifacts struct {
	Paths     []string
	Exclude   []string
	Untracked bool
	// When is on_success, on_failure or always.
	When string
	Line int
}

// Note is a key that exec does not honour as GitLab would, and what exec
// did instead.
type Note struct {
	Key  string
	Line int
	Text string
}

func (n Note) String() string {
	if n.Line > 0 {
		return fmt.Sprintf("line %d: %s: %s", n.Line, n.Key, n.Text)
	}
	return fmt.Sprintf("%s: %s", n.Key, n.Text)
}

// restores reports whether a cache is restored before the script.
func (c Cache) restores() bool { return c.Policy != "push" }

// archivesOn reports whether a cache is saved after a job that succeeded
// (or failed).
func (c Cache) archivesOn(success bool) bool {
	if c.Policy == "pull" {
		return false
	}
	return whenMatches(c.When, success)
}

// uploadsOn reports whether the artifacts are collected after a job that
// succeeded (or failed).
func (a *Artifacts) uploadsOn(success bool) bool {
	return a != nil && (len(a.Paths) > 0 || a.Untracked) && whenMatches(a.When, success)
}

func whenMatches(when string, success bool) bool {
	switch when {
	case "always":
		return true
	case "on_failure":
		return !success
	default:
		return success
	}
}
