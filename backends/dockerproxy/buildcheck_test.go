package dockerproxy

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"io"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
)

// ctxEntry is one entry of a test build context: a regular file unless
// typeflag says otherwise.
type ctxEntry struct {
	name, body, link string
	typeflag         byte
}

// contextTar returns a build context tar of entries.
func contextTar(entries ...ctxEntry) string {
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	for _, e := range entries {
		hdr := &tar.Header{Name: e.name, Mode: 0o644, Typeflag: e.typeflag, Linkname: e.link}
		switch e.typeflag {
		case 0:
			hdr.Typeflag, hdr.Size = tar.TypeReg, int64(len(e.body))
		case tar.TypeDir:
			hdr.Mode = 0o755
		}
		if err := tw.WriteHeader(hdr); err != nil {
			panic(err)
		}
		if _, err := tw.Write([]byte(e.body)); err != nil {
			panic(err)
		}
	}
	if err := tw.Close(); err != nil {
		panic(err)
	}
	return b.String()
}

// dockerfileTar is a context with only a Dockerfile.
func dockerfileTar(dockerfile string) string {
	return contextTar(ctxEntry{name: "Dockerfile", body: dockerfile})
}

func gzipped(s string) string {
	var b bytes.Buffer
	zw := gzip.NewWriter(&b)
	if _, err := zw.Write([]byte(s)); err != nil {
		panic(err)
	}
	if err := zw.Close(); err != nil {
		panic(err)
	}
	return b.String()
}

// plainBuildContext is an ordinary build's context.
var plainBuildContext = dockerfileTar("FROM busybox\nRUN true\n")

// buildArgs is a buildargs query value.
func buildArgs(js string) string { return "buildargs=" + url.QueryEscape(js) }

const (
	msgADD      = "engine would fetch the URL on the host's own network; download it in the job instead"
	msgRegistry = "docker.guard_local_registries"
	msgUnsure   = "which the guard cannot know"
	msgLiteral  = "literally"
)

