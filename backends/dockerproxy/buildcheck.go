package dockerproxy

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/url"
	"path"
	"regexp"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/distribution/reference"
	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/parser"
	"github.com/moby/buildkit/frontend/dockerfile/shell"
	"github.com/moby/go-archive/compression"
)

// A classic build makes the engine fetch as a pull does, on the host's own
// network: every FROM image and COPY --from image it does not have, and
// every ADD of a URL. So the guard reads the Dockerfile out of the build
// context before the engine sees any of it, and applies the rule for pulls
// (see registries.go): a FROM, COPY --from or RUN --mount from= image at a
// loopback or link-local registry is refused unless the admin listed it in
// docker.guard_local_registries, and an ADD of a URL at such an address is
// refused always. Variables are expanded as the classic builder does: ARGs
// before FROM with the buildargs values for FROM, and ARG and ENV within a
// stage for ADD. Instructions inside ONBUILD are checked too, as they run
// when a later stage or build starts from the image.
//
// The check follows the engine, not the job's intent, so it reads the
// Dockerfile more than one way where engines differ: also with heredocs
// read as plain lines (an engine that predates them, such as Docker 20.10's
// classic builder or Podman 4, runs their lines as instructions), a null
// build argument also as empty (Podman), and the platform arguments also set
// (Buildah). A value the guard cannot know, such as a variable that the base
// image's ENV may set or override, may not decide an ADD URL's scheme or
// host, nor a FROM name.
//
// What it cannot see:
//   - a DNS name that resolves to a local address: the guard has no network
//     (the same holds for pulls);
//   - HTTP redirects, which the engine follows: a public URL may redirect to
//     a local one;
//   - ONBUILD triggers inside a base image, which the engine runs when a
//     build starts from it;
//   - engine behaviour beyond the classic builder's and Buildah's known
//     differences above.

// maxDockerfile caps the size of a Dockerfile the guard reads.
const maxDockerfile = 4 << 20

// checkBuild reads the build context, spooled to a file, finds the
// Dockerfile the engine would use and checks it; the engine then gets the
// context as the job sent it.
func (r *request) checkBuild() error {
	name, fallback, err := r.dockerfileParam()
	if err != nil {
		return err
	}
	args, err := r.buildArgs()
	if err != nil {
		return err
	}
	if err := r.checkCacheFrom(); err != nil {
		return err
	}
	if r.Body == nil || !r.hasBody() {
		return nil
	}
	spool, err := r.spoolBody("build-*.tar", "the build context")
	if err != nil {
		return err
	}
	dockerfile, data, err := findDockerfile(spool, name, fallback)
	if err == nil && data != nil {
		err = r.f.checkDockerfile(r.ctx, dockerfile, data, args, r.pullBase)
	}
	if err != nil {
		spool.Close()
		return err
	}
	return r.sendSpooled(spool, "the build context")
}

// dockerfileParam returns the Dockerfile's path in the context: the
// dockerfile parameter, or Dockerfile with dockerfile as fallback, as the
// classic builder looks for them. Podman would also read a URL, a list of
// files, an absolute host path and a path outside the context: refused.
func (r *request) dockerfileParam() (name, fallback string, err error) {
	v := r.query.Get("dockerfile")
	if v == "" || v == "Dockerfile" {
		return "Dockerfile", "dockerfile", nil
	}
	var list []string
	switch {
	case strings.Contains(v, "://"):
		return "", "", refuse("build parameter dockerfile=%q: a Dockerfile from a URL is not allowed; the engine would fetch it on the host's own network: put the Dockerfile in the build context", v)
	case json.Unmarshal([]byte(v), &list) == nil:
		return "", "", refuse("build parameter dockerfile=%q: a list of Dockerfiles is not allowed; give one path in the build context", v)
	case path.IsAbs(v):
		return "", "", refuse("build parameter dockerfile=%q: the Dockerfile must be a path relative to the build context", v)
	}
	clean := path.Clean(v)
	if clean == ".." || strings.HasPrefix(clean, "../") {
		return "", "", refuse("build parameter dockerfile=%q lies outside the build context; put the Dockerfile in it", v)
	}
	// Buildah runs a Containerfile whose name ends in .in through the C
	// preprocessor, whose #include (a comment to the guard) would add
	// instructions the guard never read, or a host file's content.
	if r.f.podman && strings.HasSuffix(strings.ToLower(clean), ".in") {
		return "", "", refuse("build parameter dockerfile=%q: this Podman runs a Dockerfile named *.in through the C preprocessor, whose #include the guard cannot follow; rename it", v)
	}
	return clean, "", nil
}

