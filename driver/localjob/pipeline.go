package localjob

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Pipeline is a parsed .gitlab-ci.yml.
type Pipeline struct {
	// Name is the file's name in messages.
	Name string
	root *node
	// header is the line of a `spec:` header document, or 0.
	header   int
	warnings []Note
}

// ParseFile reads and parses a .gitlab-ci.yml.
func ParseFile(file string) (*Pipeline, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("no %s: run berth exec in a git work tree with a .gitlab-ci.yml, or name the file with -f", file)
		}
		return nil, fmt.Errorf("read %s: %w", file, err)
	}
	return Parse(file, data)
}

// Parse parses a .gitlab-ci.yml; name is used in messages. YAML errors
// carry the line.
func Parse(name string, data []byte) (*Pipeline, error) {
	root, header, warnings, err := parseYAML(name, data)
	if err != nil {
		return nil, err
	}
	return &Pipeline{Name: name, root: root, header: header, warnings: warnings}, nil
}

// globalKeys are the file's top-level keywords; every other top-level key
// is a job, hidden when it starts with a dot.
var globalKeys = map[string]bool{
	"default": true, "include": true, "stages": true, "types": true, "variables": true, "workflow": true,
	// Deprecated global forms of default: keys, still honoured by GitLab.
	"image": true, "services": true, "cache": true, "before_script": true, "after_script": true,
	"spec": true,
}

// defaultKeys are what `default:` may hold, and inherit:default: selects.
var defaultKeys = []string{"after_script", "artifacts", "before_script", "cache", "hooks", "id_tokens",
	"image", "interruptible", "retry", "services", "tags", "timeout"}

// jobKeys are the keywords a job may hold (GitLab's CI/CD YAML reference).
var jobKeys = map[string]bool{
	"after_script": true, "allow_failure": true, "artifacts": true, "before_script": true, "cache": true,
	"coverage": true, "dast_configuration": true, "dependencies": true, "environment": true, "extends": true,
	"hooks": true, "identity": true, "id_tokens": true, "image": true, "inherit": true, "interruptible": true,
	"manual_confirmation": true, "needs": true, "only": true, "except": true, "pages": true, "parallel": true,
	"release": true, "resource_group": true, "retry": true, "rules": true, "run": true, "script": true,
	"secrets": true, "services": true, "stage": true, "start_in": true, "tags": true, "timeout": true,
	"trigger": true, "variables": true, "when": true,
}

// maxExtendsDepth is GitLab's limit on extends: nesting.
const maxExtendsDepth = 11

// maxReferenceDepth is GitLab's limit on nested !reference tags.
const maxReferenceDepth = 10

// Jobs returns the jobs exec can run, in file order: every job that is not
// hidden and not a trigger job.
func (p *Pipeline) Jobs() []string {
	var names []string
	for _, f := range p.root.fields {
		if globalKeys[f.key] || strings.HasPrefix(f.key, ".") || f.val == nil || f.val.kind != mapNode {
			continue
		}
		if resolved, err := p.extended(f.key, nil); err == nil && resolved.has("trigger") && !resolved.has("script") {
			continue
		}
		names = append(names, f.key)
	}
	return names
}

// Context is what a job is resolved against: the variables GitLab would
// predefine for it, the ones given on the command line, and the work tree's
// files for rules:exists and cache:key:files.
type Context struct {
	// Predefined are CI_* variables, lowest in precedence.
	Predefined []Variable
	// Overrides are the command line's --var values, highest in
	// precedence, as pipeline variables are in GitLab.
	Overrides []Variable
	// Files are the work tree's tracked files, slash-separated and
	// relative to its root.
	Files []string
	// ReadFile reads a file of the work tree by its relative path.
	ReadFile func(rel string) ([]byte, error)
}

// Resolve returns the named job, with extends:, default: and !reference
// applied, its rules evaluated, and a note for every key exec does not
// honour as GitLab would.
func (p *Pipeline) Resolve(name string, ctx Context) (*Job, error) {
	f := p.find(name)
	switch {
	case f == nil:
		return nil, p.unknownJob(name)
	case globalKeys[name]:
		return nil, fmt.Errorf("%s: %q is a global keyword, not a job; runnable jobs: %s", p.Name, name, p.jobList())
	case strings.HasPrefix(name, "."):
		return nil, fmt.Errorf("%s: line %d: job %q is hidden (its name starts with a dot): it is a template for extends:, not a job; runnable jobs: %s", p.Name, f.line, name, p.jobList())
	case f.val == nil || f.val.kind != mapNode:
		return nil, fmt.Errorf("%s: line %d: job %q must be a mapping of keywords, not %s", p.Name, f.line, name, f.val.describe())
	}
	raw, err := p.extended(name, nil)
	if err != nil {
		return nil, err
	}
	r := &resolver{p: p, ctx: ctx, job: &Job{Name: name}, line: f.line}
	r.job.Notes = append(r.job.Notes, p.warnings...)
	if err := r.globals(); err != nil {
		return nil, err
	}
	if err := r.resolve(raw); err != nil {
		return nil, err
	}
	return r.job, nil
}

func (p *Pipeline) find(name string) *field {
	for i, f := range p.root.fields {
		if f.key == name {
			return &p.root.fields[i]
		}
	}
	return nil
}

func (p *Pipeline) jobList() string {
	jobs := p.Jobs()
	if len(jobs) == 0 {
		return "none (every job with a script is hidden or missing)"
	}
	return strings.Join(jobs, ", ")
}

