package driver

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/berthci/berth/backends"
	"github.com/berthci/berth/config"
)

// Limits on untrusted input sizes.
const (
	maxResponseBytes    = 32 << 20
	maxServicesEnvBytes = 64 << 10
	maxJSONDepth        = 16
)

// Env looks up a variable of the driver's environment.
type Env func(key string) (string, bool)

// customEnvPrefix marks the job's variables in the driver's environment.
const customEnvPrefix = "CUSTOM_ENV_"

// Job is one CI job as the runner describes it: identities from the trusted
// job payload, and the job's untrusted requests.
type Job struct {
	// Trusted identities, from JOB_RESPONSE_FILE.
	ID          int64
	ProjectID   int64
	ProjectPath string
	Ref         string
	Protected   bool
	Token       string
	// Timeout is the job's timeout, which the runner enforces.
	Timeout time.Duration

	Image       ImageSpec
	Services    []ImageSpec
	Variables   []Variable
	Credentials []CredentialDTO

	// Requests from the job's variables (untrusted).
	Backend       string
	DebugServices bool
	AuthConfig    string
	Memory        string
	CPUs          string

	// servicesErr is why CUSTOM_ENV_CI_JOB_SERVICES could not be read.
	servicesErr error
}

// LoadJob reads JOB_RESPONSE_FILE and the job's CUSTOM_ENV_ variables.
func LoadJob(env Env) (*Job, error) {
	path, ok := env("JOB_RESPONSE_FILE")
	if !ok || path == "" {
		return nil, systemErr(errors.New("JOB_RESPONSE_FILE is not set: run berth as a gitlab-runner custom executor (runner 15.0 or later)"))
	}
	resp, err := readResponse(path)
	if err != nil {
		return nil, systemErr(err)
	}
	if resp.ID <= 0 || resp.JobInfo.ProjectID <= 0 {
		return nil, systemErr(fmt.Errorf("job response %s has no job id or project id: the runner wrote an incomplete payload", path))
	}
	job := &Job{
		ID:          resp.ID,
		ProjectID:   resp.JobInfo.ProjectID,
		ProjectPath: resp.JobInfo.ProjectFullPath,
		Timeout:     time.Duration(max(resp.RunnerInfo.Timeout, 0)) * time.Second,
		Ref:         resp.GitInfo.Ref,
		Token:       resp.Token,
		Image:       resp.Image,
		Services:    resp.Services,
		Variables:   resp.Variables,
		Credentials: resp.Credentials,
	}
	if resp.GitInfo.Protected != nil {
		job.Protected = *resp.GitInfo.Protected
	}
	custom := func(key string) string {
		v, _ := env(customEnvPrefix + key)
		return v
	}
	if job.Image.Name == "" {
		job.Image.Name = custom("CI_JOB_IMAGE")
	}
	if len(job.Services) == 0 {
		if raw := custom("CI_JOB_SERVICES"); raw != "" {
			// A bad list is the job's fault; it fails the stages that need
			// the services, not config or cleanup.
			job.Services, job.servicesErr = parseServicesEnv(raw)
			if job.servicesErr != nil {
				job.servicesErr = buildErr(job.servicesErr)
			}
		}
	}
	job.Backend = strings.TrimSpace(custom("BERTH_BACKEND"))
	job.DebugServices, _ = strconv.ParseBool(custom("CI_DEBUG_SERVICES"))
	job.AuthConfig = custom("DOCKER_AUTH_CONFIG")
	job.Memory = strings.TrimSpace(custom("BERTH_MEMORY"))
	job.CPUs = strings.TrimSpace(custom("BERTH_CPUS"))
	return job, nil
}

func readResponse(path string) (*JobResponse, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read job response: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxResponseBytes+1))
	if err != nil {
		return nil, fmt.Errorf("read job response: %w", err)
	}
	if len(data) > maxResponseBytes {
		return nil, fmt.Errorf("job response %s is larger than %d MiB", path, maxResponseBytes>>20)
	}
	var resp JobResponse
	if err := decodeStrict(data, maxJSONDepth*2, &resp); err != nil {
		return nil, fmt.Errorf("job response %s is not valid: %w", path, err)
	}
	return &resp, nil
}

