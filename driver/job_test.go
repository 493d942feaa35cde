package driver

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/berthci/berth/backends"
	"github.com/berthci/berth/config"
)

// fakeEnv is a driver environment made of vars only.
func fakeEnv(vars map[string]string) Env {
	return func(key string) (string, bool) {
		v, ok := vars[key]
		return v, ok
	}
}

// testResponse is a job payload with trusted ids 101 (job) and 7 (project).
func testResponse() JobResponse {
	protected := true
	return JobResponse{
		ID:    101,
		Token: "job-token-secret",
		JobInfo: JobInfo{
			Name:            "test",
			Stage:           "test",
			ProjectID:       7,
			ProjectName:     "app",
			ProjectFullPath: "group/app",
		},
		GitInfo: GitInfo{Ref: "main", Sha: "abc", Protected: &protected},
		Image:   ImageSpec{Name: "alpine:3"},
	}
}

// writeResponse writes a job payload to a temp JOB_RESPONSE_FILE and returns
// its path.
func writeResponse(t *testing.T, resp any) string {
	t.Helper()
	var data []byte
	switch v := resp.(type) {
	case string:
		data = []byte(v)
	default:
		var err error
		if data, err = json.Marshal(v); err != nil {
			t.Fatal(err)
		}
	}
	path := filepath.Join(t.TempDir(), "response.json")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// jobEnv is the environment of a stage whose JOB_RESPONSE_FILE holds resp,
// plus extra variables.
func jobEnv(t *testing.T, resp any, extra map[string]string) Env {
	t.Helper()
	vars := map[string]string{"JOB_RESPONSE_FILE": writeResponse(t, resp)}
	for k, v := range extra {
		vars[k] = v
	}
	return fakeEnv(vars)
}

func loadJob(t *testing.T, resp any, extra map[string]string) *Job {
	t.Helper()
	job, err := LoadJob(jobEnv(t, resp, extra))
	if err != nil {
		t.Fatalf("LoadJob: got %v, want no error", err)
	}
	return job
}

// identityOverrides are the variables a job sets hoping to collide with or
// impersonate another job.
var identityOverrides = map[string]string{
	"CUSTOM_ENV_CI_JOB_ID":                "999",
	"CUSTOM_ENV_CI_PROJECT_ID":            "1",
	"CUSTOM_ENV_CI_CONCURRENT_PROJECT_ID": "5",
	"CUSTOM_ENV_CI_CONCURRENT_ID":         "5",
	"CUSTOM_ENV_CI_PROJECT_PATH_SLUG":     "other-app",
	"CUSTOM_ENV_CI_PROJECT_PATH":          "other/app",
	"CUSTOM_ENV_CI_RUNNER_ID":             "3",
	"CUSTOM_ENV_CI_BUILDS_DIR":            "/etc",
	"CUSTOM_ENV_GIT_CLONE_PATH":           "/builds/../../etc",
	"CI_JOB_ID":                           "998",
	"CI_PROJECT_ID":                       "2",
}

func TestLoadJobIdentitiesComeFromTheResponse(t *testing.T) {
	resp := testResponse()
	resp.Variables = []Variable{
		{Key: "CI_JOB_ID", Value: "999", Public: true},
		{Key: "CI_PROJECT_ID", Value: "1", Public: true},
		{Key: "CI_PROJECT_PATH_SLUG", Value: "other-app", Public: true},
		{Key: "CI_RUNNER_ID", Value: "3", Public: true},
	}
	job := loadJob(t, resp, identityOverrides)
	if job.ID != 101 || job.ProjectID != 7 || job.ProjectPath != "group/app" {
		t.Fatalf("got job %d project %d %q, want 101, 7 and group/app", job.ID, job.ProjectID, job.ProjectPath)
	}
	if job.Ref != "main" || !job.Protected || job.Token != "job-token-secret" {
		t.Errorf("got ref %q protected %v token %q, want main, true and the payload token", job.Ref, job.Protected, job.Token)
	}

	cfg := config.Default()
	spec, err := job.Spec(cfg, config.Decision{Backend: "socket"})
	if err != nil {
		t.Fatalf("Spec: got %v, want no error", err)
	}
	checks := map[string][2]string{
		"BuildsDir":     {spec.BuildsDir, "/builds/berth/101"},
		"CacheDir":      {spec.CacheDir, "/cache/berth/7"},
		"Name":          {spec.Name(), "berth-berth-101"},
		"job id label":  {spec.Labels("build")[backends.LabelJobID], "101"},
		"project label": {spec.Labels("build")[backends.LabelProjectID], "7"},
		"selector":      {spec.Selector()[backends.LabelJobID], "101"},
	}
	for what, c := range checks {
		if c[0] != c[1] {
			t.Errorf("%s: got %q, want %q", what, c[0], c[1])
		}
	}
}

func TestLoadJobFailures(t *testing.T) {
	noIDs := testResponse()
	noIDs.ID = 0
	noProject := testResponse()
	noProject.JobInfo.ProjectID = -1
	tests := map[string]struct {
		env       Env
		wantClass error
		want      string
	}{
		"JOB_RESPONSE_FILE unset": {
			env:       fakeEnv(map[string]string{"CUSTOM_ENV_CI_JOB_ID": "1"}),
			wantClass: ErrSystem,
			want:      "JOB_RESPONSE_FILE is not set",
		},
		"JOB_RESPONSE_FILE empty": {
			env:       fakeEnv(map[string]string{"JOB_RESPONSE_FILE": ""}),
			wantClass: ErrSystem,
			want:      "JOB_RESPONSE_FILE is not set",
		},
		"JOB_RESPONSE_FILE missing": {
			env:       fakeEnv(map[string]string{"JOB_RESPONSE_FILE": filepath.Join(t.TempDir(), "nope.json")}),
			wantClass: ErrSystem,
			want:      "read job response",
		},
		"invalid JSON": {
			env:       jobEnv(t, `{"id": 1,`, nil),
			wantClass: ErrSystem,
			want:      "is not valid",
		},
		"duplicate id": {
			env:       jobEnv(t, `{"id": 1, "id": 2, "job_info": {"project_id": 3}}`, nil),
			wantClass: ErrSystem,
			want:      "duplicate key",
		},
		"no job id": {
			env:       jobEnv(t, noIDs, nil),
			wantClass: ErrSystem,
			want:      "no job id or project id",
		},
		"negative project id": {
			env:       jobEnv(t, noProject, nil),
			wantClass: ErrSystem,
			want:      "no job id or project id",
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			job, err := LoadJob(tc.env)
			if err == nil {
				t.Fatalf("got job %+v, want an error", job)
			}
			if !errors.Is(err, tc.wantClass) {
				t.Errorf("got %v, want class %v", err, tc.wantClass)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %q, want it to contain %q", err, tc.want)
			}
		})
	}
}