func (p *Pipeline) unknownJob(name string) error {
	msg := fmt.Sprintf("%s has no job %q; runnable jobs: %s", p.Name, name, p.jobList())
	if p.root.has("include") {
		msg += fmt.Sprintf(" (line %d: include: is not loaded by exec, so jobs of included files are not known)", p.root.keyLine("include"))
	}
	return errors.New(msg)
}

// extended returns the job's or template's mapping with its !reference
// tags resolved and its extends: merged in, as GitLab does: the templates
// in order, each deep-merged, then the job itself; lists are replaced, not
// merged.
func (p *Pipeline) extended(name string, chain []string) (*node, error) {
	if slices.Contains(chain, name) {
		return nil, fmt.Errorf("%s: extends: circular dependency: %s -> %s", p.Name, strings.Join(chain, " -> "), name)
	}
	if len(chain) > maxExtendsDepth {
		return nil, fmt.Errorf("%s: extends: nested deeper than %d levels: %s", p.Name, maxExtendsDepth, strings.Join(chain, " -> "))
	}
	f := p.find(name)
	if f == nil {
		return nil, fmt.Errorf("%s: job %q extends %q, which does not exist%s", p.Name, chain[len(chain)-1], name, p.includeHint())
	}
	if globalKeys[name] {
		return nil, fmt.Errorf("%s: job %q extends %q, a global keyword, not a job or template", p.Name, chain[len(chain)-1], name)
	}
	own, err := p.resolveRefs(f.val, 0)
	if err != nil {
		return nil, err
	}
	if own == nil || own.kind != mapNode {
		if len(chain) == 0 {
			return nil, fmt.Errorf("%s: line %d: job %q must be a mapping of keywords, not %s", p.Name, f.line, name, own.describe())
		}
		return nil, fmt.Errorf("%s: line %d: %q, extended by %q, must be a mapping, not %s", p.Name, f.line, name, chain[len(chain)-1], own.describe())
	}
	ext := own.get("extends")
	if !own.has("extends") {
		return own, nil
	}
	targets, err := stringList(ext)
	if err != nil || len(targets) == 0 {
		return nil, fmt.Errorf("%s: line %d: %s: extends: must be a job name or a list of them", p.Name, own.keyLine("extends"), name)
	}
	var merged *node
	for _, target := range targets {
		base, err := p.extended(target, append(append([]string(nil), chain...), name))
		if err != nil {
			return nil, err
		}
		if merged == nil {
			merged = base.clone()
		} else {
			merged = deepMerge(merged, base)
		}
	}
	return deepMerge(merged, own.without("extends")), nil
}

func (p *Pipeline) includeHint() string {
	if p.root.has("include") {
		return fmt.Sprintf(" in this file (line %d: include: is not loaded by exec)", p.root.keyLine("include"))
	}
	return ""
}

// resolveRefs returns n with every !reference [job, key, ...] replaced by
// the value it names, looked up in the file as written.
func (p *Pipeline) resolveRefs(n *node, depth int) (*node, error) {
	if n == nil {
		return nil, nil
	}
	if n.tag == "!reference" {
		if depth >= maxReferenceDepth {
			return nil, fmt.Errorf("%s: line %d: !reference tags nested more than %d deep", p.Name, n.line, maxReferenceDepth)
		}
		var parts []string
		for _, item := range n.items {
			if item.kind != scalarNode {
				return nil, fmt.Errorf("%s: line %d: !reference takes a list of names such as [.job, script]", p.Name, n.line)
			}
			parts = append(parts, item.text)
		}
		if len(parts) == 0 {
			return nil, fmt.Errorf("%s: line %d: !reference needs at least a job name, such as [.job, script]", p.Name, n.line)
		}
		target := p.root
		for i, part := range parts {
			next := target.get(part)
			if next == nil {
				return nil, fmt.Errorf("%s: line %d: !reference [%s]: %s has no key %q", p.Name, n.line, strings.Join(parts, ", "), strings.Join(parts[:i], "."), part)
			}
			target = next
		}
		return p.resolveRefs(target, depth+1)
	}
	out := &node{kind: n.kind, line: n.line, tag: n.tag, text: n.text}
	for _, f := range n.fields {
		v, err := p.resolveRefs(f.val, depth)
		if err != nil {
			return nil, err
		}
		out.fields = append(out.fields, field{key: f.key, line: f.line, val: v})
	}
	for _, item := range n.items {
		v, err := p.resolveRefs(item, depth)
		if err != nil {
			return nil, err
		}
		out.items = append(out.items, v)
	}
	return out, nil
}

// resolver builds one Job.
type resolver struct {
	p    *Pipeline
	ctx  Context
	job  *Job
	line int // the job's line

	stages       []string
	globalVars   []Variable
	workflowVars []Variable
	defaults     *node
	defaultLines map[string]int
}

func (r *resolver) errorf(line int, format string, args ...any) error {
	return fmt.Errorf("%s: line %d: job %q: %s", r.p.Name, line, r.job.Name, fmt.Sprintf(format, args...))
}

func (r *resolver) note(key string, line int, format string, args ...any) {
	r.job.Notes = append(r.job.Notes, Note{Key: key, Line: line, Text: fmt.Sprintf(format, args...)})
}

