//go:build remote

// Attacks on the guarded socket that are sequences of requests each
// allowed on its own, replayed end to end through the real guard.

package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containers/podman/v5/pkg/bindings/containers"
	"github.com/containers/podman/v5/pkg/bindings/images"
	podnetwork "github.com/containers/podman/v5/pkg/bindings/network"
	"github.com/containers/podman/v5/pkg/bindings/volumes"
	entities "github.com/containers/podman/v5/pkg/domain/entities/types"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/api/types/volume"
	nettypes "go.podman.io/common/libnetwork/types"

	"github.com/berthci/berth/backends"
	"github.com/berthci/berth/backends/dockerproxy"
	"github.com/berthci/berth/integration/runner"
)

// hostSecretDir makes a host directory outside every builds dir, readable
// by the rootless podman user, with a marker file whose content no job may
// ever print.
func hostSecretDir(t *testing.T) (dir, secret string) {
	t.Helper()
	dir, err := os.MkdirTemp("", "berth-it-host-secret-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	secret = fmt.Sprintf("host-secret-%d", os.Getpid())
	if err := os.WriteFile(filepath.Join(dir, "marker"), []byte(secret+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir, secret
}

// TestGuardBindSourceSwappedAfterCreate replays the symlink swap: a bind
// source in the builds dir is accepted at create, then replaced by a
// symlink to a host directory, and the container started, restarted and
// started again. The engine resolves bind sources at every start, so the
// guard must refuse each start and the host directory must never be
// mounted.
func TestGuardBindSourceSwappedAfterCreate(t *testing.T) {
	forGuardedBackends(t, options{}, func(t *testing.T, backend string, e *env) {
		secretDir, secret := hostSecretDir(t)
		job := e.job(261)
		job.Script = []string{
			`swap="$CI_PROJECT_DIR/swap"; mkdir -p "$swap/real"; echo in-builds > "$swap/real/marker"`,
			// create while the source is a real directory, then swap
			`docker create --name "swap-$CI_JOB_ID" -v "$swap/real:/h" ` + busyboxImage + ` cat /h/marker`,
			`mv "$swap/real" "$swap/real.orig" && ln -s ` + secretDir + ` "$swap/real"`,
			`if docker start -a "swap-$CI_JOB_ID"; then echo RESULT start-allowed; else echo RESULT start-refused; fi`,
			// restart: start it once with the real directory back, swap, restart
			`rm "$swap/real" && mv "$swap/real.orig" "$swap/real"`,
			`docker start -a "swap-$CI_JOB_ID"`,
			`mv "$swap/real" "$swap/real.orig" && ln -s ` + secretDir + ` "$swap/real"`,
			`if docker restart "swap-$CI_JOB_ID"; then echo RESULT restart-allowed; else echo RESULT restart-refused; fi`,
			`docker logs "swap-$CI_JOB_ID"`,
			// a symlink above the bound directory, and a Mounts bind
			`rm "$swap/real" && mv "$swap/real.orig" "$swap/real"`,
			`docker create --name "swap2-$CI_JOB_ID" --mount "type=bind,source=$swap/real,target=/h" ` + busyboxImage + ` cat /h/marker`,
			`mv "$swap" "$swap.orig" && mkdir -p "$(dirname "$swap")" && ln -s ` + filepath.Dir(secretDir) + ` "$swap"`,
			`if docker start -a "swap2-$CI_JOB_ID"; then echo RESULT mount-allowed; else echo RESULT mount-refused; fi`,
			`rm "$swap" && mv "$swap.orig" "$swap"`,
			// the restart policy that would start it behind the guard's back
			`if docker run -d --restart always ` + busyboxImage + ` true; then echo RESULT policy-allowed; else echo RESULT policy-refused; fi`,
		}
		res := e.run(job)
		requireSuccess(t, res)
		out, _ := res.Stage("build_script")
		for _, want := range []string{"RESULT start-refused", "RESULT restart-refused", "RESULT mount-refused", "RESULT policy-refused",
			"berth guarded Docker socket: bind source", "is a symlink", "restart policy \"always\" is not allowed"} {
			if !strings.Contains(out.Output, want) {
				t.Errorf("build_script output lacks %q:\n%s", want, out.Output)
			}
		}
		if strings.Contains(out.Output, secret) {
			t.Errorf("a job container read the host directory %s:\n%s", secretDir, out.Output)
		}
		if got, err := os.ReadFile(filepath.Join(secretDir, "marker")); err != nil || string(got) != secret+"\n" {
			t.Errorf("the host marker changed: %q, %v", got, err)
		}
		e.assertNoResources()
	})
}

// TestGuardBindSourceSwapRace keeps swapping a bound directory and a
// symlink to a host directory for 10 seconds in the job container while
// the job starts and restarts a container that binds it. Each start is
// either refused or mounts the real directory: the host directory never.
// On Docker the guard pauses the job's other containers while it checks a
// start, so the swapping loop cannot run between the check and the
// engine's mount. Rootless Podman on these cgroup v1 hosts cannot pause:
// there the guard has Podman initialise the container, compares what was
// mounted with the checked directory, and stops it on a difference.
func TestGuardBindSourceSwapRace(t *testing.T) {
	forGuardedBackends(t, options{}, func(t *testing.T, backend string, e *env) {
		secretDir, secret := hostSecretDir(t)
		job := e.job(262)
		job.Script = []string{
			`swap="$CI_PROJECT_DIR/swap"; mkdir -p "$swap/real"; echo in-builds > "$swap/real/marker"`,
			`docker create --name "race-$CI_JOB_ID" -v "$swap/real:/h" ` + busyboxImage + ` cat /h/marker`,
			// the swapper: real directory and symlink, as fast as it can
			// (rm -rf removes the symlink, or a directory the engine made
			// where it found nothing)
			// (both run at least 10 s; the starter on until it made 6
			// attempts, for a loaded host, and the swapper until it stops)
			`rm -f /tmp/race.stop; ( n=0; while [ ! -e /tmp/race.stop ]; do mv -T "$swap/real" "$swap/d" 2>/dev/null; ln -sfn ` + secretDir + ` "$swap/real" 2>/dev/null; rm -rf "$swap/real"; mv -T "$swap/d" "$swap/real" 2>/dev/null || mkdir -p "$swap/real"; n=$((n+1)); done; echo "SWAPS $n" ) &`,
			`end=$((SECONDS+10)); hard=$((SECONDS+60)); starts=0; refused=0; while [ $SECONDS -lt $end ] || { [ $((starts+refused)) -lt 6 ] && [ $SECONDS -lt $hard ]; }; do if docker start -a "race-$CI_JOB_ID" >>/tmp/race.out 2>&1; then starts=$((starts+1)); else refused=$((refused+1)); fi; docker restart -t 0 "race-$CI_JOB_ID" >>/tmp/race.out 2>&1 || refused=$((refused+1)); done; touch /tmp/race.stop`,
			`wait; echo "STARTS $starts REFUSED $refused"; docker logs "race-$CI_JOB_ID" >>/tmp/race.out 2>&1; sort /tmp/race.out | uniq -c | sort -rn | head -20`,
		}
		res := e.run(job)
		requireSuccess(t, res)
		out, _ := res.Stage("build_script")
		t.Logf("race:\n%s", lastLines(out.Output, 25))
		if strings.Contains(out.Output, secret) {
			t.Errorf("a job container read the host directory %s during the race:\n%s", secretDir, out.Output)
		}
		// The race must have raced: many swaps, and starts both let through
		// (the real directory) and refused (the symlink), or it proves nothing.
		var swaps, starts, refused int
		for _, line := range strings.Split(out.Output, "\n") {
			line = strings.TrimSpace(line)
			if strings.HasPrefix(line, "SWAPS ") {
				fmt.Sscanf(line, "SWAPS %d", &swaps)
			}
			if strings.HasPrefix(line, "STARTS ") {
				fmt.Sscanf(line, "STARTS %d REFUSED %d", &starts, &refused)
			}
		}
		t.Logf("race: %d swaps, %d starts, %d refused", swaps, starts, refused)
		if swaps < 20 || starts+refused < 4 {
			t.Errorf("the race did not race: %d swaps, %d starts and %d refusals, want at least 20 swaps and 4 start attempts", swaps, starts, refused)
		}
		if got, err := os.ReadFile(filepath.Join(secretDir, "marker")); err != nil || string(got) != secret+"\n" {
			t.Errorf("the host marker changed: %q, %v", got, err)
		}
		e.assertNoResources()
	})
}

// containerImageAndHealth is the image id and the HEALTHCHECK test of a
// job's container of a role, as the engine of backend reports them.
func containerImageAndHealth(t *testing.T, backend, runnerName string, jobID int64, role string) (imageID string, health []string) {
	t.Helper()
	ctx := context.Background()
	if backend != "podman" {
		c := dockerJobContainers(t, runnerName, jobID, role)[0]
		info, err := dockerCli.ContainerInspect(ctx, c.ID)
		if err != nil {
			t.Fatal(err)
		}
		if info.Config.Healthcheck != nil {
			health = info.Config.Healthcheck.Test
		}
		return info.Image, health
	}
	conn := requirePodman(t)
	list, err := containers.List(conn, new(containers.ListOptions).WithAll(true).WithFilters(map[string][]string{"label": {
		fmt.Sprintf("%s=%d", backends.LabelJobID, jobID)}}))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range list {
		if c.Labels[backends.LabelRunner] != runnerName || c.Labels[backends.LabelRole] != role {
			continue
		}
		data, err := containers.Inspect(conn, c.ID, nil)
		if err != nil {
			t.Fatal(err)
		}
		if data.Config != nil && data.Config.Healthcheck != nil {
			health = data.Config.Healthcheck.Test
		}
		return data.Image, health
	}
	t.Fatalf("job %d has no %s container in podman", jobID, role)
	return "", nil
}

func engineImageID(t *testing.T, backend, ref string) string {
	t.Helper()
	if backend == "podman" {
		data, err := images.GetImage(requirePodman(t), ref, nil)
		if err != nil {
			t.Fatalf("inspect %s in podman: %v", ref, err)
		}
		return strings.TrimPrefix(data.ID, "sha256:")
	}
	info, err := dockerCli.ImageInspect(context.Background(), ref)
	if err != nil {
		t.Fatalf("inspect %s: %v", ref, err)
	}
	return strings.TrimPrefix(info.ID, "sha256:")
}

// TestGuardImageNamesCannotBeMoved replays the image hijack: a job tags,
// builds and loads an image over the name of berth's helper image (which
// the guard and helper containers of every later job run from), and tries
// to remove it. The guard refuses each, the helper name still points at
// the genuine image, and the next job, of another project, runs its guard
// and helper containers from the genuine image's id with its HEALTHCHECK
// off.
func TestGuardImageNamesCannotBeMoved(t *testing.T) {
	forGuardedBackends(t, options{}, func(t *testing.T, backend string, e *env) {
		genuine := engineImageID(t, backend, helperImage)
		a := e.job(271)
		own := fmt.Sprintf("berth-it-own-%d:1", a.ID)
		removeShortNameAtEnd(t, backend, own)
		a.Script = []string{
			resultFunc,
			`step=tag res docker tag ` + busyboxImage + ` ` + helperImage,
			`printf 'FROM ` + busyboxImage + `\nRUN echo evil > /evil\n' > Dockerfile`,
			`step=build DOCKER_BUILDKIT=0 res docker build -q -t ` + helperImage + ` .`,
			`step=rmi res docker rmi -f ` + helperImage,
			// a new name of its own, saved, and loaded again under the
			// helper's name
			`step=own-tag res docker tag ` + busyboxImage + ` ` + own,
			`docker save -o /tmp/own.tar ` + own + ` && mkdir -p /tmp/x && tar -C /tmp/x -xf /tmp/own.tar && rm -f /tmp/x/repositories`,
			`sed -i 's|"RepoTags":\[[^]]*\]|"RepoTags":["` + helperImage + `"]|' /tmp/x/manifest.json && grep -o '"RepoTags":[^]]*]' /tmp/x/manifest.json`,
			`tar -C /tmp/x -cf /tmp/evil.tar . && step=load res docker load -i /tmp/evil.tar`,
		}
		res := e.run(a)
		requireSuccess(t, res)
		out, _ := res.Stage("build_script")
		for _, want := range []string{"RESULT tag refused", "RESULT build refused", "RESULT rmi refused", "RESULT own-tag allowed", "RESULT load refused",
			`image name "` + helperImage + `" is taken`, "may remove only images its project built"} {
			if !strings.Contains(out.Output, want) {
				t.Errorf("job A's build_script lacks %q:\n%s", want, out.Output)
			}
		}
		if got := engineImageID(t, backend, helperImage); got != genuine {
			t.Fatalf("after job A, %s is %s, want the genuine %s", helperImage, got, genuine)
		}

		b := e.job(272)
		b.Script = []string{"docker version --format '{{.Server.Version}}'"}
		s := preparedSession(t, e, b)
		for _, role := range []string{"helper", "docker-proxy"} {
			id, health := containerImageAndHealth(t, backend, e.runner, b.ID, role)
			if strings.TrimPrefix(id, "sha256:") != genuine {
				t.Errorf("job B's %s container runs image %s, want the genuine helper %s", role, id, genuine)
			}
			if len(health) != 1 || health[0] != "NONE" {
				t.Errorf("job B's %s container has healthcheck %q, want [NONE]", role, health)
			}
		}
		mustRunStage(t, s, "build_script")
	})
}

// foreignVolume makes a volume in backend's engine labelled as another
// job's of the same runner, and returns its name.
func foreignVolume(t *testing.T, backend, runnerName string) string {
	t.Helper()
	name := fmt.Sprintf("berth-it-foreign-vol-%d", os.Getpid())
	// Another runner's: Podman 4.3 ORs label filters, so any one label in
	// common would list it.
	labels := map[string]string{backends.LabelRunner: runnerName + "-other", backends.LabelJobID: "999", backends.LabelRole: "job-created"}
	ctx := context.Background()
	if backend == "podman" {
		conn := requirePodman(t)
		if _, err := volumes.Create(conn, entities.VolumeCreateOptions{Name: name, Labels: labels}, nil); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = volumes.Remove(conn, name, new(volumes.RemoveOptions).WithForce(true)) })
		return name
	}
	if _, err := dockerCli.VolumeCreate(ctx, volume.CreateOptions{Name: name, Labels: labels}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = dockerCli.VolumeRemove(context.Background(), name, true) })
	return name
}