func TestLoadJobImageFallback(t *testing.T) {
	withImage := testResponse()
	noImage := testResponse()
	noImage.Image = ImageSpec{}
	tests := map[string]struct {
		resp JobResponse
		env  map[string]string
		want string
	}{
		"response image wins":      {resp: withImage, env: map[string]string{"CUSTOM_ENV_CI_JOB_IMAGE": "evil:1"}, want: "alpine:3"},
		"CI_JOB_IMAGE fallback":    {resp: noImage, env: map[string]string{"CUSTOM_ENV_CI_JOB_IMAGE": "busybox:1"}, want: "busybox:1"},
		"unprefixed not consulted": {resp: noImage, env: map[string]string{"CI_JOB_IMAGE": "busybox:1"}, want: ""},
		"no image anywhere":        {resp: noImage, want: ""},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			job := loadJob(t, tc.resp, tc.env)
			if job.Image.Name != tc.want {
				t.Errorf("got %q, want %q", job.Image.Name, tc.want)
			}
		})
	}
}

func TestLoadJobRequests(t *testing.T) {
	job := loadJob(t, testResponse(), map[string]string{
		"CUSTOM_ENV_BERTH_BACKEND":      " dind ",
		"CUSTOM_ENV_CI_DEBUG_SERVICES":  "true",
		"CUSTOM_ENV_DOCKER_AUTH_CONFIG": `{"auths":{}}`,
		"BERTH_BACKEND":                 "podman",
	})
	if job.Backend != "dind" || !job.DebugServices || job.AuthConfig != `{"auths":{}}` {
		t.Errorf("got backend %q debug %v auth %q, want dind, true and the job's auth config", job.Backend, job.DebugServices, job.AuthConfig)
	}
}

