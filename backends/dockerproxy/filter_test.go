package dockerproxy

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/go-units"

	"github.com/berthci/berth/backends"
)

var (
	jobLabels = map[string]string{
		backends.LabelRunner: "r1", backends.LabelJobID: "7", backends.LabelRole: RoleJobCreated,
		backends.LabelProject: "g/p", backends.LabelProjectID: "3",
	}
	otherJob = map[string]string{backends.LabelRunner: "r1", backends.LabelJobID: "8", backends.LabelRole: RoleJobCreated}
	buildCtr = map[string]string{backends.LabelRunner: "r1", backends.LabelJobID: "7", backends.LabelRole: "build"}
	proxyCtr = map[string]string{backends.LabelRunner: "r1", backends.LabelJobID: "7", backends.LabelRole: "docker-proxy"}
	jobNet   = map[string]string{backends.LabelRunner: "r1", backends.LabelJobID: "7", backends.LabelRole: "network"}
)

// fakeUpstream is a daemon with a few objects of this job and others.
type fakeUpstream struct{}

var fakeContainers = map[string]Object{
	"own":     {ID: "own0000000000000000000000000000000000000000000000000000000000001", Labels: jobLabels},
	"bound":   {ID: "own0000000000000000000000000000000000000000000000000000000000003", Labels: jobLabels, Binds: []Bind{{Source: "/builds/x", Target: "/x"}}},
	"own2":    {ID: "own0000000000000000000000000000000000000000000000000000000000002", Labels: jobLabels},
	"foreign": {ID: "for0000000000000000000000000000000000000000000000000000000000001", Labels: otherJob},
	"hostctr": {ID: "hst0000000000000000000000000000000000000000000000000000000000001"},
	"build":   {ID: "bld0000000000000000000000000000000000000000000000000000000000001", Labels: buildCtr},
	"proxy":   {ID: "prx0000000000000000000000000000000000000000000000000000000000001", Labels: proxyCtr},
}

func (fakeUpstream) Container(_ context.Context, ref string) (Object, error) {
	if obj, ok := fakeContainers[ref]; ok {
		return obj, nil
	}
	for _, obj := range fakeContainers {
		if obj.ID == ref {
			return obj, nil
		}
	}
	if ref == "broken" {
		return Object{}, errors.New("daemon gone")
	}
	return Object{}, ErrNotFound
}

func (fakeUpstream) Network(_ context.Context, ref string) (Object, error) {
	switch ref {
	case "jobnet":
		return Object{ID: "n1", Labels: jobNet, Gateway: "10.9.0.1"}, nil
	case "ownnet":
		return Object{ID: "n2", Labels: jobLabels}, nil
	case "othernet":
		return Object{ID: "n3", Labels: otherJob}, nil
	case "host", "none", "bridge":
		return Object{ID: "n-" + ref}, nil
	}
	return Object{}, ErrNotFound
}

func (fakeUpstream) Volume(_ context.Context, name string) (Object, error) {
	switch name {
	case "ownvol":
		return Object{ID: name, Labels: jobLabels}, nil
	case "othervol":
		return Object{ID: name, Labels: otherJob}, nil
	}
	return Object{}, ErrNotFound
}

func (fakeUpstream) ExecContainer(_ context.Context, id string) (string, error) {
	switch id {
	case "ownexec":
		return "own", nil
	case "foreignexec":
		return "foreign", nil
	}
	return "", ErrNotFound
}

var fakeImages = map[string]Object{
	"busybox":                           {ID: "sha256:shared"},
	"busybox:latest":                    {ID: "sha256:shared", Ports: []string{"80/tcp"}},
	"127.0.0.1:5000/a/b:1":              {ID: "sha256:shared2"},
	"berth-test/helper:latest":          {ID: "sha256:helper"},
	"jobbuilt:1":                        {ID: "sha256:10b0b0b0b0b0aaaa", Labels: jobLabels},
	"ownbuilt:1":                        {ID: "sha256:own", Labels: map[string]string{backends.LabelProjectID: "3", backends.LabelRunner: "r1", backends.LabelRole: RoleJobCreated}},
	"sha256:step":                       {ID: "sha256:step", Untagged: true},
	"onbuild:1":                         {ID: "sha256:onbuild", OnBuild: []string{"RUN curl http://127.0.0.1/"}},
	"onbuildhistory:1":                  {ID: "sha256:onbuildhistory"},
	"sha256:" + strings.Repeat("f", 64): {ID: "sha256:" + strings.Repeat("f", 64), Labels: map[string]string{backends.LabelProjectID: "4", backends.LabelRunner: "r1", backends.LabelRole: RoleJobCreated}},
	"strays:1":                          {ID: "sha256:strays", Labels: map[string]string{backends.LabelAlias: "web", "Berth.Job.Id": "8"}},
	"foreignbuilt:1":                    {ID: "sha256:foreign", Labels: map[string]string{backends.LabelProjectID: "4", backends.LabelRunner: "r1", backends.LabelRole: RoleJobCreated}},
	"otherrunner:1":                     {ID: "sha256:foreign2", Labels: map[string]string{backends.LabelProjectID: "3", backends.LabelRunner: "r2", backends.LabelRole: RoleJobCreated}},
}

func (fakeUpstream) Image(_ context.Context, ref string) (Object, error) {
	if obj, ok := fakeImages[ref]; ok {
		return obj, nil
	}
	if ref == "brokenimage" {
		return Object{}, errors.New("daemon gone")
	}
	return Object{}, ErrNotFound
}

func (fakeUpstream) RunningContainers(context.Context, map[string]string) ([]string, error) {
	return nil, nil
}

func (fakeUpstream) Stop(context.Context, string, string, string) error { return nil }

func (fakeUpstream) Images(_ context.Context, ref string) ([]Object, error) {
	var out []Object
	for name, obj := range fakeImages {
		if name == ref || strings.HasPrefix(name, ref+":") {
			out = append(out, obj)
		}
	}
	return out, nil
}

func (fakeUpstream) ImagesLabelled(_ context.Context, selector map[string]string) ([]Object, error) {
	var out []Object
	for _, obj := range fakeImages {
		if labelsMatch(obj.Labels, selector) {
			out = append(out, obj)
		}
	}
	return out, nil
}

func (fakeUpstream) Init(context.Context, string) (int, error) {
	return 0, errors.New("the fake engine cannot initialise containers")
}

func (fakeUpstream) Pause(context.Context, string) error   { return nil }
func (fakeUpstream) Unpause(context.Context, string) error { return nil }

func (fakeUpstream) History(_ context.Context, ref string) ([]string, error) {
	if ref == "onbuildhistory:1" {
		return []string{"/bin/sh -c #(nop) ONBUILD COPY --from=x /a /b"}, nil
	}
	return nil, nil
}

func (fakeUpstream) Pull(_ context.Context, ref, _ string) error {
	if strings.HasPrefix(ref, "unpullable") {
		return errors.New("manifest unknown")
	}
	return nil // and the image stays missing
}

