package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestGuardFourthAttackReview replays, through the real guard, what the
// fourth outside review got through:
//   - query keys Podman reads without regard to case (NAMES, NAME, TERM)
//     or that only it has (a push's destination), which reached it
//     unchecked: every request's keys must now be its endpoint's, exactly;
//   - a mount source with a colon, which Podman's inspect reports so that
//     the start check read another source and target;
//   - tmpfs options that size a tmpfs past the ceiling (nr_blocks,
//     nr_inodes), and a container's changes, whose errors named host paths;
//   - docker cp of a running container with a volume, whose mount the
//     engine makes again at a destination the container can swap for a
//     symlink meanwhile (a stopped one may be copied from);
//   - on Podman, a Dockerfile named *.in, which Buildah runs through the C
//     preprocessor, and a mount beneath a bind's target, which the runtime
//     makes through the bound directory while the job can change it.
func TestGuardFourthAttackReview(t *testing.T) {
	forGuardedBackends(t, options{}, func(t *testing.T, backend string, e *env) {
		job := e.job(297)
		api := `curl -s -o /tmp/api.out -w '%{http_code}' --unix-socket /var/run/docker.sock`
		job.Script = []string{
			resultFunc,
			`docker tag ` + busyboxImage + ` mine-$CI_JOB_ID:1`,
			`echo "NAMES $(` + api + ` 'http://d/v1.41/images/get?NAMES=` + busyboxImage + `')"; cat /tmp/api.out; echo`,
			`docker create --name ren-$CI_JOB_ID ` + busyboxImage + ` true >/dev/null`,
			`echo "RENAME $(` + api + ` -X POST "http://d/v1.41/containers/ren-$CI_JOB_ID/rename?NAME=berth-x-1-build")"; cat /tmp/api.out; echo`,
			`echo "DESTINATION $(` + api + ` -X POST "http://d/v1.41/images/mine-$CI_JOB_ID/push?tag=1&destination=docker-archive:/tmp/x.tar")"; cat /tmp/api.out; echo`,
			`mkdir -p "$CI_PROJECT_DIR/a:b" "$CI_PROJECT_DIR/a"`,
			`step=colon-source res docker create --mount "type=bind,src=$CI_PROJECT_DIR/a:b,dst=/t" ` + busyboxImage + ` true`,
			`step=tmpfs-blocks res docker run --rm --tmpfs /t:size=1m,nr_blocks=1000000 ` + busyboxImage + ` true`,
			`step=tmpfs-sized res docker run --rm --tmpfs /t:rw,size=1m,mode=1777 ` + busyboxImage + ` true`,
			`step=changes res docker diff ren-$CI_JOB_ID`,
			`docker volume create cpvol-$CI_JOB_ID >/dev/null`,
			`docker run -d --name cpv-$CI_JOB_ID -v cpvol-$CI_JOB_ID:/v ` + busyboxImage + ` sh -c 'echo in-volume > /v/f; echo in-root > /r; sleep 300' >/dev/null`,
			`sleep 1`,
			`step=cp-running res docker cp cpv-$CI_JOB_ID:/r /tmp/r1`,
			`docker stop -t 0 cpv-$CI_JOB_ID >/dev/null`,
			`step=cp-stopped res docker cp cpv-$CI_JOB_ID:/v/f /tmp/r2`,
			`echo "COPIED $(cat /tmp/r2)"`,
			`docker rm cpv-$CI_JOB_ID >/dev/null`,
			// podman's own refusals; on Docker both run
			`mkdir -p pp && printf 'FROM ` + busyboxImage + `\n#include "x"\n' > pp/Dockerfile.in`,
			`step=dockerfile-in DOCKER_BUILDKIT=0 res docker build -f pp/Dockerfile.in pp`,
			`mkdir -p "$CI_PROJECT_DIR/d"`,
			`step=tmpfs-beneath-bind res docker run --rm -v "$CI_PROJECT_DIR/d:/t" --tmpfs /t/x ` + busyboxImage + ` true`,
			`step=tmpfs-beside-bind res docker run --rm -v "$CI_PROJECT_DIR/d:/t" --tmpfs /tx ` + busyboxImage + ` true`,
			// the fifth review: options in a tmpfs's path (Podman reads
			// them from there), an escape directive the engines' parsers
			// place differently, a volume removed between the check of a
			// create that mounts it and the create
			`echo "TMPFS-PATH $(` + api + ` -X POST -H 'Content-Type: application/json' -d '{"Image":"` + busyboxImage + `","HostConfig":{"Tmpfs":{"/big:size=4g,exec":"size=1m"}}}' http://d/v1.41/containers/create)"; cat /tmp/api.out; echo`,
			`mkdir -p esc && touch esc/a && printf '# syntax=docker/dockerfile:1
# escape=%s
FROM ` + busyboxImage + `
COPY a %s
RUN true
' '` + "`" + `' '` + "`" + `' > esc/Dockerfile`,
			`step=escape DOCKER_BUILDKIT=0 res docker build esc`,
			`v=racev-$CI_JOB_ID; docker volume create $v >/dev/null`,
			`( end=$((SECONDS+5)); while [ $SECONDS -lt $end ]; do docker volume rm $v >/dev/null 2>&1 || true; docker volume create $v >/dev/null 2>&1 || true; done ) & rp=$!`,
			`end=$((SECONDS+5)); n=0; while [ $SECONDS -lt $end ]; do docker create -v $v:/x ` + busyboxImage + ` true >/dev/null 2>&1 || true; n=$((n+1)); done; wait $rp || true; echo "CREATES $n"`,
			// docker top's ps options (the engine runs ps on the host),
			// a copy from a stopped container whose volume a running one
			// mounts too, a base image with ONBUILD triggers
			`docker run -d --name topc-$CI_JOB_ID ` + busyboxImage + ` sleep 300 >/dev/null`,
			`echo "TOP-ARGS $(` + api + ` "http://d/v1.41/containers/topc-$CI_JOB_ID/top?ps_args=-eovsz%3DPID,args%20e")"; cat /tmp/api.out; echo`,
			`step=top-plain res docker top topc-$CI_JOB_ID`,
			`docker rm -f topc-$CI_JOB_ID >/dev/null`,
			`docker volume create shv-$CI_JOB_ID >/dev/null`,
			`docker create --name shstopped-$CI_JOB_ID -v shv-$CI_JOB_ID:/etc ` + busyboxImage + ` true >/dev/null`,
			`docker run -d --name shrunning-$CI_JOB_ID -v shv-$CI_JOB_ID:/v ` + busyboxImage + ` sleep 300 >/dev/null`,
			`step=cp-shared-volume res docker cp shstopped-$CI_JOB_ID:/etc/passwd /tmp/p1`,
			`docker rm -f shrunning-$CI_JOB_ID >/dev/null`,
			`step=cp-volume-at-rest res docker cp shstopped-$CI_JOB_ID:/bin/sh /tmp/p2`,
			`docker rm -f shstopped-$CI_JOB_ID >/dev/null`,
			`mkdir -p ob obuse && printf 'FROM ` + busyboxImage + `
ONBUILD LABEL onbuild=yes
' > ob/Dockerfile && printf 'FROM onbase-%s
' $CI_JOB_ID > obuse/Dockerfile`,
			`DOCKER_BUILDKIT=0 docker build -q -t onbase-$CI_JOB_ID ob >/dev/null`,
			`step=onbuild-base DOCKER_BUILDKIT=0 res docker build obuse`,
			// the containers go, and with them any hold on the volume;
			// berth's cleanup removes the volume if it is the job's
			`docker rm -f $(docker ps -aq) >/dev/null 2>&1; true`,
		}
		res := e.run(job)
		requireSuccess(t, res)
		out, _ := res.Stage("build_script")
		want := []string{
			"NAMES 403", `query parameter \"NAMES\" is not allowed`,
			"RENAME 403", `query parameter \"NAME\" is not allowed`,
			"DESTINATION 403", `query parameter \"destination\" is not allowed`,
			"RESULT colon-source refused", "may not hold a comma, an equals sign or a colon",
			"RESULT tmpfs-blocks refused", `option "nr_blocks=1000000" is not allowed`,
			"RESULT tmpfs-sized allowed",
			"RESULT changes refused",
			"RESULT cp-running refused", "docker cp is not available for a running container with volumes",
			"RESULT cp-stopped allowed", "COPIED in-volume",
			"RESULT tmpfs-beside-bind allowed",
			"TMPFS-PATH 403", "tmpfs path",
			"RESULT escape refused", "sets the escape character",
			"TOP-ARGS 403", "docker top options", "RESULT top-plain allowed",
			"RESULT cp-shared-volume refused", "which runs, mounts the volume",
			"RESULT cp-volume-at-rest allowed",
			"RESULT onbuild-base refused", "has ONBUILD triggers",
		}
		if backend == "podman" {
			want = append(want, "RESULT dockerfile-in refused", "C preprocessor",
				"RESULT tmpfs-beneath-bind refused", "a mount at /t/x beneath the bind at /t is not allowed")
		} else {
			want = append(want, "RESULT dockerfile-in allowed", "RESULT tmpfs-beneath-bind allowed")
		}
		for _, w := range want {
			if !strings.Contains(out.Output, w) {
				t.Errorf("build_script lacks %q:\n%s", w, out.Output)
			}
		}
		if !strings.Contains(out.Output, "CREATES ") {
			t.Errorf("the volume race did not run:\n%s", out.Output)
		}
		if engineHasVolume(t, backend, fmt.Sprintf("racev-%d", job.ID)) {
			t.Errorf("a volume the job removed while creating a container that mounts it outlived the job, unlabelled")
		}
		if _, err := os.Stat(filepath.Join("/tmp", "x.tar")); err == nil && backend == "podman" {
			t.Errorf("the push destination wrote /tmp/x.tar")
		}
		e.assertNoResources()
	})
}