func TestLoadJobServicesFromEnv(t *testing.T) {
	valid := `[{"name":"postgres:16","alias":"db","entrypoint":null,"command":["postgres","-c","fsync=off"],"variables":{"POSTGRES_PASSWORD":"pw"}},` +
		`{"name":"redis:7","alias":"","entrypoint":["/bin/sh"],"command":null}]`
	job := loadJob(t, noServicesResponse(), map[string]string{"CUSTOM_ENV_CI_JOB_SERVICES": valid})
	want := []ImageSpec{
		{Name: "postgres:16", Alias: "db", Command: []string{"postgres", "-c", "fsync=off"}, Variables: []Variable{{Key: "POSTGRES_PASSWORD", Value: "pw"}}},
		{Name: "redis:7", Entrypoint: []string{"/bin/sh"}},
	}
	if !reflect.DeepEqual(job.Services, want) {
		t.Errorf("got %+v, want %+v", job.Services, want)
	}
}

func TestLoadJobResponseServicesWinOverEnv(t *testing.T) {
	resp := testResponse()
	resp.Services = []ImageSpec{{Name: "postgres:16"}}
	// The response is trusted and complete, so the variable is not even parsed.
	job := loadJob(t, resp, map[string]string{"CUSTOM_ENV_CI_JOB_SERVICES": `[{"name":"mysql"}`})
	if len(job.Services) != 1 || job.Services[0].Name != "postgres:16" {
		t.Errorf("got %+v, want the response's services", job.Services)
	}
}

func noServicesResponse() JobResponse {
	resp := testResponse()
	resp.Services = nil
	return resp
}

// servicesEnvError loads a job whose services come from raw and builds its
// spec, and returns the services and the first error. A bad list may be
// refused by LoadJob or, later, by Spec; either is fine as long as no
// backend job is made from it.
func servicesEnvError(t *testing.T, raw string) ([]backends.Service, error) {
	t.Helper()
	job, err := LoadJob(jobEnv(t, noServicesResponse(), map[string]string{"CUSTOM_ENV_CI_JOB_SERVICES": raw}))
	if err != nil {
		return nil, err
	}
	spec, err := job.Spec(config.Default(), config.Decision{Backend: "socket"})
	if err != nil {
		return nil, err
	}
	return spec.Services, nil
}

func TestLoadJobRefusesBadServicesEnv(t *testing.T) {
	deep := `[{"name":"a","variables":` + strings.Repeat("[", 20) + strings.Repeat("]", 20) + `}]`
	huge := `[{"name":"a","alias":"` + strings.Repeat("x", 64<<10) + `"}]`
	tests := map[string]struct {
		raw  string
		want string
	}{
		"invalid JSON":          {raw: `[{"name":"postgres"`, want: "not a valid JSON list of services"},
		"not JSON at all":       {raw: `postgres:16`, want: "not a valid JSON list of services"},
		"object, not a list":    {raw: `{"name":"postgres"}`, want: "cannot unmarshal object"},
		"null entry":            {raw: `[{"name":"a"},null]`, want: "entry 1 is null"},
		"duplicate key":         {raw: `[{"name":"postgres","name":"mysql"}]`, want: `duplicate key "name"`},
		"case-variant key":      {raw: `[{"name":"postgres","Name":"mysql"}]`, want: `keys "name" and "Name" differ only in case`},
		"case-variant variable": {raw: `[{"name":"a","variables":{"A":"1","a":"2"}}]`, want: "differ only in case"},
		"deep nesting":          {raw: deep, want: "nested deeper than 16 levels"},
		"oversized":             {raw: huge, want: "the limit is 65536"},
		"name not a string":     {raw: `[{"name":5}]`, want: "cannot unmarshal number"},
		"command not a list":    {raw: `[{"name":"a","command":"sh -c id"}]`, want: "cannot unmarshal string"},
		"variables not strings": {raw: `[{"name":"a","variables":{"A":1}}]`, want: "cannot unmarshal number"},
		"variables a list":      {raw: `[{"name":"a","variables":[{"key":"A"}]}]`, want: "cannot unmarshal array"},
		"trailing data":         {raw: `[{"name":"a"}] [{"name":"b"}]`, want: "unexpected data after the JSON value"},
		// encoding/json folds "ſ" (U+017F) to "s", so "aliaſ" sets Alias too.
		"unicode case-variant key": {raw: "[{\"name\":\"a\",\"alias\":\"db\",\"alia\u017f\":\"docker\"}]", want: "differ only in case"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			services, err := servicesEnvError(t, tc.raw)
			if err == nil {
				t.Fatalf("got services %+v, want an error", services)
			}
			if !errors.Is(err, ErrBuild) {
				t.Errorf("got %v, want a build error", err)
			}
			if !strings.Contains(err.Error(), "CI_JOB_SERVICES") || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %q, want it to name CI_JOB_SERVICES and contain %q", err, tc.want)
			}
		})
	}
}

