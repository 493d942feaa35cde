// Command demo runs one sample CI job through a built berth exactly as
// gitlab-runner would, and prints its job log. integration/demo.sh provisions
// the host and runs it.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/berthci/berth/integration/runner"
)

func main() {
	backend := flag.String("backend", "socket", "BERTH_BACKEND of the sample job")
	berth := flag.String("berth", "", "berth binary (default: build ./cmd/berth)")
	flag.Parse()
	if err := run(*backend, *berth); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

func run(backend, berth string) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	root, err := os.MkdirTemp("", "berth-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(root)
	if berth == "" {
		berth = filepath.Join(root, "berth")
		if err := runner.BuildBerth(".", berth); err != nil {
			return err
		}
	}
	gitDir := filepath.Join(root, "git")
	repo, err := makeRepo(root, gitDir)
	if err != nil {
		return err
	}
	cfgPath := filepath.Join(root, "config.toml")
	cfg := fmt.Sprintf(`builds_dir = %q
cache_dir = %q
runner_name = "demo"

[policy]
default_backend = "socket"
allowed_backends = ["socket"]

[docker]
helper_image = "berth-test/helper:latest"
runner_binary = "/usr/local/lib/berth-test/gitlab-runner"
pull_policy = ["if-not-present"]
wait_for_services_timeout = "30s"
volumes = [%q]
`, filepath.Join(root, "builds"), filepath.Join(root, "cache"), gitDir+":"+gitDir+":ro")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		return err
	}
	fmt.Printf("berth config (%s):\n%s\n", cfgPath, cfg)
	fmt.Println("---- job log ----")
	emu := &runner.Emulator{Binary: berth, ConfigPath: cfgPath, WorkDir: root, GracefulKillTimeout: 10 * time.Second, Log: os.Stdout}
	job := &runner.Job{
		ID: time.Now().Unix(), ProjectID: 1, ProjectPath: "demo/app", RepoURL: repo,
		Image:          runner.Image{Name: "berth-test/debian:12"},
		Services:       []runner.Image{{Name: "berth-test/http-service:latest", Alias: "web"}},
		Variables:      []runner.Variable{{Key: "BERTH_BACKEND", Value: backend, Public: true}},
		ExtraCustomEnv: map[string]string{"BERTH_BACKEND": backend},
		Script: []string{
			"cat README",
			"curl -s http://web:8080/ && echo",
			"DOCKER_BUILDKIT=0 docker build -q -t berth-demo:latest .",
			"docker run --rm -v $(pwd)/test/int-00:/app/data berth-demo:latest",
			"docker rmi -f berth-demo:latest >/dev/null",
		},
		AfterScript: []string{"echo after_script ran"},
	}
	res, err := emu.RunJob(ctx, job)
	if err != nil {
		return err
	}
	fmt.Println("---- end of job log ----")
	for _, s := range res.Stages {
		fmt.Printf("%-28s exit %-3d %6.2fs\n", s.Name, s.ExitCode, s.Duration.Seconds())
	}
	if res.Failure != "" {
		return fmt.Errorf("job failed (%s failure)", res.Failure)
	}
	fmt.Println("Job succeeded")
	return nil
}

func makeRepo(root, gitDir string) (string, error) {
	return runner.MakeRepo(filepath.Join(root, "work"), filepath.Join(gitDir, "app.git"), map[string]string{
		"README":                  "Hello from the demo project, checked out by berth's helper container.\n",
		"Dockerfile":              "FROM berth-test/busybox:latest\nCMD [\"cat\", \"/app/data/message.txt\"]\n",
		"test/int-00/message.txt": "The seed's bind-mount pattern works: this file came from $CI_PROJECT_DIR/test/int-00.\n",
	})
}