var buildCheckCases = map[string]struct {
	query, body string
	wantMsg     string // "" for forwarded
}{
	// What builds need.
	"plain build":                  {body: plainBuildContext},
	"gzip build":                   {body: gzipped(plainBuildContext)},
	"public ADD URL":               {body: dockerfileTar("FROM busybox\nADD https://example.com/file.tgz /file.tgz\n")},
	"allowed local registry":       {body: dockerfileTar("FROM localhost:5000/x\nRUN true\n")},
	"multi-stage":                  {body: dockerfileTar("FROM busybox AS builder\nRUN echo hi >/x\nFROM builder\nFROM Builder\nFROM scratch\nCOPY --from=builder /x /x\nCOPY --from=0 /x /y\n")},
	"ARG in an ADD URL's path":     {body: dockerfileTar("FROM busybox\nARG V=1.2\nADD https://example.com/v${V}/x-$V.tgz /x.tgz\n")},
	"ARG in a local ADD source":    {body: dockerfileTar("FROM busybox\nARG DIR=src\nADD ./${DIR}/x.tgz /x\nADD src/$DIR /y\n")},
	"ARG before FROM":              {body: dockerfileTar("ARG BASE=busybox\nARG TAG=latest\nFROM $BASE:${TAG}\nARG BASE\nRUN echo $BASE\n")},
	"public buildargs override":    {query: buildArgs(`{"BASE":"alpine"}`), body: dockerfileTar("ARG BASE=127.0.0.1:5000/x\nFROM $BASE\n")},
	"null build arg":               {query: buildArgs(`{"FOO":null}`), body: dockerfileTar("ARG FOO=1\nFROM busybox\n")},
	"heredoc":                      {body: dockerfileTar("FROM busybox\nRUN <<EOF\nset -e\necho hi\nEOF\n")},
	"ONBUILD literal ADD":          {body: dockerfileTar("FROM busybox\nONBUILD ADD . /app\nONBUILD COPY --from=builder /a /b\n")},
	"no Dockerfile":                {body: contextTar(ctxEntry{name: "README", body: "hi"}), wantMsg: "has no Dockerfile at Dockerfile"},
	"no body":                      {},
	"image id":                     {body: dockerfileTar("FROM sha256:" + strings.Repeat("ab", 32) + "\n")},
	"custom Dockerfile path":       {query: "dockerfile=build/Dockerfile.ci", body: contextTar(ctxEntry{name: "Dockerfile", body: "FROM 127.0.0.1:5000/x\n"}, ctxEntry{name: "build/Dockerfile.ci", body: "FROM busybox\n"})},
	"lowercase dockerfile":         {body: contextTar(ctxEntry{name: "dockerfile", body: "FROM busybox\n"})},
	"a symlink elsewhere":          {body: contextTar(ctxEntry{name: "Dockerfile", body: "FROM busybox\n"}, ctxEntry{name: "lib", typeflag: tar.TypeSymlink, link: "../x"})},
	"ENV-expanded path in ADD URL": {body: dockerfileTar("FROM busybox\nENV V=2\nADD https://example.com/$V /v\n")},

	// Loopback and link-local fetches.
	"ADD from loopback": {body: dockerfileTar("FROM busybox\nADD http://127.0.0.1:8080/secret /x\n"), wantMsg: msgADD},
	"ADD gzip context":  {body: gzipped(dockerfileTar("FROM busybox\nADD http://127.0.0.1:8080/secret /x\n")), wantMsg: msgADD},
	"ADD metadata":      {body: dockerfileTar("FROM busybox\nADD [\"http://169.254.169.254/latest/meta-data/\", \"/m\"]\n"), wantMsg: msgADD},
	"ADD localhost":     {body: dockerfileTar("FROM busybox\nADD http://LOCALHOST./x /x\n"), wantMsg: msgADD},
	"ADD ipv6 loopback": {body: dockerfileTar("FROM busybox\nADD http://[::1]:8080/x /x\n"), wantMsg: msgADD},
	"ADD decimal ip":    {body: dockerfileTar("FROM busybox\nADD http://2130706433:8080/x /x\n"), wantMsg: msgADD},
	"ADD userinfo":      {body: dockerfileTar("FROM busybox\nADD http://example.com@127.0.0.1/x /x\n"), wantMsg: msgADD},
	// The registry allow-list does not open ADD.
	"ADD from the allowed registry": {body: dockerfileTar("FROM busybox\nADD http://localhost:5000/v2/ /x\n"), wantMsg: msgADD},
	"FROM loopback":                 {body: dockerfileTar("FROM 127.0.0.1:5000/img\n"), wantMsg: msgRegistry},
	"FROM link-local":               {body: dockerfileTar("FROM 169.254.169.254/x\n"), wantMsg: msgRegistry},
	"FROM decimal loopback":         {body: dockerfileTar("FROM 2130706433:5000/x\n"), wantMsg: msgRegistry},
	"FROM in a later stage":         {body: dockerfileTar("FROM busybox AS a\nFROM 127.0.0.2:5000/x AS b\n"), wantMsg: msgRegistry},
	"FROM with a transport":         {body: dockerfileTar("FROM docker://127.0.0.1:5000/x\n"), wantMsg: "not an image reference"},
	"COPY --from a local registry":  {body: dockerfileTar("FROM busybox\nCOPY --from=127.0.0.1:5000/x /a /b\n"), wantMsg: msgRegistry},
	"RUN --mount from a local one":  {body: dockerfileTar("FROM busybox\nRUN --mount=type=bind,from=127.0.0.1:5000/x,target=/m true\n"), wantMsg: "RUN --mount in a build is not allowed"},
	"RUN --mount of a cache":        {body: dockerfileTar("FROM busybox\nRUN --mount=type=cache,id=../../../../run/user/1001/podman,target=/p true\n"), wantMsg: "RUN --mount in a build is not allowed"},
	"FROM another project's image":  {body: dockerfileTar("FROM foreignbuilt:1\n"), wantMsg: "was built by another project's job"},
	"COPY --from another project's": {body: dockerfileTar("FROM busybox\nCOPY --from=foreignbuilt:1 /secret /s\n"), wantMsg: "was built by another project's job"},
	"custom Dockerfile":             {query: "dockerfile=./ci/Build.df", body: contextTar(ctxEntry{name: "Dockerfile", body: "FROM busybox\n"}, ctxEntry{name: "ci/Build.df", body: "FROM 127.0.0.2:5000/x\n"}), wantMsg: msgRegistry},
	"lowercase dockerfile fetches":  {body: contextTar(ctxEntry{name: "dockerfile", body: "FROM busybox\nADD http://127.0.0.1/x /x\n"}), wantMsg: msgADD},
	"the last entry counts":         {body: contextTar(ctxEntry{name: "Dockerfile", body: "FROM busybox\n"}, ctxEntry{name: "./Dockerfile", body: "FROM 127.0.0.1:5000/x\n"}), wantMsg: msgRegistry},
	"absolute entry name":           {body: contextTar(ctxEntry{name: "/Dockerfile", body: "FROM 127.0.0.1:5000/x\n"}), wantMsg: msgRegistry},

	// Variables.
	"ARG-expanded FROM":           {body: dockerfileTar("ARG BASE=127.0.0.1:5000/x\nFROM $BASE\n"), wantMsg: msgRegistry},
	"buildargs-expanded FROM":     {query: buildArgs(`{"BASE":"127.0.0.1:5000/x"}`), body: dockerfileTar("ARG BASE=busybox\nFROM ${BASE}\n"), wantMsg: msgRegistry},
	"ARG from another ARG":        {body: dockerfileTar("ARG H=169.254.169.254\nARG BASE=$H/x\nFROM $BASE\n"), wantMsg: msgRegistry},
	"ARG-hidden ADD host":         {body: dockerfileTar("FROM busybox\nARG H=127.0.0.1\nADD http://${H}:8080/secret /x\n"), wantMsg: msgUnsure},
	"ARG-hidden ADD from scratch": {body: dockerfileTar("FROM scratch\nARG H=127.0.0.1\nADD http://${H}:8080/secret /x\n"), wantMsg: msgADD},
	"meta ARG in ADD":             {body: dockerfileTar("ARG H=127.0.0.1\nFROM scratch\nARG H\nADD http://$H/x /x\n"), wantMsg: msgADD},
	"buildargs-expanded ADD":      {query: buildArgs(`{"H":"169.254.169.254"}`), body: dockerfileTar("FROM scratch\nARG H=example.com\nADD http://$H/x /x\n"), wantMsg: msgADD},
	"ENV-expanded ADD":            {body: dockerfileTar("FROM busybox\nENV H=127.0.0.1\nADD http://$H/x /x\n"), wantMsg: msgADD},
	"base image variable in ADD":  {body: dockerfileTar("FROM busybox\nADD $URL /x\n"), wantMsg: msgUnsure},
	"ARG leading an ADD source":   {body: dockerfileTar("FROM busybox\nARG DIR=src\nADD ${DIR}/x.tgz /x\n"), wantMsg: "start a path in the build context with ./"},
	"variable scheme":             {body: dockerfileTar("FROM busybox\nARG S=http\nADD ${S}://127.0.0.1/x /x\n"), wantMsg: msgUnsure},
	"escaped $ in FROM":           {body: dockerfileTar("FROM busy\\$box\n"), wantMsg: msgLiteral},
	"unexpandable FROM":           {body: dockerfileTar("FROM ${X:?nobase}\n"), wantMsg: msgLiteral},
	"a stage's ENV carries over":  {body: dockerfileTar("FROM scratch AS a\nENV H=127.0.0.1\nFROM a\nADD http://$H/x /x\n"), wantMsg: msgADD},
	"variable COPY --from":        {body: dockerfileTar("FROM busybox\nARG I=127.0.0.1:5000/x\nCOPY --from=$I /a /b\n"), wantMsg: msgLiteral},
	// Podman reads a null build argument as empty.
	"null build arg on podman": {query: buildArgs(`{"X":null}`), body: dockerfileTar("ARG X=busybox\nFROM ${X:-127.0.0.2:5000/x}\n"), wantMsg: msgRegistry},
	// Buildah sets the platform arguments.
	"platform arg on buildah": {body: dockerfileTar("ARG TARGETARCH\nFROM ${TARGETARCH:+127.0.0.2:5000/}busybox\n"), wantMsg: msgRegistry},

	// ONBUILD triggers run where a later stage or build starts.
	"ONBUILD ADD":          {body: dockerfileTar("FROM busybox\nONBUILD ADD http://127.0.0.1/x /x\n"), wantMsg: "ONBUILD ADD http://127.0.0.1/x in a build is not allowed"},
	"ONBUILD ADD variable": {body: dockerfileTar("FROM busybox\nONBUILD ADD $U /x\n"), wantMsg: msgLiteral},
	"ONBUILD COPY --from":  {body: dockerfileTar("FROM busybox\nONBUILD COPY --from=169.254.169.254/x /a /b\n"), wantMsg: msgRegistry},
	"ONBUILD heredoc ADD":  {body: dockerfileTar("FROM busybox\nONBUILD RUN <<EOF\nx\nEOF\nONBUILD ADD http://127.0.0.1/x /x\n"), wantMsg: msgADD},

	// Engines without heredocs (Docker 20.10, Podman 4) run their lines.
	"heredoc lines as instructions": {body: dockerfileTar("FROM busybox\nRUN <<CMD\nADD http://127.0.0.1:8080/secret /x\nCMD\n"), wantMsg: msgADD},
	"heredoc-hidden ENV":            {body: dockerfileTar("FROM scratch\nRUN <<CMD\nENV H=127.0.0.1\nCMD\nADD http://$H/x /x\n"), wantMsg: msgADD},

	// Which Dockerfile the engine reads.
	"symlinked Dockerfile":        {body: contextTar(ctxEntry{name: "real", body: "FROM busybox\n"}, ctxEntry{name: "Dockerfile", typeflag: tar.TypeSymlink, link: "real"}), wantMsg: "give the real file"},
	"hard-linked Dockerfile":      {body: contextTar(ctxEntry{name: "real", body: "FROM busybox\n"}, ctxEntry{name: "Dockerfile", typeflag: tar.TypeLink, link: "real"}), wantMsg: "give the real file"},
	"Dockerfile through symlink":  {query: "dockerfile=d/Dockerfile", body: contextTar(ctxEntry{name: "e/Dockerfile", body: "FROM busybox\n"}, ctxEntry{name: "d", typeflag: tar.TypeSymlink, link: "e"}), wantMsg: "goes through the symlink"},
	"entry below a symlink":       {body: contextTar(ctxEntry{name: "Dockerfile", body: "FROM busybox\n"}, ctxEntry{name: "l", typeflag: tar.TypeSymlink, link: "."}, ctxEntry{name: "l/Dockerfile", body: "FROM 127.0.0.1:5000/x\n"}), wantMsg: "lies below the symlink"},
	"below a hard link to a link": {body: contextTar(ctxEntry{name: "Dockerfile", body: "FROM busybox\n"}, ctxEntry{name: "l", typeflag: tar.TypeSymlink, link: "."}, ctxEntry{name: "m", typeflag: tar.TypeLink, link: "l"}, ctxEntry{name: "l", typeflag: tar.TypeDir}, ctxEntry{name: "m/Dockerfile", body: "FROM 127.0.0.1:5000/x\n"}), wantMsg: "lies below the symlink"},
	"Dockerfile directory":        {body: contextTar(ctxEntry{name: "Dockerfile", typeflag: tar.TypeDir}), wantMsg: "not a regular file"},
	"entry outside the context":   {body: contextTar(ctxEntry{name: "../Dockerfile", body: "FROM busybox\n"}), wantMsg: "lies outside it"},
	"not a tar":                   {body: "FROM busybox\n", wantMsg: "not a readable tar"},
	"unparsable Dockerfile":       {body: dockerfileTar("FROM busybox\nRUN <<EOF\nnever ends\n"), wantMsg: "cannot read the Dockerfile"},
	"Dockerfile URL":              {query: "dockerfile=http://127.0.0.1:8080/Dockerfile", body: plainBuildContext, wantMsg: "from a URL is not allowed"},
	"Dockerfile list":             {query: "dockerfile=" + url.QueryEscape(`["Dockerfile","x"]`), body: plainBuildContext, wantMsg: "list of Dockerfiles"},
	"absolute Dockerfile":         {query: "dockerfile=/etc/passwd", body: plainBuildContext, wantMsg: "relative to the build context"},
	"Dockerfile outside":          {query: "dockerfile=a/../../x", body: plainBuildContext, wantMsg: "outside the build context"},
	"bad buildargs":               {query: "buildargs=x", body: plainBuildContext, wantMsg: "bad buildargs"},
	"cache from a local registry": {query: "cachefrom=" + url.QueryEscape(`["busybox","127.0.0.1:5000/cache"]`), body: plainBuildContext, wantMsg: msgRegistry},
	"cache from":                  {query: "cachefrom=" + url.QueryEscape(`["busybox","localhost:5000/cache"]`), body: plainBuildContext},
	"long entry name":             {body: contextTar(ctxEntry{name: strings.Repeat("a/", 2100) + "x"}, ctxEntry{name: "Dockerfile", body: "FROM busybox\n"}), wantMsg: "byte limit"},
}