func engineVolumeLabels(t *testing.T, backend, name string) map[string]string {
	t.Helper()
	if backend == "podman" {
		data, err := volumes.Inspect(requirePodman(t), name, nil)
		if err != nil {
			t.Fatalf("inspect volume %s: %v", name, err)
		}
		return data.Labels
	}
	data, err := dockerCli.VolumeInspect(context.Background(), name)
	if err != nil {
		t.Fatalf("inspect volume %s: %v", name, err)
	}
	return data.Labels
}

func engineHasVolume(t *testing.T, backend, name string) bool {
	t.Helper()
	if backend == "podman" {
		ok, err := volumes.Exists(requirePodman(t), name, nil)
		if err != nil {
			t.Fatal(err)
		}
		return ok
	}
	_, err := dockerCli.VolumeInspect(context.Background(), name)
	return err == nil
}

// TestGuardNamesLabelsAndVolumes replays the attacks on shared names and
// labels: a job takes names a later job's prepare would use, puts berth's
// labels of its choosing on a volume through a mount (which berth gc
// trusted), leaves an anonymous volume behind by removing its container
// without -v, and lists volumes hoping to see another job's (Podman 4.3
// ORs label filters). Each is refused or neutralised, on socket and podman.
func TestGuardNamesLabelsAndVolumes(t *testing.T) {
	forGuardedBackends(t, options{}, func(t *testing.T, backend string, e *env) {
		foreign := foreignVolume(t, backend, e.runner)
		job := e.job(281)
		next := backends.JobName(e.runner, job.ID+1)
		job.Script = []string{
			resultFunc,
			`step=squat-volume res docker volume create ` + next + `-vol-0`,
			`step=squat-network res docker network create ` + next,
			`step=squat-container res docker create --name ` + next + `-build ` + busyboxImage,
			// berth's labels of the job's choosing on a volume a mount makes
			`docker create --name "lbl-$CI_JOB_ID" --mount type=volume,dst=/v,volume-label=berth.job.id=1,volume-label=berth.created=2000-01-01T00:00:00Z,volume-label=mine=1 ` + busyboxImage,
			`echo "LBLVOL $(docker inspect -f '{{range .Mounts}}{{.Name}}{{end}}' "lbl-$CI_JOB_ID")"`,
			// an anonymous volume, its container removed without -v
			`docker create --name "anon-$CI_JOB_ID" -v /data ` + busyboxImage + ` && echo "ANONVOL $(docker inspect -f '{{range .Mounts}}{{.Name}}{{end}}' "anon-$CI_JOB_ID")" && docker rm "anon-$CI_JOB_ID"`,
			`docker volume create "own-$CI_JOB_ID" >/dev/null; echo VOLS-BEGIN; docker volume ls -q; echo VOLS-END`,
		}
		// The checks of the engine's volumes run before cleanup.
		s := preparedSession(t, e, job)
		output := mustRunStage(t, s, "build_script")
		out := struct{ Output string }{output}
		for _, want := range []string{"RESULT squat-volume refused", "RESULT squat-network refused", "RESULT squat-container refused",
			`names starting with "berth-" are berth's own`} {
			if !strings.Contains(out.Output, want) {
				t.Errorf("build_script lacks %q:\n%s", want, out.Output)
			}
		}
		checkedVolumes := 0
		for _, line := range strings.Split(out.Output, "\n") {
			name, ok := strings.CutPrefix(strings.TrimSpace(line), "LBLVOL ")
			if !ok || name == "" {
				continue
			}
			checkedVolumes++
			// Docker labels the volume as the job's; Podman's Docker
			// API drops mount volume labels. Never the job's forgery.
			labels := engineVolumeLabels(t, backend, name)
			if labels[backends.LabelCreated] == "2000-01-01T00:00:00Z" || (labels[backends.LabelJobID] != "" && labels[backends.LabelJobID] != fmt.Sprint(job.ID)) {
				t.Errorf("volume %s that a mount made has the job's forged labels %v", name, labels)
			}
			if backend == "socket" && labels[backends.LabelJobID] != fmt.Sprint(job.ID) {
				t.Errorf("volume %s that a mount made has labels %v, want the job's", name, labels)
			}
		}
		listed := out.Output[strings.Index(out.Output, "VOLS-BEGIN"):]
		if strings.Contains(listed, foreign) {
			t.Errorf("the job's docker volume ls shows another job's volume %s:\n%s", foreign, listed)
		}
		if !strings.Contains(listed, fmt.Sprintf("own-%d", job.ID)) {
			t.Errorf("the job's docker volume ls lacks its own volume:\n%s", listed)
		}
		for _, line := range strings.Split(out.Output, "\n") {
			if name, ok := strings.CutPrefix(strings.TrimSpace(line), "ANONVOL "); ok && name != "" {
				checkedVolumes++
				if engineHasVolume(t, backend, name) {
					t.Errorf("the anonymous volume %s outlived its container's removal", name)
				}
			}
		}
		if checkedVolumes != 2 {
			t.Errorf("checked %d volumes, want the mount's and the anonymous one: the job did not report them:\n%s", checkedVolumes, out.Output)
		}
		if r := s.Cleanup(context.Background()); r.ExitCode != 0 {
			t.Errorf("cleanup: exit %d\n%s", r.ExitCode, r.Output)
		}
		if !engineHasVolume(t, backend, foreign) {
			t.Errorf("another job's volume %s is gone", foreign)
		}
		e.assertNoResources()
	})
}

