package localjob

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
)

// testContext is a push pipeline on branch main.
func testContext(overrides ...Variable) Context {
	return Context{
		Predefined: []Variable{
			{Key: "CI_PIPELINE_SOURCE", Value: "push"},
			{Key: "CI_COMMIT_BRANCH", Value: "main"},
			{Key: "CI_COMMIT_REF_NAME", Value: "main"},
			{Key: "CI_DEFAULT_BRANCH", Value: "main"},
		},
		Overrides: overrides,
		Files:     []string{"README.md", "go.mod", "cmd/app/main.go"},
		ReadFile: func(rel string) ([]byte, error) {
			if rel == "go.mod" {
				return []byte("module example\n"), nil
			}
			return nil, errors.New("no such file")
		},
	}
}

func resolve(t *testing.T, yaml, job string, overrides ...Variable) *Job {
	t.Helper()
	p, err := Parse(".gitlab-ci.yml", []byte(yaml))
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	j, err := p.Resolve(job, testContext(overrides...))
	if err != nil {
		t.Fatalf("resolve %s: %v", job, err)
	}
	return j
}

func varMap(vars []Variable) map[string]string {
	m := map[string]string{}
	for _, v := range vars {
		m[v.Key] = v.Value
	}
	return m
}

func noteFor(j *Job, key string) (Note, bool) {
	for _, n := range j.Notes {
		if n.Key == key {
			return n, true
		}
	}
	return Note{}, false
}

func TestExtendsDeepMergesMappingsAndReplacesLists(t *testing.T) {
	j := resolve(t, `
.base:
  image: base-image
  variables: {A: base-a, B: base-b}
  script: [echo base]
  cache: {key: k, paths: [one/]}
.middle:
  extends: .base
  variables: {B: middle-b, C: middle-c}
  script: [echo middle]
.other:
  variables: {C: other-c}
  after_script: [echo other]
job:
  extends: [.middle, .other]
  variables: {D: job-d}
  cache: {paths: [two/]}
`, "job")
	if got, want := varMap(j.Variables), map[string]string{"A": "base-a", "B": "middle-b", "C": "other-c", "D": "job-d"}; !reflect.DeepEqual(got, want) {
		t.Errorf("got variables %v, want %v", got, want)
	}
	if got, want := j.Script, []string{"echo middle"}; !reflect.DeepEqual(got, want) {
		t.Errorf("got script %v, want %v", got, want)
	}
	if got, want := j.AfterScript, []string{"echo other"}; !reflect.DeepEqual(got, want) {
		t.Errorf("got after_script %v, want %v", got, want)
	}
	if j.Image.Name != "base-image" {
		t.Errorf("got image %q, want base-image", j.Image.Name)
	}
	// cache: is a mapping, so it merges: the key stays, paths is replaced.
	if len(j.Caches) != 1 || j.Caches[0].Key != "k" || !reflect.DeepEqual(j.Caches[0].Paths, []string{"two/"}) {
		t.Errorf("got caches %+v, want key k with paths [two/]", j.Caches)
	}
}

