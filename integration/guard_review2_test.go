package integration

import (
	"strings"
	"testing"
)

// TestGuardSecondAttackReview replays what the second outside review got
// through, on socket and podman: options smuggled into Podman's mount
// strings, a bind in Config.Volumes, a log file on the host, a dependency
// Podman would start unchecked, RUN --mount cache ids outside the build,
// an image search that dials the host's loopback. Each is refused with a
// message that says why; docker cp into a container, which the review
// found broken, works.
func TestGuardSecondAttackReview(t *testing.T) {
	forGuardedBackends(t, options{}, func(t *testing.T, backend string, e *env) {
		job := e.job(361)
		api := `curl -s -o /tmp/body -w '%{http_code}' --unix-socket /var/run/docker.sock -H 'Content-Type: application/json'`
		raw := func(step, path, body string) string {
			return `code=$(` + api + ` -X POST -d '` + body + `' http://d/v1.41` + path + `); echo "RESULT ` + step + ` $code $(cat /tmp/body)"`
		}
		job.Script = []string{
			resultFunc,
			`mkdir -p "$CI_PROJECT_DIR/a"`,
			raw("comma-consistency", "/containers/create", `{"Image":"`+busyboxImage+`","HostConfig":{"Mounts":[{"Type":"bind","Source":"'"$CI_PROJECT_DIR"'/a","Target":"/d","Consistency":"x,src=/run"}]}}`),
			raw("comma-target", "/containers/create", `{"Image":"`+busyboxImage+`","HostConfig":{"Mounts":[{"Type":"bind","Source":"'"$CI_PROJECT_DIR"'/a","Target":"/d,src=/run"}]}}`),
			raw("volumes-bind", "/containers/create", `{"Image":"`+busyboxImage+`","Volumes":{"/run:/d":{}}}`),
			raw("log-path", "/containers/create", `{"Image":"`+busyboxImage+`","HostConfig":{"LogConfig":{"Type":"json-file","Config":{"path":"/tmp/berth-it-log"}}}}`),
			`docker create --name "dep-$CI_JOB_ID" ` + busyboxImage + ` sleep 30 >/dev/null`,
			`step=container-mode res docker create --network "container:dep-$CI_JOB_ID" ` + busyboxImage + ` true`,
			`printf 'FROM ` + busyboxImage + `\nRUN --mount=type=cache,id=../../../../run,target=/p true\n' > Dockerfile`,
			`step=run-mount DOCKER_BUILDKIT=0 res docker build -q .`,
			`code=$(curl -s -o /tmp/body -w '%{http_code}' --unix-socket /var/run/docker.sock 'http://d/v1.41/images/search?term=127.0.0.1:5001/x'); echo "RESULT search $code $(cat /tmp/body)"`,
			`echo copied > /tmp/cp.txt; docker create --name "cp-$CI_JOB_ID" ` + busyboxImage + ` true >/dev/null`,
			`step=cp res docker cp /tmp/cp.txt "cp-$CI_JOB_ID":/cp.txt`,
		}
		res := e.run(job)
		requireSuccess(t, res)
		out, _ := res.Stage("build_script")
		wants := []string{
			"RESULT comma-consistency 403", "RESULT comma-target 403", "may not hold a comma, an equals sign or a colon",
			"RESULT volumes-bind 403", "give an absolute path in the container, with no colon",
			"RESULT log-path 403", `log option \"path\" is not allowed`,
			"RESULT run-mount refused", "RESULT search 403", "is at a loopback or link-local address",
			"RESULT cp allowed",
		}
		if backend == "podman" {
			wants = append(wants, "RESULT container-mode refused", "Podman would start")
		} else {
			wants = append(wants, "RESULT container-mode allowed")
		}
		for _, w := range wants {
			if !strings.Contains(out.Output, w) {
				t.Errorf("build_script lacks %q:\n%s", w, out.Output)
			}
		}
		e.assertNoResources()
	})
}