// testBuildsDir makes a builds dir with a subdirectory and symlinks that
// point out of it, and returns it.
func testBuildsDir(t testing.TB) string {
	t.Helper()
	root := t.TempDir()
	dir := filepath.Join(root, "builds", "r1", "7")
	for _, d := range []string{filepath.Join(dir, "project", "data"), dir + ".docker-proxy"} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	links := map[string]string{
		"escape": "/", "escape-rel": "../../..", "inside": "data", "dangling": "/nonexistent-berth-target",
	}
	for name, target := range links {
		if err := os.Symlink(target, filepath.Join(dir, "project", name)); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func newTestFilter(t testing.TB, buildsDir string) *Filter {
	t.Helper()
	f, err := NewFilter(Config{BuildsDir: buildsDir, Labels: jobLabels, LocalRegistries: []string{"127.0.0.1:5000"}}, fakeUpstream{})
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// filterCase is one request: body "" means none.
type filterCase struct {
	method, target, contentType, body string
	chunked                           bool
	wantStatus                        int    // 0: forwarded
	wantMsg                           string // part of the refusal message
}

const ct = "application/json"

func create(hostConfig string) string {
	return `{"Image":"busybox","Cmd":["true"],"HostConfig":` + hostConfig + `}`
}

var filterCases = map[string]filterCase{
	// What normal CI needs.
	"ping":                 {method: "GET", target: "/_ping"},
	"ping head":            {method: "HEAD", target: "/v1.41/_ping"},
	"version":              {method: "GET", target: "/v1.41/version"},
	"info":                 {method: "GET", target: "/v1.41/info"},
	"login":                {method: "POST", target: "/v1.41/auth", contentType: ct, body: `{"username":"u","password":"p","serveraddress":"r"}`},
	"list containers":      {method: "GET", target: "/v1.41/containers/json?all=1"},
	"create plain":         {method: "POST", target: "/v1.41/containers/create?name=x", contentType: ct, body: create(`{"NetworkMode":"default","AutoRemove":true}`)},
	"create no hostconfig": {method: "POST", target: "/v1.41/containers/create", contentType: ct, body: `{"Image":"busybox"}`},
	"create json charset":  {method: "POST", target: "/v1.41/containers/create", contentType: "application/json; charset=utf-8", body: `{"Image":"busybox"}`},
	"create bind in builds": {method: "POST", target: "/v1.41/containers/create", contentType: ct,
		body: create(`{"Binds":["@B/project/data:/data:ro"]}`)},
	"create bind builds dir itself": {method: "POST", target: "/v1.41/containers/create", contentType: ct, body: create(`{"Binds":["@B:/b"]}`)},
	"create bind not yet existing":  {method: "POST", target: "/v1.41/containers/create", contentType: ct, body: create(`{"Binds":["@B/project/out/new:/out"]}`)},
	"create bind inside symlink":    {method: "POST", target: "/v1.41/containers/create", contentType: ct, body: create(`{"Binds":["@B/project/inside:/d"]}`)},
	"create own volume":             {method: "POST", target: "/v1.41/containers/create", contentType: ct, body: create(`{"Binds":["ownvol:/v"]}`)},
	"create anonymous volume":       {method: "POST", target: "/v1.41/containers/create", contentType: ct, body: create(`{"Mounts":[{"Type":"volume","Target":"/v"}]}`)},
	"create tmpfs":                  {method: "POST", target: "/v1.41/containers/create", contentType: ct, body: create(`{"Mounts":[{"Type":"tmpfs","Target":"/t"}]}`)},
	"create no network":             {method: "POST", target: "/v1.41/containers/create", contentType: ct, body: `{"Image":"busybox","HostConfig":{"NetworkMode":"none"},"NetworkingConfig":{"EndpointsConfig":{"none":{}}}}`},
	"build no network":              {method: "POST", target: "/v1.41/build?networkmode=none", contentType: "application/x-tar", body: plainBuildContext},
	"create job network":            {method: "POST", target: "/v1.41/containers/create", contentType: ct, body: create(`{"NetworkMode":"jobnet"}`)},
	"create own network endpoint": {method: "POST", target: "/v1.41/containers/create", contentType: ct,
		body: `{"Image":"busybox","HostConfig":{"NetworkMode":"ownnet"},"NetworkingConfig":{"EndpointsConfig":{"ownnet":{"Aliases":["db"]}}}}`},
	"create own pid ns":         {method: "POST", target: "/v1.41/containers/create", contentType: ct, body: create(`{"PidMode":"container:own"}`)},
	"create no-new-privileges":  {method: "POST", target: "/v1.41/containers/create", contentType: ct, body: create(`{"SecurityOpt":["no-new-privileges"],"CapDrop":["ALL"]}`)},
	"start own":                 {method: "POST", target: "/v1.41/containers/own/start"},
	"attach own":                {method: "POST", target: "/v1.41/containers/own/attach?stream=1&stdout=1"},
	"wait own":                  {method: "POST", target: "/v1.41/containers/own/wait?condition=next-exit"},
	"logs own":                  {method: "GET", target: "/v1.41/containers/own/logs?stdout=1"},
	"inspect own":               {method: "GET", target: "/v1.41/containers/own/json"},
	"remove own":                {method: "DELETE", target: "/v1.41/containers/own?force=1"},
	"exec own":                  {method: "POST", target: "/v1.41/containers/own/exec", contentType: ct, body: `{"Cmd":["ls"],"AttachStdout":true}`},
	"exec start own":            {method: "POST", target: "/v1.41/exec/ownexec/start", contentType: ct, body: `{"Detach":false,"Tty":false}`},
	"exec inspect own":          {method: "GET", target: "/v1.41/exec/ownexec/json"},
	"copy into own":             {method: "PUT", target: "/v1.41/containers/own/archive?path=/tmp", contentType: "application/x-tar", body: "tar", chunked: true},
	"update own":                {method: "POST", target: "/v1.41/containers/own/update", contentType: ct, body: `{"Memory":1000000}`},
	"build classic":             {method: "POST", target: "/v1.41/build?t=app&t=box&q=1&rm=1&networkmode=default&labels=%7B%7D&version=1", contentType: "application/x-tar", body: plainBuildContext, chunked: true},
	"pull":                      {method: "POST", target: "/v1.41/images/create?fromImage=busybox&tag=latest"},
	"push":                      {method: "POST", target: "/v1.41/images/127.0.0.1:5000/a/b/push?tag=1"},
	"tag":                       {method: "POST", target: "/v1.41/images/busybox/tag?repo=x&tag=1"},
	"image inspect":             {method: "GET", target: "/v1.41/images/127.0.0.1:5000/a/b:1/json"},
	"image remove":              {method: "DELETE", target: "/v1.41/images/ownbuilt:1"},
	"images list":               {method: "GET", target: "/v1.41/images/json"},
	"network create":            {method: "POST", target: "/v1.41/networks/create", contentType: ct, body: `{"Name":"n","Driver":"bridge","Labels":{"a":"b"}}`},
	"network connect":           {method: "POST", target: "/v1.41/networks/ownnet/connect", contentType: ct, body: `{"Container":"own"}`},
	"network list":              {method: "GET", target: "/v1.41/networks"},
	"network remove own":        {method: "DELETE", target: "/v1.41/networks/ownnet"},
	"volume create":             {method: "POST", target: "/v1.41/volumes/create", contentType: ct, body: `{"Name":"v","Driver":"local"}`},
	"volume remove own":         {method: "DELETE", target: "/v1.41/volumes/ownvol"},
	"volume list":               {method: "GET", target: "/v1.41/volumes?filters=%7B%22dangling%22%3A%7B%22true%22%3Atrue%7D%7D"},
	"unversioned create":        {method: "POST", target: "/containers/create", contentType: ct, body: `{"Image":"busybox"}`},
	"berth labels are stripped": {method: "POST", target: "/v1.41/containers/create", contentType: ct, body: `{"Image":"busybox","Labels":{"berth.job.id":"99","BERTH.runner":"x","keep":"1"}}`},

	// Image names: new ones and the project's own may be given; shared
	// and other projects' may not be moved, and other projects' images not
	// used at all.
	"tag to a new name":              {method: "POST", target: "/v1.41/images/busybox/tag?repo=mine&tag=1"},
	"tag own over own":               {method: "POST", target: "/v1.41/images/ownbuilt:1/tag?repo=ownbuilt&tag=1"},
	"tag over berth's helper":        {method: "POST", target: "/v1.41/images/busybox/tag?repo=berth-test/helper&tag=latest", wantStatus: 403, wantMsg: `image name "berth-test/helper:latest" is taken`},
	"tag over a pulled image":        {method: "POST", target: "/v1.41/images/ownbuilt:1/tag?repo=busybox", wantStatus: 403, wantMsg: "is taken"},
	"tag a foreign image":            {method: "POST", target: "/v1.41/images/foreignbuilt:1/tag?repo=stolen&tag=1", wantStatus: 403, wantMsg: "another project's job"},
	"tag another runner's image":     {method: "POST", target: "/v1.41/images/otherrunner:1/tag?repo=stolen&tag=1", wantStatus: 403, wantMsg: "another project's job"},
	"tag without repo":               {method: "POST", target: "/v1.41/images/busybox/tag", wantStatus: 403, wantMsg: "needs repo"},
	"build over the helper":          {method: "POST", target: "/v1.41/build?t=ok:1&t=berth-test/helper:latest", contentType: "application/x-tar", body: "tar", wantStatus: 403, wantMsg: "is taken"},
	"log path on the host":           {method: "POST", target: "/v1.41/containers/create", contentType: ct, body: create(`{"LogConfig":{"Type":"json-file","Config":{"path":"/tmp/x"}}}`), wantStatus: 403, wantMsg: `log option "path" is not allowed`},
	"comma in a mount's consistency": {method: "POST", target: "/v1.41/containers/create", contentType: ct, body: create(`{"Mounts":[{"Type":"volume","Target":"/d","Consistency":"x,src=othervol"}]}`), wantStatus: 403, wantMsg: "may not hold a comma, an equals sign or a colon"},
	"comma in a mount's target":      {method: "POST", target: "/v1.41/containers/create", contentType: ct, body: create(`{"Mounts":[{"Type":"tmpfs","Target":"/d,src=/run"}]}`), wantStatus: 403, wantMsg: "may not hold a comma, an equals sign or a colon"},
	"comma in a bind's target":       {method: "POST", target: "/v1.41/containers/create", contentType: ct, body: create(`{"Binds":["ownvol:/d,src=/"]}`), wantStatus: 403, wantMsg: "may not hold a comma, an equals sign or a colon"},
	// The fourth attack review: query keys Podman reads without regard to
	// case or that only it has, a colon in a mount source, tmpfs options
	// that size past the ceiling, a container's changes.
	"an upper-case query key":          {method: "GET", target: "/v1.41/images/get?NAMES=foreignbuilt:1", wantStatus: 403, wantMsg: `query parameter "NAMES" is not allowed`},
	"rename by an upper-case key":      {method: "POST", target: "/v1.41/containers/own/rename?NAME=berth-r1-9-build", wantStatus: 403, wantMsg: `query parameter "NAME" is not allowed`},
	"search by an upper-case key":      {method: "GET", target: "/v1.41/images/search?TERM=127.0.0.1:5001/x", wantStatus: 403, wantMsg: `query parameter "TERM" is not allowed`},
	"a push's destination":             {method: "POST", target: "/v1.41/images/busybox/push?tag=latest&destination=docker-archive:/home/x.tar", wantStatus: 403, wantMsg: `query parameter "destination" is not allowed`},
	"a key of another endpoint":        {method: "POST", target: "/v1.41/containers/own/start?signal=KILL", wantStatus: 403, wantMsg: `query parameter "signal" is not allowed`},
	"a colon in a mount source":        {method: "POST", target: "/v1.41/containers/create", contentType: ct, body: create(`{"Mounts":[{"Type":"bind","Source":"@B/project/a:b","Target":"/t"}]}`), wantStatus: 403, wantMsg: "may not hold a comma, an equals sign or a colon"},
	"tmpfs nr_blocks":                  {method: "POST", target: "/v1.41/containers/create", contentType: ct, body: create(`{"Tmpfs":{"/t":"size=1m,nr_blocks=1000000"}}`), wantStatus: 403, wantMsg: `option "nr_blocks=1000000" is not allowed`},
	"tmpfs nr_inodes":                  {method: "POST", target: "/v1.41/containers/create", contentType: ct, body: create(`{"Tmpfs":{"/t":"nr_inodes=0"}}`), wantStatus: 403, wantMsg: `option "nr_inodes=0" is not allowed`},
	"tmpfs size and mode":              {method: "POST", target: "/v1.41/containers/create", contentType: ct, body: create(`{"Tmpfs":{"/t":"rw,noexec,size=1m,mode=1777"}}`)},
	"tmpfs options in its path":        {method: "POST", target: "/v1.41/containers/create", contentType: ct, body: create(`{"Tmpfs":{"/big:size=4g,exec,suid,dev":"size=1m"}}`), wantStatus: 403, wantMsg: "tmpfs path"},
	"create from a missing image":      {method: "POST", target: "/v1.41/containers/create", contentType: ct, body: `{"Image":"notpulled:1"}`, wantStatus: 404, wantMsg: "No such image: notpulled:1"},
	"top with ps options":              {method: "GET", target: "/v1.41/containers/own/top?ps_args=-eovsz%3DPID,args%20e", wantStatus: 403, wantMsg: "docker top options"},
	"top plain":                        {method: "GET", target: "/v1.41/containers/own/top"},
	"top -ef":                          {method: "GET", target: "/v1.41/containers/own/top?ps_args=-ef"},
	"pull by a transport":              {method: "POST", target: "/v1.41/images/create?fromImage=docker://127.0.0.1:5000/x&tag=1", wantStatus: 403, wantMsg: "not an image reference"},
	"a container's changes":            {method: "GET", target: "/v1.41/containers/own/changes", wantStatus: 403, wantMsg: "is not allowed"},
	"a bind in Config.Volumes":         {method: "POST", target: "/v1.41/containers/create", contentType: ct, body: `{"Image":"busybox","Volumes":{"/run/user/1001:/d":{}}}`, wantStatus: 403, wantMsg: "give an absolute path in the container, with no colon"},
	"search a loopback registry":       {method: "GET", target: "/v1.41/images/search?term=127.0.0.1:5001/x", wantStatus: 403, wantMsg: "is at a loopback or link-local address"},
	"run another job's step image":     {method: "POST", target: "/v1.41/containers/create", contentType: ct, body: `{"Image":"sha256:step"}`, wantStatus: 403, wantMsg: "another job's unnamed build step"},
	"tag a hex-only name":              {method: "POST", target: "/v1.41/images/busybox/tag?repo=6e6af0488def&tag=latest", wantStatus: 403, wantMsg: "a name of hex digits only reads as an image id"},
	"run an image with berth labels":   {method: "POST", target: "/v1.41/containers/create", contentType: ct, body: `{"Image":"strays:1"}`, wantStatus: 403, wantMsg: "carries labels in berth's namespace (Berth.Job.Id, berth.service.alias)"},
	"run a foreign image":              {method: "POST", target: "/v1.41/containers/create", contentType: ct, body: `{"Image":"foreignbuilt:1"}`, wantStatus: 403, wantMsg: "another project's job"},
	"run an own image":                 {method: "POST", target: "/v1.41/containers/create", contentType: ct, body: `{"Image":"ownbuilt:1"}`},
	"inspect a foreign image":          {method: "GET", target: "/v1.41/images/foreignbuilt:1/json", wantStatus: 404, wantMsg: "No such image: foreignbuilt:1"},
	"history of a foreign image":       {method: "GET", target: "/v1.41/images/foreignbuilt:1/history", wantStatus: 404, wantMsg: "No such image: foreignbuilt:1"},
	"save a foreign image":             {method: "GET", target: "/v1.41/images/get?names=busybox&names=foreignbuilt:1", wantStatus: 403, wantMsg: "another project's job"},
	"push a foreign image":             {method: "POST", target: "/v1.41/images/foreignbuilt/push?tag=1", wantStatus: 403, wantMsg: "another project's job"},
	"push every tag":                   {method: "POST", target: "/v1.41/images/foreignbuilt/push", wantStatus: 403, wantMsg: "needs a tag"},
	"save a repository":                {method: "GET", target: "/v1.41/images/get?names=foreignbuilt", wantStatus: 403, wantMsg: `repository "foreignbuilt" holds an image another project's job built`},
	"save a repository by path":        {method: "GET", target: "/v1.41/images/foreignbuilt/get", wantStatus: 403, wantMsg: "holds an image another project's job built"},
	"save a shared repository":         {method: "GET", target: "/v1.41/images/get?names=busybox"},
	"network with a subnet":            {method: "POST", target: "/v1.41/networks/create", contentType: ct, body: `{"Name":"n","IPAM":{"Config":[{"Subnet":"172.16.0.0/12"}]}}`, wantStatus: 403, wantMsg: "subnet"},
	"update pids to unlimited":         {method: "POST", target: "/v1.41/containers/own/update", contentType: ct, body: `{"PidsLimit":-1}`},
	"build with cpu shares":            {method: "POST", target: "/v1.41/build?cpushares=262144", contentType: "application/x-tar", body: "tar", wantStatus: 403, wantMsg: "CPU shares of 262144"},
	"cp out of a container with binds": {method: "GET", target: "/v1.41/containers/bound/archive?path=/data", wantStatus: 403, wantMsg: "docker cp is not available for a container with bind mounts"},
	"cp into a container with binds":   {method: "PUT", target: "/v1.41/containers/bound/archive?path=/data", contentType: "application/x-tar", body: "tar", wantStatus: 403, wantMsg: "docker cp is not available"},
	"remove the helper":                {method: "DELETE", target: "/v1.41/images/berth-test/helper:latest", wantStatus: 403, wantMsg: "may remove only images its project built"},
	"remove a foreign image":           {method: "DELETE", target: "/v1.41/images/foreignbuilt:1", wantStatus: 403, wantMsg: "may remove only"},
	"remove an own image":              {method: "DELETE", target: "/v1.41/images/ownbuilt:1"},
	"image lookup fails":               {method: "DELETE", target: "/v1.41/images/brokenimage", wantStatus: -1},

	// Names in berth's namespace, which a later job's prepare would use.
	"container named like berth's": {method: "POST", target: "/v1.41/containers/create?name=berth-r1-8-build", contentType: ct, body: `{"Image":"busybox"}`, wantStatus: 403, wantMsg: `names starting with "berth-" are berth's own`},
	"rename to berth's":            {method: "POST", target: "/v1.41/containers/own/rename?name=berth-r1-8-helper", wantStatus: 403, wantMsg: "berth's own"},
	"rename":                       {method: "POST", target: "/v1.41/containers/own/rename?name=mine"},
	"network named like an id":     {method: "POST", target: "/v1.41/networks/create", contentType: ct, body: `{"Name":"a6658295ed86"}`, wantStatus: 403, wantMsg: "hex digits only"},
	"network named like berth's":   {method: "POST", target: "/v1.41/networks/create", contentType: ct, body: `{"Name":"berth-r1-8"}`, wantStatus: 403, wantMsg: "berth's own"},
	"volume named like berth's":    {method: "POST", target: "/v1.41/volumes/create", contentType: ct, body: `{"Name":"berth-r1-8-vol-0"}`, wantStatus: 403, wantMsg: "berth's own"},
	// Endpoint fields the engine would join instead of the checked key.
	"endpoint NetworkID": {method: "POST", target: "/v1.41/containers/create", contentType: ct,
		body: `{"Image":"busybox","HostConfig":{"NetworkMode":"ownnet"},"NetworkingConfig":{"EndpointsConfig":{"ownnet":{"NetworkID":"othernet-id"}}}}`, wantStatus: 403, wantMsg: "may not set NetworkID"},
	"connect with NetworkID": {method: "POST", target: "/v1.41/networks/ownnet/connect", contentType: ct, body: `{"Container":"own","EndpointConfig":{"NetworkID":"n3"}}`, wantStatus: 403, wantMsg: "may not set NetworkID"},

	// Registries on the host's own network: only those the admin allowed.
	"pull from the allowed local registry": {method: "POST", target: "/v1.41/images/create?fromImage=127.0.0.1:5000/a/b&tag=1"},
	"pull from another loopback":           {method: "POST", target: "/v1.41/images/create?fromImage=127.0.0.2:5000/a&tag=1", wantStatus: 403, wantMsg: `registry "127.0.0.2:5000" is at a loopback or link-local address`},
	"pull from localhost":                  {method: "POST", target: "/v1.41/images/create?fromImage=localhost/a", wantStatus: 403, wantMsg: "docker.guard_local_registries"},
	"pull from a .localhost name":          {method: "POST", target: "/v1.41/images/create?fromImage=reg.localhost:80/a", wantStatus: 403, wantMsg: "loopback or link-local"},
	"pull from ipv6 loopback":              {method: "POST", target: "/v1.41/images/create?fromImage=%5B::1%5D:5000/a", wantStatus: 403, wantMsg: "loopback or link-local"},
	"pull from the metadata service":       {method: "POST", target: "/v1.41/images/create?fromImage=169.254.169.254/latest/meta-data", wantStatus: 403, wantMsg: "loopback or link-local"},
	"push to localhost":                    {method: "POST", target: "/v1.41/images/localhost:5000/a/push?tag=1", wantStatus: 403, wantMsg: "loopback or link-local"},
	"login to the metadata service":        {method: "POST", target: "/v1.41/auth", contentType: ct, body: `{"username":"u","password":"p","serveraddress":"http://169.254.169.254/"}`, wantStatus: 403, wantMsg: "login: registry"},
	"login to the allowed registry":        {method: "POST", target: "/v1.41/auth", contentType: ct, body: `{"username":"u","password":"p","serveraddress":"127.0.0.1:5000"}`},

	// Restart policies would let the engine start a container unchecked.
	"create restart always":     {method: "POST", target: "/v1.41/containers/create", contentType: ct, body: create(`{"RestartPolicy":{"Name":"always"}}`), wantStatus: 403, wantMsg: "restart policy"},
	"create restart on-failure": {method: "POST", target: "/v1.41/containers/create", contentType: ct, body: create(`{"RestartPolicy":{"Name":"on-failure","MaximumRetryCount":3}}`), wantStatus: 403, wantMsg: "restart policy"},
	"create restart no":         {method: "POST", target: "/v1.41/containers/create", contentType: ct, body: create(`{"RestartPolicy":{"Name":"no"}}`)},
	"update restart policy":     {method: "POST", target: "/v1.41/containers/own/update", contentType: ct, body: `{"RestartPolicy":{"Name":"unless-stopped"}}`, wantStatus: 403, wantMsg: "restart policy"},
	"start with a body":         {method: "POST", target: "/v1.41/containers/own/start", contentType: ct, body: `{"Binds":["/:/h"]}`, wantStatus: 403, wantMsg: "takes no request body"},

	// Bodies.
	"oversized body":       {method: "POST", target: "/v1.41/containers/create", contentType: ct, body: `{"Image":"` + strings.Repeat("a", MaxJSONBody) + `"}`, wantStatus: 403, wantMsg: "over the"},
	"chunked json":         {method: "POST", target: "/v1.41/containers/create", contentType: ct, body: `{"Image":"busybox"}`, chunked: true, wantStatus: 403, wantMsg: "chunked"},
	"zero length":          {method: "POST", target: "/v1.41/containers/create", contentType: ct, wantStatus: 403, wantMsg: "empty"},
	"not json":             {method: "POST", target: "/v1.41/containers/create", contentType: "text/plain", body: `{"Image":"busybox"}`, wantStatus: 403, wantMsg: "application/json"},
	"form body":            {method: "POST", target: "/v1.41/build", contentType: "application/x-www-form-urlencoded", body: "remote=http://x", wantStatus: 403, wantMsg: "application/x-tar"},
	"duplicate key":        {method: "POST", target: "/v1.41/containers/create", contentType: ct, body: `{"Image":"busybox","HostConfig":{"Privileged":false,"Privileged":true}}`, wantStatus: 403, wantMsg: "duplicate key"},
	"case variant key":     {method: "POST", target: "/v1.41/containers/create", contentType: ct, body: `{"Image":"busybox","HostConfig":{"Privileged":false,"privileged":true}}`, wantStatus: 403, wantMsg: "differ only in case"},
	"trailing json":        {method: "POST", target: "/v1.41/containers/create", contentType: ct, body: `{"Image":"busybox"}{"HostConfig":{"Privileged":true}}`, wantStatus: 403, wantMsg: "after the JSON value"},
	"body on start":        {method: "POST", target: "/v1.23/containers/own/start", contentType: ct, body: `{"Privileged":true}`, wantStatus: 403, wantMsg: "older than"},
	"body on start new":    {method: "POST", target: "/v1.41/containers/own/start", contentType: ct, body: `{"Privileged":true}`, wantStatus: 403, wantMsg: "takes no request body"},
	"escaped path":         {method: "POST", target: "/v1.41/containers%2fcreate", contentType: ct, body: `{}`, wantStatus: 403, wantMsg: "escaped"},
	"dot dot path":         {method: "GET", target: "/v1.41/containers/own/../foreign/json", wantStatus: 403, wantMsg: "clean form"},
	"repeated query":       {method: "POST", target: "/v1.41/build?networkmode=default&networkmode=host", contentType: "application/x-tar", body: "x", wantStatus: 403, wantMsg: "repeated"},
	"unknown create query": {method: "POST", target: "/v1.41/containers/create?x=1", contentType: ct, body: `{}`, wantStatus: 403, wantMsg: `"x" is not allowed`},

	// Container create and update.
	"privileged":       {method: "POST", target: "/v1.41/containers/create", contentType: ct, body: create(`{"Privileged":true}`), wantStatus: 403, wantMsg: "privileged"},
	"cap add":          {method: "POST", target: "/v1.41/containers/create", contentType: ct, body: create(`{"CapAdd":["SYS_ADMIN"]}`), wantStatus: 403, wantMsg: "SYS_ADMIN"},
	"devices":          {method: "POST", target: "/v1.41/containers/create", contentType: ct, body: create(`{"Devices":[{"PathOnHost":"/dev/sda","PathInContainer":"/dev/sda","CgroupPermissions":"rwm"}]}`), wantStatus: 403, wantMsg: "devices"},
	"device requests":  {method: "POST", target: "/v1.41/containers/create", contentType: ct, body: create(`{"DeviceRequests":[{"Count":-1,"Capabilities":[["gpu"]]}]}`), wantStatus: 403, wantMsg: "device requests"},
	"device rules":     {method: "POST", target: "/v1.41/containers/create", contentType: ct, body: create(`{"DeviceCgroupRules":["b *:* rwm"]}`), wantStatus: 403, wantMsg: "device cgroup rules"},
	"host network":     {method: "POST", target: "/v1.41/containers/create", contentType: ct, body: create(`{"NetworkMode":"host"}`), wantStatus: 403, wantMsg: `NetworkMode "host"`},
	"host network ep":  {method: "POST", target: "/v1.41/containers/create", contentType: ct, body: `{"Image":"busybox","NetworkingConfig":{"EndpointsConfig":{"host":{}}}}`, wantStatus: 403, wantMsg: `network "host"`},
	"foreign net mode": {method: "POST", target: "/v1.41/containers/create", contentType: ct, body: create(`{"NetworkMode":"container:foreign"}`), wantStatus: 403, wantMsg: "not created by this job"},
	"ns net mode":      {method: "POST", target: "/v1.41/containers/create", contentType: ct, body: create(`{"NetworkMode":"ns:/proc/1/ns/net"}`), wantStatus: 403, wantMsg: "NetworkMode"},
	"other job net":    {method: "POST", target: "/v1.41/containers/create", contentType: ct, body: create(`{"NetworkMode":"othernet"}`), wantStatus: 403, wantMsg: "does not belong to this job"},
	"host pid":         {method: "POST", target: "/v1.41/containers/create", contentType: ct, body: create(`{"PidMode":"host"}`), wantStatus: 403, wantMsg: `PidMode "host"`},
	"foreign pid":      {method: "POST", target: "/v1.41/containers/create", contentType: ct, body: create(`{"PidMode":"container:hostctr"}`), wantStatus: 403, wantMsg: "not created by this job"},
	"host ipc":         {method: "POST", target: "/v1.41/containers/create", contentType: ct, body: create(`{"IpcMode":"host"}`), wantStatus: 403, wantMsg: "IpcMode"},
	"host uts":         {method: "POST", target: "/v1.41/containers/create", contentType: ct, body: create(`{"UTSMode":"host"}`), wantStatus: 403, wantMsg: "UTSMode"},
	"host userns":      {method: "POST", target: "/v1.41/containers/create", contentType: ct, body: create(`{"UsernsMode":"host"}`), wantStatus: 403, wantMsg: "UsernsMode"},
	"host cgroupns":    {method: "POST", target: "/v1.41/containers/create", contentType: ct, body: create(`{"CgroupnsMode":"host"}`), wantStatus: 403, wantMsg: "CgroupnsMode"},
	"volumes from":     {method: "POST", target: "/v1.41/containers/create", contentType: ct, body: create(`{"VolumesFrom":["own"]}`), wantStatus: 403, wantMsg: "VolumesFrom"},
	"seccomp off":      {method: "POST", target: "/v1.41/containers/create", contentType: ct, body: create(`{"SecurityOpt":["seccomp=unconfined"]}`), wantStatus: 403, wantMsg: "seccomp=unconfined"},
	"apparmor off":     {method: "POST", target: "/v1.41/containers/create", contentType: ct, body: create(`{"SecurityOpt":["apparmor=unconfined"]}`), wantStatus: 403, wantMsg: "apparmor"},
	"selinux off":      {method: "POST", target: "/v1.41/containers/create", contentType: ct, body: create(`{"SecurityOpt":["label=disable"]}`), wantStatus: 403, wantMsg: "label=disable"},
	"sysctls":          {method: "POST", target: "/v1.41/containers/create", contentType: ct, body: create(`{"Sysctls":{"kernel.shm_rmid_forced":"1"}}`), wantStatus: 403, wantMsg: "sysctls"},
	"masked paths":     {method: "POST", target: "/v1.41/containers/create", contentType: ct, body: create(`{"MaskedPaths":[]}`), wantStatus: 403, wantMsg: "masked"},
	"readonly paths":   {method: "POST", target: "/v1.41/containers/create", contentType: ct, body: create(`{"ReadonlyPaths":[]}`), wantStatus: 403, wantMsg: "read-only"},
	"runtime":          {method: "POST", target: "/v1.41/containers/create", contentType: ct, body: create(`{"Runtime":"runc-unsafe"}`), wantStatus: 403, wantMsg: "runtime"},
	"cgroup parent":    {method: "POST", target: "/v1.41/containers/create", contentType: ct, body: create(`{"CgroupParent":"/"}`), wantStatus: 403, wantMsg: "CgroupParent"},
	"log driver":       {method: "POST", target: "/v1.41/containers/create", contentType: ct, body: create(`{"LogConfig":{"Type":"syslog","Config":{"syslog-address":"tcp://10.0.0.1:514"}}}`), wantStatus: 403, wantMsg: "syslog"},
	"oom score":        {method: "POST", target: "/v1.41/containers/create", contentType: ct, body: create(`{"OomScoreAdj":-1000}`), wantStatus: 403, wantMsg: "OomScoreAdj"},
	"foreign link":     {method: "POST", target: "/v1.41/containers/create", contentType: ct, body: create(`{"Links":["foreign:db"]}`), wantStatus: 403, wantMsg: "not created by this job"},
	"update devices":   {method: "POST", target: "/v1.41/containers/own/update", contentType: ct, body: `{"Devices":[{"PathOnHost":"/dev/sda"}]}`, wantStatus: 403, wantMsg: "devices"},
	"privileged exec":  {method: "POST", target: "/v1.41/containers/own/exec", contentType: ct, body: `{"Cmd":["sh"],"Privileged":true}`, wantStatus: 403, wantMsg: "privileged exec"},

	// Binds and mounts.
	"bind root":          {method: "POST", target: "/v1.41/containers/create", contentType: ct, body: create(`{"Binds":["/:/host"]}`), wantStatus: 403, wantMsg: `bind mount of "/"`},
	"bind docker socket": {method: "POST", target: "/v1.41/containers/create", contentType: ct, body: create(`{"Binds":["/var/run/docker.sock:/var/run/docker.sock"]}`), wantStatus: 403, wantMsg: "docker.sock"},
	"bind dot dot":       {method: "POST", target: "/v1.41/containers/create", contentType: ct, body: create(`{"Binds":["@B/../../..:/h"]}`), wantStatus: 403, wantMsg: "bind mount"},
	"bind proxy dir":     {method: "POST", target: "/v1.41/containers/create", contentType: ct, body: create(`{"Binds":["@B.docker-proxy:/p"]}`), wantStatus: 403, wantMsg: "bind mount"},
	"bind symlink out":   {method: "POST", target: "/v1.41/containers/create", contentType: ct, body: create(`{"Binds":["@B/project/escape:/h"]}`), wantStatus: 403, wantMsg: "bind mount"},
	"bind relative link": {method: "POST", target: "/v1.41/containers/create", contentType: ct, body: create(`{"Binds":["@B/project/escape-rel/x:/h"]}`), wantStatus: 403, wantMsg: "bind mount"},
	"bind dangling link": {method: "POST", target: "/v1.41/containers/create", contentType: ct, body: create(`{"Binds":["@B/project/dangling:/h"]}`), wantStatus: 403, wantMsg: "dangling"},
	"bind relabel":       {method: "POST", target: "/v1.41/containers/create", contentType: ct, body: create(`{"Binds":["@B/project:/p:Z"]}`), wantStatus: 403, wantMsg: `"Z"`},
	"bind rshared":       {method: "POST", target: "/v1.41/containers/create", contentType: ct, body: create(`{"Binds":["@B/project:/p:rshared"]}`), wantStatus: 403, wantMsg: "rshared"},
	"mount root":         {method: "POST", target: "/v1.41/containers/create", contentType: ct, body: create(`{"Mounts":[{"Type":"bind","Source":"/","Target":"/h"}]}`), wantStatus: 403, wantMsg: "bind mount"},
	"mount volume opts": {method: "POST", target: "/v1.41/containers/create", contentType: ct,
		body: create(`{"Mounts":[{"Type":"volume","Source":"x","Target":"/h","VolumeOptions":{"DriverConfig":{"Name":"local","Options":{"type":"none","device":"/","o":"bind"}}}}]}`), wantStatus: 403, wantMsg: "volume driver configuration"},
	"mount other volume": {method: "POST", target: "/v1.41/containers/create", contentType: ct, body: create(`{"Mounts":[{"Type":"volume","Source":"othervol","Target":"/h"}]}`), wantStatus: 403, wantMsg: "not created by this job"},
	"bind other volume":  {method: "POST", target: "/v1.41/containers/create", contentType: ct, body: create(`{"Binds":["othervol:/h"]}`), wantStatus: 403, wantMsg: "not created by this job"},
	"bind new volume":    {method: "POST", target: "/v1.41/containers/create", contentType: ct, body: create(`{"Binds":["newvol:/h"]}`), wantStatus: 404, wantMsg: "docker volume create"},
	"mount npipe":        {method: "POST", target: "/v1.41/containers/create", contentType: ct, body: create(`{"Mounts":[{"Type":"npipe","Source":"x","Target":"/h"}]}`), wantStatus: 403, wantMsg: "mount type"},
	"volume device":      {method: "POST", target: "/v1.41/volumes/create", contentType: ct, body: `{"Name":"v","Driver":"local","DriverOpts":{"type":"none","device":"/","o":"bind"}}`, wantStatus: 403, wantMsg: "device"},
	"volume plugin":      {method: "POST", target: "/v1.41/volumes/create", contentType: ct, body: `{"Name":"v","Driver":"sshfs"}`, wantStatus: 403, wantMsg: "sshfs"},

	// Other jobs' and the host's objects.
	"exec foreign":         {method: "POST", target: "/v1.41/containers/foreign/exec", contentType: ct, body: `{"Cmd":["sh"]}`, wantStatus: 403, wantMsg: "not created by this job"},
	"exec host container":  {method: "POST", target: "/v1.41/containers/hostctr/exec", contentType: ct, body: `{"Cmd":["sh"]}`, wantStatus: 403, wantMsg: "not created by this job"},
	"exec proxy container": {method: "POST", target: "/v1.41/containers/proxy/exec", contentType: ct, body: `{"Cmd":["sh"]}`, wantStatus: 403, wantMsg: "not created by this job"},
	"exec build container": {method: "POST", target: "/v1.41/containers/build/exec", contentType: ct, body: `{"Cmd":["sh"]}`, wantStatus: 403, wantMsg: "not created by this job"},
	"exec start foreign":   {method: "POST", target: "/v1.41/exec/foreignexec/start", contentType: ct, body: `{}`, wantStatus: 403, wantMsg: "not created by this job"},
	"stop foreign":         {method: "POST", target: "/v1.41/containers/foreign/stop", wantStatus: 403, wantMsg: "not created by this job"},
	"kill foreign":         {method: "POST", target: "/v1.41/containers/foreign/kill", wantStatus: 403, wantMsg: "not created by this job"},
	"remove foreign":       {method: "DELETE", target: "/v1.41/containers/foreign?force=1", wantStatus: 403, wantMsg: "not created by this job"},
	"logs foreign":         {method: "GET", target: "/v1.41/containers/foreign/logs", wantStatus: 403, wantMsg: "not created by this job"},
	"inspect foreign":      {method: "GET", target: "/v1.41/containers/hostctr/json", wantStatus: 403, wantMsg: "not created by this job"},
	"copy from foreign":    {method: "GET", target: "/v1.41/containers/foreign/archive?path=/", wantStatus: 403, wantMsg: "not created by this job"},
	"missing container":    {method: "POST", target: "/v1.41/containers/nope/start", wantStatus: 404, wantMsg: "No such container"},
	"connect foreign":      {method: "POST", target: "/v1.41/networks/ownnet/connect", contentType: ct, body: `{"Container":"foreign"}`, wantStatus: 403, wantMsg: "not created by this job"},
	"connect other net":    {method: "POST", target: "/v1.41/networks/othernet/connect", contentType: ct, body: `{"Container":"own"}`, wantStatus: 403, wantMsg: "does not belong"},
	"inspect job network":  {method: "GET", target: "/v1.41/networks/jobnet"},
	"inspect bridge":       {method: "GET", target: "/v1.41/networks/bridge", wantStatus: 403, wantMsg: "shared network"},
	"remove job network":   {method: "DELETE", target: "/v1.41/networks/jobnet", wantStatus: 403, wantMsg: "not created by this job"},
	"remove other volume":  {method: "DELETE", target: "/v1.41/volumes/othervol", wantStatus: 403, wantMsg: "not created by this job"},
	"network macvlan":      {method: "POST", target: "/v1.41/networks/create", contentType: ct, body: `{"Name":"n","Driver":"macvlan","Options":{"parent":"eth0"}}`, wantStatus: 403, wantMsg: "macvlan"},
	"network bridge name":  {method: "POST", target: "/v1.41/networks/create", contentType: ct, body: `{"Name":"n","Options":{"com.docker.network.bridge.name":"docker0"}}`, wantStatus: 403, wantMsg: "bridge.name"},

	// Build back doors and other endpoints.
	"session":            {method: "POST", target: "/session", wantStatus: 403, wantMsg: "DOCKER_BUILDKIT=0"},
	"grpc":               {method: "POST", target: "/v1.41/grpc", wantStatus: 403, wantMsg: "DOCKER_BUILDKIT=0"},
	"buildkit build":     {method: "POST", target: "/v1.41/build?version=2", contentType: "application/x-tar", body: "x", wantStatus: 403, wantMsg: "DOCKER_BUILDKIT=0"},
	"build remote":       {method: "POST", target: "/v1.41/build?remote=http://169.254.169.254/", wantStatus: 403, wantMsg: "remote"},
	"build host net":     {method: "POST", target: "/v1.41/build?networkmode=host", contentType: "application/x-tar", body: "x", wantStatus: 403, wantMsg: `network "host"`},
	"build cgroup":       {method: "POST", target: "/v1.41/build?cgroupparent=/", contentType: "application/x-tar", body: "x", wantStatus: 403, wantMsg: "cgroupparent"},
	"build unknown":      {method: "POST", target: "/v1.41/build?weird=1", contentType: "application/x-tar", body: "x", wantStatus: 403, wantMsg: `"weird"`},
	"build prune":        {method: "POST", target: "/v1.41/build/prune", wantStatus: 403, wantMsg: "classic image build"},
	"image import":       {method: "POST", target: "/v1.41/images/create?fromSrc=http://10.0.0.1/x.tar", wantStatus: 403, wantMsg: "fromSrc"},
	"swarm init":         {method: "POST", target: "/v1.41/swarm/init", contentType: ct, body: `{}`, wantStatus: 403, wantMsg: "/swarm/init"},
	"services":           {method: "GET", target: "/v1.41/services", wantStatus: 403, wantMsg: "/services"},
	"plugins":            {method: "POST", target: "/v1.41/plugins/pull?remote=x", wantStatus: 403, wantMsg: "/plugins/pull"},
	"libpod api":         {method: "POST", target: "/v4.0.0/libpod/containers/create", contentType: ct, body: `{}`, wantStatus: 403, wantMsg: "the Podman API"},
	"libpod unversioned": {method: "GET", target: "/libpod/containers/json", wantStatus: 403, wantMsg: "the Podman API"},
	"system df":          {method: "GET", target: "/v1.41/system/df", wantStatus: 403, wantMsg: "/system/df"},
	"events":             {method: "GET", target: "/v1.41/events", wantStatus: 403, wantMsg: "/events"},
	"container prune":    {method: "POST", target: "/v1.41/containers/prune", wantStatus: 403, wantMsg: "prune"},
	"volume prune":       {method: "POST", target: "/v1.41/volumes/prune", wantStatus: 403, wantMsg: "prune"},
	"commit":             {method: "POST", target: "/v1.41/commit?container=own", contentType: ct, body: `{}`, wantStatus: 403, wantMsg: "/commit"},
	"old api":            {method: "GET", target: "/v1.12/containers/json", wantStatus: 403, wantMsg: "older than"},
	"lookup error":       {method: "POST", target: "/v1.41/containers/broken/start", wantStatus: -1},
	"container extra":    {method: "GET", target: "/v1.41/containers/own/json/x/y", wantStatus: 403, wantMsg: "not allowed"},
	"unknown container":  {method: "POST", target: "/v1.41/containers/own/checkpoints", wantStatus: 403, wantMsg: "not allowed"},
}

// rawRequest renders a case as the bytes a client sends.
func (tc filterCase) rawRequest(buildsDir string) []byte {
	body := strings.ReplaceAll(tc.body, "@B", buildsDir)
	var b bytes.Buffer
	fmt.Fprintf(&b, "%s %s HTTP/1.1\r\nHost: docker\r\n", tc.method, strings.ReplaceAll(tc.target, "@B", url.PathEscape(buildsDir)))
	if tc.contentType != "" {
		fmt.Fprintf(&b, "Content-Type: %s\r\n", tc.contentType)
	}
	switch {
	case tc.chunked:
		fmt.Fprintf(&b, "Transfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n", len(body), body)
	case body != "":
		fmt.Fprintf(&b, "Content-Length: %d\r\n\r\n%s", len(body), body)
	default:
		b.WriteString("\r\n")
	}
	return b.Bytes()
}

func readRequest(t testing.TB, raw []byte) *http.Request {
	t.Helper()
	req, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(raw)))
	if err != nil {
		t.Fatalf("read request: %v", err)
	}
	return req
}

func TestFilter(t *testing.T) {
	dir := testBuildsDir(t)
	f := newTestFilter(t, dir)
	for name, tc := range filterCases {
		t.Run(name, func(t *testing.T) {
			req := readRequest(t, tc.rawRequest(dir))
			err := f.Check(context.Background(), req)
			var refusal *Refusal
			switch {
			case tc.wantStatus == 0 && err != nil:
				t.Fatalf("got %v, want the request forwarded", err)
			case tc.wantStatus == 0:
				return
			case tc.wantStatus == -1:
				if err == nil || errors.As(err, &refusal) {
					t.Fatalf("got %v, want a lookup error", err)
				}
			case !errors.As(err, &refusal):
				t.Fatalf("got %v, want a refusal with status %d", err, tc.wantStatus)
			case refusal.Status != tc.wantStatus:
				t.Errorf("got status %d (%s), want %d", refusal.Status, refusal.Message, tc.wantStatus)
			case !strings.Contains(refusal.Message, tc.wantMsg):
				t.Errorf("got message %q, want it to contain %q", refusal.Message, tc.wantMsg)
			case !strings.HasPrefix(refusal.Message, "berth guarded Docker socket: "):
				t.Errorf("got message %q, want it to name berth's guarded socket", refusal.Message)
			}
		})
	}
}

// forwarded runs a case that must pass and returns the rewritten request
// and its body.
func forwarded(t *testing.T, name string) (*http.Request, []byte, string) {
	t.Helper()
	dir := testBuildsDir(t)
	f := newTestFilter(t, dir)
	req := readRequest(t, filterCases[name].rawRequest(dir))
	release, err := f.CheckHold(context.Background(), req)
	if err != nil {
		t.Fatalf("got %v, want the request forwarded", err)
	}
	defer release() // a spooled body is open until then
	var body []byte
	if req.Body != nil {
		body, _ = io.ReadAll(req.Body)
	}
	if req.ContentLength >= 0 && int64(len(body)) != req.ContentLength {
		t.Errorf("got a %d byte body, want Content-Length %d", len(body), req.ContentLength)
	}
	return req, body, dir
}

func TestFilterLabelsCreatedObjects(t *testing.T) {
	for _, name := range []string{"berth labels are stripped", "network create", "volume create"} {
		t.Run(name, func(t *testing.T) {
			_, body, _ := forwarded(t, name)
			var doc struct{ Labels map[string]string }
			if err := json.Unmarshal(body, &doc); err != nil {
				t.Fatal(err)
			}
			for k, v := range jobLabels {
				if doc.Labels[k] != v {
					t.Errorf("label %s: got %q, want %q", k, doc.Labels[k], v)
				}
			}
			for k := range doc.Labels {
				if strings.HasPrefix(strings.ToLower(k), "berth.") && jobLabels[k] == "" {
					t.Errorf("got forged label %q, want it stripped", k)
				}
			}
			if name == "berth labels are stripped" && doc.Labels["keep"] != "1" {
				t.Errorf("got labels %v, want the job's own label kept", doc.Labels)
			}
		})
	}
}

func TestFilterLabelsBuiltImages(t *testing.T) {
	req, _, _ := forwarded(t, "build classic")
	var labels map[string]string
	if err := json.Unmarshal([]byte(req.URL.Query().Get("labels")), &labels); err != nil {
		t.Fatal(err)
	}
	if labels[backends.LabelJobID] != "7" || labels[backends.LabelRole] != RoleJobCreated {
		t.Errorf("got build labels %v, want the job's", labels)
	}
	if got := req.URL.Query()["t"]; len(got) != 2 {
		t.Errorf("got tags %v, want both", got)
	}
}

func TestFilterNarrowsLists(t *testing.T) {
	for _, name := range []string{"list containers", "network list", "volume list"} {
		t.Run(name, func(t *testing.T) {
			req, _, _ := forwarded(t, name)
			args, err := filters.FromJSON(req.URL.Query().Get("filters"))
			if err != nil {
				t.Fatal(err)
			}
			for _, want := range []string{"berth.runner=r1", "berth.job.id=7", "berth.role=job-created"} {
				if !args.ExactMatch("label", want) {
					t.Errorf("got filters %v, want label %s", args, want)
				}
			}
			if name == "volume list" && !args.Contains("dangling") {
				t.Errorf("got filters %v, want the job's own filter kept", args)
			}
		})
	}
}

func TestFilterResolvesReferences(t *testing.T) {
	req, _, _ := forwarded(t, "start own")
	if want := "/v1.41/containers/" + fakeContainers["own"].ID + "/start"; req.URL.Path != want {
		t.Errorf("got path %q, want %q", req.URL.Path, want)
	}
	req, body, _ := forwarded(t, "network connect")
	if !strings.Contains(string(body), fakeContainers["own"].ID) {
		t.Errorf("got connect body %s, want the full container id", body)
	}
	_ = req
	_, body, dir := forwarded(t, "create bind inside symlink")
	var cr container.CreateRequest
	if err := json.Unmarshal(body, &cr); err != nil {
		t.Fatal(err)
	}
	resolved, _ := filepath.EvalSymlinks(filepath.Join(dir, "project", "data"))
	if want := resolved + ":/d"; len(cr.HostConfig.Binds) != 1 || cr.HostConfig.Binds[0] != want {
		t.Errorf("got binds %v, want [%s]", cr.HostConfig.Binds, want)
	}
}

func TestNewFilterNeedsTrustedLabels(t *testing.T) {
	tests := map[string]struct {
		cfg     Config
		wantErr string
	}{
		"no job id":      {cfg: Config{BuildsDir: "/b/r/1", Labels: map[string]string{backends.LabelRunner: "r", backends.LabelRole: RoleJobCreated}}, wantErr: backends.LabelJobID},
		"wrong role":     {cfg: Config{BuildsDir: "/b/r/1", Labels: map[string]string{backends.LabelRunner: "r", backends.LabelJobID: "1", backends.LabelRole: "build"}}, wantErr: RoleJobCreated},
		"root builds":    {cfg: Config{BuildsDir: "/", Labels: jobLabels}, wantErr: "absolute path below /"},
		"relative build": {cfg: Config{BuildsDir: "b", Labels: jobLabels}, wantErr: "absolute path"},
		"valid":          {cfg: Config{BuildsDir: "/b/r/1", Labels: jobLabels}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			_, err := NewFilter(tc.cfg, fakeUpstream{})
			switch {
			case tc.wantErr == "" && err != nil:
				t.Errorf("got %v, want no error", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Errorf("got %v, want an error containing %q", err, tc.wantErr)
			}
		})
	}
}

func FuzzFilter(f *testing.F) {
	dir := testBuildsDir(f)
	plain := newTestFilter(f, dir)
	// The same requests against a filter with ceilings, the job's network
	// and an image spool: every check runs under the fuzzer.
	nofile, _ := units.ParseUlimit("nofile=1024:2048")
	bounded, err := NewFilter(Config{BuildsDir: dir, Labels: jobLabels, Network: "jobnet", SpoolDir: f.TempDir(),
		LocalRegistries: []string{"127.0.0.1:5000"},
		Ceilings:        Ceilings{Memory: 512 << 20, MemorySwap: 1 << 30, NanoCPUs: 1e9, PidsLimit: 100, ShmSize: 64 << 20, Ulimits: []*units.Ulimit{nofile}},
	}, fakeUpstream{})
	if err != nil {
		f.Fatal(err)
	}
	// And as on rootless Podman: starts checked where mounted, ports
	// refused, given names recorded.
	podmanLike, err := NewFilter(Config{BuildsDir: dir, Labels: jobLabels, Network: "jobnet", SpoolDir: f.TempDir(),
		VerifyMounts: true, RootlessPorts: true, NamesFile: filepath.Join(f.TempDir(), givenNamesFile(EnginePodman))}, fakeUpstream{})
	if err != nil {
		f.Fatal(err)
	}
	for _, tc := range filterCases {
		if len(tc.body) < 4096 {
			f.Add(tc.rawRequest(dir))
		}
	}
	for _, body := range []string{
		`{"Image":"busybox:latest","ExposedPorts":{"9000/tcp":{}},"HostConfig":{"PublishAllPorts":true,"PortBindings":{"9000/tcp":[{"HostIp":"0.0.0.0","HostPort":"9999"}]}}}`,
		`{"Image":"busybox:latest","HostConfig":{"PortBindings":{"80/tcp":[{"HostIp":"192.0.2.5"},{"HostIp":"127.0.0.1"}]}}}`,
	} {
		f.Add([]byte(fmt.Sprintf("POST /v1.41/containers/create HTTP/1.1\r\nHost: docker\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", len(body), body)))
	}
	f.Add([]byte("POST /v1.41/containers/bound/start HTTP/1.1\r\nHost: docker\r\n\r\n"))
	f.Fuzz(func(t *testing.T, raw []byte) {
		for _, filter := range []*Filter{plain, bounded, podmanLike} {
			fuzzOne(t, filter, raw)
		}
	})
}

func fuzzOne(t *testing.T, filter *Filter, raw []byte) {
	{
		req, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(raw)))
		if err != nil {
			return
		}
		err = filter.Check(context.Background(), req)
		if err != nil {
			var refusal *Refusal
			if errors.As(err, &refusal) && (refusal.Status < 400 || refusal.Message == "") {
				t.Fatalf("got refusal %+v, want a 4xx status and a message", refusal)
			}
			return
		}
		// A forwarded request is in the shape the filter promises.
		if req.URL.RawPath != "" || !strings.HasPrefix(req.URL.Path, "/") {
			t.Fatalf("forwarded path %q", req.URL.Path)
		}
		if req.Body != nil {
			if _, err := io.Copy(io.Discard, io.LimitReader(req.Body, 1<<22)); err != nil {
				return
			}
		}
	}
}