func TestLoadJobEmptyServicesEnv(t *testing.T) {
	for name, raw := range map[string]string{"unset": "", "empty list": "[]"} {
		t.Run(name, func(t *testing.T) {
			job := loadJob(t, noServicesResponse(), map[string]string{"CUSTOM_ENV_CI_JOB_SERVICES": raw})
			if len(job.Services) != 0 {
				t.Errorf("got %+v, want no services", job.Services)
			}
		})
	}
}

func TestSpecServiceAliases(t *testing.T) {
	digest := "sha256:" + strings.Repeat("a", 64)
	tests := map[string]struct {
		services []ImageSpec
		want     [][]string
	}{
		"registry path": {
			services: []ImageSpec{{Name: "registry.example.com/tools/pg:16"}},
			want:     [][]string{{"registry.example.com__tools__pg", "registry.example.com-tools-pg"}},
		},
		"official image": {
			services: []ImageSpec{{Name: "postgres:16"}},
			want:     [][]string{{"postgres"}},
		},
		"digest": {
			services: []ImageSpec{{Name: "postgres@" + digest}},
			want:     [][]string{{"postgres"}},
		},
		"tag and digest": {
			services: []ImageSpec{{Name: "tools/pg:16@" + digest}},
			want:     [][]string{{"tools__pg", "tools-pg"}},
		},
		"registry port": {
			services: []ImageSpec{{Name: "registry.example.com:5000/tools/pg:16"}},
			want:     [][]string{{"registry.example.com__tools__pg", "registry.example.com-tools-pg"}},
		},
		"own aliases then derived, commas and spaces": {
			services: []ImageSpec{{Name: "postgres:16", Alias: "db, pg  sql"}},
			want:     [][]string{{"db", "pg", "sql", "postgres"}},
		},
		"same image twice keeps derived name on the first": {
			services: []ImageSpec{{Name: "postgres:16", Alias: "one"}, {Name: "postgres:15", Alias: "two"}},
			want:     [][]string{{"one", "postgres"}, {"two"}},
		},
		"own alias beats an earlier service's derived name": {
			services: []ImageSpec{{Name: "redis:7", Alias: "cache"}, {Name: "postgres", Alias: "redis"}},
			want:     [][]string{{"cache"}, {"redis", "postgres"}},
		},
		"own alias repeating a derived name": {
			services: []ImageSpec{{Name: "postgres:16", Alias: "postgres"}},
			want:     [][]string{{"postgres"}},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			job := &Job{ID: 1, ProjectID: 2, Image: ImageSpec{Name: "alpine"}, Services: tc.services}
			spec, err := job.Spec(config.Default(), config.Decision{Backend: "socket"})
			if err != nil {
				t.Fatalf("got %v, want no error", err)
			}
			var got [][]string
			for _, s := range spec.Services {
				got = append(got, s.Aliases)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}

func TestSpecRefusesBadAliases(t *testing.T) {
	tests := map[string]struct {
		services []ImageSpec
		want     string
	}{
		"underscore":               {services: []ImageSpec{{Name: "redis", Alias: "my_db"}}, want: `alias "my_db" is not a valid hostname`},
		"leading dash":             {services: []ImageSpec{{Name: "redis", Alias: "-db"}}, want: "not a valid hostname"},
		"empty label":              {services: []ImageSpec{{Name: "redis", Alias: "a..b"}}, want: "not a valid hostname"},
		"label over 63 characters": {services: []ImageSpec{{Name: "redis", Alias: strings.Repeat("a", 64)}}, want: "not a valid hostname"},
		"name over 253 characters": {services: []ImageSpec{{Name: "redis", Alias: strings.Repeat(strings.Repeat("a", 63)+".", 4) + "a"}}, want: "not a valid hostname"},
		"shell injection":          {services: []ImageSpec{{Name: "redis", Alias: "db;reboot"}}, want: "not a valid hostname"},
		"substitution":             {services: []ImageSpec{{Name: "redis", Alias: "$(id)"}}, want: "not a valid hostname"},
		"same alias on two services": {
			services: []ImageSpec{{Name: "redis", Alias: "db"}, {Name: "postgres", Alias: "db"}},
			want:     `alias "db" is already used by service "redis"`,
		},
		"alias differing in case": {
			services: []ImageSpec{{Name: "redis", Alias: "db"}, {Name: "postgres", Alias: "DB"}},
			want:     "already used",
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			job := &Job{ID: 1, ProjectID: 2, Image: ImageSpec{Name: "alpine"}, Services: tc.services}
			spec, err := job.Spec(config.Default(), config.Decision{Backend: "socket"})
			if err == nil {
				t.Fatalf("got services %+v, want an error", spec.Services)
			}
			if !errors.Is(err, ErrBuild) {
				t.Errorf("got %v, want a build error", err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %q, want it to contain %q", err, tc.want)
			}
		})
	}
}

func TestSpecEnv(t *testing.T) {
	job := &Job{
		ID: 1, ProjectID: 2, Image: ImageSpec{Name: "alpine"},
		Variables: []Variable{
			{Key: "PUBLIC", Value: "p", Public: true},
			{Key: "SECRET", Value: "s", Masked: true},
			{Key: "CONFIG_FILE", Value: "file contents", File: true, Public: true},
			{Key: "HEALTHCHECK_TCP_PORT", Value: "1111", Public: true},
			{Key: "INJECT", Value: "$(reboot); `id`\nnext", Public: true},
		},
		Services: []ImageSpec{{Name: "redis", Variables: []Variable{{Key: "HEALTHCHECK_TCP_PORT", Value: "6379"}}}},
	}
	spec, err := job.Spec(config.Default(), config.Decision{Backend: "socket"})
	if err != nil {
		t.Fatalf("got %v, want no error", err)
	}
	wantJob := []string{"PUBLIC=p", "SECRET=s", "HEALTHCHECK_TCP_PORT=1111", "INJECT=$(reboot); `id`\nnext"}
	if !reflect.DeepEqual(spec.Env, wantJob) {
		t.Errorf("job env: got %q, want %q", spec.Env, wantJob)
	}
	// Public job variables first, so the service's own override them.
	wantService := []string{"PUBLIC=p", "HEALTHCHECK_TCP_PORT=1111", "INJECT=$(reboot); `id`\nnext", "HEALTHCHECK_TCP_PORT=6379"}
	if !reflect.DeepEqual(spec.Services[0].Env, wantService) {
		t.Errorf("service env: got %q, want %q", spec.Services[0].Env, wantService)
	}
}

func TestSpecRefusesBadEnv(t *testing.T) {
	tests := map[string]struct {
		job     []Variable
		service []Variable
		want    string
	}{
		"empty key":               {job: []Variable{{Key: "", Value: "x"}}, want: "empty name"},
		"equals in key":           {job: []Variable{{Key: "A=B", Value: "x"}}, want: `variable "A=B"`},
		"NUL in key":              {job: []Variable{{Key: "A\x00B", Value: "x"}}, want: "may not contain"},
		"NUL in value":            {job: []Variable{{Key: "A", Value: "x\x00y"}}, want: "NUL byte"},
		"NUL in file variable":    {job: []Variable{{Key: "F", Value: "x\x00y", File: true}}, want: "NUL byte"},
		"bad service variable":    {service: []Variable{{Key: "A=B", Value: "x"}}, want: `service "redis" variable "A=B"`},
		"bad public job variable": {job: []Variable{{Key: "A", Value: "\x00", Public: true}}, want: "NUL byte"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			job := &Job{ID: 1, ProjectID: 2, Image: ImageSpec{Name: "alpine"}, Variables: tc.job,
				Services: []ImageSpec{{Name: "redis", Variables: tc.service}}}
			_, err := job.Spec(config.Default(), config.Decision{Backend: "socket"})
			if !errors.Is(err, ErrBuild) {
				t.Fatalf("got %v, want a build error", err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %q, want it to contain %q", err, tc.want)
			}
		})
	}
}

func TestSpecImageAndPullPolicies(t *testing.T) {
	cfg := config.Default()
	cfg.Docker.Image = "admin/default:1"
	d := config.Decision{Backend: "socket", PullPolicies: []string{"always"}, DefaultPullPolicies: []string{"if-not-present"}}
	job := &Job{ID: 1, ProjectID: 2, Image: ImageSpec{Entrypoint: []string{""}},
		Services: []ImageSpec{{Name: "redis"}, {Name: "postgres", PullPolicy: []string{"never", "always", "never"}}}}
	spec, err := job.Spec(cfg, d)
	if err != nil {
		t.Fatalf("got %v, want no error", err)
	}
	wantImage := backends.Image{Name: "admin/default:1", Entrypoint: []string{""}, PullPolicies: []string{"always"}}
	if !reflect.DeepEqual(spec.Image, wantImage) {
		t.Errorf("image: got %+v, want %+v", spec.Image, wantImage)
	}
	if got, want := spec.Services[0].PullPolicies, []string{"if-not-present"}; !reflect.DeepEqual(got, want) {
		t.Errorf("service without policy: got %q, want %q", got, want)
	}
	if got, want := spec.Services[1].PullPolicies, []string{"never", "always"}; !reflect.DeepEqual(got, want) {
		t.Errorf("service with policies: got %q, want %q", got, want)
	}
}

func TestSpecWithoutImage(t *testing.T) {
	job := &Job{ID: 1, ProjectID: 2}
	_, err := job.Spec(config.Default(), config.Decision{Backend: "socket"})
	if !errors.Is(err, ErrBuild) || !strings.Contains(err.Error(), "the job has no image") {
		t.Errorf("got %v, want a build error saying the job has no image", err)
	}
}

func TestBuildsAndCacheDirDeriveFromIDs(t *testing.T) {
	cfg := config.Default()
	cfg.BuildsDir, cfg.CacheDir, cfg.RunnerName = "/srv/b", "/srv/c", "r1"
	job := &Job{ID: 55, ProjectID: 66, ProjectPath: "../../etc", Image: ImageSpec{Name: "alpine"},
		Variables: []Variable{{Key: "CI_BUILDS_DIR", Value: "/"}, {Key: "GIT_CLONE_PATH", Value: "../../etc"}}}
	spec, err := job.Spec(cfg, config.Decision{Backend: "socket"})
	if err != nil {
		t.Fatal(err)
	}
	if spec.BuildsDir != "/srv/b/r1/55" || spec.CacheDir != "/srv/c/r1/66" {
		t.Errorf("got %q and %q, want /srv/b/r1/55 and /srv/c/r1/66", spec.BuildsDir, spec.CacheDir)
	}
}

func basicAuth(user, pass string) string {
	return base64.StdEncoding.EncodeToString([]byte(user + ":" + pass))
}

func TestSpecCredentialsPrecedence(t *testing.T) {
	cfg := config.Default()
	cfg.Docker.AuthConfig = `{"auths":{"registry.example.com":{"username":"admin","password":"admin-pw"}}}`
	job := &Job{
		ID: 1, ProjectID: 2, Image: ImageSpec{Name: "registry.example.com/a/b"},
		AuthConfig: `{"auths":{"registry.example.com":{"auth":"` + basicAuth("jobuser", "job:pw") + `"}}}`,
		Credentials: []CredentialDTO{
			{Type: "registry", URL: "registry.example.com", Username: "gitlab-ci-token", Password: "payload-pw"},
			{Type: "registry", URL: "", Username: "nobody", Password: "x"},
			{Type: "other", URL: "registry.example.com", Username: "nobody", Password: "x"},
		},
	}
	spec, err := job.Spec(cfg, config.Decision{Backend: "socket"})
	if err != nil {
		t.Fatalf("got %v, want no error", err)
	}
	want := []backends.Credential{
		{Registry: "registry.example.com", Username: "jobuser", Password: "job:pw"},
		{Registry: "registry.example.com", Username: "gitlab-ci-token", Password: "payload-pw"},
		{Registry: "registry.example.com", Username: "admin", Password: "admin-pw"},
	}
	if !reflect.DeepEqual(spec.Credentials, want) {
		t.Errorf("got %+v, want %+v", spec.Credentials, want)
	}
	cred, ok := spec.CredentialFor("registry.example.com/a/b:1")
	if !ok || cred.Username != "jobuser" {
		t.Errorf("CredentialFor: got %+v, %v, want the job's own login", cred, ok)
	}
}

func TestSpecCredentialsFromVariable(t *testing.T) {
	tests := map[string]struct {
		vars []Variable
		want []backends.Credential
	}{
		"variable": {
			vars: []Variable{{Key: "DOCKER_AUTH_CONFIG", Value: `{"auths":{"r.example.com":{"username":"u","password":"p"}}}`}},
			want: []backends.Credential{{Registry: "r.example.com", Username: "u", Password: "p"}},
		},
		"file variable ignored": {
			vars: []Variable{{Key: "DOCKER_AUTH_CONFIG", Value: "/tmp/auth.json", File: true}},
			want: nil,
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			job := &Job{ID: 1, ProjectID: 2, Image: ImageSpec{Name: "alpine"}, Variables: tc.vars}
			spec, err := job.Spec(config.Default(), config.Decision{Backend: "socket"})
			if err != nil {
				t.Fatalf("got %v, want no error", err)
			}
			if !reflect.DeepEqual(spec.Credentials, tc.want) {
				t.Errorf("got %+v, want %+v", spec.Credentials, tc.want)
			}
		})
	}
}

func TestSpecRefusesBadAuthConfig(t *testing.T) {
	tests := map[string]struct {
		jobAuth   string
		adminAuth string
		wantClass error
		want      string
	}{
		"job: not JSON":         {jobAuth: "user:pass", wantClass: ErrBuild, want: "DOCKER_AUTH_CONFIG"},
		"job: auth not base64":  {jobAuth: `{"auths":{"r":{"auth":"%%%"}}}`, wantClass: ErrBuild, want: "not base64"},
		"job: auth no colon":    {jobAuth: `{"auths":{"r":{"auth":"` + base64.StdEncoding.EncodeToString([]byte("nocolon")) + `"}}}`, wantClass: ErrBuild, want: "user:password"},
		"job: duplicate auths":  {jobAuth: `{"auths":{},"auths":{}}`, wantClass: ErrBuild, want: "duplicate key"},
		"job: wrong type":       {jobAuth: `{"auths":[]}`, wantClass: ErrBuild, want: "DOCKER_AUTH_CONFIG"},
		"admin: invalid config": {adminAuth: `{"auths":`, wantClass: ErrSystem, want: "docker.auth_config"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			cfg := config.Default()
			cfg.Docker.AuthConfig = tc.adminAuth
			job := &Job{ID: 1, ProjectID: 2, Image: ImageSpec{Name: "alpine"}, AuthConfig: tc.jobAuth}
			_, err := job.Spec(cfg, config.Decision{Backend: "socket"})
			if !errors.Is(err, tc.wantClass) {
				t.Fatalf("got %v, want class %v", err, tc.wantClass)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %q, want it to contain %q", err, tc.want)
			}
		})
	}
}

func TestSecrets(t *testing.T) {
	job := &Job{
		Token: "tok-1234",
		Variables: []Variable{
			{Key: "MASKED", Value: "masked-value", Masked: true},
			{Key: "PLAIN", Value: "plain-value"},
			{Key: "CI_JOB_TOKEN", Value: "ci-job-token"},
			{Key: "DOCKER_AUTH_CONFIG", Value: "auth-doc"},
		},
		Credentials: []CredentialDTO{{Password: "registry-pw"}},
		AuthConfig:  "job-auth-doc",
	}
	got := job.Secrets()
	want := []string{"tok-1234", "masked-value", "ci-job-token", "auth-doc", "registry-pw", "job-auth-doc"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestRequest(t *testing.T) {
	job := &Job{
		Backend: "dind",
		Image:   ImageSpec{Name: "alpine", PullPolicy: []string{"always"}},
		Services: []ImageSpec{
			{Name: "redis", PullPolicy: []string{"never"}},
			{Name: "postgres"},
		},
	}
	got := job.Request()
	want := config.Request{Backend: "dind", Image: "alpine", PullPolicies: []string{"always"},
		Services: []string{"redis", "postgres"}, ServicePullPolicies: []string{"never"}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %+v, want %+v", got, want)
	}
}
