package dockerproxy

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path"
	"sort"
	"strings"
	"time"

	"github.com/distribution/reference"

	"github.com/berthci/berth/backends"
)

// Images are shared engine state, and a name is a pointer any job could
// move. The guard keeps three kinds apart by the image a name points at:
//   - own: built through a guard by a job of this project on this runner
//     (the guard sets berth.project.id, berth.runner and berth.role on
//     every build, over anything the Dockerfile says);
//   - foreign: built by another project's job, or an image with neither a
//     name nor a digest that is not own (a build's step or stage image,
//     which only the last stage's labels would mark as another job's); it
//     can hold that project's secrets, so the job may not use it at all;
//   - shared: everything else (pulled, made by the admin, berth's own helper,
//     proxy and DinD images).
//
// A job may use own and shared images, give new names, and move or delete
// only names that point at its own project's images, or that it gave itself
// (a name that was new when this job tagged, built, loaded or pulled it,
// kept in the job's guard). A pull replaces a name with the registry's
// content, as on the plain socket.

// maxLoadManifest caps the size of the name-bearing files in a loaded
// archive (manifest.json, repositories, index.json).
const maxLoadManifest = 4 << 20

type imageKind int

const (
	imageMissing imageKind = iota
	imageShared
	imageOwn
	imageForeign
)

func (f *Filter) imageKind(labels map[string]string) imageKind {
	project, ok := labels[backends.LabelProjectID]
	if !ok || labels[backends.LabelRole] != RoleJobCreated {
		return imageShared
	}
	if project == f.labels[backends.LabelProjectID] && labels[backends.LabelRunner] == f.labels[backends.LabelRunner] {
		return imageOwn
	}
	return imageForeign
}

// objectKind is imageKind for an image the engine reported: one with no
// name and no digest counts as foreign unless it is own.
func (f *Filter) objectKind(obj Object) imageKind {
	kind := f.imageKind(obj.Labels)
	if kind == imageShared && obj.Untagged {
		return imageForeign
	}
	return kind
}

func (r *request) lookupImage(ref string) (imageKind, error) {
	obj, err := r.f.up.Image(r.ctx, ref)
	if errors.Is(err, ErrNotFound) {
		return imageMissing, nil
	}
	if err != nil {
		return 0, fmt.Errorf("look up image %q: %w", ref, err)
	}
	return r.f.objectKind(obj), nil
}

// imageSource checks an image the job uses (runs, tags, inspects, saves,
// pushes): any but another project's, and not by a name another job gave
// while it runs.
func (r *request) imageSource(ref string) error {
	if ref == "" {
		return nil
	}
	obj, err := r.f.up.Image(r.ctx, ref)
	if errors.Is(err, ErrNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("look up image %q: %w", ref, err)
	}
	return r.usableImage(ref, obj)
}

// usableImage checks image obj, which the job names ref: not another
// project's, and not by a name another job gave while it runs.
func (r *request) usableImage(ref string, obj Object) error {
	if r.f.objectKind(obj) == imageForeign {
		return refuse("image %q was built by another project's job, or is another job's unnamed build step, and may hold its secrets; pull or build your own", ref)
	}
	if r.f.othersName(ref, obj.ID) {
		return notAnothersName(ref)
	}
	return nil
}

// containerImage checks the image of a container the job creates: as
// imageSource, and free of labels in berth's namespace that the guard does
// not set itself, which the container would inherit from the image. It
// returns the image's id, for the engine to create from: by the name, the
// engine would look it up again. A missing image gets the engine's answer
// for one, and the docker CLI pulls it and asks again.
func (r *request) containerImage(ref string) (string, error) {
	if ref == "" {
		return "", nil
	}
	obj, err := r.f.up.Image(r.ctx, ref)
	if errors.Is(err, ErrNotFound) {
		return "", notFound("No such image: %s", ref)
	}
	if err != nil {
		return "", fmt.Errorf("look up image %q: %w", ref, err)
	}
	if err := r.usableImage(ref, obj); err != nil {
		return "", err
	}
	var stray []string
	for k := range obj.Labels {
		if _, set := r.f.labels[k]; strings.HasPrefix(strings.ToLower(k), backends.LabelPrefix) && !set {
			stray = append(stray, k)
		}
	}
	if len(stray) > 0 {
		sort.Strings(stray)
		return "", refuse("image %q carries labels in berth's namespace (%s), which its containers would inherit; berth.* labels are berth's own: build the image without them", ref, strings.Join(stray, ", "))
	}
	return obj.ID, nil
}

