package runner

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// StandinLogName is the file, in the project's cache directory, where the
// test images' stand-in gitlab-runner records its calls.
const StandinLogName = "standin.log"

func (s *Session) predefined() []Variable {
	j := s.job
	v := []Variable{
		{Key: "CI", Value: "true", Public: true},
		{Key: "GITLAB_CI", Value: "true", Public: true},
		{Key: "CI_SERVER", Value: "yes", Public: true},
		{Key: "CI_JOB_ID", Value: strconv.FormatInt(j.ID, 10), Public: true},
		{Key: "CI_JOB_TOKEN", Value: s.token(), Masked: true},
		{Key: "CI_PROJECT_ID", Value: strconv.FormatInt(j.ProjectID, 10), Public: true},
		{Key: "CI_PROJECT_PATH", Value: j.ProjectPath, Public: true},
		{Key: "CI_PROJECT_PATH_SLUG", Value: strings.ReplaceAll(j.ProjectPath, "/", "-"), Public: true},
		{Key: "CI_PROJECT_NAME", Value: filepath.Base(j.ProjectPath), Public: true},
		{Key: "CI_COMMIT_REF_NAME", Value: j.ref(), Public: true},
		{Key: "CI_REPOSITORY_URL", Value: j.RepoURL, Public: true},
		{Key: "CI_RUNNER_ID", Value: "7", Public: true},
		{Key: "CI_JOB_IMAGE", Value: j.Image.Name, Public: true},
	}
	return v
}

func (j *Job) timeout() int {
	if j.Timeout == 0 {
		return 3600
	}
	return j.Timeout
}

func (j *Job) ref() string {
	if j.Ref == "" {
		return "main"
	}
	return j.Ref
}

func (s *Session) token() string { return fmt.Sprintf("glcbt-emulated-token-%d", s.job.ID) }

// writeResponse writes JOB_RESPONSE_FILE as gitlab-runner does.
func (s *Session) writeResponse() error {
	j := s.job
	protected := j.Protected
	resp := map[string]any{
		"id":    j.ID,
		"token": s.token(),
		"job_info": map[string]any{
			"name": "test", "stage": "test",
			"project_id": j.ProjectID, "project_name": filepath.Base(j.ProjectPath),
			"project_full_path": j.ProjectPath, "namespace_id": 1,
		},
		"git_info": map[string]any{
			"repo_url": j.RepoURL, "ref": j.ref(), "sha": "0000000000000000000000000000000000000000",
			"ref_type": "branch", "protected": &protected,
		},
		"runner_info": map[string]any{"timeout": j.timeout()},
		"variables":   append(append(s.predefined(), j.Variables...), j.PayloadVariables...),
		"image":       j.Image,
		"credentials": j.Credentials,
	}
	if !j.ServicesOnlyInEnv {
		resp["services"] = j.Services
	}
	data, err := json.Marshal(resp)
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(s.dir, "response.json"), data, 0o600)
}

// servicesEnv is CUSTOM_ENV_CI_JOB_SERVICES as the runner writes it.
func (j *Job) servicesEnv() string {
	type svc struct {
		Name       string            `json:"name"`
		Alias      string            `json:"alias"`
		Entrypoint []string          `json:"entrypoint"`
		Command    []string          `json:"command"`
		Variables  map[string]string `json:"variables,omitempty"`
	}
	if len(j.Services) == 0 {
		return ""
	}
	list := make([]svc, 0, len(j.Services))
	for _, s := range j.Services {
		entry := svc{Name: s.Name, Alias: s.Alias, Entrypoint: s.Entrypoint, Command: s.Command}
		for _, v := range s.Variables {
			if entry.Variables == nil {
				entry.Variables = map[string]string{}
			}
			entry.Variables[v.Key] = v.Value
		}
		list = append(list, entry)
	}
	data, _ := json.Marshal(list)
	return string(data)
}

// baseEnv is the environment of every driver call: the runner's own, the
// job's variables with CUSTOM_ENV_, and the protocol's variables.
func (s *Session) baseEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "CUSTOM_ENV_") || strings.HasPrefix(kv, "BERTH_") {
			continue
		}
		env = append(env, kv)
	}
	for _, v := range append(s.predefined(), s.job.Variables...) {
		if v.File {
			continue
		}
		env = append(env, "CUSTOM_ENV_"+v.Key+"="+v.Value)
	}
	services := s.job.servicesEnv()
	if s.job.RawServicesEnv != nil {
		services = *s.job.RawServicesEnv
	}
	env = append(env, "CUSTOM_ENV_CI_JOB_SERVICES="+services)
	for k, v := range s.job.ExtraCustomEnv {
		env = append(env, "CUSTOM_ENV_"+k+"="+v)
	}
	env = append(env,
		"BUILD_FAILURE_EXIT_CODE="+strconv.Itoa(BuildFailureExitCode),
		"SYSTEM_FAILURE_EXIT_CODE="+strconv.Itoa(SystemFailureExitCode),
		"BUILD_EXIT_CODE_FILE="+filepath.Join(s.dir, "build-exit-code"),
		"JOB_RESPONSE_FILE="+filepath.Join(s.dir, "response.json"),
		"TMPDIR="+filepath.Join(s.dir, "tmp"),
	)
	return env
}

