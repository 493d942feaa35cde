package integration

import (
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
	"testing"

	"github.com/berthci/berth/integration/runner"
)

// TestJobLogNamesBerthAndHasSections runs a job with a service on each
// backend and reads its prepare log as GitLab would show it: the first line
// names berth, the backend and the engine, and each phase sits in GitLab's
// collapsible section markers, start before end, with their timestamps.
func TestJobLogNamesBerthAndHasSections(t *testing.T) {
	requireDocker(t)
	for _, tc := range []struct {
		backend  string
		engine   string // in the first line
		sections []string
	}{
		{"socket", `Docker \d+\.\d+[^,]*, API \d+\.\d+, guarded socket`, []string{"prepare_images", "prepare_services", "prepare_wait_services"}},
		{"dind", `Docker \d+\.\d+[^,]*, API \d+\.\d+, sidecar berth-test/dind:latest, TLS, capabilities`, []string{"prepare_images", "prepare_services", "prepare_dind", "prepare_wait_services"}},
		{"podman", `Podman \d+\.\d+[^,]*, rootless as uid 1001, guarded socket`, []string{"prepare_images", "prepare_services", "prepare_wait_services"}},
	} {
		t.Run(tc.backend, func(t *testing.T) {
			e := backendEnv(t, tc.backend)
			job := e.job(410)
			job.Services = []runner.Image{{Name: httpImage, Alias: "web"}}
			job.Script = []string{"echo job-ran"}
			res := e.run(job)
			requireSuccess(t, res)
			prepare, _ := res.Stage("prepare")
			lines := strings.Split(strings.TrimSpace(prepare.Output), "\n")
			first := regexp.MustCompile(`^Using berth \S+ with backend ` + tc.backend + ` \(` + tc.engine + `\)$`)
			if !first.MatchString(lines[0]) {
				t.Errorf("first prepare line: got %q, want it to match %s", lines[0], first)
			}
			for _, name := range tc.sections {
				start := regexp.MustCompile(`\x1b\[0Ksection_start:(\d+):` + name + `\r\x1b\[0K`).FindStringSubmatchIndex(prepare.Output)
				end := regexp.MustCompile(`\x1b\[0Ksection_end:(\d+):` + name + `\r\x1b\[0K`).FindStringSubmatchIndex(prepare.Output)
				if start == nil || end == nil || end[0] < start[0] {
					t.Errorf("section %s: got start at %v and end at %v, want both, start first, in\n%q", name, start, end, prepare.Output)
					continue
				}
				startTS, endTS := prepare.Output[start[2]:start[3]], prepare.Output[end[2]:end[3]]
				if endTS < startTS {
					t.Errorf("section %s: ends at %s before it starts at %s", name, endTS, startTS)
				}
			}
			pull := sectionBody(prepare.Output, "prepare_images")
			if !strings.Contains(pull, debianImage) || !strings.Contains(pull, httpImage) {
				t.Errorf("the images section %q does not name the job's images", pull)
			}
			if wait := sectionBody(prepare.Output, "prepare_services"); !strings.Contains(wait, "Starting service "+httpImage+" as web") {
				t.Errorf("the services section %q does not name the service", wait)
			}
		})
	}
}

// sectionBody is what a job log shows inside the named section.
func sectionBody(log, name string) string {
	_, after, _ := strings.Cut(log, ":"+name+"\r\x1b[0K")
	body, _, _ := strings.Cut(after, "section_end:")
	return body
}

// TestJSONAdminLogCarriesTheJob runs a job with --log-format json, as an
// admin's config_args/prepare_args/cleanup_args would: every line berth
// writes is a JSON object with the job id, project, backend and stage.
func TestJSONAdminLogCarriesTheJob(t *testing.T) {
	e := newEnv(t, options{})
	e.emu.Args = []string{"--log-format", "json"}
	job := e.job(411)
	job.Services = []runner.Image{{Name: httpImage, Alias: "web"}}
	job.Script = []string{"echo job-ran"}
	res := e.run(job)
	requireSuccess(t, res)
	for _, stage := range []string{"prepare", "cleanup"} {
		r, _ := res.Stage(stage)
		n := 0
		for _, line := range strings.Split(strings.TrimSpace(r.Output), "\n") {
			if line == "" {
				continue
			}
			var entry map[string]any
			dec := json.NewDecoder(strings.NewReader(line))
			dec.UseNumber()
			if err := dec.Decode(&entry); err != nil {
				t.Errorf("%s: line %q is not JSON: %v", stage, line, err)
				continue
			}
			n++
			want := map[string]string{
				"job_id":  fmt.Sprint(job.ID),
				"project": job.ProjectPath,
				"backend": "socket",
				"stage":   stage,
			}
			for k, v := range want {
				if got := fmt.Sprint(entry[k]); got != v {
					t.Errorf("%s: field %s: got %q, want %q in %s", stage, k, got, v, line)
				}
			}
		}
		if stage == "prepare" && n < 3 {
			t.Errorf("prepare wrote %d JSON lines, want its messages: %q", n, r.Output)
		}
	}
	prepare, _ := res.Stage("prepare")
	if !strings.Contains(prepare.Output, `"section":"prepare_images"`) || strings.Contains(prepare.Output, "section_start:") {
		t.Errorf("the JSON log should carry sections as fields, not markers: %q", prepare.Output)
	}
}