func TestDefaultAndInherit(t *testing.T) {
	const yaml = `
variables: {G1: one, G2: two}
image: global-image
default:
  image: default-image
  before_script: [echo default-before]
  after_script: [echo default-after]
  services: [svc:1]
own:
  image: own-image
  script: [echo own]
plain:
  script: [echo plain]
no-default:
  inherit: {default: false, variables: [G2]}
  script: [echo none]
some-default:
  inherit: {default: [before_script]}
  script: [echo some]
`
	own := resolve(t, yaml, "own")
	if own.Image.Name != "own-image" || !reflect.DeepEqual(own.BeforeScript, []string{"echo default-before"}) {
		t.Errorf("own: got image %q, before_script %v", own.Image.Name, own.BeforeScript)
	}
	plain := resolve(t, yaml, "plain")
	if plain.Image.Name != "default-image" || len(plain.Services) != 1 || plain.Services[0].Name != "svc:1" {
		t.Errorf("plain: got image %q, services %+v; want default: over the global image", plain.Image.Name, plain.Services)
	}
	if got := varMap(plain.Variables); got["G1"] != "one" || got["G2"] != "two" {
		t.Errorf("plain: got variables %v, want both globals", got)
	}
	none := resolve(t, yaml, "no-default")
	if none.Image.Name != "" || none.BeforeScript != nil || none.AfterScript != nil || none.Services != nil {
		t.Errorf("no-default: got %+v, want nothing from default:", none)
	}
	if got := varMap(none.Variables); got["G1"] != "" || got["G2"] != "two" {
		t.Errorf("no-default: got variables %v, want only G2", got)
	}
	some := resolve(t, yaml, "some-default")
	if some.Image.Name != "" || !reflect.DeepEqual(some.BeforeScript, []string{"echo default-before"}) || some.AfterScript != nil {
		t.Errorf("some-default: got image %q, before %v, after %v; want before_script only", some.Image.Name, some.BeforeScript, some.AfterScript)
	}
}

func TestAnchorsMergeKeysAndReferences(t *testing.T) {
	j := resolve(t, `
.vars: &vars
  A: anchored
  B: anchored
.setup:
  script:
    - echo setup-1
    - echo setup-2
job:
  variables:
    <<: *vars
    B: own
  script:
    - !reference [.setup, script]
    - echo own
  after_script: !reference [.setup, script]
`, "job")
	if got := varMap(j.Variables); got["A"] != "anchored" || got["B"] != "own" {
		t.Errorf("got variables %v, want A from the anchor and B overridden", got)
	}
	if want := []string{"echo setup-1", "echo setup-2", "echo own"}; !reflect.DeepEqual(j.Script, want) {
		t.Errorf("got script %v, want %v", j.Script, want)
	}
	if want := []string{"echo setup-1", "echo setup-2"}; !reflect.DeepEqual(j.AfterScript, want) {
		t.Errorf("got after_script %v, want %v", j.AfterScript, want)
	}
}

func TestImageServicesAndVariableForms(t *testing.T) {
	j := resolve(t, `
variables:
  REGISTRY: registry.example.com
  RAW: {value: "$REGISTRY/raw", expand: false, description: "kept as written"}
job:
  image:
    name: $REGISTRY/app:1
    entrypoint: [""]
    pull_policy: [if-not-present]
  services:
    - postgres:16
    - name: $REGISTRY/cache:7
      alias: cache,kv
      command: ["--port", "6380"]
      variables: {MODE: $REGISTRY}
  script: [echo hi]
`, "job")
	if j.Image.Name != "registry.example.com/app:1" || !reflect.DeepEqual(j.Image.Entrypoint, []string{""}) || !reflect.DeepEqual(j.Image.PullPolicy, []string{"if-not-present"}) {
		t.Errorf("got image %+v", j.Image)
	}
	if len(j.Services) != 2 || j.Services[0].Name != "postgres:16" || j.Services[1].Name != "registry.example.com/cache:7" ||
		j.Services[1].Alias != "cache,kv" || !reflect.DeepEqual(j.Services[1].Command, []string{"--port", "6380"}) ||
		varMap(j.Services[1].Variables)["MODE"] != "registry.example.com" {
		t.Errorf("got services %+v", j.Services)
	}
	expanded := varMap(ExpandVariables(j.Variables))
	if expanded["RAW"] != "$REGISTRY/raw" {
		t.Errorf("got RAW %q, want it unexpanded (expand: false)", expanded["RAW"])
	}
}

func TestCommandLineVariablesWin(t *testing.T) {
	j := resolve(t, `
variables: {A: global, BERTH_BACKEND: socket}
job:
  variables: {A: job}
  script: [echo]
`, "job", Variable{Key: "A", Value: "cli"}, Variable{Key: "BERTH_BACKEND", Value: "podman"})
	if got := varMap(j.Variables); got["A"] != "cli" || got["BERTH_BACKEND"] != "podman" {
		t.Errorf("got %v, want the command line's values", got)
	}
}

