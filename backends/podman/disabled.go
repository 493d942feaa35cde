//go:build !remote

// Package podman is the podman backend. This berth was built without it.
package podman

import (
	"errors"

	"github.com/berthci/berth/backends"
)

// Name is the backend's name in BERTH_BACKEND and the config.
const Name = "podman"

func init() {
	backends.RegisterMissing(Name, errors.New("this berth was built without the podman backend: build with -tags 'remote exclude_graphdriver_btrfs exclude_graphdriver_devicemapper containers_image_openpgp', or remove podman from policy.allowed_backends"))
}
