package config

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

// policyConfig is a config whose policy exercises every rule of Decide.
func policyConfig(t *testing.T) *Config {
	t.Helper()
	cfg := Default()
	cfg.Policy = Policy{
		DefaultBackend:      "socket",
		AllowedBackends:     []string{"socket", "podman"},
		AllowedImages:       []string{"registry.example.com/**", "docker.io/library/*"},
		AllowedServices:     []string{"docker.io/library/postgres:*", "redis:*"},
		AllowedPullPolicies: []string{PullAlways, PullIfNotPresent},
		ServicesLimit:       2,
	}
	cfg.Docker.PullPolicy = []string{PullIfNotPresent}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	return cfg
}

var subject = Subject{ProjectPath: "group/app", ProjectID: 7}

func TestDecideGrants(t *testing.T) {
	tests := map[string]struct {
		req  Request
		want Decision
	}{
		"default backend and admin pull policy": {
			req:  Request{Image: "alpine:3"},
			want: Decision{Backend: "socket", PullPolicies: []string{PullIfNotPresent}, DefaultPullPolicies: []string{PullIfNotPresent}},
		},
		"allowed backend": {
			req:  Request{Backend: "podman", Image: "alpine:3"},
			want: Decision{Backend: "podman", PullPolicies: []string{PullIfNotPresent}, DefaultPullPolicies: []string{PullIfNotPresent}},
		},
		"image as written matches normalized glob": {
			req:  Request{Image: "busybox"},
			want: Decision{Backend: "socket", PullPolicies: []string{PullIfNotPresent}, DefaultPullPolicies: []string{PullIfNotPresent}},
		},
		"image normalized form matches": {
			req:  Request{Image: "docker.io/library/busybox:1.36"},
			want: Decision{Backend: "socket", PullPolicies: []string{PullIfNotPresent}, DefaultPullPolicies: []string{PullIfNotPresent}},
		},
		"private registry image": {
			req:  Request{Image: "registry.example.com/group/tool:1"},
			want: Decision{Backend: "socket", PullPolicies: []string{PullIfNotPresent}, DefaultPullPolicies: []string{PullIfNotPresent}},
		},
		"service matches as written": {
			req:  Request{Image: "alpine:3", Services: []string{"redis:7"}},
			want: Decision{Backend: "socket", PullPolicies: []string{PullIfNotPresent}, DefaultPullPolicies: []string{PullIfNotPresent}},
		},
		"service matches normalized": {
			req:  Request{Image: "alpine:3", Services: []string{"postgres:16", "postgres"}},
			want: Decision{Backend: "socket", PullPolicies: []string{PullIfNotPresent}, DefaultPullPolicies: []string{PullIfNotPresent}},
		},
		"job pull policies deduplicated in order": {
			req:  Request{Image: "alpine:3", PullPolicies: []string{PullAlways, PullIfNotPresent, PullAlways}},
			want: Decision{Backend: "socket", PullPolicies: []string{PullAlways, PullIfNotPresent}, DefaultPullPolicies: []string{PullIfNotPresent}},
		},
		"image with digest": {
			req:  Request{Image: "busybox@sha256:" + strings.Repeat("a", 64)},
			want: Decision{Backend: "socket", PullPolicies: []string{PullIfNotPresent}, DefaultPullPolicies: []string{PullIfNotPresent}},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got, err := policyConfig(t).Decide(subject, tc.req)
			if err != nil {
				t.Fatalf("got %v, want no error", err)
			}
			if !reflect.DeepEqual(grants(got), grants(tc.want)) {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestDecideRefuses(t *testing.T) {
	tests := map[string]struct {
		req      Request
		wantWhat string
		// want are substrings of the message a user sees.
		want []string
	}{
		"disallowed backend": {
			req:      Request{Backend: "dind", Image: "alpine:3"},
			wantWhat: "backend",
			want:     []string{`backend "dind" is not allowed for project group/app`, "(allowed: socket, podman)", "ask your runner admin"},
		},
		"disallowed image": {
			req:      Request{Image: "quay.io/evil/miner:1"},
			wantWhat: "image",
			want:     []string{`image "quay.io/evil/miner:1"`, "registry.example.com/**", "docker.io/library/*"},
		},
		"docker hub user image": {
			req:      Request{Image: "someone/alpine"},
			wantWhat: "image",
			want:     []string{`image "someone/alpine" is not allowed`},
		},
		"image like a flag": {
			req:      Request{Image: "--privileged"},
			wantWhat: "image",
			want:     []string{`"--privileged" refused`, "invalid image name"},
		},
		"image with space": {
			req:      Request{Image: "alpine latest"},
			wantWhat: "image",
			want:     []string{"invalid image name"},
		},
		"uppercase image": {
			req:      Request{Image: "Alpine:3"},
			wantWhat: "image",
			want:     []string{"invalid image name"},
		},
		"very long image": {
			req:      Request{Image: "registry.example.com/" + strings.Repeat("a", 600)},
			wantWhat: "image",
			want:     []string{"limit is 512"},
		},
		"bad digest": {
			req:      Request{Image: "busybox@sha256:abc"},
			wantWhat: "image",
			want:     []string{"invalid image name"},
		},
		"unknown digest algorithm": {
			req:      Request{Image: "busybox@md5:" + strings.Repeat("a", 32)},
			wantWhat: "image",
			want:     []string{"invalid image name"},
		},
		"empty image": {
			req:      Request{},
			wantWhat: "image",
			want:     []string{"empty image name"},
		},
		"too many services": {
			req:      Request{Image: "alpine:3", Services: []string{"redis:7", "redis:6", "redis:5"}},
			wantWhat: "services",
			want:     []string{"3 services", "services_limit is 2"},
		},
		"disallowed service": {
			req:      Request{Image: "alpine:3", Services: []string{"mysql:8"}},
			wantWhat: "service",
			want:     []string{`service "mysql:8" is not allowed`, "docker.io/library/postgres:*"},
		},
		"malformed service": {
			req:      Request{Image: "alpine:3", Services: []string{"-v /:/host"}},
			wantWhat: "service",
			want:     []string{"invalid image name"},
		},
		"pull policy not allowed": {
			req:      Request{Image: "alpine:3", PullPolicies: []string{PullNever}},
			wantWhat: "pull policy",
			want:     []string{`pull policy "never" is not allowed`, "always, if-not-present"},
		},
		"unknown pull policy": {
			req:      Request{Image: "alpine:3", PullPolicies: []string{"sometimes"}},
			wantWhat: "pull policy",
			want:     []string{`"sometimes"`, "unknown pull policy"},
		},
		"service pull policy not allowed": {
			req:      Request{Image: "alpine:3", Services: []string{"redis:7"}, ServicePullPolicies: []string{PullNever}},
			wantWhat: "pull policy",
			want:     []string{`pull policy "never" is not allowed`},
		},
		"unknown service pull policy": {
			req:      Request{Image: "alpine:3", Services: []string{"redis:7"}, ServicePullPolicies: []string{"Always"}},
			wantWhat: "pull policy",
			want:     []string{"unknown pull policy"},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			_, err := policyConfig(t).Decide(subject, tc.req)
			var refusal *RefusalError
			if !errors.As(err, &refusal) {
				t.Fatalf("got %v, want a *RefusalError", err)
			}
			if refusal.What != tc.wantWhat {
				t.Errorf("got What %q, want %q", refusal.What, tc.wantWhat)
			}
			if refusal.Project != "group/app" {
				t.Errorf("got Project %q, want %q", refusal.Project, "group/app")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("got %q, want it to contain %q", err, w)
				}
			}
		})
	}
}

func TestDecideEmptyAllowListsAllowEveryImage(t *testing.T) {
	cfg := Default()
	got, err := cfg.Decide(subject, Request{Image: "quay.io/anyone/anything:1", Services: []string{"ghcr.io/x/y"}, PullPolicies: []string{PullNever}})
	if err != nil {
		t.Fatalf("got %v, want no error", err)
	}
	want := Decision{Backend: "socket", PullPolicies: []string{PullNever}, DefaultPullPolicies: []string{PullAlways}}
	if !reflect.DeepEqual(grants(got), grants(want)) {
		t.Errorf("got %+v, want %+v", got, want)
	}
}

func TestDecideNamesProjectByIDWithoutPath(t *testing.T) {
	_, err := Default().Decide(Subject{ProjectID: 42}, Request{Backend: "dind", Image: "alpine"})
	if err == nil || !strings.Contains(err.Error(), "project id 42") {
		t.Errorf("got %v, want an error naming project id 42", err)
	}
}

func TestDecideServicesLimitZeroRefusesAnyService(t *testing.T) {
	cfg := Default()
	cfg.Policy.ServicesLimit = 0
	_, err := cfg.Decide(subject, Request{Image: "alpine", Services: []string{"redis"}})
	var refusal *RefusalError
	if !errors.As(err, &refusal) || refusal.What != "services" {
		t.Errorf("got %v, want a services refusal", err)
	}
}

// An admin default pull policy outside the admin's own allow list is the
// admin's mistake, caught when the config is validated, not a job refusal.
func TestValidateAdminPullPolicyOutsideAllowList(t *testing.T) {
	cfg := Default()
	cfg.Policy.AllowedPullPolicies = []string{PullIfNotPresent}
	cfg.Docker.PullPolicy = []string{PullAlways}
	err := cfg.Validate()
	if err == nil || !strings.Contains(err.Error(), "docker.pull_policy") {
		t.Errorf("got %v, want an error naming docker.pull_policy", err)
	}
}

func TestNormalizeImage(t *testing.T) {
	digest := "sha256:" + strings.Repeat("0", 64)
	tests := map[string]struct {
		in      string
		want    string
		wantErr bool
	}{
		"official image":       {in: "busybox", want: "docker.io/library/busybox:latest"},
		"official with tag":    {in: "postgres:16", want: "docker.io/library/postgres:16"},
		"hub user image":       {in: "someone/tool", want: "docker.io/someone/tool:latest"},
		"private registry":     {in: "registry.example.com:5000/a/b:1", want: "registry.example.com:5000/a/b:1"},
		"digest":               {in: "busybox@" + digest, want: "docker.io/library/busybox@" + digest},
		"already normalized":   {in: "docker.io/library/busybox:latest", want: "docker.io/library/busybox:latest"},
		"empty":                {in: "", wantErr: true},
		"flag":                 {in: "--privileged", wantErr: true},
		"uppercase":            {in: "BusyBox", wantErr: true},
		"space":                {in: "busy box", wantErr: true},
		"too long":             {in: strings.Repeat("a", 513), wantErr: true},
		"short digest":         {in: "busybox@sha256:1234", wantErr: true},
		"shell metacharacters": {in: "busybox;rm -rf /", wantErr: true},
		"newline":              {in: "busybox\nalpine", wantErr: true},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got, err := NormalizeImage(tc.in)
			if tc.wantErr {
				if err == nil {
					t.Fatalf("got %q, want an error", got)
				}
				return
			}
			if err != nil {
				t.Fatalf("got %v, want no error", err)
			}
			if got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}

// grants is the part of a decision these tests are about.
func grants(d Decision) Decision {
	return Decision{Backend: d.Backend, PullPolicies: d.PullPolicies, DefaultPullPolicies: d.DefaultPullPolicies}
}