// buildArgs decodes the buildargs parameter as the engines do (a repeated
// key's last value wins).
func (r *request) buildArgs() (map[string]*string, error) {
	args := map[string]*string{}
	if raw := r.query.Get("buildargs"); raw != "" {
		if err := json.Unmarshal([]byte(raw), &args); err != nil {
			return nil, refuse("bad buildargs parameter: %v", err)
		}
	}
	return args, nil
}

// checkCacheFrom checks the cachefrom images: Buildah pulls cache from
// them.
func (r *request) checkCacheFrom() error {
	raw := r.query.Get("cachefrom")
	if raw == "" {
		return nil
	}
	var refs []string
	if err := json.Unmarshal([]byte(raw), &refs); err != nil {
		return refuse("bad cachefrom parameter: %v", err)
	}
	for _, ref := range refs {
		if err := r.f.checkImageRegistry(ref, "build cache-from"); err != nil {
			return err
		}
	}
	return nil
}

// maxContextName caps an entry name in a build context: the engines cannot
// create a longer path (PATH_MAX).
const maxContextName = 4096

// contextEntry is what the engine's extraction leaves at a path of
// interest: the tar type flag, and a regular file's content.
type contextEntry struct {
	typeflag byte
	data     []byte
}

// findDockerfile reads the build context in src (a tar, plain or
// compressed as the engines accept) to its end, as the engine's extraction
// would lay it out, and returns the Dockerfile at name, or at fallback when
// there is nothing at name; nil data when there is none. It refuses what
// could make the engine read another file than the guard did: a Dockerfile
// that is a link or not a regular file, a path through a symlink, and an
// entry below a symlink (the engine writes through it).
func findDockerfile(src io.Reader, name, fallback string) (string, []byte, error) {
	stream, err := compression.DecompressStream(src)
	if err != nil {
		return "", nil, refuse("the build context cannot be read: %v", err)
	}
	defer stream.Close()
	wanted := []string{name}
	if fallback != "" {
		wanted = append(wanted, fallback)
	}
	found := map[string]*contextEntry{}
	symlinks := map[string]bool{}
	tr := tar.NewReader(stream)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return "", nil, refuse("the build context is not a readable tar: %v", err)
		}
		if hdr.Typeflag == tar.TypeXGlobalHeader {
			continue
		}
		// The engines clean each name and place an absolute one below
		// the context root.
		clean := path.Clean(hdr.Name)
		if clean == ".." || strings.HasPrefix(clean, "../") {
			return "", nil, refuse("the build context's entry %q lies outside it", hdr.Name)
		}
		clean = strings.TrimPrefix(clean, "/")
		if clean == "" || clean == "." {
			continue
		}
		if len(clean) > maxContextName {
			return "", nil, refuse("the build context's entry name of %d bytes is over the %d byte limit", len(clean), maxContextName)
		}
		if dir := symlinkAbove(symlinks, clean); dir != "" {
			return "", nil, refuse("the build context's entry %q lies below the symlink %q, through which the engine would write; send the context as the docker CLI makes it", hdr.Name, dir)
		}
		delete(symlinks, clean)
		switch hdr.Typeflag {
		case tar.TypeSymlink:
			symlinks[clean] = true
		case tar.TypeLink:
			// A hard link to a symlink is one too.
			if symlinks[strings.TrimPrefix(path.Clean("/"+hdr.Linkname), "/")] {
				symlinks[clean] = true
			}
		}
		for _, w := range wanted {
			switch {
			case w == clean:
				e := &contextEntry{typeflag: hdr.Typeflag}
				if hdr.Typeflag == tar.TypeReg {
					if hdr.Size > maxDockerfile {
						return "", nil, refuse("the Dockerfile (%s) of %d bytes is over the %d byte limit", w, hdr.Size, maxDockerfile)
					}
					if e.data, err = io.ReadAll(tr); err != nil {
						return "", nil, refuse("the build context is not a readable tar: %v", err)
					}
				}
				found[w] = e
			case strings.HasPrefix(w, clean+"/") && hdr.Typeflag != tar.TypeDir:
				// The engine removes what was below.
				delete(found, w)
			}
		}
	}
	asked := name
	if _, ok := found[name]; !ok && fallback != "" {
		name = fallback
	}
	if dir := symlinkAbove(symlinks, name); dir != "" {
		return "", nil, refuse("the Dockerfile path %s goes through the symlink %q; give the real path with docker build -f", name, dir)
	}
	e, ok := found[name]
	switch {
	case !ok:
		// The engine would fail, unless it looks further than the guard
		// (a directory's Containerfile): nothing unread is built.
		return "", nil, refuse("the build context has no Dockerfile at %s; give its path with docker build -f", asked)
	case e.typeflag == tar.TypeSymlink || e.typeflag == tar.TypeLink:
		return "", nil, refuse("the Dockerfile (%s) in the build context is a link; give the real file with docker build -f", name)
	case e.typeflag != tar.TypeReg:
		return "", nil, refuse("the Dockerfile (%s) in the build context is not a regular file", name)
	}
	return name, e.data, nil
}