// parseServicesEnv decodes CUSTOM_ENV_CI_JOB_SERVICES.
func parseServicesEnv(raw string) ([]ImageSpec, error) {
	if len(raw) > maxServicesEnvBytes {
		return nil, fmt.Errorf("CI_JOB_SERVICES is %d bytes; the limit is %d: use fewer or smaller service definitions", len(raw), maxServicesEnvBytes)
	}
	var dtos []*serviceEnvDTO
	if err := decodeStrict([]byte(raw), maxJSONDepth, &dtos); err != nil {
		return nil, fmt.Errorf("CI_JOB_SERVICES is not a valid JSON list of services: %v", err)
	}
	services := make([]ImageSpec, 0, len(dtos))
	for i, d := range dtos {
		if d == nil {
			return nil, fmt.Errorf("CI_JOB_SERVICES entry %d is null", i)
		}
		s := ImageSpec{Name: d.Name, Alias: d.Alias, Entrypoint: d.Entrypoint, Command: d.Command}
		for k, v := range d.Variables {
			s.Variables = append(s.Variables, Variable{Key: k, Value: v})
		}
		services = append(services, s)
	}
	return services, nil
}

// Subject is the trusted identity that policy selects by.
func (j *Job) Subject() config.Subject {
	return config.Subject{ProjectPath: j.ProjectPath, ProjectID: j.ProjectID, Ref: j.Ref, Protected: j.Protected}
}

// Request is what the job asks of policy.
func (j *Job) Request() config.Request {
	req := config.Request{Backend: j.Backend, Image: j.Image.Name, PullPolicies: j.Image.PullPolicy, Memory: j.Memory, CPUs: j.CPUs}
	for _, s := range j.Services {
		req.Services = append(req.Services, s.Name)
		req.ServicePullPolicies = append(req.ServicePullPolicies, s.PullPolicy...)
	}
	return req
}

// Secrets are values that must never appear in berth's own messages.
func (j *Job) Secrets() []string {
	secrets := []string{j.Token}
	for _, v := range j.Variables {
		if v.Masked || v.Key == "CI_JOB_TOKEN" || v.Key == "DOCKER_AUTH_CONFIG" {
			secrets = append(secrets, v.Value)
		}
	}
	for _, c := range j.Credentials {
		secrets = append(secrets, c.Password)
	}
	if j.AuthConfig != "" {
		secrets = append(secrets, j.AuthConfig)
	}
	return secrets
}

// BuildsDir is the job's own host directory under the admin's builds_dir.
// It derives from trusted ids only.
func BuildsDir(cfg *config.Config, jobID int64) string {
	return filepath.Join(cfg.BuildsDir, cfg.RunnerName, strconv.FormatInt(jobID, 10))
}

// CacheDir is the project's host cache directory under the admin's
// cache_dir.
func CacheDir(cfg *config.Config, projectID int64) string {
	return filepath.Join(cfg.CacheDir, cfg.RunnerName, strconv.FormatInt(projectID, 10))
}