// globals reads the file's global keywords.
func (r *resolver) globals() error {
	root := r.p.root
	if r.p.header > 0 {
		r.note("spec", r.p.header, "the spec: header (inputs of a CI/CD component) is not applied; $[[ inputs.* ]] stays as written")
	}
	if root.has("include") {
		r.note("include", root.keyLine("include"), "exec reads only %s; the included configuration was not loaded", r.p.Name)
	}
	if root.has("spec") {
		return fmt.Errorf("%s: line %d: spec: belongs in a header document, separated from the jobs by ---", r.p.Name, root.keyLine("spec"))
	}
	r.stages = []string{".pre", "build", "test", "deploy", ".post"}
	for _, key := range []string{"stages", "types"} {
		if !root.has(key) {
			continue
		}
		list, err := stringList(root.get(key))
		if err != nil {
			return fmt.Errorf("%s: line %d: %s: must be a list of stage names", r.p.Name, root.keyLine(key), key)
		}
		r.stages = append(append([]string{".pre"}, slices.DeleteFunc(list, func(s string) bool { return s == ".pre" || s == ".post" })...), ".post")
	}
	vars, err := r.resolvedGlobal("variables")
	if err != nil {
		return err
	}
	if r.globalVars, err = r.variables(vars, "variables"); err != nil {
		return err
	}

	// default: and the deprecated global keywords it replaces.
	r.defaults = &node{kind: mapNode}
	r.defaultLines = map[string]int{}
	for _, key := range []string{"image", "services", "cache", "before_script", "after_script"} {
		if root.has(key) {
			v, err := r.resolvedGlobal(key)
			if err != nil {
				return err
			}
			r.defaults.set(key, root.keyLine(key), v)
			r.defaultLines[key] = root.keyLine(key)
		}
	}
	if root.has("default") {
		def, err := r.resolvedGlobal("default")
		if err != nil {
			return err
		}
		if def != nil && def.kind != mapNode {
			return fmt.Errorf("%s: line %d: default: must be a mapping", r.p.Name, root.keyLine("default"))
		}
		if def != nil {
			for _, f := range def.fields {
				if !slices.Contains(defaultKeys, f.key) {
					return fmt.Errorf("%s: line %d: default: unknown key %q (default: takes %s)", r.p.Name, f.line, f.key, strings.Join(defaultKeys, ", "))
				}
				r.defaults.set(f.key, f.line, f.val)
				r.defaultLines[f.key] = f.line
			}
		}
	}
	return r.workflow()
}

func (r *resolver) resolvedGlobal(key string) (*node, error) {
	return r.p.resolveRefs(r.p.root.get(key), 0)
}

// workflow evaluates workflow:rules, whose variables apply to every job.
func (r *resolver) workflow() error {
	root := r.p.root
	if !root.has("workflow") {
		return nil
	}
	wf, err := r.resolvedGlobal("workflow")
	if err != nil {
		return err
	}
	if wf == nil {
		return nil
	}
	if wf.kind != mapNode {
		return fmt.Errorf("%s: line %d: workflow: must be a mapping", r.p.Name, root.keyLine("workflow"))
	}
	for _, f := range wf.fields {
		switch f.key {
		case "rules":
			lookup := r.lookup(append(append([]Variable(nil), r.globalVars...), r.ctx.Overrides...))
			outcome, err := r.rules(f.val, lookup, "workflow:rules")
			if err != nil {
				return err
			}
			r.workflowVars = outcome.variables
			if !outcome.run {
				r.note("workflow:rules", f.line, "%s: GitLab would create no pipeline (%s); exec ran the job because you named it", outcome.why, r.pipelineDescription())
			}
		case "name":
			r.note("workflow:name", f.line, "exec runs no pipeline to name; ignored")
		case "auto_cancel":
			r.note("workflow:auto_cancel", f.line, "exec runs one job; nothing to cancel")
		default:
			return fmt.Errorf("%s: line %d: workflow: unknown key %q", r.p.Name, f.line, f.key)
		}
	}
	return nil
}

func (r *resolver) pipelineDescription() string {
	get := r.lookup(nil)
	desc := "CI_PIPELINE_SOURCE=" + valueOr(get, "CI_PIPELINE_SOURCE", "")
	if b, ok := get("CI_COMMIT_BRANCH"); ok {
		desc += ", CI_COMMIT_BRANCH=" + b
	}
	if t, ok := get("CI_COMMIT_TAG"); ok {
		desc += ", CI_COMMIT_TAG=" + t
	}
	return desc
}