// symlinkAbove returns the first directory of the clean relative path name
// that is in symlinks, or "".
func symlinkAbove(symlinks map[string]bool, name string) string {
	if len(symlinks) == 0 {
		return ""
	}
	for i := range len(name) {
		if name[i] == '/' && symlinks[name[:i]] {
			return name[:i]
		}
	}
	return ""
}

// escapeDirective matches a line that may set the escape parser directive.
var escapeDirective = regexp.MustCompile(`(?im)^[ \t]*#[ \t]*escape[ \t]*=[ \t]*(\S*)`)

// platformArgs are the arguments Buildah sets from the platform.
var (
	platformArgs = []string{"TARGETPLATFORM", "TARGETOS", "TARGETARCH", "TARGETVARIANT", "BUILDPLATFORM", "BUILDOS", "BUILDARCH", "BUILDVARIANT"}
	platformArg  = regexp.MustCompile(`(TARGET|BUILD)(PLATFORM|OS|ARCH|VARIANT)`)
)

// checkDockerfile checks the Dockerfile data (at name in the context) under
// each reading an engine may give it.
func (f *Filter) checkDockerfile(ctx context.Context, name string, data []byte, args map[string]*string, pull func(ref string) error) error {
	// The engines' parsers disagree on where parser directives end:
	// Podman's stops at a "# syntax=" line or a byte-order mark and reads
	// a later "# escape=" as a comment, where the guard's (and Docker's)
	// takes it. With an escape character other than the default they would
	// read different instructions (a RUN the guard reads as part of a COPY).
	for _, m := range escapeDirective.FindAllSubmatch(bytes.TrimPrefix(data, []byte("\xef\xbb\xbf")), -1) {
		if string(m[1]) != `\` {
			return refuse("the Dockerfile (%s) sets the escape character to %q: the engines' parsers do not agree on where such a directive applies, so the guard cannot read the file as the engine will; remove the escape directive and use the default \\", name, m[1])
		}
	}
	readings := [][]byte{data}
	if bytes.Contains(data, []byte("<<")) {
		// A heredoc-free reading: no "<<" is left to start one, and
		// nothing else changes what the checks look at.
		readings = append(readings, bytes.ReplaceAll(data, []byte("<<"), []byte("<\u2039")))
	}
	type argSet struct {
		args     map[string]*string
		builtins []string
	}
	sets := []argSet{{args, builtinArgs}}
	if slices.Contains(slices.Collect(maps.Values(args)), nil) {
		// Podman reads a null build argument as empty, not unset.
		empty := ""
		nulls := maps.Clone(args)
		for k, v := range nulls {
			if v == nil {
				nulls[k] = &empty
			}
		}
		sets = append(sets, argSet{nulls, builtinArgs})
	}
	if platformArg.Match(data) {
		// Buildah sets them without an ARG instruction.
		values := map[string]string{"OS": runtime.GOOS, "ARCH": runtime.GOARCH, "PLATFORM": runtime.GOOS + "/" + runtime.GOARCH, "VARIANT": ""}
		for _, set := range slices.Clone(sets) {
			withPlatform := maps.Clone(set.args)
			for _, k := range platformArgs {
				if _, ok := withPlatform[k]; !ok {
					v := values[strings.TrimPrefix(strings.TrimPrefix(k, "TARGET"), "BUILD")]
					withPlatform[k] = &v
				}
			}
			sets = append(sets, argSet{withPlatform, append(slices.Clone(builtinArgs), platformArgs...)})
		}
	}
	for i, reading := range readings {
		res, err := parser.Parse(bytes.NewReader(reading))
		if err == nil {
			var stages []instructions.Stage
			var metaArgs []instructions.ArgCommand
			stages, metaArgs, err = instructions.Parse(res.AST, nil)
			if err == nil {
				for _, set := range sets {
					c := &dockerfileCheck{ctx: ctx, f: f, lex: shell.NewLex(res.EscapeToken), escape: res.EscapeToken, args: set.args, builtins: set.builtins, meta: map[string]*string{}, pull: pull}
					if err := c.run(stages, metaArgs); err != nil {
						return err
					}
				}
				continue
			}
		}
		if i == 0 {
			return refuse("the guard cannot read the Dockerfile (%s): %v; it checks what a build would fetch, so the Dockerfile must parse", name, err)
		}
		// The other readings fail where an engine reading the file that
		// way would fail before running anything.
	}
	return nil
}

// builtinArgs are the build arguments the classic builder knows without an
// ARG instruction.
var builtinArgs = []string{"HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "FTP_PROXY", "ftp_proxy", "NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"}

// defaultPath is the PATH the classic builder gives a stage from scratch.
const defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// dockerfileCheck is one reading of a Dockerfile, as the classic builder
// dispatches it.
type dockerfileCheck struct {
	ctx    context.Context
	f      *Filter
	lex    *shell.Lex
	escape rune
	args   map[string]*string // the buildargs parameter
	// builtins are the arguments known without an ARG instruction.
	builtins []string
	meta     map[string]*string // ARGs before the first FROM
	// stages are the stages dispatched so far.
	stages []*stageState
	// pull pulls a base image that is not in the store (nil: none).
	pull func(ref string) error
}

// variable is a variable's value and whether the guard is sure of it.
type variable struct {
	value string
	sure  bool
}

// stageState is what a stage's instructions see.
type stageState struct {
	name string // lower case, "" if unnamed
	// env is the stage's ENV as far as the Dockerfile sets it; known
	// tells whether that is all of it (a stage from scratch) or the base
	// image may set more.
	env   map[string]variable
	known bool
	// args are the ARGs declared in the stage.
	args map[string]*variable
	// onbuild tells whether the stage has ONBUILD triggers, which run
	// when a later stage starts from it.
	onbuild bool
}

// buildArg is the classic builder's getBuildArg: the buildargs value, else
// the declared default, else the meta ARG's.
func (c *dockerfileCheck) buildArg(key string, def *string, declared bool) (string, bool) {
	if v, ok := c.args[key]; ok && v != nil {
		return *v, true
	}
	if def == nil {
		if v, ok := c.meta[key]; ok && v != nil {
			return *v, true
		}
		return "", false
	}
	return *def, declared
}

// metaEnv is what FROM sees: the meta ARGs and the builtin ones.
func (c *dockerfileCheck) metaEnv() *envLookup {
	l := &envLookup{values: map[string]variable{}}
	for _, k := range c.builtins {
		if v, ok := c.buildArg(k, nil, false); ok {
			l.values[k] = variable{value: v, sure: true}
		}
	}
	for k, def := range c.meta {
		if v, ok := c.buildArg(k, def, true); ok {
			l.values[k] = variable{value: v, sure: true}
		}
	}
	l.known = true
	return l
}

// env is what an instruction of stage s sees: its ENV, and the ARGs that
// ENV does not set.
func (c *dockerfileCheck) env(s *stageState) *envLookup {
	l := &envLookup{values: map[string]variable{}, known: s.known}
	add := func(k string, def *string, declared, sure bool) {
		if _, ok := s.env[k]; ok {
			return
		}
		if v, ok := c.buildArg(k, def, declared); ok {
			// The base image's ENV, unknown, would win over an ARG.
			l.values[k] = variable{value: v, sure: sure && s.known}
		}
	}
	for _, k := range c.builtins {
		add(k, nil, false, true)
	}
	for k, a := range s.args {
		if a == nil {
			add(k, nil, true, true)
			continue
		}
		add(k, &a.value, true, a.sure)
	}
	for k, v := range s.env {
		l.values[k] = v
	}
	return l
}

// envLookup is a shell.EnvGetter that knows how sure each value is.
type envLookup struct {
	values map[string]variable
	// known tells that a variable it lacks is unset (else the base
	// image may set it).
	known bool
}

func (l *envLookup) Get(key string) (string, bool) {
	v, ok := l.values[key]
	return v.value, ok
}

func (l *envLookup) Keys() []string {
	keys := make([]string, 0, len(l.values))
	for k := range l.values {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// expand expands word as the classic builder does and returns the names
// of the variables it used that the guard is not sure of.
func (c *dockerfileCheck) expand(word string, l *envLookup) (string, []string, error) {
	res, err := c.lex.ProcessWordWithMatches(word, l)
	if err != nil {
		return "", nil, err
	}
	var unsure []string
	for k := range res.Matched {
		if !l.values[k].sure {
			unsure = append(unsure, k)
		}
	}
	if !l.known {
		for k := range res.Unmatched {
			unsure = append(unsure, k)
		}
	}
	sort.Strings(unsure)
	return res.Result, unsure, nil
}

func (c *dockerfileCheck) stage(name string) *stageState {
	for _, s := range c.stages {
		if s.name != "" && s.name == strings.ToLower(name) {
			return s
		}
	}
	return nil
}

func (c *dockerfileCheck) run(stages []instructions.Stage, metaArgs []instructions.ArgCommand) error {
	for _, m := range metaArgs {
		l := c.metaEnv()
		var keys []string
		var values []*string
		for _, kv := range m.Args {
			key, _, err := c.expand(kv.Key, l)
			if err != nil {
				return refuse("ARG %s in a build cannot be expanded: %v", kv.Key, err)
			}
			var value *string
			if kv.Value != nil {
				v, _, err := c.expand(*kv.Value, l)
				if err != nil {
					return refuse("ARG %s in a build cannot be expanded: %v", kv.Key, err)
				}
				value = &v
			}
			keys, values = append(keys, key), append(values, value)
		}
		for i, k := range keys {
			c.meta[k] = values[i]
		}
	}
	for i := range stages {
		if err := c.runStage(&stages[i]); err != nil {
			return err
		}
	}
	return nil
}

func (c *dockerfileCheck) runStage(st *instructions.Stage) error {
	s := &stageState{name: strings.ToLower(st.Name), env: map[string]variable{}, args: map[string]*variable{}}
	base, _, err := c.expand(st.BaseName, c.metaEnv())
	switch {
	case err != nil:
		return refuse("FROM %s in a build cannot be expanded: %v; write the image name literally", st.BaseName, err)
	case strings.Contains(base, "$"):
		return refuse("FROM %s in a build: the image name %q still holds a $ once the build arguments are expanded; write it literally", st.BaseName, base)
	}
	if from := c.stage(base); from != nil {
		for k, v := range from.env {
			s.env[k] = v
		}
		// A stage with ONBUILD triggers may set more when one starts from it.
		s.known = from.known && !from.onbuild
	} else if base == "scratch" {
		s.env["PATH"] = variable{value: defaultPath, sure: true}
		s.known = true
	} else if base != "" {
		if err := c.checkImage(base, "FROM in a build"); err != nil {
			return err
		}
		if err := c.checkBaseTriggers(base); err != nil {
			return err
		}
	}
	for _, cmd := range st.Commands {
		if err := c.dispatch(s, cmd); err != nil {
			return err
		}
	}
	c.stages = append(c.stages, s)
	return nil
}

func (c *dockerfileCheck) dispatch(s *stageState, cmd instructions.Command) error {
	l := c.env(s)
	switch cmd := cmd.(type) {
	case *instructions.ArgCommand:
		var keys []string
		var values []*variable
		for _, kv := range cmd.Args {
			key, _, err := c.expand(kv.Key, l)
			if err != nil {
				return refuse("ARG %s in a build cannot be expanded: %v", kv.Key, err)
			}
			var value *variable
			if kv.Value != nil {
				v, unsure, err := c.expand(*kv.Value, l)
				if err != nil {
					return refuse("ARG %s in a build cannot be expanded: %v", kv.Key, err)
				}
				value = &variable{value: v, sure: len(unsure) == 0}
			}
			keys, values = append(keys, key), append(values, value)
		}
		for i, k := range keys {
			s.args[k] = values[i]
		}
	case *instructions.EnvCommand:
		// All pairs are expanded before any is set.
		var keys []string
		var values []variable
		for _, kv := range cmd.Env {
			key, _, err := c.expand(kv.Key, l)
			if err != nil {
				return refuse("ENV %s in a build cannot be expanded: %v", kv.Key, err)
			}
			v, unsure, err := c.expand(kv.Value, l)
			if err != nil {
				return refuse("ENV %s in a build cannot be expanded: %v", kv.Key, err)
			}
			keys, values = append(keys, key), append(values, variable{value: v, sure: len(unsure) == 0})
		}
		for i, k := range keys {
			s.env[k] = values[i]
		}
	case *instructions.AddCommand:
		for _, src := range cmd.SourcePaths {
			v, unsure, err := c.expand(src, l)
			if err != nil {
				return refuse("ADD %s in a build cannot be expanded: %v; write the source literally", src, err)
			}
			if err := c.checkAddSource(src, v, unsure); err != nil {
				return err
			}
		}
	case *instructions.CopyCommand:
		if cmd.From != "" {
			return c.checkFromFlag(cmd.From, "COPY --from", l)
		}
	case *instructions.RunCommand:
		if c.f.podman {
			// Checked on Podman 4.3 here: whatever networkmode and
			// isolation the build asks for, Buildah runs the step in
			// the host's network namespace, where it reaches what
			// listens on the host's loopback.
			return refuse("RUN in a build is not available on this Podman through the guarded socket: Podman runs build steps in the host's own network; build with the dind backend, or COPY prebuilt files into the image")
		}
		// The classic builder has no RUN --mount, and Buildah's cache
		// mounts take a host path from the job (their id).
		if len(instructions.GetMounts(cmd)) > 0 {
			return refuse("RUN --mount in a build is not allowed through the guarded socket: the classic builder has none, and Buildah's cache mounts reach outside the build; COPY what the step needs")
		}
	case *instructions.OnbuildCommand:
		s.onbuild = true
		return c.checkTrigger(cmd.Expression)
	}
	return nil
}

// checkFromFlag checks an image that COPY --from or RUN --mount from= names:
// a stage's name or index, or an image the engine would pull. The classic
// builder does not expand it, Buildah does; l nil (an ONBUILD trigger, run
// in a stage the guard does not see) takes it literally.
func (c *dockerfileCheck) checkFromFlag(from, what string, l *envLookup) error {
	v := from
	if strings.Contains(from, "$") {
		var unsure []string
		var err error
		if l != nil {
			v, unsure, err = c.expand(from, l)
		}
		if l == nil || err != nil || len(unsure) > 0 || strings.Contains(v, "$") {
			return refuse("%s=%s in a build: the guard cannot be sure which image that names; write the stage or image literally", what, from)
		}
	}
	if _, err := strconv.Atoi(v); err == nil || c.stage(v) != nil {
		return nil
	}
	return c.checkImage(v, what+" in a build")
}

// imageID matches a full image id, which is not a reference.
var imageID = regexp.MustCompile(`^(sha256:)?[0-9a-f]{64}$`)

// checkImage checks an image a build would pull: its registry as a pull's.
// A name that is not a reference is refused: Buildah also reads transports
// (docker://, oci-archive:, ...).
func (c *dockerfileCheck) checkImage(ref, what string) error {
	isID := imageID.MatchString(ref)
	if _, err := reference.ParseNormalizedNamed(ref); err != nil && !isID {
		return refuse("%s: %q is not an image reference the guard can check (%v); name the image as name[:tag][@digest]", what, ref, err)
	}
	if !isID {
		if err := c.f.checkImageRegistry(ref, what); err != nil {
			return err
		}
	}
	// Another project's built image may hold its secrets, and a build
	// reads it as a run would.
	obj, err := c.f.up.Image(c.ctx, ref)
	if err != nil {
		return nil // the engine pulls it, or fails
	}
	if c.f.objectKind(obj) == imageForeign {
		return refuse("%s: image %q was built by another project's job, or is another job's unnamed build step, and may hold its secrets; build from your own or a pulled image", what, ref)
	}
	if c.f.othersName(ref, obj.ID) {
		return refuse("%s: image name %q was given by another job running on this runner, to an image of its own; pull it first (docker pull %s) for the registry's", what, ref, ref)
	}
	return nil
}

// checkBaseTriggers checks the ONBUILD triggers of a base image: the
// builder runs them as the build's first steps, and they are not in the
// Dockerfile the guard read. One may copy from another project's image
// (COPY --from), fetch on the host's network, and on Podman 4.3 a RUN
// among them runs in the host's network. So a base image is read before
// the build, pulled by the guard first if it is not in the store, and one
// with triggers is refused.
func (c *dockerfileCheck) checkBaseTriggers(ref string) error {
	if strings.EqualFold(ref, "scratch") || c.stage(ref) != nil {
		return nil
	}
	obj, err := c.f.up.Image(c.ctx, ref)
	if errors.Is(err, ErrNotFound) && c.pull != nil {
		if perr := c.pull(ref); perr != nil {
			return refuse("FROM %s in a build: the guard pulls a base image before the build, to read its ONBUILD triggers, and the pull failed: %v", ref, perr)
		}
		// What the pull gave is checked as any image the build uses.
		if err := c.checkImage(ref, "FROM in a build"); err != nil {
			return err
		}
		obj, err = c.f.up.Image(c.ctx, ref)
	}
	if errors.Is(err, ErrNotFound) {
		if c.f.podman {
			return refuse("FROM %s in a build: the image is not in this Podman's store; pull it first (docker pull %s), so that the guard can read its ONBUILD triggers", ref, ref)
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("look up the base image %q: %w", ref, err)
	}
	triggers := obj.OnBuild
	if c.f.podman && len(triggers) == 0 {
		// Podman's API leaves a Docker-format image's triggers out of
		// its inspect; its history names those its builds made.
		history, err := c.f.up.History(c.ctx, ref)
		if err != nil {
			return fmt.Errorf("read the history of the base image %q: %w", ref, err)
		}
		for _, h := range history {
			if onbuildStep.MatchString(h) {
				triggers = append(triggers, h)
			}
		}
	}
	if len(triggers) > 0 {
		return refuse("FROM %s in a build: the image has ONBUILD triggers (%s), which would run in the build unread by the guard (they may copy from another project's image, or fetch on the host's network); build from an image without them", ref, strings.Join(triggers, "; "))
	}
	return nil
}

// onbuildStep matches a history entry of an ONBUILD instruction.
var onbuildStep = regexp.MustCompile(`(?i)(^|\s|#\(nop\)\s*)ONBUILD\s`)

// checkAddSource checks an ADD source: raw as written, v expanded, unsure
// the variables in it whose values the guard cannot know.
func (c *dockerfileCheck) checkAddSource(raw, v string, unsure []string) error {
	if len(unsure) == 0 {
		return c.f.checkAddURL("ADD", raw, v)
	}
	// Only the part before the first variable is sure; a quote or escape
	// there adds nothing that makes a URL.
	lead := raw
	if i := strings.IndexByte(raw, '$'); i >= 0 {
		lead = raw[:i]
	}
	lead = strings.NewReplacer(`"`, "", `'`, "", string(c.escape), "").Replace(lead)
	lower := strings.ToLower(lead)
	for _, scheme := range []string{"http://", "https://"} {
		if len(lead) >= len(scheme) && strings.EqualFold(lead[:len(scheme)], scheme) {
			if end := strings.IndexAny(lead[len(scheme):], "/?#"); end >= 0 {
				// The scheme and host are literal.
				return c.f.checkAddURL("ADD", raw, lead[:len(scheme)+end+1])
			}
			return c.refuseUnsure(raw, unsure)
		}
		if strings.HasPrefix(scheme, lower) {
			return c.refuseUnsure(raw, unsure)
		}
	}
	return nil // a path in the build context
}

func (c *dockerfileCheck) refuseUnsure(raw string, unsure []string) error {
	return refuse("ADD %s in a build: the URL's scheme or host comes from %s, which the guard cannot know (an ARG that the base image's ENV may override, or a variable only the base image sets); write a URL's scheme and host literally, or start a path in the build context with ./", raw, strings.Join(unsure, ", "))
}

// checkAddURL refuses an ADD (what) of a URL at a loopback or link-local address,
// allowed registries or not: the engine would fetch it from the host.
func (f *Filter) checkAddURL(what, raw, v string) error {
	lower := strings.ToLower(v)
	if !strings.HasPrefix(lower, "http://") && !strings.HasPrefix(lower, "https://") {
		return nil
	}
	u, err := url.Parse(v)
	if err != nil {
		return refuse("%s %s in a build: %q is not a URL the guard can read: %v", what, raw, v, err)
	}
	if f.local(u.Hostname()) {
		return refuse("%s %s in a build is not allowed: the host %q is a loopback or link-local address, and the engine would fetch the URL on the host's own network; download it in the job instead (curl it in the script) and COPY it", what, raw, u.Hostname())
	}
	return nil
}

// checkTrigger checks the instructions of an ONBUILD trigger. They run
// where a later stage or build starts from the image, with variables the
// guard does not see, so what they fetch must be literal.
func (c *dockerfileCheck) checkTrigger(expr string) error {
	res, err := parser.Parse(strings.NewReader(expr))
	if err != nil {
		return refuse("ONBUILD %s in a build cannot be read: %v", expr, err)
	}
	for _, node := range res.AST.Children {
		cmd, err := instructions.ParseCommand(node)
		if err != nil {
			return refuse("ONBUILD %s in a build cannot be read: %v", expr, err)
		}
		switch cmd := cmd.(type) {
		case *instructions.AddCommand:
			for _, src := range cmd.SourcePaths {
				if strings.Contains(src, "$") {
					return refuse("ONBUILD ADD %s in a build: the source holds a variable, set only where the trigger runs; write it literally", src)
				}
				if err := c.f.checkAddURL("ONBUILD ADD", src, src); err != nil {
					return err
				}
			}
		case *instructions.CopyCommand:
			if cmd.From != "" {
				if err := c.checkFromFlag(cmd.From, "ONBUILD COPY --from", nil); err != nil {
					return err
				}
			}
		case *instructions.RunCommand:
			for _, m := range instructions.GetMounts(cmd) {
				if m.From != "" {
					if err := c.checkFromFlag(m.From, "ONBUILD RUN --mount from", nil); err != nil {
						return err
					}
				}
			}
		}
	}
	return nil
}
