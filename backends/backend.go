// Package backends defines the Backend interface that the driver consumes to
// run a job's containers, the job description that backends receive, and the
// registry through which the driver finds a backend by name.
package backends

import (
	"context"
	"fmt"
	"io"
	"sort"
	"strconv"
	"time"
)

// Backend runs one CI job's environment on a container engine. Every stage
// of the runner protocol is a separate process, so a Backend keeps no state
// between calls: it finds what an earlier stage made by name and label.
type Backend interface {
	// Prepare creates the job's network, service containers and job
	// containers, pulls their images and waits for the services.
	//
	// It is safe to re-run after a partial failure (the runner retries
	// prepare): it first removes whatever an earlier attempt for the same job
	// left. It honours ctx: when ctx is canceled it stops and returns an error
	// wrapping ctx.Err(), leaving what it made for Cleanup to find.
	Prepare(ctx context.Context, job *Job) error

	// Run executes stage.Script in the job's environment with the stage's
	// output streamed to stage.Stdout and stage.Stderr, and returns the
	// script's exit code. A non-zero code is the script's own failure; err is
	// only for infrastructure trouble.
	//
	// When ctx is canceled it stops the script's processes in the container
	// before returning an error wrapping ctx.Err(). It returns an error when
	// the job's environment is gone (for example, Prepare never ran).
	Run(ctx context.Context, job *Job, stage Stage) (exitCode int, err error)

	// Cleanup removes everything the backend created for job, found by the
	// labels it set. It is idempotent: resources already gone, or already
	// being removed, count as removed. Callers give it a fresh context with
	// its own deadline, never the canceled job context. It keeps going past
	// failures and returns them joined.
	Cleanup(ctx context.Context, job *Job) error
}

// Describer is an optional capability: a backend that can say which engine
// it talks to, for the job log.
type Describer interface {
	// Describe returns a short human description of the engine and of
	// how it serves job, such as "Docker 20.10.24, API 1.41, TLS". It
	// honours ctx.
	Describe(ctx context.Context, job *Job) (string, error)
}

// Stage is one `run` call of the runner protocol.
type Stage struct {
	Name   string
	Script []byte
	// Helper is true for stages that the docker executor runs in its helper
	// container (sources, cache, artifacts).
	Helper bool
	Stdout io.Writer
	Stderr io.Writer
}

// Job describes what a backend must create. The driver builds it from the
// job response and the admin's policy; backends never read the job's
// environment themselves.
type Job struct {
	ID          int64
	ProjectID   int64
	ProjectPath string
	Runner      string
	Backend     string

	Image    Image
	Services []Service
	// Credentials are registry logins, most specific first.
	Credentials []Credential

	// Env holds the job's variables as KEY=VALUE, for the job and service
	// containers (the runner's scripts export them again).
	Env []string

	// BuildsDir is this job's host directory, mounted at the same path.
	BuildsDir string
	// CacheDir is this project's host cache directory, mounted at the same
	// path.
	CacheDir string

	// DebugServices streams service logs into the job log.
	DebugServices bool

	// Policy is what the admin's policy decided for this job on top of the
	// backend's configuration.
	Policy JobPolicy

	// Created is when the job's first prepare started.
	Created time.Time
	// Timeout is the job's timeout from the job response: the runner ends
	// the job by then, so `berth gc` may reap what is left after it.
	Timeout time.Duration
}

// JobPolicy carries policy decisions that change a backend's settings for one
// job. Zero values keep the configuration's.
type JobPolicy struct {
	// Memory (bytes) and NanoCPUs are what the job asked for, within the
	// policy's ceilings.
	Memory   int64
	NanoCPUs int64
	// DindPrivileged overrides [dind] privileged.
	DindPrivileged *bool
	// LayerCache overrides [dind] layer_cache.
	LayerCache string
	// SocketGuard overrides [socket] guard.
	SocketGuard *bool
}

// Image is a container image with the job's entrypoint override.
type Image struct {
	Name string
	// Entrypoint overrides the image's entrypoint; nil keeps it and [""]
	// clears it, as with the docker executor.
	Entrypoint []string
	// Command overrides the image's command (services only).
	Command []string
	// PullPolicies are tried in order until one yields the image.
	PullPolicies []string
}