// repositorySource checks every image a reference may stand for: a name
// without a tag or digest is all of the repository's tags to save.
func (r *request) repositorySource(ref string) error {
	if err := r.imageSource(ref); err != nil {
		return err
	}
	if named, err := reference.ParseNormalizedNamed(ref); err != nil || !reference.IsNameOnly(named) {
		return nil
	}
	images, err := r.f.up.Images(r.ctx, ref)
	if err != nil {
		return fmt.Errorf("list the images of %q: %w", ref, err)
	}
	for _, img := range images {
		if r.f.objectKind(img) == imageForeign {
			return refuse("repository %q holds an image another project's job built, which may hold its secrets; name the tag you want", ref)
		}
	}
	return nil
}

// imageTarget checks a name the job gives an image (tag, build -t, load):
// a new name, one it gave itself, or one that points at an image of its own
// project.
func (r *request) imageTarget(name string) error {
	if name == "" {
		return nil
	}
	// The engine reads a name of hex digits alone as an image id prefix
	// once no tag has it: FROM x, checked as the job's own tag, would
	// name another project's image after the job removed the tag.
	repo := name
	if named, err := reference.ParseNormalizedNamed(name); err == nil {
		repo = reference.FamiliarName(named)
	} else if i := strings.LastIndexAny(name, ":@"); i > 0 {
		repo = name[:i]
	}
	if hexName.MatchString(repo) {
		return refuse("image name %q is not allowed: a name of hex digits only reads as an image id; choose a name with a letter beyond a-f", name)
	}
	kind, err := r.lookupImage(name)
	if err != nil {
		return err
	}
	if kind == imageMissing && r.f.podman {
		// Podman resolves a short name to localhost/ first, so a new
		// localhost/x would take over x, whatever x is now.
		if short, ok := strings.CutPrefix(name, "localhost/"); ok {
			if kind, err = r.lookupImage(short); err != nil {
				return err
			}
		}
	}
	switch {
	case kind == imageMissing:
		r.f.gaveName(name)
	case kind == imageOwn:
	case r.f.gave(name):
		// Moving a name it gave: the image the name leaves may keep no
		// name at all (one the job loaded), so cleanup removes it then.
		if obj, err := r.f.up.Image(r.ctx, name); err == nil {
			if err := r.f.recordLine(r.f.leftFile, obj.ID); err != nil {
				return err
			}
		}
	default:
		return refuse("image name %q is taken by an image this project's jobs did not build; a job may give new names and move only names of images its project built: choose another name", name)
	}
	// Recorded before the engine sees the request, so that other jobs'
	// guards hide the name from then on, and settled on the image it
	// points at once the engine has answered (see names.go).
	if err := r.f.recordName(name); err != nil {
		return err
	}
	r.hold(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		r.f.settleNames(ctx, []string{name})
	})
	return nil
}