// resolve builds the job from its extended mapping.
func (r *resolver) resolve(raw *node) error {
	for _, f := range raw.fields {
		if !jobKeys[f.key] {
			return r.errorf(f.line, "unknown key %q; see https://docs.gitlab.com/ci/yaml/ for the job keywords", f.key)
		}
	}
	if raw.has("trigger") && !raw.has("script") {
		return r.errorf(raw.keyLine("trigger"), "it is a trigger job (trigger:): it starts a downstream pipeline, which exec cannot run; runnable jobs: %s", r.p.jobList())
	}
	if raw.has("run") && !raw.has("script") {
		return r.errorf(raw.keyLine("run"), "run: (CI/CD steps) is not supported by exec; give the job a script:")
	}

	job := r.inheritDefaults(raw)
	var err error
	r.job.Stage = "test"
	if job.has("stage") {
		if r.job.Stage, err = scalarString(job.get("stage")); err != nil {
			return r.errorf(job.keyLine("stage"), "stage: must be a stage name")
		}
	}
	if !slices.Contains(r.stages, r.job.Stage) {
		return r.errorf(job.keyLine("stage"), "stage %q is not defined; stages: %s", r.job.Stage, strings.Join(r.stages, ", "))
	}

	// Variables, in GitLab's order of precedence: global (as inherited),
	// workflow:rules, the job's, the matched rule's, then the command line.
	globals, err := r.inheritVariables(job)
	if err != nil {
		return err
	}
	jobVars, err := r.variables(job.get("variables"), "variables")
	if err != nil {
		return err
	}
	vars := append(append(append([]Variable(nil), globals...), r.workflowVars...), jobVars...)
	if job.has("rules") {
		outcome, err := r.rules(job.get("rules"), r.lookup(append(append([]Variable(nil), vars...), r.ctx.Overrides...)), "rules")
		if err != nil {
			return err
		}
		vars = append(vars, outcome.variables...)
		switch {
		case !outcome.run:
			r.note("rules", job.keyLine("rules"), "%s: GitLab would not run this job in a pipeline with %s; exec ran it because you named it (set other values with --var KEY=VALUE)", outcome.why, r.pipelineDescription())
		case outcome.when == "manual":
			r.note("rules", job.keyLine("rules"), "the matching rule makes the job manual; exec ran it without waiting for a manual action")
		case outcome.when == "delayed":
			r.note("rules", job.keyLine("rules"), "the matching rule delays the job; exec ran it at once")
		}
		if outcome.allowFailure {
			r.note("rules:allow_failure", job.keyLine("rules"), "exec reports the job's own result; allow_failure changes only how GitLab counts it in the pipeline")
		}
	}
	vars = append(vars, r.ctx.Overrides...)
	r.job.Variables = dedupeVariables(vars)
	expand := r.expander()

	for _, f := range job.fields {
		if err := r.key(job, f, expand); err != nil {
			return err
		}
	}
	if len(r.job.Script) == 0 {
		return r.errorf(r.line, "it has no script: (a job needs script: with at least one command)")
	}
	if r.job.Dependencies == nil && !job.has("dependencies") && !job.has("needs") {
		r.job.Dependencies = r.earlierStageJobs()
	}
	return nil
}

// inheritDefaults adds the default: keys the job lacks, as inherit:default:
// allows.
func (r *resolver) inheritDefaults(job *node) *node {
	keys := defaultKeys
	if inherit := job.get("inherit"); inherit != nil {
		if v := inherit.get("default"); inherit.has("default") {
			keys = inheritSelection(v, defaultKeys)
		}
	}
	out := job.clone()
	for _, key := range keys {
		if out.has(key) || !r.defaults.has(key) {
			continue
		}
		out.set(key, r.defaultLines[key], r.defaults.get(key))
	}
	return out
}

// inheritVariables applies inherit:variables: to the global variables.
func (r *resolver) inheritVariables(job *node) ([]Variable, error) {
	inherit := job.get("inherit")
	if inherit == nil || !inherit.has("variables") {
		return r.globalVars, nil
	}
	var names []string
	for _, v := range r.globalVars {
		names = append(names, v.Key)
	}
	keep := inheritSelection(inherit.get("variables"), names)
	var out []Variable
	for _, v := range r.globalVars {
		if slices.Contains(keep, v.Key) {
			out = append(out, v)
		}
	}
	return out, nil
}

// inheritSelection reads inherit:default: or inherit:variables: (true,
// false or a list of names).
func inheritSelection(v *node, all []string) []string {
	if v == nil {
		return all
	}
	if v.kind == scalarNode {
		if b, err := strconv.ParseBool(v.text); err == nil && !b {
			return nil
		}
		return all
	}
	list, _ := stringList(v)
	return list
}

// key handles one keyword of the job.
func (r *resolver) key(job *node, f field, expand func(string) string) error {
	v, line := f.val, f.line
	var err error
	switch f.key {
	case "script":
		r.job.Script, err = r.script(v, line, "script")
	case "before_script":
		r.job.BeforeScript, err = r.script(v, line, "before_script")
	case "after_script":
		r.job.AfterScript, err = r.script(v, line, "after_script")
	case "image":
		r.job.Image, err = r.image(v, line, expand)
	case "services":
		r.job.Services, err = r.services(v, line, expand)
	case "cache":
		r.job.Caches, err = r.caches(v, line, expand)
	case "artifacts":
		r.job.Artifacts, err = r.artifacts(v, line, expand)
	case "timeout":
		text, serr := scalarString(v)
		d, derr := parseDuration(text)
		if serr != nil || derr != nil {
			r.note("timeout", line, "cannot read %s as a duration (such as \"1h 30m\"); exec used GitLab's default of 1h", v.describe())
			return nil
		}
		r.job.Timeout = d
	case "dependencies":
		r.job.Dependencies, err = stringList(v)
		if err != nil {
			return r.errorf(line, "dependencies: must be a list of job names")
		}
		if r.job.Dependencies == nil {
			r.job.Dependencies = []string{}
		}
		if len(r.job.Dependencies) > 0 {
			r.note("dependencies", line, "exec does not run other jobs; download_artifacts restores what earlier `berth exec` runs of %s left in the artifacts directory", strings.Join(r.job.Dependencies, ", "))
		}
	case "needs":
		return r.needs(job, v, line)
	case "rules", "variables", "stage", "extends", "inherit":
		// Handled before.
	case "when":
		when, _ := scalarString(v)
		switch when {
		case "", "on_success", "always":
		case "manual":
			r.note("when", line, "manual: exec ran the job without waiting for a manual action")
		case "delayed":
			r.note("when", line, "delayed: exec ran the job at once")
		case "never":
			r.note("when", line, "never: GitLab never runs this job; exec ran it because you named it")
		case "on_failure":
			r.note("when", line, "on_failure: GitLab runs this job only after an earlier job failed; exec ran it because you named it")
		default:
			return r.errorf(line, "when: %q is not one of on_success, on_failure, always, manual, delayed, never", when)
		}
	case "start_in":
		r.note("start_in", line, "exec did not wait; the job ran at once")
	case "allow_failure":
		r.note("allow_failure", line, "exec reports the job's own result; allow_failure changes only how GitLab counts it in the pipeline")
	case "coverage":
		r.note("coverage", line, "exec does not extract a coverage value from the log")
	case "dast_configuration":
		r.note("dast_configuration", line, "not supported; the job ran without DAST site or scanner profiles")
	case "environment":
		r.environment(v, line, expand)
	case "hooks":
		r.note("hooks", line, "not supported; pre_get_sources_script and other hooks were not run")
	case "identity":
		r.note("identity", line, "not supported; the job got no cloud identity")
	case "id_tokens":
		r.note("id_tokens", line, "exec issues no ID tokens; %s not set", describeKeys(v, "the variables are"))
	case "secrets":
		r.note("secrets", line, "exec fetches no external secrets; %s not set", describeKeys(v, "the variables are"))
	case "interruptible":
		r.note("interruptible", line, "no effect: exec runs a single job")
	case "manual_confirmation":
		r.note("manual_confirmation", line, "exec asked for no confirmation")
	case "only", "except":
		r.note(f.key, line, "not evaluated; exec ran the job (rules:, which exec evaluates, can replace it)")
	case "pages":
		r.note("pages", line, "exec does not deploy GitLab Pages; the job ran as a plain job")
	case "parallel":
		r.parallel(v, line)
	case "release":
		r.note("release", line, "exec does not create a release")
	case "resource_group":
		r.note("resource_group", line, "exec does not wait for other jobs of the resource group")
	case "retry":
		r.note("retry", line, "exec ran the job once; a failure is not retried")
	case "tags":
		r.note("tags", line, "exec runs the job on this machine; runner tags are not matched")
	case "trigger":
		r.note("trigger", line, "exec does not start the downstream pipeline; it ran the job's script")
	case "run":
		r.note("run", line, "CI/CD steps are not supported; exec ran the job's script")
	}
	return err
}