func TestCacheAndArtifacts(t *testing.T) {
	j := resolve(t, `
job:
  variables: {KEY: deps}
  cache:
    - key: $KEY-$CI_COMMIT_REF_NAME
      paths: [vendor/]
      policy: pull
      fallback_keys: [deps-main]
    - key: {files: [go.mod], prefix: go}
      paths: [.cache/go]
      when: always
  artifacts:
    paths: [dist/, "*.log"]
    exclude: [dist/**/*.tmp]
    when: always
    expire_in: 1 week
    reports: {junit: report.xml}
  script: [echo]
`, "job")
	if len(j.Caches) != 2 {
		t.Fatalf("got %d caches, want 2", len(j.Caches))
	}
	c := j.Caches[0]
	if c.Key != "deps-main" || c.Policy != "pull" || !reflect.DeepEqual(c.FallbackKeys, []string{"deps-main"}) || c.restores() != true || c.archivesOn(true) {
		t.Errorf("got cache %+v", c)
	}
	if k := j.Caches[1].Key; !strings.HasPrefix(k, "go-") || len(k) != len("go-")+40 {
		t.Errorf("got cache key %q, want go-<hash of go.mod>", k)
	}
	if !j.Caches[1].archivesOn(false) {
		t.Errorf("a cache with when: always must be saved after a failure")
	}
	a := j.Artifacts
	if want := []string{"dist/", "*.log", "report.xml"}; !reflect.DeepEqual(a.Paths, want) {
		t.Errorf("got artifact paths %v, want %v (reports kept)", a.Paths, want)
	}
	if !a.uploadsOn(false) || !a.uploadsOn(true) {
		t.Errorf("artifacts with when: always upload either way")
	}
	for _, key := range []string{"artifacts:expire_in", "artifacts:reports", "cache:key:files"} {
		if _, ok := noteFor(j, key); !ok {
			t.Errorf("no note for %s; notes: %v", key, j.Notes)
		}
	}
}

func TestUnsupportedKeysAreNamedWithWhatExecDid(t *testing.T) {
	j := resolve(t, `
include: [{local: other.yml}]
build:
  stage: build
  script: [echo build]
job:
  needs: [build]
  retry: 2
  tags: [docker]
  only: [main]
  when: manual
  parallel: 3
  timeout: 1h 30m
  allow_failure: true
  environment: {name: review/$CI_COMMIT_REF_NAME, url: https://example.com}
  secrets: {DB_PASSWORD: {vault: db/password}}
  script: [echo]
`, "job")
	wants := map[string]string{
		"include":       "included configuration was not loaded",
		"needs":         "does not run the needed jobs",
		"retry":         "ran the job once",
		"tags":          "on this machine",
		"only":          "not evaluated",
		"when":          "without waiting for a manual action",
		"parallel":      "CI_NODE_TOTAL=3",
		"allow_failure": "own result",
		"environment":   "CI_ENVIRONMENT_NAME=review/main",
		"secrets":       "DB_PASSWORD not set",
	}
	for key, want := range wants {
		n, ok := noteFor(j, key)
		if !ok || !strings.Contains(n.Text, want) || n.Line == 0 {
			t.Errorf("note for %s: got %+v (found %v), want text with %q and a line", key, n, ok, want)
		}
	}
	if j.Timeout != 90*time.Minute || j.NodeTotal != 3 || !reflect.DeepEqual(j.Dependencies, []string{"build"}) {
		t.Errorf("got timeout %s, nodes %d, dependencies %v", j.Timeout, j.NodeTotal, j.Dependencies)
	}
}

func TestDependenciesDefaultToEarlierStages(t *testing.T) {
	const yaml = `
stages: [build, test, deploy]
compile: {stage: build, script: [echo]}
.hidden: {stage: build, script: [echo]}
lint: {stage: test, script: [echo]}
ship: {stage: deploy, script: [echo]}
picky: {stage: deploy, dependencies: [], script: [echo]}
`
	if got, want := resolve(t, yaml, "ship").Dependencies, []string{"compile", "lint"}; !reflect.DeepEqual(got, want) {
		t.Errorf("ship: got dependencies %v, want %v", got, want)
	}
	if got := resolve(t, yaml, "picky").Dependencies; len(got) != 0 {
		t.Errorf("picky: got dependencies %v, want none", got)
	}
}