// Service is one entry of the job's `services:`.
type Service struct {
	Image
	// Aliases are the hostnames the service is reachable by, the job's own
	// aliases first and the names derived from the image after them.
	Aliases []string
	// Env holds the service's variables as KEY=VALUE: the job's public
	// variables, then the service's own.
	Env []string
}

// Credential is a registry login.
type Credential struct {
	Registry string
	Username string
	Password string
}

// Label keys set on every resource berth creates. Cleanup selects by
// LabelRunner and LabelJobID, whose values come from trusted job data.
const (
	LabelPrefix    = "berth."
	LabelJobID     = "berth.job.id"
	LabelProjectID = "berth.project.id"
	LabelProject   = "berth.project.path"
	LabelRunner    = "berth.runner"
	LabelCreated   = "berth.created"
	LabelRole      = "berth.role"
	LabelBackend   = "berth.backend"
	LabelAlias     = "berth.service.alias"
	// LabelTimeout is the job's timeout in seconds (0: unknown).
	LabelTimeout = "berth.timeout"
)

// JobLister is implemented by backends that can list what the jobs of a
// runner left in their engine, for `berth gc`.
type JobLister interface {
	// ListJobs returns the runner's jobs that have resources of this
	// backend, found by label.
	ListJobs(ctx context.Context, runner string) ([]JobRecord, error)
}

// JobRecord is what one job has in a backend's engine.
type JobRecord struct {
	ID        int64
	ProjectID int64
	Backend   string
	// Created is the earliest berth.created of the job's resources.
	Created time.Time
	// Timeout is the job's timeout from its labels, 0 when unknown.
	Timeout time.Duration
	// Resources name what the job has, such as "container berth-r-1-build".
	Resources []string
}

// AddRecord records one labelled resource of a job into records, keyed by job id.
// Resources without a valid job id or created time are skipped: berth
// labels every resource it creates with both, so they are not berth's.
func AddRecord(records map[int64]*JobRecord, backend, resource string, labels map[string]string) {
	id, err := strconv.ParseInt(labels[LabelJobID], 10, 64)
	if err != nil || id <= 0 {
		return
	}
	created, err := time.Parse(time.RFC3339, labels[LabelCreated])
	if err != nil {
		return
	}
	r := records[id]
	if r == nil {
		r = &JobRecord{ID: id, Backend: backend, Created: created}
		records[id] = r
	}
	if pid, err := strconv.ParseInt(labels[LabelProjectID], 10, 64); err == nil && pid > 0 {
		r.ProjectID = pid
	}
	if created.Before(r.Created) {
		r.Created = created
	}
	if secs, err := strconv.ParseInt(labels[LabelTimeout], 10, 64); err == nil && time.Duration(secs)*time.Second > r.Timeout {
		r.Timeout = time.Duration(secs) * time.Second
	}
	r.Resources = append(r.Resources, resource)
}

// SortedRecords returns the records ordered by job id.
func SortedRecords(records map[int64]*JobRecord) []JobRecord {
	out := make([]JobRecord, 0, len(records))
	for _, r := range records {
		out = append(out, *r)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// Name is the prefix of every resource of the job, unique per runner
// registration and job.
func (j *Job) Name() string { return JobName(j.Runner, j.ID) }

// JobName is the resource-name prefix of a job.
func JobName(runner string, jobID int64) string {
	return fmt.Sprintf("berth-%s-%d", runner, jobID)
}

// Labels returns the labels of a job resource with the given role.
func (j *Job) Labels(role string) map[string]string {
	return map[string]string{
		LabelJobID:     strconv.FormatInt(j.ID, 10),
		LabelProjectID: strconv.FormatInt(j.ProjectID, 10),
		LabelProject:   j.ProjectPath,
		LabelRunner:    j.Runner,
		LabelCreated:   j.Created.UTC().Format(time.RFC3339),
		LabelRole:      role,
		LabelBackend:   j.Backend,
		LabelTimeout:   strconv.FormatInt(int64(j.Timeout/time.Second), 10),
	}
}

// Selector returns the labels that select every resource of the job.
func (j *Job) Selector() map[string]string {
	return map[string]string{
		LabelRunner: j.Runner,
		LabelJobID:  strconv.FormatInt(j.ID, 10),
	}
}
