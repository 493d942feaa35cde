package dockerproxy

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strings"
)

// The build cache is shared engine state. The classic builder takes a
// step's result from any image on the host whose parent and step match,
// whoever made it, so a job could build, on purpose or by a failed build,
// a step that another project's build then takes from the cache instead of
// running it, with whatever the first job put in it (its job network can
// even shadow a public host name for the build). Labels say nothing about
// who made an image: a pulled or loaded image carries whatever labels its
// maker wrote, berth's with another project's id among them, and a
// history that names any step. And what a build leaves without its labels
// (intermediate containers, the step images of a failed build) would
// outlive the job.
//
// So the guard has every build remove its intermediate containers, also
// when it fails (rm, forcerm), and bounds what the cache may answer from:
//   - Docker: the images this job's own builds made (the builder's
//     "Successfully built" as it passed through this guard, and labelled
//     with this job's labels), and the cachefrom images the job names that
//     are not another project's. With cachefrom the classic builder takes
//     a cached step only from those images' chains. With none of them, the
//     build runs without the cache.
//   - Podman: Buildah's cache cannot be bounded so through the Docker API
//     (its cachefrom is a registry to pull cache from), so builds run
//     without it, and without intermediate images (layers=0).

// boundBuildCache rewrites a build's cache parameters (see above).
func (r *request) boundBuildCache() error {
	r.query.Set("rm", "1")
	r.query.Set("forcerm", "1")
	if r.f.podman {
		// Nor any intermediate image to leave behind.
		r.query.Set("nocache", "1")
		r.query.Set("layers", "0")
		r.query.Del("cachefrom")
		return nil
	}
	var sources []string
	if raw := r.query.Get("cachefrom"); raw != "" {
		var refs []string
		if err := json.Unmarshal([]byte(raw), &refs); err != nil {
			return refuse("bad cachefrom parameter: %v", err)
		}
		for _, ref := range refs {
			if err := r.imageSource(ref); err != nil {
				return err
			}
			sources = append(sources, ref)
		}
	}
	own, err := r.f.up.ImagesLabelled(r.ctx, r.f.selector)
	if err != nil {
		return fmt.Errorf("list the job's images for the build cache: %w", err)
	}
	for _, img := range own {
		if r.f.builtHere(img.ID) {
			sources = append(sources, img.ID)
		}
	}
	r.rewrite = r.f.recordStepImages
	if len(sources) == 0 {
		r.query.Set("nocache", "1")
		r.query.Del("cachefrom")
		return nil
	}
	data, err := json.Marshal(sources)
	if err != nil {
		return err
	}
	r.query.Set("cachefrom", string(data))
	return nil
}

// A build that fails leaves the images of the steps it ran, untagged and
// without the build's labels, which the job's cleanup could not find. So
// the guard reads the classic builder's progress as it passes to the job
// and records, with the names the job gave, the id of every step image the
// build made itself: the " ---> <id>" that ends a step, unless the step
// is a FROM (the base image) or was answered from the cache (" ---> Using
// cache"), which are not the job's. A RUN step's output could imitate
// these lines, so the job's cleanup removes only what it may: an image
// with no name, made since the job's guard started, not labelled as
// another job's, without force (one a container uses, or with child
// images, stays).

// recordStepImages wraps a build answer so that the step images it names
// are recorded for the job's cleanup.
func (f *Filter) recordStepImages(resp *http.Response) error {
	if resp.StatusCode != http.StatusOK || f.stepsFile == "" {
		return nil
	}
	resp.Body = &stepRecorder{ReadCloser: resp.Body, f: f}
	return nil
}

// stepRecorder passes a build's progress through and records the step
// images it names.
type stepRecorder struct {
	io.ReadCloser
	f    *Filter
	line []byte // the unfinished line of progress
	// skip: the step under way is a FROM or was cached, so its arrow
	// names an image that is not the build's own
	skip bool
}

// maxProgressLine bounds the part of a progress line kept to parse it.
const maxProgressLine = 64 << 10

func (s *stepRecorder) Read(p []byte) (int, error) {
	n, err := s.ReadCloser.Read(p)
	for _, b := range p[:n] {
		if b != '\n' {
			if len(s.line) < maxProgressLine {
				s.line = append(s.line, b)
			}
			continue
		}
		s.progress(s.line)
		s.line = s.line[:0]
	}
	return n, err
}

var (
	stepArrow = regexp.MustCompile(`^ ---> ([0-9a-f]{12,64})$`)
	builtID   = regexp.MustCompile(`^Successfully built ([0-9a-f]{12,64})$`)
)

// noteBuilt notes an image id (or its short form) that a build of this
// job reported it made.
func (f *Filter) noteBuilt(id string) {
	f.builtMu.Lock()
	defer f.builtMu.Unlock()
	f.built = append(f.built, id)
}

// builtHere reports whether a build of this job reported it made image id.
func (f *Filter) builtHere(id string) bool {
	id = strings.TrimPrefix(id, "sha256:")
	f.builtMu.Lock()
	defer f.builtMu.Unlock()
	for _, b := range f.built {
		if strings.HasPrefix(id, b) {
			return true
		}
	}
	return false
}

// progress handles one JSON progress message ({"stream": "..."}).
func (s *stepRecorder) progress(line []byte) {
	var msg struct {
		Stream string `json:"stream"`
	}
	if json.Unmarshal(line, &msg) != nil || msg.Stream == "" {
		return
	}
	for _, text := range strings.Split(msg.Stream, "\n") {
		switch {
		case text == " ---> Using cache":
			s.skip = true
		case strings.HasPrefix(text, " ---> "):
			if m := stepArrow.FindStringSubmatch(text); m != nil && !s.skip {
				_ = s.f.recordLine(s.f.stepsFile, m[1])
			}
		case strings.HasPrefix(text, "Successfully built "):
			// A RUN step's output could print this too: builtHere is only
			// asked of images that also carry the job's labels.
			if m := builtID.FindStringSubmatch(text); m != nil {
				s.f.noteBuilt(m[1])
			}
		case strings.HasPrefix(text, "Step "):
			_, instr, _ := strings.Cut(text, " : ")
			word, _, _ := strings.Cut(instr, " ")
			s.skip = strings.EqualFold(word, "FROM")
		}
	}
}