// TestFilterDefaultNetworkIsTheJobs: with the job's network configured, a
// container the job starts on the default network, or connects to it,
// joins the job's network instead, where other jobs cannot reach it.
func TestFilterDefaultNetworkIsTheJobs(t *testing.T) {
	dir := testBuildsDir(t)
	f, err := NewFilter(Config{BuildsDir: dir, Labels: jobLabels, Network: "jobnet"}, fakeUpstream{})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ name, body string }{
		{"default mode", `{"Image":"busybox","HostConfig":{"NetworkMode":"default"}}`},
		{"no mode", `{"Image":"busybox","HostConfig":{}}`},
		{"bridge with endpoint", `{"Image":"busybox","HostConfig":{"NetworkMode":"bridge"},"NetworkingConfig":{"EndpointsConfig":{"bridge":{}}}}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := readRequest(t, filterCase{method: "POST", target: "/v1.41/containers/create", contentType: "application/json", body: tc.body}.rawRequest(dir))
			if err := f.Check(context.Background(), req); err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(req.Body)
			var cr container.CreateRequest
			if err := json.Unmarshal(body, &cr); err != nil {
				t.Fatal(err)
			}
			if cr.HostConfig.NetworkMode != "n1" {
				t.Errorf("got NetworkMode %q, want the job's network", cr.HostConfig.NetworkMode)
			}
			if cr.NetworkingConfig != nil {
				for name := range cr.NetworkingConfig.EndpointsConfig {
					if name != "n1" {
						t.Errorf("got endpoint on %q, want only the job's network", name)
					}
				}
			}
		})
	}
	req := readRequest(t, filterCase{method: "POST", target: "/v1.41/networks/bridge/connect", contentType: "application/json", body: `{"Container":"own"}`}.rawRequest(dir))
	if err := f.Check(context.Background(), req); err != nil {
		t.Fatal(err)
	}
	if req.URL.Path != "/v1.41/networks/n1/connect" {
		t.Errorf("connect to the default network: got path %q, want the job's network", req.URL.Path)
	}
	req = readRequest(t, filterCase{method: "POST", target: "/v1.41/containers/create", contentType: "application/json", body: `{"Image":"busybox","HostConfig":{"NetworkMode":"none"}}`}.rawRequest(dir))
	if err := f.Check(context.Background(), req); err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(req.Body)
	if !strings.Contains(string(body), `"NetworkMode":"none"`) {
		t.Errorf("got %s, want no network kept", body)
	}
}
