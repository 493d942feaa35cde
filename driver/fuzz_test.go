package driver

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/berthci/berth/config"
)

var servicesSeeds = []string{
	`[{"name":"postgres:16","alias":"db"}]`,
	`[{"name":"docker:dind","alias":"docker","entrypoint":["sh"],"command":["-c","id"],"variables":{"A":"b"}}]`,
	`[{"name":"a","alias":"x","Alias":"y"}]`,
	`[{"name":"a","alias":"db","aliaſ":"docker"}]`,
	`[null]`, `null`, `{}`, `[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]`,
	`[{"name":"--privileged"}]`, `[{"name":"a","variables":{"":"x","A=B":"c","N":"\u0000"}}]`,
}

// FuzzServicesEnv feeds CUSTOM_ENV_CI_JOB_SERVICES through parsing and the
// job spec: whatever a job writes there, berth must refuse it cleanly or
// build a valid spec, never panic.
func FuzzServicesEnv(f *testing.F) {
	for _, s := range servicesSeeds {
		f.Add(s)
	}
	cfg := config.Default()
	f.Fuzz(func(t *testing.T, raw string) {
		services, err := parseServicesEnv(raw)
		if err != nil {
			return
		}
		job := &Job{ID: 1, ProjectID: 1, ProjectPath: "g/p", Image: ImageSpec{Name: "busybox"}, Services: services}
		d, err := cfg.Decide(job.Subject(), job.Request())
		if err != nil {
			return
		}
		spec, err := job.Spec(cfg, d)
		if err != nil {
			return
		}
		for _, s := range spec.Services {
			for _, a := range s.Aliases {
				if a == "" || len(a) > 253 {
					t.Fatalf("service %q got alias %q", s.Name, a)
				}
			}
		}
	})
}

// FuzzJobResponse feeds JOB_RESPONSE_FILE through LoadJob, policy and the
// spec.
func FuzzJobResponse(f *testing.F) {
	f.Add([]byte(`{"id":1,"token":"t","job_info":{"project_id":2,"project_full_path":"g/p"},"git_info":{"ref":"main","protected":true},"image":{"name":"debian:12","entrypoint":[""]},"services":[{"name":"postgres","alias":"db,pg"}],"variables":[{"key":"A","value":"b","public":true}],"credentials":[{"type":"registry","url":"r.example.com","username":"u","password":"p"}]}`))
	f.Add([]byte(`{"id":-1}`))
	f.Add([]byte(`{"id":1,"ID":2}`))
	f.Add([]byte(`{"id":1,"job_info":{"project_id":2},"variables":[{"key":"DOCKER_AUTH_CONFIG","value":"{\"auths\":{\"x\":{\"auth\":\"!!\"}}}"}]}`))
	cfg := config.Default()
	dir := f.TempDir()
	path := filepath.Join(dir, "response.json")
	f.Fuzz(func(t *testing.T, data []byte) {
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		job, err := LoadJob(func(k string) (string, bool) {
			if k == "JOB_RESPONSE_FILE" {
				return path, true
			}
			return "", false
		})
		if err != nil {
			return
		}
		if job.ID <= 0 || job.ProjectID <= 0 {
			t.Fatalf("LoadJob accepted ids %d/%d", job.ID, job.ProjectID)
		}
		d, err := cfg.Decide(job.Subject(), job.Request())
		if err != nil {
			return
		}
		_, _ = job.Spec(cfg, d)
	})
}
