//go:build !remote

package podman

import (
	"strings"
	"testing"

	"github.com/sirupsen/logrus"

	"github.com/berthci/berth/backends"
	"github.com/berthci/berth/config"
)

func TestWithoutTagsTheBackendSaysHowToBuildIt(t *testing.T) {
	_, err := backends.Open(Name, config.Default(), logrus.New())
	if err == nil || !strings.Contains(err.Error(), "-tags 'remote") {
		t.Errorf("got %v, want an error naming the build tags", err)
	}
}
