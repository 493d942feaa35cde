package integration

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

const protectedDindPolicy = `default_backend = "socket"
allowed_backends = ["socket"]

[[policy.rule]]
name = "dind-on-protected-refs"
projects = ["group/**"]
protected = true
allowed_backends = ["socket", "dind"]
`

func TestPolicyDindOnlyOnProtectedRefs(t *testing.T) {
	e := newEnv(t, options{policyTOML: protectedDindPolicy, extraTOML: dindCapabilityCfg})
	cases := map[string]struct {
		protected bool
		wantFail  string
		wantText  string
	}{
		"unprotected ref is refused": {protected: false, wantFail: "build", wantText: `backend "dind" is not allowed for project group/project-207 (allowed: socket)`},
		"protected ref passes":       {protected: true, wantText: "inner-daemon-ok"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			job := e.job(207)
			job.Protected = tc.protected
			job.ExtraCustomEnv = map[string]string{"BERTH_BACKEND": "dind"}
			job.Script = []string{"docker info >/dev/null && echo inner-daemon-ok"}
			res := e.run(job)
			if res.Failure != tc.wantFail {
				t.Fatalf("failure: got %q, want %q; log:\n%s", res.Failure, tc.wantFail, res.Log)
			}
			if !strings.Contains(res.Log, tc.wantText) {
				t.Errorf("job log lacks %q:\n%s", tc.wantText, res.Log)
			}
			if tc.wantFail != "" {
				if _, ran := res.Stage("build_script"); ran {
					t.Error("build_script ran after the refusal")
				}
			}
		})
	}
}

func TestPolicyExplain(t *testing.T) {
	e := newEnv(t, options{policyTOML: protectedDindPolicy, extraTOML: dindCapabilityCfg})
	resp := filepath.Join(e.root, "response.json")
	cases := map[string]struct {
		payload  string
		wantExit int
		want     []string
	}{
		"protected": {
			payload: `{"id":1,"job_info":{"project_id":7,"project_full_path":"group/app"},"git_info":{"ref":"main","protected":true},"image":{"name":"debian:12"}}`,
			want:    []string{"rule:       dind-on-protected-refs", "decision:   allowed: backend dind"},
		},
		"unprotected": {
			payload: `{"id":1,"job_info":{"project_id":7,"project_full_path":"group/app"},"git_info":{"ref":"topic","protected":false},"image":{"name":"debian:12"}}`, wantExit: 1,
			want: []string{"rule:       none matched", "REFUSED: backend \"dind\" is not allowed"},
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			if err := os.WriteFile(resp, []byte(tc.payload), 0o644); err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command(berthBinary, "--config", e.cfgPath, "policy", "explain", "--job-response", resp, "--backend", "dind")
			out, _ := cmd.CombinedOutput()
			if cmd.ProcessState.ExitCode() != tc.wantExit {
				t.Errorf("exit: got %d, want %d", cmd.ProcessState.ExitCode(), tc.wantExit)
			}
			for _, w := range tc.want {
				if !strings.Contains(string(out), w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
		})
	}
}

func TestPolicyJobMayAskForLessNeverMore(t *testing.T) {
	e := newEnv(t, options{extraTOML: "memory = \"512m\"\n"})
	cases := map[string]struct {
		memory   string
		wantFail string
	}{
		"less is granted": {memory: "256m"},
		"more is refused": {memory: "1g", wantFail: "build"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			job := e.job(208)
			job.ExtraCustomEnv = map[string]string{"BERTH_MEMORY": tc.memory}
			job.Script = []string{"cat /sys/fs/cgroup/memory/memory.limit_in_bytes"}
			res := e.run(job)
			if res.Failure != tc.wantFail {
				t.Fatalf("failure: got %q, want %q; log:\n%s", res.Failure, tc.wantFail, res.Log)
			}
			if tc.wantFail == "" {
				if s, _ := res.Stage("build_script"); !strings.Contains(s.Output, "268435456") {
					t.Errorf("memory limit in the job: output:\n%s", s.Output)
				}
			} else if !strings.Contains(res.Log, "BERTH_MEMORY") || !strings.Contains(res.Log, "ceiling") {
				t.Errorf("refusal does not explain:\n%s", res.Log)
			}
		})
	}
}