func TestRules(t *testing.T) {
	const yaml = `
workflow:
  rules:
    - if: $CI_PIPELINE_SOURCE == "push"
      variables: {FROM_WORKFLOW: "yes"}
on-main:
  rules:
    - if: $CI_COMMIT_BRANCH == $CI_DEFAULT_BRANCH && $DEPLOY != "off"
      variables: {TARGET: production}
    - when: never
  script: [echo]
on-tags:
  rules:
    - if: $CI_COMMIT_TAG
  script: [echo]
with-file:
  rules:
    - exists: ["**/*.go"]
      when: manual
  script: [echo]
changed:
  rules:
    - changes: [src/**]
  script: [echo]
`
	j := resolve(t, yaml, "on-main")
	if got := varMap(j.Variables); got["TARGET"] != "production" || got["FROM_WORKFLOW"] != "yes" {
		t.Errorf("on-main: got %v, want the rule's and workflow's variables", got)
	}
	if _, ok := noteFor(j, "rules"); ok {
		t.Errorf("on-main: a matching rule needs no note: %v", j.Notes)
	}
	off := resolve(t, yaml, "on-main", Variable{Key: "DEPLOY", Value: "off"})
	if n, ok := noteFor(off, "rules"); !ok || !strings.Contains(n.Text, "when: never") || !strings.Contains(n.Text, "because you named it") {
		t.Errorf("on-main with DEPLOY=off: got note %+v, want when: never reported", n)
	}
	if n, ok := noteFor(resolve(t, yaml, "on-tags"), "rules"); !ok || !strings.Contains(n.Text, "no rule matches") || !strings.Contains(n.Text, "CI_PIPELINE_SOURCE=push") {
		t.Errorf("on-tags: got note %+v, want no rule matches named with the pipeline", n)
	}
	if n, ok := noteFor(resolve(t, yaml, "with-file"), "rules"); !ok || !strings.Contains(n.Text, "manual") {
		t.Errorf("with-file: got note %+v, want the manual rule named", n)
	}
	if n, ok := noteFor(resolve(t, yaml, "changed"), "rules:changes"); !ok || !strings.Contains(n.Text, "counted it as matching") {
		t.Errorf("changed: got note %+v, want changes: reported as not evaluated", n)
	}
}

