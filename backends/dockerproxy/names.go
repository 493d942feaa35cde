package dockerproxy

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/distribution/reference"
	"golang.org/x/sys/unix"

	"github.com/berthci/berth/backends"
)

// Names a job gives to images by tag, build -t or load stay in the
// engine's shared store after the job, where a name another project's job
// later asks for would find them: a loaded image has no labels to be
// removed by. So the guard writes each new name it lets a job give into a
// record in the job's socket directory, which the job cannot reach (it
// mounts only the socket), and the backend's cleanup removes those names
// (untags them; an image left without a name and not in use goes with
// it). Names the job pulled stay, as with the docker executor: a pull
// gives a name the registry's content.

// The engines a record is for: each backend's cleanup reads its own
// engine's, since every allowed backend cleans up every job and a name in
// one engine's store is nothing of the job's in another's.
const (
	EngineDocker = "docker"
	EnginePodman = "podman"
)

// givenNamesFile is the record's name in the job's socket directory for an
// engine.
func givenNamesFile(engine string) string { return "given-names." + engine }

// recordName appends name to the filter's record of given names.
func (f *Filter) recordName(name string) error {
	if strings.ContainsAny(name, "\n\r") {
		return refuse("image name %q is not valid", name)
	}
	return f.recordLine(f.namesFile, name)
}

// recordLine appends a line to a record file ("" records nothing).
func (f *Filter) recordLine(path, line string) error {
	if path == "" {
		return nil
	}
	f.namesMu.Lock()
	defer f.namesMu.Unlock()
	file, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return fmt.Errorf("record %q for the job's cleanup: %w", line, err)
	}
	if _, err := file.WriteString(line + "\n"); err != nil {
		file.Close()
		return fmt.Errorf("record %q for the job's cleanup: %w", line, err)
	}
	return file.Close()
}

// stepImagesFile is the record of the step images the job's builds made
// (see buildcache.go), on Docker.
const stepImagesFile = "step-images.docker"

// leftImagesFile is the record, for an engine, of the images that a name
// the job gave left when the job moved it: one it loaded has no other name
// then, and no labels to be found by.
func leftImagesFile(engine string) string { return "left-images." + engine }

// LeftImages returns the images the job's given names left, for its
// cleanup, which removes those that have no name left and no labels.
func LeftImages(job *backends.Job, engine string) ([]string, error) {
	return readRecord(filepath.Join(JobDir(job), leftImagesFile(engine)))
}

// GivenNames returns the image names the guard on engine let the job
// give, for its cleanup: none when the job had no guard there.
func GivenNames(job *backends.Job, engine string) ([]string, error) {
	return readRecord(filepath.Join(JobDir(job), givenNamesFile(engine)))
}

// StepImages returns the ids of the step images the job's builds made on
// Docker, for its cleanup.
func StepImages(job *backends.Job) ([]string, error) {
	return readRecord(filepath.Join(JobDir(job), stepImagesFile))
}

// readRecord returns a record's lines, once each, in order.
func readRecord(path string) ([]string, error) {
	file, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read the guard's record %s: %w", filepath.Base(path), err)
	}
	defer file.Close()
	seen := map[string]bool{}
	var names []string
	sc := bufio.NewScanner(file)
	for sc.Scan() {
		if name := sc.Text(); name != "" && !seen[name] {
			seen[name] = true
			names = append(names, name)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read the guard's record %s: %w", filepath.Base(path), err)
	}
	return names, nil
}

// GivenByAnotherJob reports which other job of the runner (one whose
// guard's record is still there, so not yet cleaned up) gave the image
// name through its guard on engine, if any. Prepare asks before it uses a
// local image by name: such a name points at what that job put there, not
// at what a pull would give.
func GivenByAnotherJob(job *backends.Job, engine, name string) (string, bool) {
	want := canonicalName(name)
	records, _ := filepath.Glob(filepath.Join(filepath.Dir(job.BuildsDir), "*.docker-proxy", givenNamesFile(engine)))
	for _, record := range records {
		dir := filepath.Dir(record)
		if dir == JobDir(job) {
			continue
		}
		names, err := readRecord(record)
		if err != nil {
			continue
		}
		for _, n := range names {
			if n == name || canonicalName(n) == want {
				return strings.TrimSuffix(filepath.Base(dir), ".docker-proxy"), true
			}
		}
	}
	return "", false
}

// canonicalName is a reference in full (docker.io/library/x:latest for x),
// or the name itself when it is none; localhost/x counts as x, which
// Podman resolves to it.
func canonicalName(name string) string {
	named, err := reference.ParseNormalizedNamed(strings.TrimPrefix(name, "localhost/"))
	if err != nil {
		return name
	}
	return reference.TagNameOnly(named).String()
}

// GuardStarted returns when the job's guard directory was made, at its
// prepare (its birth time; a job cannot reach it to change it), or false
// when the file system does not say.
func GuardStarted(job *backends.Job) (time.Time, bool) {
	var st unix.Statx_t
	if err := unix.Statx(unix.AT_FDCWD, JobDir(job), unix.AT_SYMLINK_NOFOLLOW, unix.STATX_BTIME, &st); err != nil || st.Mask&unix.STATX_BTIME == 0 {
		return time.Time{}, false
	}
	return time.Unix(st.Btime.Sec, int64(st.Btime.Nsec)), true
}