// victimNetwork makes a network in backend's engine that belongs to another
// runner's job, and returns its full id.
func victimNetwork(t *testing.T, backend, runnerName string) string {
	t.Helper()
	name := fmt.Sprintf("berth-it-victim-net-%d", os.Getpid())
	labels := map[string]string{backends.LabelRunner: runnerName + "-other", backends.LabelJobID: "998", backends.LabelRole: "network"}
	return engineNetwork(t, backend, name, labels)
}

// removeShortNameAtEnd removes the image a job named name (a short name)
// from backend's engine when the test ends, under both names Podman may
// give it (its Docker API tags docker.io/library/, its load localhost/).
func removeShortNameAtEnd(t *testing.T, backend, name string) {
	if backend == "podman" {
		t.Cleanup(func() {
			removePodmanImage(t, requirePodman(t), "docker.io/library/"+name)
			removePodmanImage(t, requirePodman(t), "localhost/"+name)
		})
		return
	}
	t.Cleanup(func() { removeImage(t, name) })
}

// engineNetwork makes a network in backend's engine, removed when the
// test ends, and returns its full id.
func engineNetwork(t *testing.T, backend, name string, labels map[string]string) string {
	t.Helper()
	if backend == "podman" {
		conn := requirePodman(t)
		created, err := podnetwork.Create(conn, &nettypes.Network{Name: name, Labels: labels})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _, _ = podnetwork.Remove(conn, name, nil) })
		return created.ID
	}
	created, err := dockerCli.NetworkCreate(context.Background(), name, network.CreateOptions{Labels: labels})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = dockerCli.NetworkRemove(context.Background(), name) })
	return created.ID
}