func TestBuildChecksWhatTheDockerfileFetches(t *testing.T) {
	dir := testBuildsDir(t)
	f, err := NewFilter(Config{BuildsDir: dir, Labels: jobLabels, SpoolDir: t.TempDir(), LocalRegistries: []string{"localhost:5000"}}, fakeUpstream{})
	if err != nil {
		t.Fatal(err)
	}
	for name, tc := range buildCheckCases {
		t.Run(name, func(t *testing.T) {
			req := httptest.NewRequest("POST", "/v1.41/build?"+tc.query, strings.NewReader(tc.body))
			req.Header.Set("Content-Type", "application/x-tar")
			release, err := f.CheckHold(context.Background(), req)
			if err == nil {
				defer release() // the spooled body is open until then
			}
			var refusal *Refusal
			switch {
			case tc.wantMsg == "" && err != nil:
				t.Fatalf("got %v, want the build forwarded", err)
			case tc.wantMsg == "":
				body, _ := io.ReadAll(req.Body)
				if string(body) != tc.body || req.ContentLength != int64(len(tc.body)) {
					t.Errorf("forwarded a %d byte body (Content-Length %d), want the %d bytes sent", len(body), req.ContentLength, len(tc.body))
				}
			case !errors.As(err, &refusal):
				t.Fatalf("got %v, want a refusal", err)
			case refusal.Status != 403 || !strings.Contains(refusal.Message, tc.wantMsg):
				t.Errorf("got %d %q, want 403 and %q", refusal.Status, refusal.Message, tc.wantMsg)
			}
		})
	}
}