// needs handles needs:, whose artifacts download_artifacts restores from
// earlier exec runs.
func (r *resolver) needs(job *node, v *node, line int) error {
	if v == nil || v.kind != seqNode {
		return r.errorf(line, "needs: must be a list of jobs")
	}
	var names []string
	for _, item := range v.items {
		switch item.kind {
		case scalarNode:
			names = append(names, item.text)
		case mapNode:
			if item.has("pipeline") || item.has("project") {
				r.note("needs", item.line, "needs from another pipeline or project are not supported; exec downloaded nothing for it")
				continue
			}
			name, err := scalarString(item.get("job"))
			if err != nil {
				return r.errorf(item.line, "needs: an entry needs job:")
			}
			if a := item.get("artifacts"); a != nil && a.text == "false" {
				continue
			}
			names = append(names, name)
		default:
			return r.errorf(item.line, "needs: each entry is a job name or a mapping with job:")
		}
	}
	if !job.has("dependencies") {
		r.job.Dependencies = append([]string{}, names...)
	}
	if len(v.items) > 0 {
		r.note("needs", line, "exec does not run the needed jobs; download_artifacts restores what earlier `berth exec` runs of them left in the artifacts directory")
	}
	return nil
}

// earlierStageJobs are the jobs of earlier stages, whose artifacts GitLab
// passes to a job without needs: or dependencies:.
func (r *resolver) earlierStageJobs() []string {
	mine := slices.Index(r.stages, r.job.Stage)
	var names []string
	for _, name := range r.p.Jobs() {
		if name == r.job.Name {
			continue
		}
		raw, err := r.p.extended(name, nil)
		if err != nil {
			continue
		}
		stage := "test"
		if s, err := scalarString(raw.get("stage")); err == nil && raw.has("stage") {
			stage = s
		}
		if i := slices.Index(r.stages, stage); i >= 0 && i < mine {
			names = append(names, name)
		}
	}
	return names
}

func (r *resolver) environment(v *node, line int, expand func(string) string) {
	name := ""
	switch {
	case v != nil && v.kind == scalarNode:
		name = v.text
	case v != nil && v.kind == mapNode:
		name, _ = scalarString(v.get("name"))
		r.job.EnvironmentURL, _ = scalarString(v.get("url"))
		r.job.EnvironmentURL = expand(r.job.EnvironmentURL)
	}
	r.job.Environment = expand(name)
	r.note("environment", line, "exec records no deployment and starts or stops no environment; it set CI_ENVIRONMENT_NAME=%s", r.job.Environment)
}

func (r *resolver) parallel(v *node, line int) {
	if v != nil && v.kind == mapNode && v.has("matrix") {
		r.note("parallel:matrix", line, "exec ran the job once, without the matrix's variables; set them with --var KEY=VALUE")
		return
	}
	n, err := strconv.Atoi(v.text)
	if err != nil || n < 1 {
		r.note("parallel", line, "cannot read %s as a count; exec ran one instance", v.describe())
		return
	}
	r.job.NodeTotal = n
	r.note("parallel", line, "exec ran one instance of %d: CI_NODE_INDEX=1, CI_NODE_TOTAL=%d", n, n)
}

