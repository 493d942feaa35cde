package config

import (
	"errors"
	"strings"
	"testing"
)

const rulesTOML = `
[policy]
default_backend = "socket"
allowed_backends = ["socket"]

[[policy.rule]]
name = "platform-protected"
projects = ["platform/**"]
protected = true
allowed_backends = ["socket", "dind"]
default_backend = "dind"
max_memory = "2g"
dind_privileged = false
layer_cache = "project"

[[policy.rule]]
name = "release-refs"
namespaces = ["apps"]
refs = ["release/*"]
allowed_images = ["registry.example.com/**"]
socket_guard = false

[docker]
memory = "1g"
cpus = "2"
`

func TestPolicyRules(t *testing.T) {
	cfg, err := Parse("rules.toml", []byte(rulesTOML))
	if err != nil {
		t.Fatal(err)
	}
	cases := map[string]struct {
		subj        Subject
		req         Request
		wantRule    string
		wantBackend string
		wantErr     string
	}{
		"protected platform ref gets dind by default": {
			subj: Subject{ProjectPath: "platform/api", Ref: "main", Protected: true}, req: Request{Image: "debian"},
			wantRule: "platform-protected", wantBackend: "dind",
		},
		"unprotected platform ref gets the base policy": {
			subj: Subject{ProjectPath: "platform/api", Ref: "topic", Protected: false}, req: Request{Image: "debian", Backend: "dind"},
			wantErr: `backend "dind" is not allowed for project platform/api (allowed: socket)`,
		},
		"namespace and ref select": {
			subj: Subject{ProjectPath: "apps/web", Ref: "release/1.0"}, req: Request{Image: "registry.example.com/apps/web:1"},
			wantRule: "release-refs", wantBackend: "socket",
		},
		"the rule's image list applies": {
			subj: Subject{ProjectPath: "apps/web", Ref: "release/1.0"}, req: Request{Image: "docker.io/library/debian"},
			wantErr: "policy rule release-refs",
		},
		"another ref of the namespace gets the base": {
			subj: Subject{ProjectPath: "apps/web", Ref: "main"}, req: Request{Image: "docker.io/library/debian"},
			wantBackend: "socket",
		},
		"less memory than the rule's ceiling": {
			subj: Subject{ProjectPath: "platform/api", Protected: true}, req: Request{Image: "debian", Memory: "1536m"},
			wantRule: "platform-protected", wantBackend: "dind",
		},
		"more memory than the rule's ceiling": {
			subj: Subject{ProjectPath: "platform/api", Protected: true}, req: Request{Image: "debian", Memory: "3g"},
			wantErr: "ceiling",
		},
		"more memory than docker.memory without a rule": {
			subj: Subject{ProjectPath: "other/x"}, req: Request{Image: "debian", Memory: "2g"},
			wantErr: "ceiling",
		},
		"more CPUs than docker.cpus": {
			subj: Subject{ProjectPath: "other/x"}, req: Request{Image: "debian", CPUs: "3"},
			wantErr: "BERTH_CPUS",
		},
		"garbage memory": {
			subj: Subject{ProjectPath: "other/x"}, req: Request{Image: "debian", Memory: "lots"},
			wantErr: "not a size",
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			d, err := cfg.Decide(tc.subj, tc.req)
			if tc.wantErr != "" {
				var refusal *RefusalError
				if err == nil || !errors.As(err, &refusal) || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("got %v, want a refusal containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("got %v, want no error", err)
			}
			if d.Rule != tc.wantRule || d.Backend != tc.wantBackend {
				t.Errorf("got rule %q backend %q, want %q %q", d.Rule, d.Backend, tc.wantRule, tc.wantBackend)
			}
		})
	}
	d, err := cfg.Decide(Subject{ProjectPath: "platform/api", Protected: true}, Request{Image: "debian", Memory: "512m"})
	if err != nil || d.Memory != 512<<20 || d.DindPrivileged == nil || *d.DindPrivileged || d.LayerCache != LayerCacheProject {
		t.Errorf("platform decision: got %+v (%v)", d, err)
	}
	d, _ = cfg.Decide(Subject{ProjectPath: "apps/web", Ref: "release/2"}, Request{Image: "registry.example.com/a"})
	if d.SocketGuard == nil || *d.SocketGuard {
		t.Errorf("release decision: got socket guard %v, want false", d.SocketGuard)
	}
}

func TestPolicyRuleValidation(t *testing.T) {
	cases := map[string]struct {
		toml string
		want string
	}{
		"empty allowed backends":   {"[[policy.rule]]\nallowed_backends = []\n", "at least one backend"},
		"default not allowed":      {"[[policy.rule]]\nallowed_backends = [\"dind\"]\n", `default backend "socket" is not in`},
		"bad glob":                 {"[[policy.rule]]\nprojects = [\"[\"]\n", "invalid glob"},
		"bad ceiling":              {"[[policy.rule]]\nmax_memory = \"much\"\n", "max_memory"},
		"bad cpus":                 {"[[policy.rule]]\nmax_cpus = \"-1\"\n", "max_cpus"},
		"bad layer cache":          {"[[policy.rule]]\nlayer_cache = \"maybe\"\n", "layer_cache"},
		"unknown key in a rule":    {"[[policy.rule]]\nproject = [\"a\"]\n", `unknown key "policy.rule.project"`},
		"named rule in the errors": {"[[policy.rule]]\nname = \"x\"\nservices_limit = -1\n", `policy.rule "x"`},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := Parse("rules.toml", []byte(tc.toml))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

func TestAllBackendsIncludesTheRules(t *testing.T) {
	cfg := Default()
	cfg.Policy.AllowedBackends = []string{"socket"}
	cfg.Policy.Rules = []Rule{{Name: "infra", AllowedBackends: []string{"dind", "socket"}}, {Name: "pod", AllowedBackends: []string{"podman"}}}
	if got := strings.Join(cfg.AllBackends(), ","); got != "dind,podman,socket" {
		t.Errorf("got %s, want dind,podman,socket", got)
	}
}