// TestBuildCheckIsOnTheWholeContext: a Dockerfile the engine reads after a
// large context is still found, and a chunked body is spooled.
func TestBuildCheckIsOnTheWholeContext(t *testing.T) {
	f := newTestFilter(t, testBuildsDir(t))
	body := contextTar(ctxEntry{name: "big", body: strings.Repeat("x", 1<<20)}, ctxEntry{name: "Dockerfile", body: "FROM 169.254.169.254/x\n"})
	req := readRequest(t, filterCase{method: "POST", target: "/v1.41/build", contentType: "application/x-tar", body: body, chunked: true}.rawRequest(""))
	err := f.Check(context.Background(), req)
	if err == nil || !strings.Contains(err.Error(), msgRegistry) {
		t.Fatalf("got %v, want the FROM refused", err)
	}
}

func TestLegacyIPv4IsLocal(t *testing.T) {
	for host, want := range map[string]bool{
		"2130706433": true, "0x7f000001": true, "0x7f.1": true, "127.1": true, "0177.0.0.1": true, "127.0.1": true,
		"0": true, "169.254.43518": true, "2852039166": true, "017700000001": true,
		"8.8.8.8": false, "134744072": false, "1.2.3.4.5": false, "08.0.0.1": false, "127.0.0.256": false, "0x": false,
		"example.com": false, "4294967296": false, "127.16777216": false,
	} {
		if got := localHost(host); got != want {
			t.Errorf("localHost(%q) = %v, want %v", host, got, want)
		}
	}
}

