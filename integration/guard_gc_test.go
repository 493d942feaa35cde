package integration

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os/exec"
	"strings"
	"testing"

	"github.com/containers/podman/v5/pkg/bindings/images"
	podnetwork "github.com/containers/podman/v5/pkg/bindings/network"
	"github.com/docker/docker/api/types/network"

	"github.com/berthci/berth/backends"
	"github.com/berthci/berth/integration/runner"
)

// forgedImageArchive is a docker-archive of a one-file image named name
// whose config carries labels, and that image's id: what a job can load,
// or pull from a registry it pushed to, with any labels it likes.
func forgedImageArchive(t *testing.T, name string, labels map[string]string) (archive []byte, id string) {
	t.Helper()
	var layer bytes.Buffer
	tw := tar.NewWriter(&layer)
	if err := tw.WriteHeader(&tar.Header{Name: "forged", Mode: 0o644, Size: 2, Typeflag: tar.TypeReg}); err != nil {
		t.Fatal(err)
	}
	tw.Write([]byte("x\n"))
	tw.Close()
	cfg, err := json.Marshal(map[string]any{"architecture": "amd64", "os": "linux",
		"config": map[string]any{"Labels": labels, "Cmd": []string{"true"}},
		"rootfs": map[string]any{"type": "layers", "diff_ids": []string{fmt.Sprintf("sha256:%x", sha256.Sum256(layer.Bytes()))}}})
	if err != nil {
		t.Fatal(err)
	}
	id = fmt.Sprintf("%x", sha256.Sum256(cfg))
	manifest, err := json.Marshal([]map[string]any{{"Config": id + ".json", "RepoTags": []string{name}, "Layers": []string{"layer.tar"}}})
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	aw := tar.NewWriter(&out)
	for _, f := range []struct {
		name string
		data []byte
	}{{id + ".json", cfg}, {"layer.tar", layer.Bytes()}, {"manifest.json", manifest}} {
		if err := aw.WriteHeader(&tar.Header{Name: f.name, Mode: 0o644, Size: int64(len(f.data)), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		aw.Write(f.data)
	}
	aw.Close()
	return out.Bytes(), id
}

// imageExists reports whether the engine of backend has the image id.
func imageExists(t *testing.T, backend, id string) bool {
	t.Helper()
	if backend == "podman" {
		_, err := images.GetImage(requirePodman(t), id, nil)
		return err == nil
	}
	_, err := dockerCli.ImageInspect(context.Background(), "sha256:"+id)
	return err == nil
}

// TestGuardForgedLabelsCannotSteerGC replays the label attack: a job
// loads images whose labels say they belong to a live job of another
// project, created long ago with a 1 s timeout, and to a job that never
// ran, and runs `berth gc` while it is still running. gc must leave the
// live job running (berth's prepare marker, which no job can write, says
// it is live) and remove the image of the job that never ran; the
// attacker's cleanup (the names it gave) and the live job's (its labels)
// remove the rest, so nothing the attacker made outlives cleanup and gc.
func TestGuardForgedLabelsCannotSteerGC(t *testing.T) {
	forGuardedBackends(t, options{}, func(t *testing.T, backend string, e *env) {
		victim := e.job(351)
		victim.Timeout = 3600
		vs := preparedSession(t, e, victim)

		attacker := e.job(352)
		forge := func(jobID int64, tag string) ([]byte, string, string) {
			name := fmt.Sprintf("berth-it-forged-%s-%d:1", tag, attacker.ID)
			archive, id := forgedImageArchive(t, name, map[string]string{
				backends.LabelRunner: e.runner, backends.LabelBackend: backend, backends.LabelJobID: fmt.Sprint(jobID),
				backends.LabelProjectID: "999", backends.LabelCreated: "2000-01-01T00:00:00Z", backends.LabelTimeout: "1",
				backends.LabelRole: "build"})
			t.Cleanup(func() {
				if backend == "podman" {
					removePodmanImage(t, requirePodman(t), id)
				} else {
					removeImage(t, "sha256:"+id)
				}
			})
			return archive, id, name
		}
		victimArchive, victimImage, _ := forge(victim.ID, "victim")
		ghostArchive, ghostImage, _ := forge(victim.ID+7, "ghost")
		attacker.Script = []string{
			"echo " + base64.StdEncoding.EncodeToString(victimArchive) + " | base64 -d > victim.tar",
			"echo " + base64.StdEncoding.EncodeToString(ghostArchive) + " | base64 -d > ghost.tar",
			"docker load -i victim.tar && docker load -i ghost.tar",
		}
		as := preparedSession(t, e, attacker)
		mustRunStage(t, as, "build_script")
		if !imageExists(t, backend, victimImage) || !imageExists(t, backend, ghostImage) {
			t.Fatal("the forged images were not loaded, so this test proves nothing")
		}

		out, err := exec.Command(berthBinary, "--config", e.cfgPath, "gc", "--grace", "1s").CombinedOutput()
		if err != nil {
			t.Fatalf("berth gc: %v\n%s", err, out)
		}
		t.Logf("gc:\n%s", out)
		for _, line := range strings.Split(string(out), "\n") {
			if f := strings.Fields(line); len(f) > 4 && f[0] == fmt.Sprint(victim.ID) && f[4] != "live" {
				t.Errorf("gc judged the live job %d %s: %s", victim.ID, f[4], line)
			}
		}
		// The live job still runs, with its containers.
		if got := mustRunStage(t, vs, "build_script"); !strings.Contains(got, "Job succeeded") && strings.Contains(got, "ERROR") {
			t.Errorf("the live job's stage after gc:\n%s", got)
		}
		if imageExists(t, backend, ghostImage) {
			t.Errorf("gc left the image labelled as job %d, which never ran", victim.ID+7)
		}
		for _, s := range []*runner.Session{as, vs} {
			if r := s.Cleanup(context.Background()); r.ExitCode != 0 {
				t.Fatalf("cleanup: %d\n%s", r.ExitCode, r.Output)
			}
		}
		if imageExists(t, backend, victimImage) {
			t.Errorf("the image labelled as job %d outlived that job's cleanup", victim.ID)
		}
		e.assertNoResources()
	})
}

// TestGuardNamesTheJobGaveGoAtCleanup: names a job gives by tag and by
// load stay in the shared image store, a loaded image with no labels to
// be found by. The guard records them out of the job's reach, and the
// job's cleanup removes them: the tag goes and the tagged image stays,
// the loaded image goes with its only name. Both backends are allowed, so
// both clean up every job, as on a runner that offers both.
func TestGuardNamesTheJobGaveGoAtCleanup(t *testing.T) {
	forBackendsAllowingBoth(t, func(t *testing.T, backend string, e *env) {
		job := e.job(353)
		tagged := fmt.Sprintf("berth-it-given-%d:1", job.ID)
		loaded := fmt.Sprintf("berth-it-loaded-%d:1", job.ID)
		archive, loadedID := forgedImageArchive(t, loaded, map[string]string{"berth-it": "unlabelled"})
		// loaded again under the same name: the first image loses it
		moved := fmt.Sprintf("berth-it-moved-%d:1", job.ID)
		first, firstID := forgedImageArchive(t, moved, map[string]string{"berth-it": "first"})
		second, secondID := forgedImageArchive(t, moved, map[string]string{"berth-it": "second"})
		t.Cleanup(func() {
			if backend == "podman" {
				conn := requirePodman(t)
				for _, id := range []string{loadedID, firstID, secondID} {
					removePodmanImage(t, conn, id)
				}
				removePodmanImage(t, conn, "docker.io/library/"+tagged)
			} else {
				for _, id := range []string{loadedID, firstID, secondID} {
					removeImage(t, "sha256:"+id)
				}
				removeImage(t, tagged)
			}
		})
		genuine := engineImageID(t, backend, busyboxImage)
		job.Script = []string{
			"echo " + base64.StdEncoding.EncodeToString(archive) + " | base64 -d > loaded.tar",
			"docker load -i loaded.tar",
			"docker tag " + busyboxImage + " " + tagged,
			"docker image inspect -f '{{.Id}}' " + tagged + " " + loaded,
			"echo " + base64.StdEncoding.EncodeToString(first) + " | base64 -d > first.tar",
			"echo " + base64.StdEncoding.EncodeToString(second) + " | base64 -d > second.tar",
			"docker load -i first.tar && docker load -i second.tar",
			// an archive whose image has no name
			`mkdir un && tar -C un -xf first.tar && sed -i 's/"RepoTags":\[[^]]*\]/"RepoTags":[]/' un/manifest.json && (cd un && tar -cf ../unnamed.tar *)`,
			`if docker load -i unnamed.tar; then echo "RESULT unnamed allowed"; else echo "RESULT unnamed refused"; fi`,
		}
		res := e.run(job)
		requireSuccess(t, res)
		out, _ := res.Stage("build_script")
		for _, want := range []string{"RESULT unnamed refused", "an image in the archive has no name"} {
			if !strings.Contains(out.Output, want) {
				t.Errorf("build_script lacks %q:\n%s", want, out.Output)
			}
		}
		for _, id := range []string{loadedID, firstID, secondID} {
			if imageExists(t, backend, id) {
				t.Errorf("the image %.12s the job loaded outlived its cleanup", id)
			}
		}
		if backend == "podman" {
			if _, err := images.GetImage(requirePodman(t), "docker.io/library/"+tagged, nil); err == nil {
				t.Errorf("the name %s the job tagged outlived its cleanup", tagged)
			}
		} else if _, err := dockerCli.ImageInspect(context.Background(), tagged); err == nil {
			t.Errorf("the name %s the job tagged outlived its cleanup", tagged)
		}
		if got := engineImageID(t, backend, busyboxImage); got != genuine {
			t.Errorf("the tagged image %s changed: %s, was %s", busyboxImage, got, genuine)
		}
		e.assertNoResources()
	})
}

// TestPrepareDoesNotAdoptASquattedNetwork: a network someone made under
// the name a coming job's network will have (job ids are sequential) is
// not adopted: the job's prepare fails, saying what to remove, and the
// network is left as it was.
func TestPrepareDoesNotAdoptASquattedNetwork(t *testing.T) {
	forGuardedBackends(t, options{}, func(t *testing.T, backend string, e *env) {
		job := e.job(354)
		name := backends.JobName(e.runner, job.ID)
		id := engineNetwork(t, backend, name, map[string]string{"berth-it": "squatter"})
		res := e.run(job)
		if res.Failure == "" {
			t.Fatalf("the job ran on a network it did not make:\n%s", res.Log)
		}
		want := fmt.Sprintf("job network %q already exists and was not made by berth for this job: berth does not adopt it", name)
		if !strings.Contains(res.Log, want) {
			t.Errorf("the job's log lacks %q:\n%s", want, res.Log)
		}
		var still string
		if backend == "podman" {
			got, err := podnetwork.Inspect(requirePodman(t), name, nil)
			if err == nil {
				still = got.ID
			}
		} else if got, err := dockerCli.NetworkInspect(context.Background(), name, network.InspectOptions{}); err == nil {
			still = got.ID
		}
		if still != id {
			t.Errorf("the squatted network %s is %q after the job, want it untouched (%s)", name, still, id)
		}
	})
}

// forBackendsAllowingBoth is forGuardedBackends with socket and podman
// both allowed, each subtest's backend the default.
func forBackendsAllowingBoth(t *testing.T, fn func(t *testing.T, backend string, e *env)) {
	for _, backend := range []string{"socket", "podman"} {
		t.Run(backend, func(t *testing.T) {
			t.Parallel()
			e := newPodmanEnv(t, options{policyTOML: fmt.Sprintf("default_backend = %q\nallowed_backends = [\"socket\", \"podman\"]\n", backend)})
			fn(t, backend, e)
		})
	}
}

// TestAGivenNameIsNotAnotherJobsImage: while a job runs, a name it loaded
// (or tagged) through its guard is in the shared store. Another project's
// job whose image is that name does not run what the first job put there:
// its prepare sees the first job's record, and pulls instead, which here
// fails because no registry has the name.
func TestAGivenNameIsNotAnotherJobsImage(t *testing.T) {
	forBackendsAllowingBoth(t, func(t *testing.T, backend string, e *env) {
		a := e.job(355)
		planted := fmt.Sprintf("berth-it-planted-%d:1", a.ID)
		archive, id := forgedImageArchive(t, planted, map[string]string{"berth-it": "planted"})
		t.Cleanup(func() {
			if backend == "podman" {
				removePodmanImage(t, requirePodman(t), id)
			} else {
				removeImage(t, "sha256:"+id)
			}
		})
		a.Script = []string{
			"echo " + base64.StdEncoding.EncodeToString(archive) + " | base64 -d > planted.tar",
			"docker load -i planted.tar",
		}
		sa := preparedSession(t, e, a)
		mustRunStage(t, sa, "build_script")

		b := e.job(356)
		b.Image = runner.Image{Name: planted}
		b.Script = []string{"echo RAN-THE-PLANTED-IMAGE"}
		res := e.run(b)
		if res.Failure == "" || strings.Contains(res.Log, "\nRAN-THE-PLANTED-IMAGE") {
			t.Fatalf("job B ran job A's planted image:\n%s", res.Log)
		}
		want := fmt.Sprintf("is a name job %s/%d gave through its guarded socket", e.runner, a.ID)
		if !strings.Contains(res.Log, want) {
			t.Errorf("job B's log lacks %q:\n%s", want, res.Log)
		}
	})
}