// script reads script:, before_script: or after_script: (a string or a
// list, nested lists flattened as GitLab does for !reference).
func (r *resolver) script(v *node, line int, key string) ([]string, error) {
	var out []string
	var walk func(n *node, depth int) error
	walk = func(n *node, depth int) error {
		switch {
		case n == nil || n.kind == nullNode:
			return nil
		case n.kind == scalarNode:
			out = append(out, n.text)
		case n.kind == seqNode:
			if depth > maxReferenceDepth {
				return r.errorf(n.line, "%s: lists nested more than %d deep", key, maxReferenceDepth)
			}
			for _, item := range n.items {
				if err := walk(item, depth+1); err != nil {
					return err
				}
			}
		default:
			return r.errorf(n.line, "%s: must be a string or a list of strings, not a mapping (a command with \": \" needs quotes)", key)
		}
		return nil
	}
	if err := walk(v, 0); err != nil {
		return nil, err
	}
	if key == "script" && len(out) == 0 {
		return nil, r.errorf(line, "script: is empty")
	}
	return out, nil
}

func (r *resolver) image(v *node, line int, expand func(string) string) (Image, error) {
	var img Image
	switch {
	case v == nil || v.kind == nullNode:
		return img, nil
	case v.kind == scalarNode:
		img.Name = expand(v.text)
		return img, nil
	case v.kind != mapNode:
		return img, r.errorf(line, "image: must be a name or a mapping with name:")
	}
	for _, f := range v.fields {
		var err error
		switch f.key {
		case "name":
			img.Name, err = scalarString(f.val)
			img.Name = expand(img.Name)
		case "entrypoint":
			img.Entrypoint, err = stringList(f.val)
		case "pull_policy":
			img.PullPolicy, err = stringList(f.val)
		case "docker":
			r.note("image:docker", f.line, "platform and user options are not supported; exec used the engine's defaults")
		case "kubernetes":
			r.note("image:kubernetes", f.line, "Kubernetes options do not apply to berth's backends; ignored")
		default:
			return img, r.errorf(f.line, "image: unknown key %q", f.key)
		}
		if err != nil {
			return img, r.errorf(f.line, "image:%s: %v", f.key, err)
		}
	}
	if img.Name == "" {
		return img, r.errorf(line, "image: needs name:")
	}
	return img, nil
}

func (r *resolver) services(v *node, line int, expand func(string) string) ([]Service, error) {
	if v == nil || v.kind == nullNode {
		return nil, nil
	}
	if v.kind != seqNode {
		return nil, r.errorf(line, "services: must be a list")
	}
	var out []Service
	for _, item := range v.items {
		var svc Service
		switch item.kind {
		case scalarNode:
			svc.Name = expand(item.text)
		case mapNode:
			for _, f := range item.fields {
				var err error
				switch f.key {
				case "name":
					svc.Name, err = scalarString(f.val)
					svc.Name = expand(svc.Name)
				case "alias":
					svc.Alias, err = scalarString(f.val)
					svc.Alias = expand(svc.Alias)
				case "entrypoint":
					svc.Entrypoint, err = stringList(f.val)
				case "command":
					svc.Command, err = stringList(f.val)
				case "pull_policy":
					svc.PullPolicy, err = stringList(f.val)
				case "variables":
					svc.Variables, err = r.variables(f.val, "services:variables")
					for i := range svc.Variables {
						if !svc.Variables[i].Raw {
							svc.Variables[i].Value = expand(svc.Variables[i].Value)
						}
					}
				case "docker":
					r.note("services:docker", f.line, "platform and user options are not supported; exec used the engine's defaults")
				case "kubernetes":
					r.note("services:kubernetes", f.line, "Kubernetes options do not apply to berth's backends; ignored")
				default:
					return nil, r.errorf(f.line, "services: unknown key %q", f.key)
				}
				if err != nil {
					return nil, r.errorf(f.line, "services:%s: %v", f.key, err)
				}
			}
		default:
			return nil, r.errorf(item.line, "services: each entry is an image name or a mapping with name:")
		}
		if svc.Name == "" {
			return nil, r.errorf(item.line, "services: an entry needs name:")
		}
		out = append(out, svc)
	}
	return out, nil
}

func (r *resolver) caches(v *node, line int, expand func(string) string) ([]Cache, error) {
	var entries []*node
	switch {
	case v == nil || v.kind == nullNode:
		return nil, nil
	case v.kind == mapNode:
		entries = []*node{v}
	case v.kind == seqNode:
		entries = v.items
	default:
		return nil, r.errorf(line, "cache: must be a mapping or a list of mappings")
	}
	if len(entries) > 4 {
		return nil, r.errorf(line, "cache: at most 4 caches per job")
	}
	var out []Cache
	for _, e := range entries {
		if e.kind != mapNode {
			return nil, r.errorf(e.line, "cache: each entry must be a mapping")
		}
		if len(e.fields) == 0 {
			continue
		}
		c := Cache{Key: "default", When: "on_success", Policy: "pull-push", Line: e.line}
		for _, f := range e.fields {
			var err error
			switch f.key {
			case "key":
				err = r.cacheKey(&c, f, expand)
			case "paths":
				c.Paths, err = r.paths(f, expand)
			case "untracked":
				c.Untracked, err = boolValue(f.val)
			case "when":
				c.When, err = oneOf(f.val, "on_success", "on_failure", "always")
			case "policy":
				c.Policy, err = scalarString(f.val)
				c.Policy = expand(c.Policy)
				if err == nil && !slices.Contains([]string{"pull-push", "pull", "push"}, c.Policy) {
					err = fmt.Errorf("%q is not pull-push, pull or push", c.Policy)
				}
			case "fallback_keys":
				c.FallbackKeys, err = stringList(f.val)
				for i := range c.FallbackKeys {
					c.FallbackKeys[i] = expand(c.FallbackKeys[i])
				}
			case "unprotect":
				r.note("cache:unprotect", f.line, "no effect: exec keeps one cache per key for protected and unprotected refs alike")
			default:
				return nil, r.errorf(f.line, "cache: unknown key %q", f.key)
			}
			if err != nil {
				return nil, r.errorf(f.line, "cache:%s: %v", f.key, err)
			}
		}
		if len(c.Paths) == 0 && !c.Untracked {
			r.note("cache", e.line, "the cache has no paths: and no untracked: true; exec saves nothing for it")
			continue
		}
		out = append(out, c)
	}
	return out, nil
}