// images routes /images requests.
func (r *request) images(segs []string) error {
	m := r.Method
	if len(segs) == 2 {
		switch {
		case segs[1] == "json" && m == http.MethodGet:
			// Other projects' built images are left out, as from inspect.
			r.rewrite = r.f.keepVisibleImages
			return r.noBody()
		case segs[1] == "search" && m == http.MethodGet:
			// The engine asks the registry named in the term.
			if err := r.f.checkImageRegistry(r.query.Get("term"), "image search"); err != nil {
				return err
			}
			return r.noBody()
		case segs[1] == "get" && m == http.MethodGet:
			for _, name := range r.query["names"] {
				if err := r.repositorySource(name); err != nil {
					return err
				}
			}
			return r.noBody()
		case segs[1] == "create" && m == http.MethodPost:
			if r.query.Get("fromSrc") != "" {
				return refuse("image import (fromSrc) is not allowed; pull with fromImage")
			}
			if r.query.Get("fromImage") == "" {
				return refuse("image create needs fromImage")
			}
			if err := r.allowQuery("fromImage", "tag", "platform", "repo"); err != nil {
				return err
			}
			name := r.query.Get("fromImage")
			if tag := r.query.Get("tag"); tag != "" && !strings.Contains(tag, ":") {
				name += ":" + tag
			} else if tag != "" {
				name += "@" + tag
			}
			if err := r.f.checkImageRegistry(name, "pull"); err != nil {
				return err
			}
			kind, err := r.lookupImage(name)
			if err != nil {
				return err
			}
			if kind == imageMissing {
				r.f.gaveName(name)
			}
			return r.noBody()
		case segs[1] == "load" && m == http.MethodPost:
			if err := r.tarBody(); err != nil {
				return err
			}
			return r.checkLoad()
		case segs[1] == "prune":
			return refuse("image prune is not allowed")
		}
	}
	if len(segs) < 2 {
		return r.notAllowed()
	}
	if m == http.MethodDelete {
		if err := r.noBody(); err != nil {
			return err
		}
		name := strings.Join(segs[1:], "/")
		kind, err := r.lookupImage(name)
		if err != nil {
			return err
		}
		if kind != imageOwn && kind != imageMissing && !r.f.gave(name) {
			return refuse("image %q was not built by this project's jobs; a job may remove only images its project built (berth removes what the job built at cleanup)", name)
		}
		return nil
	}
	if len(segs) < 3 {
		return r.notAllowed()
	}
	name := strings.Join(segs[1:len(segs)-1], "/")
	switch last := segs[len(segs)-1]; {
	case (last == "json" || last == "history") && m == http.MethodGet:
		// Another project's image is not there for the job, as the
		// engine would say: a refusal would tell it the image exists.
		if err := r.imageSource(name); err != nil {
			var refusal *Refusal
			if errors.As(err, &refusal) && refusal.Status == http.StatusForbidden {
				return notFound("No such image: %s", name)
			}
			return err
		}
		return r.noBody()
	case last == "get" && m == http.MethodGet:
		if err := r.repositorySource(name); err != nil {
			return err
		}
		return r.noBody()
	case last == "push" && m == http.MethodPost:
		if err := r.f.checkImageRegistry(name, "push"); err != nil {
			return err
		}
		// Without a tag the engine pushes every tag of the repository.
		tag := r.query.Get("tag")
		if tag == "" {
			return refuse("push of %q needs a tag; pushing every tag of a repository is not available", name)
		}
		ref := name + ":" + tag
		if strings.Contains(tag, ":") {
			ref = name + "@" + tag
		}
		if err := r.imageSource(ref); err != nil {
			return err
		}
		return r.noBody()
	case last == "tag" && m == http.MethodPost:
		if err := r.imageSource(name); err != nil {
			return err
		}
		repo := r.query.Get("repo")
		if repo == "" {
			return refuse("image tag needs repo")
		}
		target := repo
		if tag := r.query.Get("tag"); tag != "" {
			target += ":" + tag
		}
		if err := r.imageTarget(target); err != nil {
			return err
		}
		return r.noBody()
	}
	return r.notAllowed()
}

// checkLoad reads a loaded archive before the engine sees any of it,
// spooled to a file, and checks every name it would give: the engine tags
// as it loads, so there is no checking afterwards. The engine then gets the
// archive as the guard read it, written anew: uncompressed, every entry
// under its clean name, so that it cannot read names the guard did not.
func (r *request) checkLoad() error {
	if r.Body == nil || !r.hasBody() {
		return nil
	}
	spool, err := r.spoolBody("load-*.tar", "the image archive")
	if err != nil {
		return err
	}
	defer spool.Close()
	checked, err := os.CreateTemp(r.f.spoolDir, "load-checked-*.tar")
	if err != nil {
		return fmt.Errorf("spool the image archive: %w", err)
	}
	os.Remove(checked.Name())
	names, err := rewriteArchive(spool, checked)
	if err != nil {
		checked.Close()
		var refusal *Refusal
		if errors.As(err, &refusal) {
			return err
		}
		return refuse("POST %s: %v", r.URL.Path, err)
	}
	for _, name := range names {
		if err := r.imageTarget(name); err != nil {
			checked.Close()
			return err
		}
	}
	if err := r.sendSpooled(checked, "the image archive"); err != nil {
		return err
	}
	r.Header.Set("Content-Type", "application/x-tar")
	return nil
}