func TestResolveErrors(t *testing.T) {
	tests := map[string]struct {
		yaml, job string
		want      []string
	}{
		"unknown job lists runnable ones": {
			yaml: "a: {script: [x]}\n.hidden: {script: [x]}\ntrig: {trigger: other/project}\nb: {script: [x]}\n",
			job:  "c", want: []string{`no job "c"`, "runnable jobs: a, b"},
		},
		"unknown job mentions include": {
			yaml: "include: other.yml\na: {script: [x]}\n", job: "c", want: []string{"line 1: include: is not loaded"},
		},
		"hidden job": {
			yaml: ".t: {script: [x]}\na: {script: [x]}\n", job: ".t", want: []string{"line 1", "hidden", "runnable jobs: a"},
		},
		"extends cycle": {
			yaml: "a: {extends: .b, script: [x]}\n.b: {extends: .c}\n.c: {extends: .b}\n", job: "a",
			want: []string{"circular dependency: a -> .b -> .c -> .b"},
		},
		"extends missing": {
			yaml: "a: {extends: .nope, script: [x]}\n", job: "a", want: []string{`"a" extends ".nope", which does not exist`},
		},
		"unknown job key": {
			yaml: "a:\n  script: [x]\n  scirpt: [y]\n", job: "a", want: []string{"line 3", `unknown key "scirpt"`},
		},
		"default variables": {
			yaml: "default:\n  variables: {A: b}\na: {script: [x]}\n", job: "a", want: []string{"line 2", `default: unknown key "variables"`},
		},
		"missing script": {
			yaml: "a:\n  image: x\n", job: "a", want: []string{"line 1", "no script"},
		},
		"trigger job": {
			yaml: "a:\n  trigger: group/other\nb: {script: [x]}\n", job: "a", want: []string{"trigger job", "runnable jobs: b"},
		},
		"undefined stage": {
			yaml: "stages: [build]\na:\n  stage: deploy\n  script: [x]\n", job: "a", want: []string{"line 3", `stage "deploy" is not defined`},
		},
		"artifact path outside": {
			yaml: "a:\n  script: [x]\n  artifacts: {paths: [../secret]}\n", job: "a", want: []string{"line 3", "outside the project directory"},
		},
		"bad variable name": {
			yaml: "variables: {A-B: x}\na: {script: [x]}\n", job: "a", want: []string{"line 1", `"A-B" is not a valid variable name`},
		},
		"bad rules expression": {
			yaml: "a:\n  rules:\n    - if: $A ==\n  script: [x]\n", job: "a", want: []string{"line 3", "rules:if"},
		},
		"missing reference": {
			yaml: "a:\n  script: !reference [.nope, script]\n", job: "a", want: []string{"line 2", `has no key ".nope"`},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			p, err := Parse(".gitlab-ci.yml", []byte(tc.yaml))
			if err == nil {
				_, err = p.Resolve(tc.job, testContext())
			}
			if err == nil {
				t.Fatalf("got no error, want one with %q", tc.want)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("got error %q, want it to contain %q", err, w)
				}
			}
		})
	}
}

func TestMalformedYAMLNamesTheLine(t *testing.T) {
	tests := map[string]string{
		"job:\n  script:\n    - echo ok\n  image: [unclosed\n": "line 4: did not find expected ',' or ']'",
		"a: 1\nb: 2\n  c: 3\n":                                 "line 3: mapping values are not allowed in this context",
		"a:\n  - x\n - y\n":                                    "line 3: did not find expected key",
		"a: 1\n\tb: 2\n":                                       "line 2: found a tab character",
	}
	for yaml, want := range tests {
		_, err := Parse(".gitlab-ci.yml", []byte(yaml))
		if err == nil || !strings.Contains(err.Error(), ".gitlab-ci.yml is not valid YAML: "+want) {
			t.Errorf("%q: got %v, want %q", yaml, err, want)
		}
	}
	_, err := Parse(".gitlab-ci.yml", []byte("a: !custom x\n"))
	if err == nil || !strings.Contains(err.Error(), "line 1: unknown YAML tag !custom") {
		t.Errorf("got %v, want the unknown tag named", err)
	}
}

func TestDuplicateKeysWarn(t *testing.T) {
	j := resolve(t, "a:\n  script: [one]\n  script: [two]\n", "a")
	if !reflect.DeepEqual(j.Script, []string{"two"}) {
		t.Errorf("got script %v, want the last definition", j.Script)
	}
	if n, ok := noteFor(j, "script"); !ok || n.Line != 3 {
		t.Errorf("got note %+v, want the duplicate on line 3 named", n)
	}
}

func TestParseDuration(t *testing.T) {
	tests := map[string]time.Duration{
		"1h":                   time.Hour,
		"1h 30m":               90 * time.Minute,
		"3 hours 30 minutes":   3*time.Hour + 30*time.Minute,
		"90":                   90 * time.Second,
		"2 days":               48 * time.Hour,
		"1 hour and 5 minutes": 65 * time.Minute,
	}
	for in, want := range tests {
		if got, err := parseDuration(in); err != nil || got != want {
			t.Errorf("parseDuration(%q): got %s, %v; want %s", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "soon", "5 parsecs", "0"} {
		if _, err := parseDuration(bad); err == nil {
			t.Errorf("parseDuration(%q): got no error", bad)
		}
	}
}