// script generates a stage script the way the runner's bash shell does:
// errexit and pipefail, the job's variables exported, and the stage's work
// evaluated with stdin from nowhere.
func (s *Session) script(stage string) string {
	j := s.job
	projectDir := s.ProjectDir()
	cacheFile := filepath.Join(s.config.CacheDir, j.ProjectPath, "default", "cache.tgz")
	var body strings.Builder
	export := func(k, v string) { fmt.Fprintf(&body, "export %s=%s\n", k, shellQuote(v)) }
	for _, v := range append(s.predefined(), j.Variables...) {
		if v.File {
			continue
		}
		export(v.Key, v.Value)
	}
	export("CI_BUILDS_DIR", s.config.BuildsDir)
	export("CI_PROJECT_DIR", projectDir)
	export("BERTH_STANDIN_LOG", filepath.Join(s.config.CacheDir, StandinLogName))
	commands := func(cmds []string) {
		fmt.Fprintf(&body, "cd %s\n", shellQuote(projectDir))
		for _, c := range cmds {
			fmt.Fprintf(&body, "printf '%%s\\n' %s\n", shellQuote("$ "+c))
			body.WriteString(c + "\n")
		}
	}
	switch stage {
	case "prepare_script":
		body.WriteString("echo \"Running on $(hostname)...\"\n")
	case "get_sources":
		fmt.Fprintf(&body, "mkdir -p %s\n", shellQuote(projectDir))
		if j.RepoURL != "" {
			fmt.Fprintf(&body, "cd %s\n", shellQuote(projectDir))
			body.WriteString("echo 'Fetching changes...'\n")
			body.WriteString("git init -q .\n")
			fmt.Fprintf(&body, "git remote add origin %s\n", shellQuote(j.RepoURL))
			body.WriteString("git fetch -q origin '+refs/heads/*:refs/remotes/origin/*'\n")
			fmt.Fprintf(&body, "git checkout -q -f %s\n", shellQuote("origin/"+j.ref()))
			body.WriteString("echo \"Checked out $(git rev-parse --short HEAD)\"\n")
		}
	case "restore_cache":
		fmt.Fprintf(&body, "cd %s\n", shellQuote(projectDir))
		fmt.Fprintf(&body, "gitlab-runner cache-extractor --file %s --timeout 10\n", shellQuote(cacheFile))
	case "download_artifacts":
		fmt.Fprintf(&body, "cd %s\n", shellQuote(projectDir))
		body.WriteString("gitlab-runner artifacts-downloader --url http://gitlab.invalid --token \"$CI_JOB_TOKEN\" --id 1\n")
	case "build_script", "step_script":
		commands(append(append([]string{}, j.BeforeScript...), j.Script...))
	case "after_script":
		commands(j.AfterScript)
	case "archive_cache", "archive_cache_on_failure":
		fmt.Fprintf(&body, "cd %s\n", shellQuote(projectDir))
		fmt.Fprintf(&body, "gitlab-runner cache-archiver --file %s --timeout 10", shellQuote(cacheFile))
		for _, p := range j.CachePaths {
			fmt.Fprintf(&body, " --path %s", shellQuote(p))
		}
		body.WriteString("\n")
	case "upload_artifacts_on_success", "upload_artifacts_on_failure":
		fmt.Fprintf(&body, "cd %s\n", shellQuote(projectDir))
		body.WriteString("gitlab-runner artifacts-uploader --url http://gitlab.invalid --token \"$CI_JOB_TOKEN\" --id 1 --path out\n")
	case "cleanup_file_variables":
		fmt.Fprintf(&body, "rm -rf %s\n", shellQuote(projectDir+".tmp"))
	}
	return "#!/usr/bin/env bash\n\n" +
		"trap 'exit 1' TERM\n\n" +
		"if set -o | grep pipefail > /dev/null; then set -o pipefail; fi; set -o errexit\n" +
		"set +o noclobber\n" +
		": | eval " + shellQuote(body.String()) + "\n" +
		"exit 0\n"
}

// shellQuote quotes s for POSIX sh.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