// Spec turns the job and the policy's decision into what a backend creates.
// It validates everything the job supplies, so a bad value is refused before
// anything exists.
func (j *Job) Spec(cfg *config.Config, d config.Decision) (*backends.Job, error) {
	if j.servicesErr != nil {
		return nil, j.servicesErr
	}
	spec := &backends.Job{
		ID:            j.ID,
		ProjectID:     j.ProjectID,
		ProjectPath:   j.ProjectPath,
		Runner:        cfg.RunnerName,
		Backend:       d.Backend,
		BuildsDir:     BuildsDir(cfg, j.ID),
		CacheDir:      CacheDir(cfg, j.ProjectID),
		DebugServices: j.DebugServices,
		Created:       time.Now(),
		Timeout:       j.Timeout,
		Policy: backends.JobPolicy{Memory: d.Memory, NanoCPUs: d.NanoCPUs,
			DindPrivileged: d.DindPrivileged, LayerCache: d.LayerCache, SocketGuard: d.SocketGuard},
	}
	image := j.Image.Name
	if image == "" {
		image = cfg.Docker.Image
	}
	if image == "" {
		return nil, buildErr(errors.New("the job has no image: set `image:` in .gitlab-ci.yml (or ask the runner admin to set docker.image)"))
	}
	spec.Image = backends.Image{Name: image, Entrypoint: j.Image.Entrypoint, PullPolicies: d.PullPolicies}

	env, err := variablesEnv("job", j.Variables)
	if err != nil {
		return nil, buildErr(err)
	}
	spec.Env = env

	// Services get the job's public variables, as with the docker
	// executor, then their own.
	var public []Variable
	for _, v := range j.Variables {
		if v.Public {
			public = append(public, v)
		}
	}
	// The job's own aliases first: a clash between two of them is refused.
	// Then the names the docker executor derives from the image, skipping
	// any already taken.
	taken := map[string]int{}
	userAliases := make([][]string, len(j.Services))
	for i, s := range j.Services {
		for _, alias := range splitAliases(s.Alias) {
			if len(alias) > 253 || !hostnameRe().MatchString(alias) {
				return nil, buildErr(fmt.Errorf("service %q: alias %q is not a valid hostname: use letters, digits, '-' and '.', up to 63 characters a label", s.Name, alias))
			}
			prev, dup := taken[strings.ToLower(alias)]
			if dup && prev != i {
				return nil, buildErr(fmt.Errorf("service %q: alias %q is already used by service %q: give each service its own alias", s.Name, alias, j.Services[prev].Name))
			}
			if !dup {
				taken[strings.ToLower(alias)] = i
				userAliases[i] = append(userAliases[i], alias)
			}
		}
	}
	for i, s := range j.Services {
		svc := backends.Service{Image: backends.Image{Name: s.Name, Entrypoint: s.Entrypoint, Command: s.Command,
			PullPolicies: dedupe(s.PullPolicy)}}
		if len(svc.PullPolicies) == 0 {
			svc.PullPolicies = d.DefaultPullPolicies
		}
		svc.Env, err = variablesEnv(fmt.Sprintf("service %q", s.Name), append(append([]Variable{}, public...), s.Variables...))
		if err != nil {
			return nil, buildErr(err)
		}
		svc.Aliases = userAliases[i]
		for _, alias := range derivedAliases(s.Name) {
			if _, dup := taken[strings.ToLower(alias)]; !dup {
				taken[strings.ToLower(alias)] = i
				svc.Aliases = append(svc.Aliases, alias)
			}
		}
		spec.Services = append(spec.Services, svc)
	}

	creds, err := j.credentials(cfg)
	if err != nil {
		return nil, err
	}
	spec.Credentials = creds
	return spec, nil
}

// hostnameRe accepts RFC 1123 hostnames.
// Compiled on first use: these bounded repetitions make large programs,
// and every driver process would pay for them at start.
var hostnameRe = lazyRegexp(`^(?i)[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$`)

// derivedNameRe accepts the docker executor's image-derived service names,
// which keep '__' and '.'.
var derivedNameRe = lazyRegexp(`^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,252}$`)

func lazyRegexp(expr string) func() *regexp.Regexp {
	return sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(expr) })
}

// splitAliases splits a service's alias field as the runner does: on commas
// and white space.
func splitAliases(alias string) []string {
	return strings.Fields(strings.ReplaceAll(alias, ",", " "))
}

// derivedAliases are the hostnames the docker executor gives a service from
// its image name: the name without registry port, tag or digest, with '/'
// turned into "__" and into '-'.
func derivedAliases(image string) []string {
	name, _, _ := strings.Cut(image, "@")
	if i := strings.LastIndex(name, ":"); i > strings.LastIndex(name, "/") {
		name = name[:i]
	}
	if host, rest, ok := strings.Cut(name, "/"); ok {
		if h, _, hasPort := strings.Cut(host, ":"); hasPort {
			name = h + "/" + rest
		}
	}
	var aliases []string
	for _, a := range []string{strings.ReplaceAll(name, "/", "__"), strings.ReplaceAll(name, "/", "-")} {
		if derivedNameRe().MatchString(a) && !contains(aliases, a) {
			aliases = append(aliases, a)
		}
	}
	return aliases
}

// variablesEnv turns variables into KEY=VALUE pairs for a container,
// refusing keys and values the engine would misread. File variables are
// left to the runner's scripts, which write them to files.
func variablesEnv(owner string, vars []Variable) ([]string, error) {
	env := make([]string, 0, len(vars))
	for _, v := range vars {
		switch {
		case v.Key == "":
			return nil, fmt.Errorf("%s has a variable with an empty name: remove it", owner)
		case strings.ContainsAny(v.Key, "=\x00"):
			return nil, fmt.Errorf("%s variable %q: a name may not contain '=' or NUL", owner, v.Key)
		case strings.ContainsRune(v.Value, 0):
			return nil, fmt.Errorf("%s variable %q: the value contains a NUL byte", owner, v.Key)
		}
		if v.File {
			continue
		}
		env = append(env, v.Key+"="+v.Value)
	}
	return env, nil
}

func dedupe(list []string) []string {
	var out []string
	for _, v := range list {
		if !contains(out, v) {
			out = append(out, v)
		}
	}
	return out
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}
