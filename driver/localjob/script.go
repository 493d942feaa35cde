package localjob

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"unicode"
)

// The stages of a job, in the order gitlab-runner runs them.
const (
	stagePrepare             = "prepare_script"
	stageGetSources          = "get_sources"
	stageRestoreCache        = "restore_cache"
	stageDownloadArtifacts   = "download_artifacts"
	stageStepScript          = "step_script"
	stageAfterScript         = "after_script"
	stageArchiveCache        = "archive_cache"
	stageArchiveCacheFailure = "archive_cache_on_failure"
	stageUploadSuccess       = "upload_artifacts_on_success"
	stageUploadFailure       = "upload_artifacts_on_failure"
	stageCleanupFileVars     = "cleanup_file_variables"
)

// stageDescriptions are the runner's headers for each stage.
var stageDescriptions = map[string]string{
	stagePrepare:             "Preparing environment",
	stageGetSources:          "Getting source from Git repository",
	stageRestoreCache:        "Restoring cache",
	stageDownloadArtifacts:   "Downloading artifacts",
	stageAfterScript:         "Running after_script",
	stageArchiveCache:        "Saving cache for successful job",
	stageArchiveCacheFailure: "Saving cache for failed job",
	stageUploadSuccess:       "Uploading artifacts for successful job",
	stageUploadFailure:       "Uploading artifacts for failed job",
	stageCleanupFileVars:     "Cleaning up project directory and file based variables",
}

func stageDescription(stage string) string {
	if d, ok := stageDescriptions[stage]; ok {
		return d
	}
	return fmt.Sprintf("Executing %q stage of the job script", stage)
}

// The runner's ANSI colors.
const (
	ansiBoldGreen = "\x1b[32;1m"
	ansiYellow    = "\x1b[0;33m"
	ansiBoldCyan  = "\x1b[36;1m"
	ansiBoldRed   = "\x1b[31;1m"
	ansiReset     = "\x1b[0;m"
)

// source is where get_sources fetches the work tree's snapshot from.
type source struct {
	// Repo is the bare repository in the job's builds dir.
	Repo string
	// Ref is the ref in Repo and FetchInto the ref the job gets it as,
	// e.g. refs/heads/main and refs/remotes/origin/main.
	Ref, FetchInto string
	Commit         string
	RefName        string
	Depth          int
	// Strategy is GIT_STRATEGY: fetch, clone or none.
	Strategy string
}

// scripts generates a job's stage scripts the way gitlab-runner's bash
// shell does: errexit and pipefail, every variable exported, the stage's
// work evaluated in a subshell with stdin from /dev/null, and each command
// echoed in green before it runs.
type scripts struct {
	job *Job
	// vars are every variable of the job, predefined ones included,
	// expanded.
	vars       []Variable
	projectDir string
	// cacheDir is the project's cache directory that config reported.
	cacheDir string
	hostname string
	source   source
	// stagingDir receives the artifacts, for exec to copy to the host's
	// artifacts directory.
	stagingDir string
	// depsDir holds the artifacts of earlier exec runs of the jobs in deps.
	depsDir string
	deps    []string
}

func (s *scripts) tmpDir() string { return s.projectDir + ".tmp" }

// cacheFile is where a cache key's archive lives on the host, in the
// project's cache directory that every stage container mounts.
func (s *scripts) cacheFile(key string) string {
	return filepath.Join(s.cacheDir, cacheKeyDir(key), "cache.tar.gz")
}