// The refused builds seed the fuzzer through filterCases.
func init() {
	for _, name := range []string{"ADD from loopback", "ADD gzip context", "FROM link-local", "ARG from another ARG", "ONBUILD ADD",
		"heredoc lines as instructions", "symlinked Dockerfile", "entry below a symlink", "Dockerfile through symlink"} {
		tc := buildCheckCases[name]
		filterCases["build: "+name] = filterCase{method: "POST", target: "/v1.41/build?" + tc.query, contentType: "application/x-tar", body: tc.body, wantStatus: 403, wantMsg: tc.wantMsg}
	}
}

// The engines' parsers disagree on where an escape directive applies
// (Podman's stops at "# syntax=" or a byte-order mark), so an escape
// character other than the default is refused, wherever the line is.
func TestBuildRefusesAnEscapeDirective(t *testing.T) {
	for name, tc := range map[string]struct {
		dockerfile string
		refused    bool
	}{
		"after a syntax line":     {"# syntax=docker/dockerfile:1\n# escape=`\nFROM busybox\nCOPY a `\nRUN true\n", true},
		"after a check line":      {"# check=skip=all\n#escape = `\nFROM busybox\n", true},
		"after a byte-order mark": {"\xef\xbb\xbf# escape=`\nFROM busybox\n", true},
		"the default":             {"# escape=\\\nFROM busybox\n", false},
		"a syntax line alone":     {"# syntax=docker/dockerfile:1\nFROM busybox\n", false},
	} {
		t.Run(name, func(t *testing.T) {
			f, err := NewFilter(Config{BuildsDir: testBuildsDir(t), Labels: jobLabels, SpoolDir: t.TempDir()}, fakeUpstream{})
			if err != nil {
				t.Fatal(err)
			}
			req := httptest.NewRequest("POST", "/v1.41/build", strings.NewReader(dockerfileTar(tc.dockerfile)))
			req.Header.Set("Content-Type", "application/x-tar")
			release, err := f.CheckHold(context.Background(), req)
			var refusal *Refusal
			switch {
			case tc.refused && (!errors.As(err, &refusal) || !strings.Contains(refusal.Message, "escape character")):
				t.Errorf("got %v, want the escape directive refused", err)
			case !tc.refused && err != nil:
				t.Errorf("got %v, want the build forwarded", err)
			case err == nil:
				release()
			}
		})
	}
}