// TestGuardVolumeCopyUpWhileTheJobIsPaused replays the volume copy-up
// attack on the socket: Docker copies an image's content into an empty
// named volume at create, in the host's view, and a container of the job
// that mounts the volume swaps a directory the copy has yet to reach for a
// symlink to a host directory. The guard pauses the job's containers for
// a create with a named volume, so the copy only ever writes into the
// volume.
func TestGuardVolumeCopyUpWhileTheJobIsPaused(t *testing.T) {
	e := newEnv(t, options{})
	hostDir, _ := hostSecretDir(t)
	job := e.job(298)
	job.Script = []string{
		`mkdir -p cu && printf 'FROM ` + busyboxImage + `\nRUN mkdir -p /data/a /data/d && cd /data/a && i=0; while [ $i -lt 20000 ]; do echo x > f$i; i=$((i+1)); done; echo copied-up > /data/d/COPIED-UP\n' > cu/Dockerfile`,
		`DOCKER_BUILDKIT=0 docker build -q -t cu-$CI_JOB_ID cu`,
		`docker volume create cuvol-$CI_JOB_ID >/dev/null`,
		// the planter: once the copy has begun, d becomes a symlink to
		// the host directory
		`docker run -d --name planter-$CI_JOB_ID -v cuvol-$CI_JOB_ID:/v ` + busyboxImage + ` sh -c 'until [ -e /v/a ]; do :; done; rm -rf /v/d; ln -s ` + hostDir + ` /v/d; echo PLANTED; sleep 300' >/dev/null`,
		`sleep 1`,
		`docker create --name victim-$CI_JOB_ID -v cuvol-$CI_JOB_ID:/data cu-$CI_JOB_ID true >/dev/null`,
		`sleep 2; docker logs planter-$CI_JOB_ID`,
		`docker rm -f planter-$CI_JOB_ID victim-$CI_JOB_ID >/dev/null`,
	}
	res := e.run(job)
	requireSuccess(t, res)
	out, _ := res.Stage("build_script")
	if !strings.Contains(out.Output, "PLANTED") {
		t.Errorf("the planter did not plant its symlink, so this proves nothing:\n%s", out.Output)
	}
	if _, err := os.Stat(filepath.Join(hostDir, "COPIED-UP")); err == nil {
		t.Errorf("the copy-up wrote into the host directory %s:\n%s", hostDir, out.Output)
	}
	e.assertNoResources()
}