var cacheKeyRe = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`) })

// cacheKeyDir turns a cache key into one directory name; a key with other
// characters gets a hash so that two keys never share one.
func cacheKeyDir(key string) string {
	if cacheKeyRe().MatchString(key) && len(key) <= 200 {
		return key
	}
	sum := sha256.Sum256([]byte(key))
	clean := strings.Map(func(r rune) rune {
		if r < 128 && (unicode.IsLetter(r) || unicode.IsDigit(r) || r == '.' || r == '_' || r == '-') {
			return r
		}
		return '_'
	}, key)
	if len(clean) > 100 {
		clean = clean[:100]
	}
	return strings.TrimLeft(clean, ".") + "-" + hex.EncodeToString(sum[:])[:12]
}

// script returns the stage's script, or "" when the stage has nothing to
// do and is skipped, as the runner skips it.
func (s *scripts) script(stage, jobStatus string) string {
	w := &shellWriter{}
	switch stage {
	case stagePrepare:
		w.line(`echo "Running on $(hostname) via ` + strings.ReplaceAll(s.hostname, `"`, "") + `..."`)
	case stageGetSources:
		s.getSources(w)
	case stageRestoreCache:
		if !s.restoreCache(w) {
			return ""
		}
	case stageDownloadArtifacts:
		if len(s.deps) == 0 {
			return ""
		}
		s.downloadArtifacts(w)
	case stageStepScript:
		s.exports(w)
		w.cd(s.projectDir)
		w.commands(append(append([]string(nil), s.job.BeforeScript...), s.job.Script...))
	case stageAfterScript:
		if len(s.job.AfterScript) == 0 {
			return ""
		}
		s.exports(w)
		w.export("CI_JOB_STATUS", jobStatus)
		w.cd(s.projectDir)
		w.notice("Running after script...")
		w.commands(s.job.AfterScript)
	case stageArchiveCache, stageArchiveCacheFailure:
		if !s.archiveCache(w, stage == stageArchiveCache) {
			return ""
		}
	case stageUploadSuccess, stageUploadFailure:
		if !s.job.Artifacts.uploadsOn(stage == stageUploadSuccess) {
			return ""
		}
		s.uploadArtifacts(w)
	case stageCleanupFileVars:
		w.linef("rm -rf %s", shellQuote(s.tmpDir()))
	default:
		return ""
	}
	return w.finish()
}

// exports writes the job's variables and GITLAB_ENV, as every runner stage
// script but prepare's starts.
func (s *scripts) exports(w *shellWriter) {
	for _, v := range s.vars {
		w.export(v.Key, v.Value)
	}
	env := s.tmpDir() + "/gitlab_runner_env"
	w.export("GITLAB_ENV", env)
	w.linef("mkdir -p %s", shellQuote(s.tmpDir()))
	w.linef("touch %s", shellQuote(env))
	w.linef(`while read -r line; do case "$line" in *=*) export "$line";; esac; done < %s`, shellQuote(env))
}

func (s *scripts) getSources(w *shellWriter) {
	s.exports(w)
	w.export("GIT_TERMINAL_PROMPT", "0")
	src := s.source
	if src.Strategy == "none" {
		w.linef("mkdir -p %s", shellQuote(s.projectDir))
		w.notice("Skipping Git repository setup")
		return
	}
	if src.Depth > 0 {
		w.notice(fmt.Sprintf("Fetching changes with git depth set to %d...", src.Depth))
	} else {
		w.notice("Fetching changes...")
	}
	w.linef("rm -rf %s", shellQuote(s.projectDir))
	w.linef("mkdir -p %s", shellQuote(s.projectDir))
	w.cd(s.projectDir)
	w.line("git -c init.defaultBranch=main init -q")
	w.echo("Created fresh repository.")
	w.linef("git remote add origin %s", shellQuote(src.Repo))
	// The snapshot's repository belongs to the host's user; git refuses
	// repositories of other owners unless told otherwise.
	w.linef("git -c safe.directory='*' fetch -q --no-tags origin %s", shellQuote("+"+src.Ref+":"+src.FetchInto))
	short := src.Commit
	if len(short) > 8 {
		short = short[:8]
	}
	w.notice(fmt.Sprintf("Checking out %s as detached HEAD (ref is %s)...", short, src.RefName))
	w.linef("git -c advice.detachedHead=false checkout -q -f %s", shellQuote(src.Commit))
	w.notice("Skipping Git submodules setup")
}

func (s *scripts) restoreCache(w *shellWriter) bool {
	var caches []Cache
	for _, c := range s.job.Caches {
		if c.restores() {
			caches = append(caches, c)
		}
	}
	if len(caches) == 0 {
		return false
	}
	s.exports(w)
	w.cd(s.projectDir)
	for _, c := range caches {
		w.notice(fmt.Sprintf("Checking cache for %s...", c.Key))
		keys := append([]string{c.Key}, c.FallbackKeys...)
		for i, key := range keys {
			file := s.cacheFile(key)
			keyword := "elif"
			if i == 0 {
				keyword = "if"
			}
			w.linef("%s [ -f %s ]; then", keyword, shellQuote(file))
			if i > 0 {
				w.echo(fmt.Sprintf("Using the cache of fallback key %s", key))
			}
			w.linef("  if tar -xzf %s; then", shellQuote(file))
			w.echo("Successfully extracted cache")
			w.line("  else")
			w.warning(fmt.Sprintf("WARNING: Failed to extract cache %s", file))
			w.line("  fi")
		}
		w.line("else")
		w.warning(fmt.Sprintf("WARNING: no cache for key %s yet: an earlier berth exec of this project saves it to %s", c.Key, filepath.Dir(s.cacheFile(c.Key))))
		w.line("fi")
	}
	return true
}