// victimNetworkContainers counts the containers on the victim network.
func victimNetworkContainers(t *testing.T, backend, id string) int {
	t.Helper()
	if backend == "podman" {
		list, err := containers.List(requirePodman(t), new(containers.ListOptions).WithAll(true).WithFilters(map[string][]string{"network": {id}}))
		if err != nil {
			t.Fatal(err)
		}
		return len(list)
	}
	info, err := dockerCli.NetworkInspect(context.Background(), id, network.InspectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return len(info.Containers)
}

// TestGuardNetworksAreJoinedByID replays the network attacks: an endpoint
// whose NetworkID names another job's network under the key of the job's
// own; a network of the job's named after a prefix of another's id,
// removed between create and start so that the engine resolves the name
// as an id prefix (the guard refuses hex-only network names; Podman
// refuses the name itself); and on socket a build, whose RUN steps must be
// on the job's network (they reach the job's service by its alias).
func TestGuardNetworksAreJoinedByID(t *testing.T) {
	forGuardedBackends(t, options{}, func(t *testing.T, backend string, e *env) {
		victim := victimNetwork(t, backend, e.runner)
		job := e.job(291)
		job.Services = []runner.Image{{Name: httpImage, Alias: "web"}}
		job.Variables = []runner.Variable{{Key: "VICTIM_ID", Value: victim}}
		job.Script = []string{
			`docker network create "mine-$CI_JOB_ID" >/dev/null`,
			`curl -s --unix-socket /var/run/docker.sock -H 'Content-Type: application/json' -d '{"Image":"` + busyboxImage + `","HostConfig":{"NetworkMode":"mine-'$CI_JOB_ID'"},"NetworkingConfig":{"EndpointsConfig":{"mine-'$CI_JOB_ID'":{"NetworkID":"'$VICTIM_ID'","Aliases":["web"]}}}}' http://d/v1.41/containers/create; echo`,
			`prefix=${VICTIM_ID:0:12}; docker network create "$prefix" >/dev/null && docker create --name "pfx-$CI_JOB_ID" --network "$prefix" ` + busyboxImage + ` sleep 30 >/dev/null && docker network rm "$prefix" >/dev/null`,
			`if docker start "pfx-$CI_JOB_ID"; then echo "RESULT prefix-start allowed"; else echo "RESULT prefix-start refused"; fi`,
			`printf 'FROM ` + busyboxImage + `\nRUN wget -qO- http://web:8080/ && echo " BUILD-REACHED-WEB"\n' > Dockerfile`,
			`DOCKER_BUILDKIT=0 docker build --no-cache . 2>&1 | grep -E 'BUILD-REACHED|bad address|wget|not available' || true`,
		}
		s := preparedSession(t, e, job)
		out := mustRunStage(t, s, "build_script")
		wants := []string{"may not set NetworkID", "RESULT prefix-start refused"}
		if backend == "socket" {
			wants = append(wants, "hello from berth service BUILD-REACHED-WEB")
		} else {
			// Podman's Docker API builds with buildah, whose RUN
			// steps run in the host's network: refused.
			wants = append(wants, "RUN in a build is not available on this Podman")
		}
		for _, want := range wants {
			if !strings.Contains(out, want) {
				t.Errorf("build_script lacks %q:\n%s", want, out)
			}
		}
		if n := victimNetworkContainers(t, backend, victim); n != 0 {
			t.Errorf("the other job's network has %d containers, want none", n)
		}
	})
}

// TestGuardCeilingsOnWhatTheJobCreates sets the admin's memory, pids and
// shm limits and checks that containers the job creates through the guard
// get them, and that asking for more, or for none, is refused.
func TestGuardCeilingsOnWhatTheJobCreates(t *testing.T) {
	limits := options{extraTOML: "memory = \"256m\"\npids_limit = 200\nshm_size = \"32m\"\nulimits = [\"nofile=512:1024\"]\n"}
	forGuardedBackends(t, limits, func(t *testing.T, backend string, e *env) {
		job := e.job(301)
		job.Script = []string{
			resultFunc,
			`echo "NOFILE $(ulimit -Sn) $(ulimit -Hn)"`,
			`docker create --name "lim-$CI_JOB_ID" ` + busyboxImage + ` true >/dev/null`,
			`docker inspect -f 'LIMITS mem={{.HostConfig.Memory}} pids={{.HostConfig.PidsLimit}} shm={{.HostConfig.ShmSize}}' "lim-$CI_JOB_ID"`,
			`step=less res docker run --rm --memory 128m ` + busyboxImage + ` true`,
			`step=memory res docker run --rm --memory 1g ` + busyboxImage + ` true`,
			`step=oom res docker run --rm --oom-kill-disable ` + busyboxImage + ` true`,
			`step=pids res docker run --rm --pids-limit -1 ` + busyboxImage + ` true`,
			`step=shm res docker run --rm --shm-size 64g ` + busyboxImage + ` true`,
			`step=tmpfs res docker run --rm --tmpfs /t:size=100g ` + busyboxImage + ` true`,
			`printf 'FROM ` + busyboxImage + `\nRUN true\n' > Dockerfile`,
			`step=build-memory DOCKER_BUILDKIT=0 res docker build --memory 1g .`,
			// a build within the ceilings, its ulimits in each engine's form
			`mkdir -p ok && printf 'FROM ` + busyboxImage + `
COPY Dockerfile /d
' > ok/Dockerfile`,
			`step=build-ok DOCKER_BUILDKIT=0 res docker build -q ok`,
		}
		res := e.run(job)
		requireSuccess(t, res)
		out, _ := res.Stage("build_script")
		wants := []string{"NOFILE 512 1024", "RESULT build-ok allowed", "RESULT less allowed", "RESULT memory refused", "RESULT oom refused", "RESULT pids refused", "RESULT shm refused",
			"RESULT tmpfs refused", "RESULT build-memory refused", "over the runner's ceiling of 268435456"}
		if backend == "socket" {
			// Rootless Podman on cgroup v1 drops resource limits, and
			// its inspect says so: only the refusals hold there.
			wants = append(wants, "LIMITS mem=268435456 pids=200 shm=33554432")
		}
		for _, want := range wants {
			if !strings.Contains(out.Output, want) {
				t.Errorf("build_script lacks %q:\n%s", want, out.Output)
			}
		}
	})
}

// TestGuardStaysBoundedUnderASlowBodyFlood opens 150 connections to the
// job's guarded socket, each sending half of a 1 MiB JSON body and then
// nothing. The guard serves 128 connections at once, gives a JSON body 30
// seconds and runs under a memory limit: its memory stays under the limit,
// it is not killed, and once the bodies time out the job's docker works.
func TestGuardStaysBoundedUnderASlowBodyFlood(t *testing.T) {
	e := newEnv(t, options{})
	job := e.job(302)
	job.Script = []string{
		`req='POST /v1.41/containers/create HTTP/1.1\r\nHost: d\r\nContent-Type: application/json\r\nContent-Length: 1048576\r\n\r\n'`,
		`for i in $(seq 150); do ( printf "$req"; head -c 524288 /dev/zero | tr '\0' ' '; sleep 40 ) | nc -U /var/run/docker.sock >/dev/null 2>&1 & done; echo FLOODING`,
		`sleep 20; echo FLOOD-SENT`,
		`wait; echo FLOOD-DONE; docker version --format 'AFTER {{.Server.Version}}'`,
	}
	s := preparedSession(t, e, job)
	done := make(chan runner.StageResult, 1)
	go func() { done <- s.RunStage(context.Background(), "build_script") }()
	proxy := dockerJobContainers(t, e.runner, job.ID, "docker-proxy")[0]
	var peak uint64
	deadline := time.Now().Add(25 * time.Second)
	for time.Now().Before(deadline) {
		stats, err := dockerCli.ContainerStatsOneShot(context.Background(), proxy.ID)
		if err != nil {
			t.Fatalf("stats of the guard: %v", err)
		}
		var v struct {
			MemoryStats struct {
				Usage uint64 `json:"usage"`
			} `json:"memory_stats"`
		}
		err = json.NewDecoder(stats.Body).Decode(&v)
		stats.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		peak = max(peak, v.MemoryStats.Usage)
		time.Sleep(time.Second)
	}
	r := <-done
	t.Logf("guard memory peak %d MiB during the flood (limit %d MiB)", peak>>20, dockerproxy.ContainerMemory>>20)
	if r.ExitCode != 0 || !strings.Contains(r.Output, "AFTER ") {
		t.Fatalf("build_script: exit %d; the job's docker does not answer after the flood:\n%s", r.ExitCode, r.Output)
	}
	if peak >= dockerproxy.ContainerMemory {
		t.Errorf("guard memory reached %d bytes, its limit", peak)
	}
	info, err := dockerCli.ContainerInspect(context.Background(), proxy.ID)
	if err != nil {
		t.Fatal(err)
	}
	if !info.State.Running || info.State.OOMKilled || info.State.Restarting {
		t.Errorf("the guard's state after the flood: %+v", info.State)
	}
}

// TestGuardRefusesFetchesFromTheHostsOwnNetwork: a pull, push or login
// makes the engine fetch on the host's network, so a registry at a
// loopback or link-local address (the metadata service's among them) is
// refused unless the admin allowed it, as the tests' registry is.
func TestGuardRefusesFetchesFromTheHostsOwnNetwork(t *testing.T) {
	forGuardedBackends(t, options{}, func(t *testing.T, backend string, e *env) {
		// podman's Docker API logs in to the plain-HTTP test
		// registry only under its localhost name (see provision.sh)
		reg := registryAddr
		if backend == "podman" {
			reg = "localhost:" + strings.Split(registryAddr, ":")[1]
		}
		job := e.job(311)
		pushed := fmt.Sprintf("%s/berth-it/fetch:%d", reg, job.ID)
		if backend == "podman" {
			t.Cleanup(func() { removePodmanImage(t, requirePodman(t), pushed) })
		} else {
			t.Cleanup(func() { removeImage(t, pushed) })
		}
		job.Variables = []runner.Variable{{Key: "REG_PASS", Value: registryPass, Masked: true}}
		job.Script = []string{
			resultFunc,
			`step=pull-loopback res docker pull 127.0.0.2:5000/berth-it/x:1`,
			`step=pull-metadata res docker pull 169.254.169.254/latest:1`,
			`step=pull-localhost res docker pull localhost:9/x:1`,
			`step=login-loopback res docker login 127.0.0.1:9 -u u -p p`,
			`step=tag-allowed res docker tag ` + busyboxImage + ` ` + reg + `/berth-it/fetch:$CI_JOB_ID`,
			`echo "$REG_PASS" | docker login ` + reg + ` -u ` + registryUser + ` --password-stdin >/dev/null`,
			`step=push-allowed res docker push ` + reg + `/berth-it/fetch:$CI_JOB_ID`,
		}
		res := e.run(job)
		requireSuccess(t, res)
		out, _ := res.Stage("build_script")
		for _, want := range []string{"RESULT pull-loopback refused", "RESULT pull-metadata refused", "RESULT pull-localhost refused",
			"RESULT login-loopback refused", "docker.guard_local_registries", "RESULT push-allowed allowed"} {
			if !strings.Contains(out.Output, want) {
				t.Errorf("build_script lacks %q:\n%s", want, out.Output)
			}
		}
	})
}

// forGuardedBackends runs fn as parallel subtests on the guarded socket and
// on podman, each with an env of its own.
func forGuardedBackends(t *testing.T, o options, fn func(t *testing.T, backend string, e *env)) {
	for _, backend := range []string{"socket", "podman"} {
		t.Run(backend, func(t *testing.T) {
			t.Parallel()
			var e *env
			if backend == "podman" {
				e = newPodmanEnv(t, o)
			} else {
				e = newEnv(t, o)
			}
			fn(t, backend, e)
		})
	}
}

// resultFunc is a shell function for job scripts: "step=NAME res CMD..."
// runs CMD and prints "RESULT NAME allowed" or "RESULT NAME refused", then
// CMD's output.
const resultFunc = `res() { if "$@" >/tmp/out 2>&1; then echo "RESULT $step allowed"; else echo "RESULT $step refused"; fi; cat /tmp/out; }`
