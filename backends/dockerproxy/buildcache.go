package dockerproxy

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strings"

	"github.com/berthci/berth/backends"
)

// The build cache is shared engine state. The classic builder takes a
// step's result from any image on the host whose parent and step match,
// whoever made it, so a job could build, on purpose or by a failed build,
// a step that another project's build then takes from the cache instead of
// running it, with whatever the first job put in it (its job network can
// even shadow a public host name for the build). And what a build leaves
// without its labels (intermediate containers, the step images of a failed
// build) would outlive the job.
//
// So the guard has every build remove its intermediate containers, also
// when it fails (rm, forcerm), and bounds what the cache may answer from:
//   - Docker: the images its project's jobs built on this runner, and the
//     cachefrom images the job names that are not another project's. With
//     cachefrom the classic builder takes a cached step only from those
//     images' chains. With none of them, the build runs without the cache.
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
	own, err := r.f.up.ImagesLabelled(r.ctx, map[string]string{
		backends.LabelRunner:    r.f.labels[backends.LabelRunner],
		backends.LabelProjectID: r.f.labels[backends.LabelProjectID],
	})
	if err != nil {
		return fmt.Errorf("list the project's images for the build cache: %w", err)
	}
	for _, img := range own {
		sources = append(sources, img.ID)
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

var stepArrow = regexp.MustCompile(`^ ---> ([0-9a-f]{12,64})$`)

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
		case strings.HasPrefix(text, "Step "):
			_, instr, _ := strings.Cut(text, " : ")
			word, _, _ := strings.Cut(instr, " ")
			s.skip = strings.EqualFold(word, "FROM")
		}
	}
}
