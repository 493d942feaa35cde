package integration

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/berthci/berth/backends"
	"github.com/berthci/berth/backends/backendtest"
	"github.com/berthci/berth/backends/socket"
	"github.com/berthci/berth/config"
)

func TestSocketConformance(t *testing.T) {
	e := newEnv(t, options{})
	cfg, err := config.Load(e.cfgPath, true)
	if err != nil {
		t.Fatal(err)
	}
	log := logrus.New()
	log.SetOutput(testLogWriter{t})
	backendtest.Run(t, backendtest.Harness{
		New: func(t *testing.T) backends.Backend {
			b, err := socket.New(cfg, log)
			if err != nil {
				t.Fatal(err)
			}
			return b
		},
		Job: func(t *testing.T) *backends.Job {
			id := jobIDBase + jobCounter.Add(1)
			return &backends.Job{
				ID: id, ProjectID: 900, ProjectPath: "group/conformance", Runner: e.runner, Backend: socket.Name,
				Image:     backends.Image{Name: busyboxImage, PullPolicies: []string{config.PullIfNotPresent}},
				BuildsDir: filepath.Join(e.root, "builds", e.runner, "conf", time.Now().Format("150405.000000")),
				CacheDir:  filepath.Join(e.root, "cache", "conf"),
				Created:   time.Now(),
			}
		},
		Remaining: func(t *testing.T, job *backends.Job) []string { return e.resources() },
	})
	_ = os.RemoveAll(filepath.Join(e.root, "builds"))
}
