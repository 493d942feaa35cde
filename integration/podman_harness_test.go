//go:build remote

package integration

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containers/podman/v5/pkg/bindings"
	"github.com/containers/podman/v5/pkg/bindings/containers"
	"github.com/containers/podman/v5/pkg/bindings/images"
	"github.com/containers/podman/v5/pkg/bindings/network"
	"github.com/containers/podman/v5/pkg/bindings/pods"
	"github.com/containers/podman/v5/pkg/bindings/volumes"
	"github.com/sirupsen/logrus"

	"github.com/berthci/berth/backends"
	"github.com/berthci/berth/backends/podman"
	"github.com/berthci/berth/config"
)

// The rootless podman service that provision.sh starts for podUser.
const (
	podUser   = "berthpod"
	podUID    = 1001
	podSocket = "/run/user/1001/podman/podman.sock"
)

var (
	podOnce sync.Once
	podConn context.Context
	podErr  error
)

// requirePodman returns a connection to the test podman service. It skips
// when the service is absent, except under CI=true, where it fails; a
// present but broken service always fails.
func requirePodman(t *testing.T) context.Context {
	t.Helper()
	if _, err := os.Stat(podSocket); err != nil {
		if os.Getenv("CI") != "true" {
			t.Skipf("no rootless podman service at %s (run integration/provision.sh): %v", podSocket, err)
		}
		t.Fatalf("no rootless podman service at %s: %v (run integration/provision.sh)", podSocket, err)
	}
	podOnce.Do(func() {
		podConn, podErr = bindings.NewConnection(context.Background(), "unix://"+podSocket)
	})
	if podErr != nil {
		t.Fatalf("podman service at %s is not answering: %v (run integration/provision.sh)", podSocket, podErr)
	}
	for _, img := range []string{debianImage, busyboxImage, helperImage, httpImage} {
		if ok, err := images.Exists(podConn, img, nil); err != nil || !ok {
			t.Fatalf("test image %s is missing from %s's store (err %v); run integration/provision.sh", img, podUser, err)
		}
	}
	return podConn
}

// newPodmanEnv is newEnv with the podman backend as the only one, and a
// check that the runner leaves nothing in podman either. podmanKeys are
// extra lines of the [podman] section; one that sets socket replaces the
// test service's.
func newPodmanEnv(t *testing.T, o options, podmanKeys ...string) *env {
	t.Helper()
	conn := requirePodman(t)
	if o.policyTOML == "" {
		o.policyTOML = "default_backend = \"podman\"\nallowed_backends = [\"podman\"]\n"
	}
	socketKey := fmt.Sprintf("socket = %q\n", "unix://"+podSocket)
	for _, k := range podmanKeys {
		if strings.HasPrefix(k, "socket") {
			socketKey = ""
		}
	}
	o.extraTOML += fmt.Sprintf("\n[podman]\n%s%s\n", socketKey, strings.Join(podmanKeys, "\n"))
	e := newEnv(t, o)
	// The rootless service's user mounts the builds dir and the admin's git
	// volume from under this root.
	if err := os.Chmod(e.root, 0o755); err != nil {
		t.Fatal(err)
	}
	// Podman, unlike dockerd, does not create a missing bind source.
	if err := os.MkdirAll(e.gitDir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if left := podmanResources(t, conn, e.runner); len(left) > 0 {
			t.Errorf("berth-labelled podman resources left behind: %v", left)
		}
	})
	return e
}

// podmanResources lists what carries the runner's berth labels in the test
// podman service.
func podmanResources(t *testing.T, conn context.Context, runnerName string) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(conn, time.Minute)
	defer cancel()
	filters := map[string][]string{"label": {"berth.runner=" + runnerName}}
	var found []string
	cs, err := containers.List(ctx, new(containers.ListOptions).WithAll(true).WithFilters(filters))
	if err != nil {
		t.Fatalf("list podman containers: %v", err)
	}
	for _, c := range cs {
		found = append(found, "container "+strings.Join(c.Names, ","))
	}
	ns, err := network.List(ctx, new(network.ListOptions).WithFilters(filters))
	if err != nil {
		t.Fatalf("list podman networks: %v", err)
	}
	for _, n := range ns {
		found = append(found, "network "+n.Name)
	}
	vs, err := volumes.List(ctx, new(volumes.ListOptions).WithFilters(filters))
	if err != nil {
		t.Fatalf("list podman volumes: %v", err)
	}
	for _, v := range vs {
		found = append(found, "volume "+v.Name)
	}
	ps, err := pods.List(ctx, new(pods.ListOptions).WithFilters(filters))
	if err != nil {
		t.Fatalf("list podman pods: %v", err)
	}
	for _, p := range ps {
		found = append(found, "pod "+p.Name)
	}
	return found
}

// removePodmanImage removes an image from the test podman store.
func removePodmanImage(t *testing.T, conn context.Context, ref string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(conn, time.Minute)
	defer cancel()
	if _, errs := images.Remove(ctx, []string{ref}, new(images.RemoveOptions).WithForce(true).WithIgnore(true)); len(errs) > 0 {
		t.Logf("remove podman image %s: %v", ref, errs)
	}
}

// makePodmanRepo is makeRepo with the repository owned by the podman user:
// in its containers the host's root is an unmapped "nobody", and git
// refuses repositories of other owners.
func (e *env) makePodmanRepo(files map[string]string) string {
	e.t.Helper()
	url := e.makeRepo(files)
	if out, err := exec.Command("chown", "-R", fmt.Sprintf("%d:%d", podUID, podUID), e.gitDir).CombinedOutput(); err != nil {
		e.t.Fatalf("chown %s: %v\n%s", e.gitDir, err, out)
	}
	return url
}

// podmanConformanceEnv is the env of TestPodmanConformance, the backend's
// constructor with the guarding proxy run from the built berth binary, and
// a lister of the runner's podman resources.
func podmanConformanceEnv(t *testing.T) (*env, func(*config.Config, logrus.FieldLogger) (backends.Backend, error), func(t *testing.T) []string) {
	t.Helper()
	e := newPodmanEnv(t, options{})
	conn := requirePodman(t)
	open := func(cfg *config.Config, log logrus.FieldLogger) (backends.Backend, error) {
		b, err := podman.New(cfg, log)
		if err != nil {
			return nil, err
		}
		b.ProxyBinary = berthBinary
		return b, nil
	}
	return e, open, func(t *testing.T) []string { return podmanResources(t, conn, e.runner) }
}

// requirePodmanImage fails the test when an image provision.sh loads into
// the podman user's store is missing.
func requirePodmanImage(t *testing.T, conn context.Context, ref string) {
	t.Helper()
	if ok, err := images.Exists(conn, ref, nil); err != nil || !ok {
		t.Fatalf("image %s is missing from %s's store (err %v); run integration/provision.sh", ref, podUser, err)
	}
}
