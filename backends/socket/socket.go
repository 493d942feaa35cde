// Package socket is the socket backend: job containers on the host's Docker
// engine with the host's Docker socket mounted at /var/run/docker.sock, so
// the job's containers are siblings on the host daemon.
package socket

import (
	"github.com/sirupsen/logrus"

	"github.com/berthci/berth/backends"
	"github.com/berthci/berth/backends/dockerengine"
	"github.com/berthci/berth/config"
)

// Name is the backend's name in BERTH_BACKEND and the config.
const Name = "socket"

// jobSocketPath is where the job's docker CLI looks without DOCKER_HOST.
const jobSocketPath = "/var/run/docker.sock"

func init() {
	backends.Register(Name, func(cfg *config.Config, log logrus.FieldLogger) (backends.Backend, error) {
		return New(cfg, log)
	})
}

// Backend is the socket backend. It is the shared Docker engine code with
// the host socket bound into the job container.
type Backend struct {
	*dockerengine.Engine
}

// New returns a socket backend for the admin config. It does not contact the
// engine.
func New(cfg *config.Config, log logrus.FieldLogger) (*Backend, error) {
	cli, err := dockerengine.NewClient(cfg.Docker.Host)
	if err != nil {
		return nil, err
	}
	bind := cfg.Socket.HostSocket + ":" + jobSocketPath
	engine, err := dockerengine.New(cli, cfg.Docker, dockerengine.Options{
		JobBinds: func(*backends.Job) []string { return []string{bind} },
	}, log)
	if err != nil {
		return nil, err
	}
	return &Backend{Engine: engine}, nil
}
