package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/sirupsen/logrus"

	"github.com/berthci/berth/config"
	"github.com/berthci/berth/driver"
)

func discardLogger(t *testing.T) *logrus.Logger {
	t.Helper()
	log, err := driver.NewLogger(io.Discard, "text")
	if err != nil {
		t.Fatal(err)
	}
	return log
}

func TestExitCode(t *testing.T) {
	refusal := &driver.Error{Class: driver.ErrBuild, Err: &config.RefusalError{What: "backend", Value: "dind", Project: "g/p", Allowed: []string{"socket"}}}
	tests := map[string]struct {
		err      error
		want     int
		wantFile string // "" means no file is written
	}{
		"success":              {err: nil, want: 0},
		"script failure":       {err: fmt.Errorf("stage build_script: %w", driver.ScriptFailed(3)), want: 41, wantFile: "3"},
		"policy refusal":       {err: refusal, want: 41},
		"system failure":       {err: &driver.Error{Class: driver.ErrSystem, Err: errors.New("engine unreachable")}, want: 42},
		"canceled":             {err: &driver.Error{Class: driver.ErrCanceled, Err: context.Canceled}, want: 41},
		"unclassified failure": {err: errors.New("something odd"), want: 42},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			file := filepath.Join(t.TempDir(), "build-exit-code")
			codes := driver.ExitCodes{Build: 41, System: 42, BuildExitCodeFile: file}
			if got := exitCode(tc.err, codes, discardLogger(t)); got != tc.want {
				t.Errorf("got exit code %d, want %d", got, tc.want)
			}
			data, err := os.ReadFile(file)
			switch {
			case tc.wantFile == "" && !errors.Is(err, os.ErrNotExist):
				t.Errorf("got BUILD_EXIT_CODE_FILE %q (%v), want none written", data, err)
			case tc.wantFile != "" && err != nil:
				t.Errorf("got %v reading BUILD_EXIT_CODE_FILE, want %q", err, tc.wantFile)
			case tc.wantFile != "" && string(data) != tc.wantFile:
				t.Errorf("got BUILD_EXIT_CODE_FILE %q, want %q", data, tc.wantFile)
			}
		})
	}
}

func TestExitCodeWithoutExitCodeFile(t *testing.T) {
	codes := driver.ExitCodes{Build: 41, System: 42}
	if got := exitCode(driver.ScriptFailed(3), codes, discardLogger(t)); got != 41 {
		t.Errorf("got %d, want 41", got)
	}
}

func TestExitCodeUnwritableFile(t *testing.T) {
	codes := driver.ExitCodes{Build: 41, System: 42, BuildExitCodeFile: filepath.Join(t.TempDir(), "missing-dir", "code")}
	if got := exitCode(driver.ScriptFailed(3), codes, discardLogger(t)); got != 42 {
		t.Errorf("got %d, want the system code 42", got)
	}
}

// runEnv clears the runner variables run reads, then sets vars.
func runEnv(t *testing.T, vars map[string]string) {
	t.Helper()
	for _, k := range []string{"BUILD_FAILURE_EXIT_CODE", "SYSTEM_FAILURE_EXIT_CODE", "BUILD_EXIT_CODE_FILE", "JOB_RESPONSE_FILE", "BERTH_CONFIG"} {
		t.Setenv(k, "")
	}
	for k, v := range vars {
		t.Setenv(k, v)
	}
}

func TestRun(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "missing.toml")
	codes := map[string]string{"BUILD_FAILURE_EXIT_CODE": "41", "SYSTEM_FAILURE_EXIT_CODE": "42"}
	tests := map[string]struct {
		args []string
		env  map[string]string
		want int
	}{
		"version":                      {args: []string{"version"}, env: codes, want: 0},
		"prepare, missing --config":    {args: []string{"prepare", "--config", missing}, env: codes, want: 42},
		"config, missing BERTH_CONFIG": {args: []string{"config"}, env: map[string]string{"SYSTEM_FAILURE_EXIT_CODE": "42", "BERTH_CONFIG": missing}, want: 42},
		"prepare without job payload":  {args: []string{"prepare", "--config", writeConfig(t)}, env: codes, want: 42},
		"unknown command":              {args: []string{"launch"}, env: codes, want: 42},
		"run without arguments":        {args: []string{"run"}, env: codes, want: 42},
		"bad log format":               {args: []string{"version", "--log-format", "xml"}, env: codes, want: 42},
		"help":                         {args: []string{"--help"}, env: codes, want: 0},
		"help with invalid exit code":  {args: []string{"--help"}, env: map[string]string{"BUILD_FAILURE_EXIT_CODE": "x"}, want: 0},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			runEnv(t, tc.env)
			got, panicked := runRecovering(tc.args)
			if panicked != nil {
				t.Fatalf("got panic %v, want exit code %d", panicked, tc.want)
			}
			if got != tc.want {
				t.Errorf("got exit code %d, want %d", got, tc.want)
			}
		})
	}
}

// runRecovering calls run and turns a panic into a value, so one crashing
// case does not hide the others.
func runRecovering(args []string) (code int, panicked any) {
	defer func() { panicked = recover() }()
	return run(context.Background(), args), nil
}

func writeConfig(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "config.toml")
	if err := os.WriteFile(path, []byte("runner_name = \"test\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}