func (s *scripts) downloadArtifacts(w *shellWriter) {
	s.exports(w)
	w.cd(s.projectDir)
	for _, dep := range s.deps {
		w.notice(fmt.Sprintf("Downloading artifacts for %s (from an earlier berth exec)...", dep))
		w.linef("(cd %s && tar -cf - .) | tar -xf -", shellQuote(filepath.Join(s.depsDir, artifactDirName(dep))))
	}
}

// matchFunction lists the files of one path pattern into $berth_list and
// says how many it found, as the runner's archivers do.
const matchFunction = `berth_match() {
  berth_label=$1; shift
  berth_found=0
  for berth_f in "$@"; do
    if [ -e "$berth_f" ] || [ -L "$berth_f" ]; then
      case $berth_f in -*) berth_f=./$berth_f;; esac
      printf '%s\n' "$berth_f" >> "$berth_list"
      berth_found=$((berth_found + $(find "$berth_f" | wc -l)))
    fi
  done
  if [ "$berth_found" -gt 0 ]; then
    printf '%s: found %s matching files and directories\n' "$berth_label" "$berth_found"
  else
    printf '\033[0;33mWARNING: %s: no matching files. Ensure that the path is relative to the project directory (%s)\033[0;m\n' "$berth_label" "$PWD"
  fi
}
berth_untracked() {
  if ! git -c safe.directory='*' rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    printf '\033[0;33mWARNING: untracked: %s is not a git work tree; no untracked files collected\033[0;m\n' "$PWD"
    return 0
  fi
  berth_before=$(wc -l < "$berth_list")
  git -c core.quotepath=off -c safe.directory='*' ls-files -o | while IFS= read -r berth_f; do
    case $berth_f in -*) berth_f=./$berth_f;; esac
    printf '%s\n' "$berth_f"
  done >> "$berth_list"
  printf 'untracked: found %s files\n' "$(( $(wc -l < "$berth_list") - berth_before ))"
}
if [ -n "${BASH_VERSION:-}" ]; then shopt -s globstar dotglob; fi`

// collect writes the commands that list the files of paths (and the
// untracked files) into list.
func (s *scripts) collect(w *shellWriter, list string, paths []string, untracked bool) {
	w.line(matchFunction)
	w.linef("berth_list=%s", shellQuote(list))
	w.line(`: > "$berth_list"`)
	for _, p := range paths {
		w.linef("berth_match %s %s", shellQuote(p), globWord(p))
	}
	if untracked {
		w.line("berth_untracked")
	}
}

func (s *scripts) archiveCache(w *shellWriter, success bool) bool {
	var caches []Cache
	for _, c := range s.job.Caches {
		if c.archivesOn(success) {
			caches = append(caches, c)
		}
	}
	if len(caches) == 0 {
		return false
	}
	s.exports(w)
	w.cd(s.projectDir)
	for i, c := range caches {
		file := s.cacheFile(c.Key)
		list := fmt.Sprintf("%s/berth-cache-%d.list", s.tmpDir(), i)
		w.notice(fmt.Sprintf("Creating cache %s...", c.Key))
		s.collect(w, list, c.Paths, c.Untracked)
		// As with the runner, a cache that cannot be saved is a warning,
		// not a failure of the job.
		w.linef(`if [ ! -s "$berth_list" ]; then`)
		w.warning(fmt.Sprintf("WARNING: no files to cache for key %s; nothing saved", c.Key))
		w.linef("elif mkdir -p %s && tar -czf %s -T \"$berth_list\" && mv -f %s %s; then",
			shellQuote(filepath.Dir(file)), shellQuote(file+".tmp"), shellQuote(file+".tmp"), shellQuote(file))
		w.notice("Created cache")
		w.line("else")
		w.linef("  rm -f %s", shellQuote(file+".tmp"))
		w.warning("WARNING: Failed to create cache")
		w.line("fi")
	}
	return true
}

