//go:build remote

package integration

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
)

// TestGuardBuildCannotFetchFromTheHostsOwnNetwork: a classic build makes
// the engine fetch on the host's own network (ADD of a URL, the FROM image),
// so the guard reads the Dockerfile first: a loopback ADD, also behind an
// ARG or in heredoc lines that an engine without heredocs runs as
// instructions, and a FROM from a loopback registry are refused, and a
// loopback service the engine could reach sees no request. An ordinary
// build still works.
func TestGuardBuildCannotFetchFromTheHostsOwnNetwork(t *testing.T) {
	var hits atomic.Int64
	secret := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		fmt.Fprintln(w, "host-only secret")
	}))
	t.Cleanup(secret.Close)
	u, err := url.Parse(secret.URL)
	if err != nil {
		t.Fatal(err)
	}
	port := u.Port()
	// After the parallel subtests: no engine fetched from it.
	t.Cleanup(func() {
		if n := hits.Load(); n != 0 {
			t.Errorf("the loopback service got %d requests, want none", n)
		}
	})
	forGuardedBackends(t, options{}, func(t *testing.T, backend string, e *env) {
		job := e.job(331)
		ok := fmt.Sprintf("berth-it-build-ok-%d", job.ID)
		removeShortNameAtEnd(t, backend, ok)
		dockerfile := func(dir, lines string) string {
			return `mkdir -p ` + dir + ` && printf '` + lines + `' > ` + dir + `/Dockerfile`
		}
		job.Script = []string{
			resultFunc,
			`cd "$CI_PROJECT_DIR"`,
			dockerfile("add", `FROM `+busyboxImage+`\nADD http://127.0.0.1:`+port+`/secret /secret\n`),
			`step=add-loopback DOCKER_BUILDKIT=0 res docker build -q add`,
			dockerfile("from", `FROM 127.0.0.2:5000/x\nRUN true\n`),
			`step=from-loopback DOCKER_BUILDKIT=0 res docker build -q from`,
			dockerfile("arg", `FROM `+busyboxImage+`\nARG H=127.0.0.1\nADD http://${H}:`+port+`/secret /secret\n`),
			`step=arg-add DOCKER_BUILDKIT=0 res docker build -q arg`,
			dockerfile("buildarg", `FROM scratch\nARG H=example.com\nADD http://$H:`+port+`/secret /secret\n`),
			`step=buildarg-add DOCKER_BUILDKIT=0 res docker build -q --build-arg H=127.0.0.1 buildarg`,
			dockerfile("heredoc", `FROM `+busyboxImage+`\nRUN <<CMD\nADD http://127.0.0.1:`+port+`/secret /secret\nCMD\n`),
			`step=heredoc-add DOCKER_BUILDKIT=0 res docker build -q heredoc`,
			dockerfile("ok", `FROM `+busyboxImage+`\nCOPY Dockerfile /built-from\nCMD ["true"]\n`),
			`step=build-ok DOCKER_BUILDKIT=0 res docker build -q -t ` + ok + ` ok`,
			dockerfile("run", `FROM `+busyboxImage+`\nRUN true\n`),
			`step=build-run DOCKER_BUILDKIT=0 res docker build -q run`,
		}
		res := e.run(job)
		requireSuccess(t, res)
		out, _ := res.Stage("build_script")
		wants := []string{
			"RESULT add-loopback refused", "RESULT from-loopback refused", "RESULT arg-add refused",
			"RESULT buildarg-add refused", "RESULT heredoc-add refused", "RESULT build-ok allowed",
			`registry "127.0.0.2:5000" is at a loopback or link-local address`,
			"which the guard cannot know",
		}
		if backend == "podman" {
			// Podman 4.3 runs RUN steps in the host's network.
			wants = append(wants, "RESULT build-run refused", "RUN in a build is not available on this Podman")
		} else {
			wants = append(wants, "RESULT build-run allowed", "engine would fetch the URL on the host's own network; download it in the job instead")
		}
		for _, want := range wants {
			if !strings.Contains(out.Output, want) {
				t.Errorf("build_script lacks %q:\n%s", want, out.Output)
			}
		}
	})
}