// cacheKey reads cache:key:, a string or {files:, prefix:}.
func (r *resolver) cacheKey(c *Cache, f field, expand func(string) string) error {
	if f.val != nil && f.val.kind == mapNode {
		files, err := stringList(f.val.get("files"))
		if err != nil || len(files) == 0 {
			return errors.New("key:files: must list one or two files")
		}
		prefix, _ := scalarString(f.val.get("prefix"))
		h := sha256.New()
		found := false
		for _, name := range files {
			if r.ctx.ReadFile == nil {
				break
			}
			data, err := r.ctx.ReadFile(expand(name))
			if err != nil {
				continue
			}
			found = true
			fmt.Fprintf(h, "%s\x00%d\x00", name, len(data))
			h.Write(data)
		}
		key := "default"
		if found {
			key = hex.EncodeToString(h.Sum(nil))[:40]
		}
		if prefix = expand(prefix); prefix != "" {
			key = prefix + "-" + key
		}
		c.Key = key
		r.note("cache:key:files", f.line, "exec keys the cache by a hash of those files' contents in the work tree (GitLab uses the SHA of the commit that last changed them): %s", key)
		return nil
	}
	key, err := scalarString(f.val)
	if err != nil {
		return err
	}
	if key = expand(key); key != "" {
		c.Key = key
	}
	return nil
}

func (r *resolver) artifacts(v *node, line int, expand func(string) string) (*Artifacts, error) {
	if v == nil || v.kind == nullNode {
		return nil, nil
	}
	if v.kind != mapNode {
		return nil, r.errorf(line, "artifacts: must be a mapping")
	}
	a := &Artifacts{When: "on_success", Line: line}
	for _, f := range v.fields {
		var err error
		switch f.key {
		case "paths":
			a.Paths, err = r.paths(f, expand)
		case "exclude":
			a.Exclude, err = r.paths(f, expand)
		case "untracked":
			a.Untracked, err = boolValue(f.val)
		case "when":
			a.When, err = oneOf(f.val, "on_success", "on_failure", "always")
		case "reports":
			err = r.reports(a, f, expand)
		case "name":
			r.note("artifacts:name", f.line, "exec keeps the artifacts unpacked in a directory named after the job; the archive name is not used")
		case "expire_in":
			r.note("artifacts:expire_in", f.line, "exec keeps the artifacts until you delete them or the next exec of the job replaces them")
		case "expose_as", "public", "access":
			r.note("artifacts:"+f.key, f.line, "no effect: exec shows the artifacts to no one but you")
		default:
			return nil, r.errorf(f.line, "artifacts: unknown key %q", f.key)
		}
		if err != nil {
			return nil, r.errorf(f.line, "artifacts:%s: %v", f.key, err)
		}
	}
	return a, nil
}

// reports collects the report files with the artifacts: exec processes no
// report, but keeps the files.
func (r *resolver) reports(a *Artifacts, f field, expand func(string) string) error {
	if f.val == nil || f.val.kind != mapNode {
		return errors.New("must be a mapping of report types")
	}
	var names []string
	for _, rf := range f.val.fields {
		names = append(names, rf.key)
		v := rf.val
		if v != nil && v.kind == mapNode {
			v = v.get("path")
		}
		paths, err := stringList(v)
		if err != nil {
			continue
		}
		for _, p := range paths {
			p = expand(p)
			if err := checkRelPath(p); err == nil && !slices.Contains(a.Paths, p) {
				a.Paths = append(a.Paths, p)
			}
		}
	}
	r.note("artifacts:reports", f.line, "exec does not process reports (%s); it keeps the report files with the artifacts", strings.Join(names, ", "))
	return nil
}

