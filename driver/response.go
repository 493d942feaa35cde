package driver

// The job payload that gitlab-runner writes to JOB_RESPONSE_FILE, reduced to
// the fields berth reads. Field names follow gitlab-runner's common/spec.

// JobResponse is the job payload from GitLab.
type JobResponse struct {
	ID          int64           `json:"id"`
	Token       string          `json:"token"`
	JobInfo     JobInfo         `json:"job_info"`
	GitInfo     GitInfo         `json:"git_info"`
	RunnerInfo  RunnerInfo      `json:"runner_info"`
	Variables   []Variable      `json:"variables"`
	Image       ImageSpec       `json:"image"`
	Services    []ImageSpec     `json:"services"`
	Credentials []CredentialDTO `json:"credentials"`
}

// JobInfo identifies the job and its project.
type JobInfo struct {
	Name            string `json:"name"`
	Stage           string `json:"stage"`
	ProjectID       int64  `json:"project_id"`
	ProjectName     string `json:"project_name"`
	ProjectFullPath string `json:"project_full_path"`
	NamespaceID     int64  `json:"namespace_id"`
}

// GitInfo describes the ref the job runs for.
type GitInfo struct {
	RepoURL   string `json:"repo_url"`
	Ref       string `json:"ref"`
	Sha       string `json:"sha"`
	RefType   string `json:"ref_type"`
	Protected *bool  `json:"protected"`
}

// RunnerInfo carries the job's timeout in seconds.
type RunnerInfo struct {
	Timeout int `json:"timeout"`
}

// Variable is a CI/CD variable of the job.
type Variable struct {
	Key    string `json:"key"`
	Value  string `json:"value"`
	Public bool   `json:"public"`
	File   bool   `json:"file"`
	Masked bool   `json:"masked"`
	Raw    bool   `json:"raw"`
}

// ImageSpec is the job's `image:` or one of its `services:`.
type ImageSpec struct {
	Name       string     `json:"name"`
	Alias      string     `json:"alias"`
	Command    []string   `json:"command"`
	Entrypoint []string   `json:"entrypoint"`
	Variables  []Variable `json:"variables"`
	PullPolicy []string   `json:"pull_policy"`
}

// CredentialDTO is a registry login from the job payload.
type CredentialDTO struct {
	Type     string `json:"type"`
	URL      string `json:"url"`
	Username string `json:"username"`
	Password string `json:"password"`
}

// serviceEnvDTO is one entry of CUSTOM_ENV_CI_JOB_SERVICES, the fallback
// when the job payload carries no services.
type serviceEnvDTO struct {
	Name       string            `json:"name"`
	Alias      string            `json:"alias"`
	Entrypoint []string          `json:"entrypoint"`
	Command    []string          `json:"command"`
	Variables  map[string]string `json:"variables"`
}
