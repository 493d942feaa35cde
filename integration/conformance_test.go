package integration

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/berthci/berth/backends"
	"github.com/berthci/berth/backends/backendtest"
	"github.com/berthci/berth/backends/dind"
	"github.com/berthci/berth/backends/socket"
	"github.com/berthci/berth/config"
)

// conformance runs the shared backend suite against the backend that open
// makes from the env's config.
// extra lists leftovers outside Docker.
func conformance(t *testing.T, e *env, name string, open func(*config.Config, logrus.FieldLogger) (backends.Backend, error), extra ...func(t *testing.T) []string) {
	t.Helper()
	cfg, err := config.Load(e.cfgPath, true)
	if err != nil {
		t.Fatal(err)
	}
	log := logrus.New()
	log.SetOutput(testLogWriter{t})
	backendtest.Run(t, backendtest.Harness{
		New: func(t *testing.T) backends.Backend {
			b, err := open(cfg, log)
			if err != nil {
				t.Fatal(err)
			}
			return b
		},
		Job: func(t *testing.T) *backends.Job {
			id := jobIDBase + jobCounter.Add(1)
			return &backends.Job{
				ID: id, ProjectID: 900, ProjectPath: "group/conformance", Runner: e.runner, Backend: name,
				Image:     backends.Image{Name: busyboxImage, PullPolicies: []string{config.PullIfNotPresent}},
				BuildsDir: filepath.Join(e.root, "builds", e.runner, "conformance", time.Now().Format("150405.000000")),
				CacheDir:  filepath.Join(e.root, "cache", "conformance"),
				Created:   time.Now(),
			}
		},
		Remaining: func(t *testing.T, job *backends.Job) []string {
			left := e.resources()
			for _, more := range extra {
				left = append(left, more(t)...)
			}
			return left
		},
	})
}

func TestSocketConformance(t *testing.T) {
	conformance(t, newEnv(t, options{}), socket.Name, func(cfg *config.Config, log logrus.FieldLogger) (backends.Backend, error) {
		b, err := socket.New(cfg, log)
		if err != nil {
			return nil, err
		}
		b.ProxyBinary = berthBinary
		return b, nil
	})
}

func TestDindConformance(t *testing.T) {
	conformance(t, dindEnv(t, ""), dind.Name, func(cfg *config.Config, log logrus.FieldLogger) (backends.Backend, error) {
		b, err := dind.New(cfg, log)
		if err != nil {
			return nil, err
		}
		b.RelayBinary = berthBinary
		return b, nil
	})
}

// TestPodmanConformance checks podman's leftovers after each case, in
// podman as well as in Docker.
func TestPodmanConformance(t *testing.T) {
	e, open, remaining := podmanConformanceEnv(t)
	conformance(t, e, "podman", open, remaining)
}
