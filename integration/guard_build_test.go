//go:build remote

package integration

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/berthci/berth/backends"
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

// TestGuardBuildCacheIgnoresForgedLabels replays a build-cache poisoning on
// the socket: job A loads an image it built, edited to carry another
// project's berth.project.id and a history that names that project's
// build step, and keeps running. Job B of that project then builds the
// step: its build does not take A's image from the cache (labels say
// nothing about who built an image; only B's own builds are cache sources),
// and a second build of B takes the first one's steps from the cache.
func TestGuardBuildCacheIgnoresForgedLabels(t *testing.T) {
	e := newEnv(t, options{})
	const victimProject = 296
	a := e.job(295)
	a.Script = []string{
		`mkdir -p evil && printf 'FROM ` + busyboxImage + `\nRUN touch /EVIL-PLANTED\n' > evil/Dockerfile`,
		`DOCKER_BUILDKIT=0 docker build -q -t evil-src-$CI_JOB_ID evil`,
		`mkdir -p /tmp/p/x && docker save evil-src-$CI_JOB_ID -o /tmp/p/e.tar && tar -xf /tmp/p/e.tar -C /tmp/p/x && cd /tmp/p/x`,
		`cfg=$(sed -n 's/.*"Config":"\([^"]*\)".*/\1/p' manifest.json)`,
		`sed -i -e 's/"berth.backend":"[a-z]*",//g; s/"berth.job.id":"[0-9]*",//g' -e 's/"berth.project.id":"[0-9]*"/"berth.project.id":"` + fmt.Sprint(victimProject) + `"/g' -e 's#touch /EVIL-PLANTED#touch /genuine-build-step#g' "$cfg"`,
		`new=$(sha256sum "$cfg" | cut -d' ' -f1).json && mv "$cfg" "$new"`,
		`sed -i "s/$cfg/$new/; s#\"RepoTags\":\[[^]]*\]#\"RepoTags\":[\"forged-$CI_JOB_ID:1\"]#" manifest.json && rm -f repositories`,
		`tar -cf ../forged.tar * && docker load -i ../forged.tar`,
		`echo "FORGED $(cut -d. -f1 <<<"$new")"`,
	}
	sa := preparedSession(t, e, a)
	outA := mustRunStage(t, sa, "build_script")
	m := regexp.MustCompile(`FORGED ([0-9a-f]{64})`).FindStringSubmatch(outA)
	if m == nil {
		t.Fatalf("job A did not load the forged image:\n%s", outA)
	}
	forged := m[1]
	info, err := dockerCli.ImageInspect(context.Background(), forged)
	if err != nil || info.Config == nil || info.Config.Labels[backends.LabelProjectID] != fmt.Sprint(victimProject) {
		t.Fatalf("the forged image %s is not labelled as project %d: %v", forged, victimProject, err)
	}

	b := e.job(victimProject)
	b.Script = []string{
		`mkdir -p app && printf 'FROM ` + busyboxImage + `\nRUN touch /genuine-build-step\n' > app/Dockerfile`,
		`DOCKER_BUILDKIT=0 docker build -t app-$CI_JOB_ID:1 app 2>&1 | sed 's/^/FIRST /'`,
		`docker run --rm app-$CI_JOB_ID:1 ls / | sed 's/^/FILES /'`,
		`DOCKER_BUILDKIT=0 docker build -t app-$CI_JOB_ID:2 app 2>&1 | sed 's/^/SECOND /'`,
	}
	res := e.run(b)
	requireSuccess(t, res)
	out, _ := res.Stage("build_script")
	if strings.Contains(out.Output, "FIRST  ---> Using cache") || strings.Contains(out.Output, "EVIL-PLANTED") {
		t.Errorf("job B's build took job A's forged image from the cache:\n%s", out.Output)
	}
	if !strings.Contains(out.Output, "FILES genuine-build-step") {
		t.Errorf("job B's image lacks its own step's file:\n%s", out.Output)
	}
	if !strings.Contains(out.Output, "SECOND  ---> Using cache") {
		t.Errorf("job B's second build did not take the first one's steps from the cache:\n%s", out.Output)
	}
	if r := sa.Cleanup(context.Background()); r.ExitCode != 0 {
		t.Fatalf("job A's cleanup: %d\n%s", r.ExitCode, r.Output)
	}
	if _, err := dockerCli.ImageInspect(context.Background(), forged); err == nil {
		t.Errorf("job A's forged image %s outlived its cleanup", forged)
	}
	e.assertNoResources()
}