// spoolBody copies the request body to a file in the spool directory,
// unlinked at once, and returns it rewound; the caller closes it. what
// names the body in errors.
func (r *request) spoolBody(pattern, what string) (*os.File, error) {
	spool, err := os.CreateTemp(r.f.spoolDir, pattern)
	if err != nil {
		return nil, fmt.Errorf("spool %s: %w", what, err)
	}
	os.Remove(spool.Name()) // the open file stays until closed
	if _, err := io.Copy(spool, r.Body); err != nil {
		spool.Close()
		return nil, fmt.Errorf("read %s: %w", what, err)
	}
	if _, err := spool.Seek(0, io.SeekStart); err != nil {
		spool.Close()
		return nil, fmt.Errorf("rewind %s: %w", what, err)
	}
	return spool, nil
}

// sendSpooled makes f, from its start, the body the daemon gets, and
// closes f once the daemon has answered. On an error it closes f at once.
func (r *request) sendSpooled(f *os.File, what string) error {
	size, err := f.Seek(0, io.SeekEnd)
	if err == nil {
		_, err = f.Seek(0, io.SeekStart)
	}
	if err != nil {
		f.Close()
		return fmt.Errorf("rewind %s: %w", what, err)
	}
	r.Body = f
	r.ContentLength = size
	r.TransferEncoding = nil
	r.Header.Del("Transfer-Encoding")
	r.Header.Set("Content-Length", fmt.Sprint(size))
	r.hold(func() { f.Close() })
	return nil
}

// nameFiles are the archive entries that give images names.
var nameFiles = map[string]bool{"manifest.json": true, "repositories": true, "index.json": true}

// rewriteArchive reads the archive in src (a tar, or a gzip of one, as the
// engines accept; other compressions are refused), writes it to dst as a
// plain tar with every entry under its clean name, and returns the image
// names it gives. It refuses what could make the engine read a name file
// the guard did not: an unclean, absolute or escaping entry name, a name
// file that is not a regular file, and an entry below a symlink.
func rewriteArchive(src, dst *os.File) ([]string, error) {
	if _, err := src.Seek(0, io.SeekStart); err != nil {
		return nil, err
	}
	in := bufio.NewReader(src)
	magic, _ := in.Peek(6)
	var stream io.Reader = in
	switch {
	case bytes.HasPrefix(magic, []byte{0x1f, 0x8b}):
		gz, err := gzip.NewReader(in)
		if err != nil {
			return nil, fmt.Errorf("the image archive is not a readable gzip: %v", err)
		}
		defer gz.Close()
		stream = gz
	case bytes.HasPrefix(magic, []byte("BZh")), bytes.HasPrefix(magic, []byte{0xfd, '7', 'z', 'X', 'Z', 0}), bytes.HasPrefix(magic, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		return nil, errors.New("the image archive is compressed with bzip2, xz or zstd; load it uncompressed or gzipped")
	}
	tr := tar.NewReader(stream)
	tw := tar.NewWriter(dst)
	symlinks := map[string]bool{}
	var names []string
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("the image archive is not a readable tar: %v", err)
		}
		name := strings.TrimPrefix(hdr.Name, "./")
		trimmed := strings.TrimSuffix(name, "/")
		clean := path.Clean(trimmed)
		if trimmed == "" || clean != trimmed || path.IsAbs(clean) || clean == ".." || strings.HasPrefix(clean, "../") {
			return nil, fmt.Errorf("the image archive's entry %q is not a clean relative name", hdr.Name)
		}
		for dir := path.Dir(clean); dir != "."; dir = path.Dir(dir) {
			if symlinks[dir] {
				return nil, fmt.Errorf("the image archive's entry %q lies below the symlink %q", hdr.Name, dir)
			}
		}
		if hdr.Typeflag == tar.TypeSymlink {
			symlinks[clean] = true
		}
		hdr.Name = clean
		if hdr.Typeflag == tar.TypeDir {
			hdr.Name += "/"
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return nil, fmt.Errorf("write the checked archive: %w", err)
		}
		if !nameFiles[clean] {
			if hdr.Typeflag == tar.TypeReg && hdr.Size <= maxLoadManifest {
				// An image config among the blobs: its ONBUILD triggers
				// would run in a build from it, which on Podman the guard
				// cannot read from the engine.
				data, err := io.ReadAll(tr)
				if err != nil {
					return nil, fmt.Errorf("read the archive's %s: %v", clean, err)
				}
				if triggers := configTriggers(data); len(triggers) > 0 {
					return nil, fmt.Errorf("an image in the archive has ONBUILD triggers (%s), which a build from it would run unread by the guard; load an image without them", strings.Join(triggers, "; "))
				}
				if _, err := tw.Write(data); err != nil {
					return nil, fmt.Errorf("write the checked archive: %w", err)
				}
				continue
			}
			if _, err := io.Copy(tw, tr); err != nil {
				return nil, fmt.Errorf("copy the archive's %s: %w", clean, err)
			}
			continue
		}
		if hdr.Typeflag != tar.TypeReg {
			return nil, fmt.Errorf("the image archive's %s is not a regular file", clean)
		}
		if hdr.Size > maxLoadManifest {
			return nil, fmt.Errorf("the archive's %s of %d bytes is over the %d byte limit", clean, hdr.Size, maxLoadManifest)
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			return nil, fmt.Errorf("read the archive's %s: %v", clean, err)
		}
		if _, err := tw.Write(data); err != nil {
			return nil, fmt.Errorf("write the checked archive: %w", err)
		}
		found, err := archiveFileNames(clean, data)
		if err != nil {
			return nil, err
		}
		names = append(names, found...)
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("write the checked archive: %w", err)
	}
	return names, nil
}