// paths reads cache:paths: or artifacts:paths:/exclude:, relative to the
// project directory.
func (r *resolver) paths(f field, expand func(string) string) ([]string, error) {
	list, err := stringList(f.val)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, p := range list {
		p = expand(p)
		if err := checkRelPath(p); err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, nil
}

// checkRelPath refuses paths that leave the project directory.
func checkRelPath(p string) error {
	clean := path.Clean(p)
	if p == "" || path.IsAbs(p) || clean == ".." || strings.HasPrefix(clean, "../") {
		return fmt.Errorf("path %q is outside the project directory: give a path relative to it", p)
	}
	return nil
}

// variables reads a variables: mapping. A value may be a scalar or a
// mapping with value:, description:, options: and expand:.
func (r *resolver) variables(v *node, where string) ([]Variable, error) {
	if v == nil || v.kind == nullNode {
		return nil, nil
	}
	if v.kind != mapNode {
		return nil, fmt.Errorf("%s: line %d: %s: must be a mapping of names to values", r.p.Name, v.line, where)
	}
	var out []Variable
	for _, f := range v.fields {
		if !variableNameRe().MatchString(f.key) {
			return nil, fmt.Errorf("%s: line %d: %s: %q is not a valid variable name: use letters, digits and '_'", r.p.Name, f.line, where, f.key)
		}
		variable := Variable{Key: f.key}
		switch {
		case f.val == nil || f.val.kind == nullNode:
		case f.val.kind == scalarNode:
			variable.Value = f.val.text
		case f.val.kind == mapNode:
			for _, vf := range f.val.fields {
				switch vf.key {
				case "value":
					variable.Value, _ = scalarString(vf.val)
				case "expand":
					expand, err := boolValue(vf.val)
					if err != nil {
						return nil, fmt.Errorf("%s: line %d: %s: %s: expand: %v", r.p.Name, vf.line, where, f.key, err)
					}
					variable.Raw = !expand
				case "description", "options":
				default:
					return nil, fmt.Errorf("%s: line %d: %s: %s: unknown key %q (value, description, options, expand)", r.p.Name, vf.line, where, f.key, vf.key)
				}
			}
		default:
			return nil, fmt.Errorf("%s: line %d: %s: %s: a value must be a string, not a list", r.p.Name, f.line, where, f.key)
		}
		out = append(out, variable)
	}
	return out, nil
}

var variableNameRe = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`) })

// lookup returns a function that finds a variable's expanded value among
// the predefined ones and vars (later ones win).
func (r *resolver) lookup(vars []Variable) func(string) (string, bool) {
	all := dedupeVariables(append(append([]Variable(nil), r.ctx.Predefined...), vars...))
	expanded := ExpandVariables(all)
	index := map[string]string{}
	for _, v := range expanded {
		index[v.Key] = v.Value
	}
	return func(key string) (string, bool) {
		v, ok := index[key]
		return v, ok
	}
}

// expander expands $VAR and ${VAR} in a keyword's value against the job's
// variables, as the runner does for image names, cache keys and paths.
func (r *resolver) expander() func(string) string {
	get := r.lookup(r.job.Variables)
	return func(s string) string { return expandString(s, get) }
}

func valueOr(get func(string) (string, bool), key, def string) string {
	if v, ok := get(key); ok {
		return v
	}
	return def
}

func describeKeys(v *node, what string) string {
	if v == nil || v.kind != mapNode || len(v.fields) == 0 {
		return "its variables are"
	}
	var keys []string
	for _, f := range v.fields {
		keys = append(keys, f.key)
	}
	sort.Strings(keys)
	return what + " " + strings.Join(keys, ", ")
}

// scalarString reads a scalar as a string.
func scalarString(v *node) (string, error) {
	if v == nil || v.kind == nullNode {
		return "", nil
	}
	if v.kind != scalarNode {
		return "", fmt.Errorf("want a string, got %s", v.describe())
	}
	return v.text, nil
}

// stringList reads a string or a list of strings.
func stringList(v *node) ([]string, error) {
	switch {
	case v == nil || v.kind == nullNode:
		return nil, nil
	case v.kind == scalarNode:
		return []string{v.text}, nil
	case v.kind == seqNode:
		out := []string{}
		for _, item := range v.items {
			if item.kind != scalarNode {
				return nil, fmt.Errorf("want a list of strings, got %s in it", item.describe())
			}
			out = append(out, item.text)
		}
		return out, nil
	}
	return nil, fmt.Errorf("want a string or a list of strings, got %s", v.describe())
}

func boolValue(v *node) (bool, error) {
	s, err := scalarString(v)
	if err != nil {
		return false, err
	}
	b, err := strconv.ParseBool(s)
	if err != nil {
		return false, fmt.Errorf("want true or false, got %q", s)
	}
	return b, nil
}

func oneOf(v *node, allowed ...string) (string, error) {
	s, err := scalarString(v)
	if err != nil {
		return "", err
	}
	if !slices.Contains(allowed, s) {
		return "", fmt.Errorf("%q is not one of %s", s, strings.Join(allowed, ", "))
	}
	return s, nil
}

// durationUnits are the units GitLab's timeout: accepts (ChronicDuration).
var durationUnits = map[string]time.Duration{
	"s": time.Second, "sec": time.Second, "secs": time.Second, "second": time.Second, "seconds": time.Second,
	"m": time.Minute, "min": time.Minute, "mins": time.Minute, "minute": time.Minute, "minutes": time.Minute,
	"h": time.Hour, "hr": time.Hour, "hrs": time.Hour, "hour": time.Hour, "hours": time.Hour,
	"d": 24 * time.Hour, "day": 24 * time.Hour, "days": 24 * time.Hour,
	"w": 7 * 24 * time.Hour, "week": 7 * 24 * time.Hour, "weeks": 7 * 24 * time.Hour,
}

var durationPartRe = sync.OnceValue(func() *regexp.Regexp {
	return regexp.MustCompile(`^\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*(?:and\s+|,\s*)?`)
})

// parseDuration reads a duration as GitLab's timeout: does, such as "1h
// 30m", "3 hours 30 minutes" or "90" (seconds).
func parseDuration(s string) (time.Duration, error) {
	rest := strings.ToLower(strings.TrimSpace(s))
	if rest == "" {
		return 0, errors.New("empty duration")
	}
	var total time.Duration
	for rest != "" {
		m := durationPartRe().FindStringSubmatch(rest)
		if m == nil {
			return 0, fmt.Errorf("cannot read %q as a duration", s)
		}
		unit := time.Second
		if m[2] != "" {
			u, ok := durationUnits[m[2]]
			if !ok {
				return 0, fmt.Errorf("unknown unit %q in %q", m[2], s)
			}
			unit = u
		}
		n, _ := strconv.ParseFloat(m[1], 64)
		total += time.Duration(n * float64(unit))
		rest = rest[len(m[0]):]
	}
	if total <= 0 {
		return 0, fmt.Errorf("%q is not a positive duration", s)
	}
	return total, nil
}
