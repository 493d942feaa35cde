package dockerproxy

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"io"
	"net/http/httptest"
	"sort"
	"strings"
	"testing"
)

// imageArchive is a docker-archive-shaped tar of files, in name order.
func imageArchive(t *testing.T, files map[string]string) []byte {
	t.Helper()
	names := make([]string, 0, len(files))
	for name := range files {
		names = append(names, name)
	}
	sort.Strings(names)
	entries := make([]tar.Header, 0, len(names))
	for _, name := range names {
		entries = append(entries, tar.Header{Name: name, Typeflag: tar.TypeReg, Linkname: files[name]})
	}
	return tarEntries(t, entries...)
}

func TestLoadIsCheckedAgainstTheNamesInTheArchive(t *testing.T) {
	layer := strings.Repeat("x", 64<<10)
	tests := map[string]struct {
		files   map[string]string
		wantMsg string
	}{
		"new names": {files: map[string]string{"layer.tar": layer, "manifest.json": `[{"Config":"c.json","RepoTags":["mine:1","ownbuilt:1"],"Layers":["layer.tar"]}]`}},
		"over berth's helper": {files: map[string]string{"layer.tar": layer, "manifest.json": `[{"RepoTags":["mine:1","berth-test/helper:latest"]}]`},
			wantMsg: `"berth-test/helper:latest" is taken`},
		"legacy repositories file": {files: map[string]string{"repositories": `{"busybox":{"latest":"abc"}}`},
			wantMsg: `"busybox:latest" is taken`},
		"oci index annotation": {files: map[string]string{"index.json": `{"manifests":[{"annotations":{"io.containerd.image.name":"foreignbuilt:1"}}]}`},
			wantMsg: "is taken"},
		"not a tar":       {files: nil, wantMsg: "not a readable tar"},
		"bad manifest":    {files: map[string]string{"manifest.json": `{`}, wantMsg: "manifest.json"},
		"no names at all": {files: map[string]string{"layer.tar": layer}},
		"an unnamed image": {files: map[string]string{"layer.tar": layer, "manifest.json": `[{"Config":"c.json","RepoTags":["mine:1"]},{"Config":"d.json","RepoTags":[]}]`},
			wantMsg: "an image in the archive has no name"},
		"an unnamed oci image": {files: map[string]string{"index.json": `{"manifests":[{"annotations":{}}]}`},
			wantMsg: "an image in the archive has no name"},
		"an image with ONBUILD triggers": {files: map[string]string{"c.json": `{"config":{"onbuild":["COPY --from=foreignbuilt:1 /s /s"]}}`, "manifest.json": `[{"Config":"c.json","RepoTags":["mine:1"]}]`},
			wantMsg: "has ONBUILD triggers"},
		"an image config without": {files: map[string]string{"c.json": `{"config":{"Env":["A=1"]},"container_config":{"OnBuild":null}}`, "manifest.json": `[{"Config":"c.json","RepoTags":["mine:1"]}]`}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			dir := testBuildsDir(t)
			f, err := NewFilter(Config{BuildsDir: dir, Labels: jobLabels, SpoolDir: t.TempDir()}, fakeUpstream{})
			if err != nil {
				t.Fatal(err)
			}
			body := []byte("this is not a tar archive, but long enough to fail the header check....................................................................................................................................................................................................................................................................................................................................................................................................................................................................................................................")
			if tc.files != nil {
				body = imageArchive(t, tc.files)
			}
			req := httptest.NewRequest("POST", "/v1.41/images/load?quiet=1", bytes.NewReader(body))
			req.Header.Set("Content-Type", "application/x-tar")
			req.ContentLength = -1
			req.TransferEncoding = []string{"chunked"}
			release, err := f.CheckHold(context.Background(), req)
			if tc.wantMsg != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantMsg) {
					t.Fatalf("got %v, want a refusal containing %q", err, tc.wantMsg)
				}
				return
			}
			if err != nil {
				t.Fatalf("got %v, want the load forwarded", err)
			}
			defer release()
			got, err := io.ReadAll(req.Body)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, body) || req.ContentLength != int64(len(body)) {
				t.Errorf("got a body of %d bytes (Content-Length %d), want the archive's %d unchanged", len(got), req.ContentLength, len(body))
			}
		})
	}
}