// configTriggers returns the ONBUILD triggers of data if it is an image
// config (Docker's format; an OCI config has none), as the engines decode
// it (field names in any case).
func configTriggers(data []byte) []string {
	trimmed := bytes.TrimLeft(data, " \t\r\n")
	if len(trimmed) == 0 || trimmed[0] != '{' {
		return nil
	}
	var cfg struct {
		Config          *struct{ OnBuild []string } `json:"config"`
		ContainerConfig *struct{ OnBuild []string } `json:"container_config"`
	}
	if json.Unmarshal(trimmed, &cfg) != nil {
		return nil
	}
	var triggers []string
	for _, c := range []*struct{ OnBuild []string }{cfg.Config, cfg.ContainerConfig} {
		if c != nil {
			triggers = append(triggers, c.OnBuild...)
		}
	}
	return triggers
}

// errUnnamedImage refuses an archive with an image it does not name: the
// engine would load it without a name or labels, and no cleanup could
// find it.
var errUnnamedImage = refuse("an image in the archive has no name, and an image loaded without one outlives the job: save it by name (docker save NAME)")

// archiveFileNames lists the image names one name file gives:
// manifest.json's RepoTags, the legacy repositories file's, and index.json's
// name annotations.
func archiveFileNames(name string, data []byte) ([]string, error) {
	var names []string
	switch name {
	case "manifest.json":
		var manifest []struct{ RepoTags []string }
		if err := json.Unmarshal(data, &manifest); err != nil {
			return nil, fmt.Errorf("the archive's manifest.json: %v", err)
		}
		for _, m := range manifest {
			if len(m.RepoTags) == 0 {
				return nil, errUnnamedImage
			}
			names = append(names, m.RepoTags...)
		}
	case "repositories":
		var repos map[string]map[string]string
		if err := json.Unmarshal(data, &repos); err != nil {
			return nil, fmt.Errorf("the archive's repositories file: %v", err)
		}
		for repo, tags := range repos {
			for tag := range tags {
				names = append(names, repo+":"+tag)
			}
		}
	case "index.json":
		var index struct {
			Manifests []struct{ Annotations map[string]string }
		}
		if err := json.Unmarshal(data, &index); err != nil {
			return nil, fmt.Errorf("the archive's index.json: %v", err)
		}
		for _, m := range index.Manifests {
			named := false
			for _, k := range []string{"io.containerd.image.name", "org.opencontainers.image.ref.name"} {
				if v := m.Annotations[k]; v != "" {
					names = append(names, v)
					named = true
				}
			}
			if !named {
				return nil, errUnnamedImage
			}
		}
	}
	return names, nil
}

// nameKey is the form of an image name the job's given names are kept in:
// the name exactly as the job wrote it. A normalised form would join names
// that an engine tells apart (Podman resolves a short name to localhost/
// first, index.docker.io/x is a name of its own to it), so that a new name
// could stand for an existing one.
func nameKey(name string) string { return name }

// gaveName records that the job gave an image name that was new.
func (f *Filter) gaveName(name string) {
	f.namesMu.Lock()
	defer f.namesMu.Unlock()
	if f.givenNames == nil {
		f.givenNames = map[string]bool{}
	}
	f.givenNames[nameKey(name)] = true
}

// gave reports whether the job gave name itself.
func (f *Filter) gave(name string) bool {
	f.namesMu.Lock()
	defer f.namesMu.Unlock()
	return f.givenNames[nameKey(name)]
}
