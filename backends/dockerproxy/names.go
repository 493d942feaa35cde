package dockerproxy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
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

// recordName appends name to the filter's record of given names, with no
// image yet: until settleNames finds what the engine made of it, the name
// is the job's whatever it points at.
func (f *Filter) recordName(name string) error {
	if strings.ContainsAny(name, "\n\r\t") {
		return refuse("image name %q is not valid", name)
	}
	return f.recordLine(f.namesFile, name)
}

// settleNames records, once the engine has answered, the image each name
// the job gave points at ("-": none, the request failed), so that another
// job's guard tells the job's image under that name from one a later pull
// put there.
func (f *Filter) settleNames(ctx context.Context, names []string) {
	for _, name := range names {
		id := "-"
		if obj, err := f.up.Image(ctx, name); err == nil {
			id = obj.ID
		} else if !errors.Is(err, ErrNotFound) {
			continue // unknown: the name stays the job's whatever it points at
		}
		_ = f.recordLine(f.namesFile, name+"\t"+id)
	}
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

// GivenName is a name the job gave, with the image the guard last found
// it pointing at once the engine had answered.
type GivenName struct {
	Name string
	// ID is that image ("-": none, the request failed; "": not known,
	// the guard stopped before the answer).
	ID string
}

// PointsAt reports whether the name, which the engine resolves to image
// id now, still points at what the job gave it: not when a later pull
// (of this or another job) replaced it, which cleanup leaves as it
// leaves any pulled image.
func (g GivenName) PointsAt(id string) bool {
	return g.ID == "" || (g.ID != "-" && strings.TrimPrefix(g.ID, "sha256:") == strings.TrimPrefix(id, "sha256:"))
}

// GivenNames returns the image names the guard on engine let the job
// give, each with what it last pointed at, for its cleanup: none when the
// job had no guard there.
func GivenNames(job *backends.Job, engine string) ([]GivenName, error) {
	lines, err := readLines(filepath.Join(JobDir(job), givenNamesFile(engine)))
	var names []GivenName
	at := map[string]int{}
	for _, line := range lines {
		name, id, _ := strings.Cut(line, "\t")
		i, seen := at[name]
		if !seen {
			i = len(names)
			at[name] = i
			names = append(names, GivenName{Name: name})
		}
		names[i].ID = id
	}
	return names, err
}

// StepImages returns the ids of the step images the job's builds made on
// Docker, for its cleanup.
func StepImages(job *backends.Job) ([]string, error) {
	return readRecord(filepath.Join(JobDir(job), stepImagesFile))
}

// readRecord returns a record's lines, once each, in order.
func readRecord(path string) ([]string, error) {
	lines, err := readLines(path)
	seen := map[string]bool{}
	var once []string
	for _, line := range lines {
		if !seen[line] {
			seen[line] = true
			once = append(once, line)
		}
	}
	return once, err
}

// readLines returns a record's lines, all of them, in order.
func readLines(path string) ([]string, error) {
	file, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read the guard's record %s: %w", filepath.Base(path), err)
	}
	defer file.Close()
	var lines []string
	sc := bufio.NewScanner(file)
	for sc.Scan() {
		if line := sc.Text(); line != "" {
			lines = append(lines, line)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read the guard's record %s: %w", filepath.Base(path), err)
	}
	return lines, nil
}

// PeersDir is where the guard container sees the builds directory, of
// every runner that shares it (read-only), to read other jobs' records of
// given names: <runner>/<job>.docker-proxy/given-names.<engine>.
const PeersDir = "/run/berth-peers"

// buildsRoot is the admin's builds_dir of a job's builds directory
// (<builds_dir>/<runner>/<job id>).
func buildsRoot(buildsDir string) string { return filepath.Dir(filepath.Dir(buildsDir)) }

// peerName is how a job's directory is named among its peers:
// <runner>/<job id>.docker-proxy.
func peerName(buildsDir string) string {
	return filepath.Join(filepath.Base(filepath.Dir(buildsDir)), filepath.Base(buildsDir)+".docker-proxy")
}

// GivenByAnotherJob reports which other job of the runner (one whose
// guard's record is still there, so not yet cleaned up) gave the image
// name through its guard on engine, if the name points at what that job
// put there: the image id the engine resolves name to now (either form,
// with or without "sha256:"), or any while that job's request is under
// way. Prepare asks before it uses a local image by name, and each guard
// before the job uses one: such a name points at what that job put there,
// not at what a pull would give.
func GivenByAnotherJob(job *backends.Job, engine, name, id string) (string, bool) {
	return givenByOther(buildsRoot(job.BuildsDir), peerName(job.BuildsDir), engine, name, id)
}

// givenByOther is GivenByAnotherJob over the builds directory peers (of
// every runner that shares it), leaving out the job directory self
// (<runner>/<job>.docker-proxy).
func givenByOther(peers, self, engine, name, id string) (string, bool) {
	want := canonicalName(name)
	job := ""
	eachPeerName(peers, self, engine, func(peer string, g GivenName) bool {
		if (g.Name == name || canonicalName(g.Name) == want) && g.PointsAt(id) {
			job = peer
			return false
		}
		return true
	})
	return job, job != ""
}

// imageGivenByOther reports which other job's given name points at image
// id now, by what its guard settled it on.
func imageGivenByOther(peers, self, engine, id string) (string, bool) {
	job := ""
	eachPeerName(peers, self, engine, func(peer string, g GivenName) bool {
		if g.ID != "" && g.ID != "-" && g.PointsAt(id) {
			job = peer
			return false
		}
		return true
	})
	return job, job != ""
}

// eachPeerName calls fn with each name in the other jobs' records (the
// last line of each, which says what it points at now) until fn returns
// false.
func eachPeerName(peers, self, engine string, fn func(job string, g GivenName) bool) {
	records, _ := filepath.Glob(filepath.Join(peers, "*", "*.docker-proxy", givenNamesFile(engine)))
	for _, record := range records {
		dir, err := filepath.Rel(peers, filepath.Dir(record))
		if err != nil || dir == self {
			continue
		}
		lines, err := readLines(record)
		if err != nil {
			continue
		}
		last := map[string]string{}
		var order []string
		for _, line := range lines {
			n, at, _ := strings.Cut(line, "\t")
			if _, seen := last[n]; !seen {
				order = append(order, n)
			}
			last[n] = at
		}
		job := strings.TrimSuffix(dir, ".docker-proxy")
		for _, n := range order {
			if !fn(job, GivenName{Name: n, ID: last[n]}) {
				return
			}
		}
	}
}

// othersName reports whether ref, which the engine resolves to image id
// now, is a name another job of the runner gave through its guard while
// that job runs: this job does not see it, as if the name were not there.
func (f *Filter) othersName(ref, id string) bool {
	if f.peersDir == "" {
		return false
	}
	engine := EngineDocker
	if f.podman {
		engine = EnginePodman
	}
	if _, given := givenByOther(f.peersDir, f.selfDir, engine, ref, id); given {
		return true
	}
	// By its id: the image another job's name points at is that job's
	// while it runs (a container of it would keep the name past that
	// job's cleanup).
	if idRef.MatchString(ref) {
		_, given := imageGivenByOther(f.peersDir, f.selfDir, engine, id)
		return given
	}
	return false
}

// idRef matches a reference to an image by its id or a prefix of it.
var idRef = regexp.MustCompile(`^(sha256:)?[0-9a-f]{1,64}$`)

// notAnothersName answers for ref as the engine would for a name it does
// not have: another job gave it, and the job's docker CLI pulls the image
// then, which gives the name the registry's content.
func notAnothersName(ref string) error {
	return notFound("No such image: %s (another job running on this runner gave this name to an image of its own, which this job does not see; pull %s for the registry's)", ref, ref)
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