func (s *scripts) uploadArtifacts(w *shellWriter) {
	a := s.job.Artifacts
	s.exports(w)
	w.cd(s.projectDir)
	w.notice("Uploading artifacts...")
	s.collect(w, s.tmpDir()+"/berth-artifacts.list", a.Paths, a.Untracked)
	w.linef("rm -rf %s", shellQuote(s.stagingDir))
	w.linef("mkdir -p %s", shellQuote(s.stagingDir))
	w.linef(`if [ -s "$berth_list" ]; then`)
	w.linef(`  tar -cf - -T "$berth_list" | (cd %s && tar -xf -)`, shellQuote(s.stagingDir))
	// exec copies them out as the host user, who may not be the
	// container's.
	w.linef("  chmod -R a+rX %s", shellQuote(s.stagingDir))
	w.echo("Collected the artifacts for berth exec")
	w.line("else")
	w.warning("WARNING: no files to upload")
	w.line("fi")
}

// shellWriter builds a stage script's body.
type shellWriter struct{ body strings.Builder }

func (w *shellWriter) line(s string) { w.body.WriteString(s + "\n") }

func (w *shellWriter) linef(format string, args ...any) { w.line(fmt.Sprintf(format, args...)) }

func (w *shellWriter) export(key, value string) {
	w.linef("export %s=%s", key, shellQuote(value))
}

func (w *shellWriter) cd(dir string) { w.linef("cd %s", shellQuote(dir)) }

func (w *shellWriter) echo(text string) { w.linef("printf '%%s\\n' %s", shellQuote(text)) }

func (w *shellWriter) notice(text string) {
	w.linef(`printf '\033[32;1m%%s\033[0;m\n' %s`, shellQuote(text))
}

func (w *shellWriter) warning(text string) {
	w.linef(`printf '\033[0;33m%%s\033[0;m\n' %s`, shellQuote(text))
}

// commands echoes each command in green, as "$ command", then runs it. A
// multi-line command shows its first line, as the runner does.
func (w *shellWriter) commands(cmds []string) {
	for _, c := range cmds {
		c = strings.TrimSpace(c)
		if c == "" {
			w.line("echo")
			continue
		}
		first, _, multi := strings.Cut(c, "\n")
		if multi {
			w.notice("$ " + first + " # collapsed multi-line command")
		} else {
			w.notice("$ " + c)
		}
		w.line(c)
	}
}

// finish wraps the body as the runner's bash shell does.
func (w *shellWriter) finish() string {
	return "#!/usr/bin/env bash\n\n" +
		"trap 'exit 1' TERM\n\n" +
		"case \"$(set -o)\" in *\"pipefail\"*) set -o pipefail;; esac; set -o errexit\n" +
		"set +o noclobber\n" +
		"(trap 'exit 1' TERM; eval " + shellQuote(w.body.String()) + ") < /dev/null\n" +
		"exit 0\n"
}

// shellQuote quotes s for POSIX sh.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// globWord writes a path pattern as one shell word that globs: *, ?, **,
// [...] and {a,b} stay active and every other character is quoted.
func globWord(pattern string) string {
	var b, lit strings.Builder
	flush := func() {
		if lit.Len() > 0 {
			b.WriteString(shellQuote(lit.String()))
			lit.Reset()
		}
	}
	inBracket := false
	for _, r := range pattern {
		switch {
		case inBracket && r == ']':
			b.WriteRune(r)
			inBracket = false
		case inBracket:
			if unicode.IsLetter(r) || unicode.IsDigit(r) || strings.ContainsRune("!^-_.", r) {
				b.WriteRune(r)
			} else if r != '\n' {
				b.WriteString(`\` + string(r))
			}
		case r == '[' && strings.ContainsRune(pattern, ']'):
			flush()
			b.WriteRune(r)
			inBracket = true
		case strings.ContainsRune("*?{},", r):
			flush()
			b.WriteRune(r)
		default:
			lit.WriteRune(r)
		}
	}
	flush()
	if inBracket {
		// An unclosed bracket matches itself.
		return shellQuote(pattern)
	}
	return b.String()
}