func TestAJobMayRemoveNamesItGave(t *testing.T) {
	f := newTestFilter(t, testBuildsDir(t))
	check := func(method, target string) error {
		t.Helper()
		return f.Check(context.Background(), httptest.NewRequest(method, target, nil))
	}
	if err := check("DELETE", "/v1.41/images/mine:1"); err != nil {
		t.Fatalf("remove a missing name: got %v, want it forwarded (the engine answers 404)", err)
	}
	fakeName := "127.0.0.1:5000/a/b:1" // a shared image in the fake engine
	if err := check("DELETE", "/v1.41/images/"+fakeName); err == nil {
		t.Fatal("removing a shared name the job did not give was forwarded")
	}
	f.gaveName(fakeName)
	if err := check("DELETE", "/v1.41/images/"+fakeName); err != nil {
		t.Fatalf("got %v, want a name the job gave removable", err)
	}
	if err := check("POST", "/v1.41/images/busybox/tag?repo=127.0.0.1:5000/a/b&tag=1"); err != nil {
		t.Fatalf("got %v, want a name the job gave movable", err)
	}
	if err := check("POST", "/v1.41/images/create?fromImage=newly/pulled&tag=2"); err != nil {
		t.Fatal(err)
	}
	if !f.gave("newly/pulled:2") {
		t.Error("a pull of a new name did not record it as given")
	}
	// Names are kept as written: another spelling that an engine may tell
	// apart is not the same name (Podman: localhost/ first).
	if f.gave("docker.io/newly/pulled:2") || f.gave("index.docker.io/newly/pulled:2") {
		t.Error("another spelling of a given name counts as given")
	}
	if f.gave("busybox") {
		t.Error("a shared name counts as given")
	}
}

// tarEntries builds a tar of headers in order; a regular file's content is
// its Linkname.
func tarEntries(t *testing.T, entries ...tar.Header) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, h := range entries {
		content := h.Linkname
		if h.Typeflag == tar.TypeSymlink || h.Typeflag == tar.TypeLink {
			content = ""
		} else {
			h.Linkname = ""
		}
		h.Size = int64(len(content))
		if h.Mode == 0 {
			h.Mode = 0o644
		}
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write([]byte(content)); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// The engine cleans entry names, follows symlinked directories and
// decompresses what it loads: none of it may hide a name from the guard.
func TestLoadCannotHideNamesFromTheGuard(t *testing.T) {
	evil := `[{"RepoTags":["berth-test/helper:latest"]}]`
	reg := func(name, content string) tar.Header {
		return tar.Header{Name: name, Typeflag: tar.TypeReg, Linkname: content}
	}
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	_, _ = zw.Write(tarEntries(t, reg("manifest.json", evil)))
	_ = zw.Close()
	for name, tc := range map[string]struct {
		body []byte
		want string
	}{
		"dot-dot name":        {tarEntries(t, reg("x/../manifest.json", evil)), "not a clean relative name"},
		"double slash":        {tarEntries(t, reg(".//manifest.json", evil)), "not a clean relative name"},
		"absolute name":       {tarEntries(t, reg("/manifest.json", evil)), "not a clean relative name"},
		"below a symlink":     {tarEntries(t, tar.Header{Name: "x", Typeflag: tar.TypeSymlink, Linkname: "."}, reg("x/manifest.json", evil)), "below the symlink"},
		"manifest as symlink": {tarEntries(t, reg("evil.json", evil), tar.Header{Name: "manifest.json", Typeflag: tar.TypeSymlink, Linkname: "evil.json"}), "not a regular file"},
		"gzipped":             {gz.Bytes(), `"berth-test/helper:latest" is taken`},
		"bzip2":               {append([]byte("BZh91AY&SY"), make([]byte, 600)...), "bzip2, xz or zstd"},
	} {
		t.Run(name, func(t *testing.T) {
			f, err := NewFilter(Config{BuildsDir: testBuildsDir(t), Labels: jobLabels, SpoolDir: t.TempDir()}, fakeUpstream{})
			if err != nil {
				t.Fatal(err)
			}
			req := httptest.NewRequest("POST", "/v1.41/images/load", bytes.NewReader(tc.body))
			req.Header.Set("Content-Type", "application/x-tar")
			_, err = f.CheckHold(context.Background(), req)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want a refusal containing %q", err, tc.want)
			}
		})
	}
	// A gzipped archive with a new name goes to the engine uncompressed,
	// as the guard read it.
	var ok bytes.Buffer
	zw = gzip.NewWriter(&ok)
	_, _ = zw.Write(tarEntries(t, reg("manifest.json", `[{"RepoTags":["mine:1"]}]`)))
	_ = zw.Close()
	f, err := NewFilter(Config{BuildsDir: testBuildsDir(t), Labels: jobLabels, SpoolDir: t.TempDir()}, fakeUpstream{})
	if err != nil {
		t.Fatal(err)
	}
	req := httptest.NewRequest("POST", "/v1.41/images/load", bytes.NewReader(ok.Bytes()))
	req.Header.Set("Content-Type", "application/x-tar")
	release, err := f.CheckHold(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	tr := tar.NewReader(req.Body)
	hdr, err := tr.Next()
	if err != nil || hdr.Name != "manifest.json" {
		t.Fatalf("got %v %v, want the plain tar's manifest.json", hdr, err)
	}
}
