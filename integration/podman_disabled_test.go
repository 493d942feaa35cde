//go:build !remote

package integration

import (
	"context"
	"os"
	"testing"

	"github.com/sirupsen/logrus"

	"github.com/berthci/berth/backends"
	"github.com/berthci/berth/config"
	"github.com/berthci/berth/integration/runner"
)

// podmanConformanceEnv stands in when the tests are built without the
// podman backend: it fails under CI=true, which must build with the tags.
func podmanConformanceEnv(t *testing.T) (*env, func(*config.Config, logrus.FieldLogger) (backends.Backend, error), func(t *testing.T) []string) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf("the podman tests need -tags %q", runner.BuildTags)
	}
	t.Skipf("the podman tests need -tags %q", runner.BuildTags)
	return nil, nil, nil
}

// newPodmanEnv stands in like podmanConformanceEnv.
func newPodmanEnv(t *testing.T, _ options, _ ...string) *env {
	t.Helper()
	podmanConformanceEnv(t)
	return nil
}

// requirePodman and podmanResources are never reached without the tags.
func requirePodman(t *testing.T) context.Context {
	podmanConformanceEnv(t)
	return nil
}

func podmanResources(*testing.T, context.Context, string) []string { return nil }

// podSocket and podUID are the provisioned service's.
const (
	podSocket = "/run/user/1001/podman/podman.sock"
	podUID    = 1001
)
