package driver

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"strings"
	"testing"
)

type causeError struct{ msg string }

func (e *causeError) Error() string { return e.msg }

func TestErrorIsClassAndAsCause(t *testing.T) {
	cause := &causeError{"engine exploded"}
	err := fmt.Errorf("prepare: %w", &Error{Class: ErrSystem, Err: fmt.Errorf("create network: %w", cause)})
	if !errors.Is(err, ErrSystem) {
		t.Errorf("got errors.Is(err, ErrSystem) false, want true")
	}
	if errors.Is(err, ErrBuild) || errors.Is(err, ErrCanceled) {
		t.Errorf("got %v matching another class, want only ErrSystem", err)
	}
	var got *causeError
	if !errors.As(err, &got) || got != cause {
		t.Errorf("got %v from errors.As, want the cause", got)
	}
	if want := "prepare: create network: engine exploded"; err.Error() != want {
		t.Errorf("got %q, want %q", err.Error(), want)
	}
}

func TestScriptFailed(t *testing.T) {
	err := ScriptFailed(3)
	var classified *Error
	if !errors.As(err, &classified) || classified.ScriptExitCode != 3 {
		t.Fatalf("got %#v, want an *Error with ScriptExitCode 3", err)
	}
	if !errors.Is(err, ErrBuild) {
		t.Errorf("got %v, want a build error", err)
	}
}

func TestClassify(t *testing.T) {
	canceled, cancel := context.WithCancel(context.Background())
	cancel()
	live := context.Background()
	tests := map[string]struct {
		ctx       context.Context
		err       error
		wantClass error
	}{
		"build error kept":           {ctx: live, err: buildErr(errors.New("refused")), wantClass: ErrBuild},
		"build error kept on cancel": {ctx: canceled, err: fmt.Errorf("wrapped: %w", ScriptFailed(1)), wantClass: ErrBuild},
		"system error kept":          {ctx: canceled, err: systemErr(errors.New("engine")), wantClass: ErrSystem},
		"canceled context":           {ctx: canceled, err: errors.New("pull interrupted"), wantClass: ErrCanceled},
		"context.Canceled error":     {ctx: live, err: fmt.Errorf("attach: %w", context.Canceled), wantClass: ErrCanceled},
		"unclassified":               {ctx: live, err: fs.ErrPermission, wantClass: ErrSystem},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got := classify(tc.ctx, tc.err)
			if !errors.Is(got, tc.wantClass) {
				t.Errorf("got %v, want class %v", got, tc.wantClass)
			}
			if !errors.Is(got, tc.err) {
				t.Errorf("got %v, want it to wrap %v", got, tc.err)
			}
		})
	}
	if classify(live, nil) != nil {
		t.Error("got an error for nil, want nil")
	}
}

func TestExitCodesFromEnv(t *testing.T) {
	tests := map[string]struct {
		env     map[string]string
		want    ExitCodes
		wantErr string
	}{
		"defaults": {env: map[string]string{}, want: ExitCodes{Build: 1, System: 2}},
		"empty values": {
			env:  map[string]string{"BUILD_FAILURE_EXIT_CODE": "", "SYSTEM_FAILURE_EXIT_CODE": ""},
			want: ExitCodes{Build: 1, System: 2},
		},
		"custom": {
			env:  map[string]string{"BUILD_FAILURE_EXIT_CODE": "41", "SYSTEM_FAILURE_EXIT_CODE": "42", "BUILD_EXIT_CODE_FILE": "/tmp/code"},
			want: ExitCodes{Build: 41, System: 42, BuildExitCodeFile: "/tmp/code"},
		},
		"not a number": {env: map[string]string{"BUILD_FAILURE_EXIT_CODE": "one"}, wantErr: "BUILD_FAILURE_EXIT_CODE"},
		"zero":         {env: map[string]string{"SYSTEM_FAILURE_EXIT_CODE": "0"}, wantErr: "SYSTEM_FAILURE_EXIT_CODE"},
		"negative":     {env: map[string]string{"SYSTEM_FAILURE_EXIT_CODE": "-2"}, wantErr: "SYSTEM_FAILURE_EXIT_CODE"},
		"over 255":     {env: map[string]string{"BUILD_FAILURE_EXIT_CODE": "256"}, wantErr: "BUILD_FAILURE_EXIT_CODE"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got, err := ExitCodesFromEnv(fakeEnv(tc.env))
			if tc.wantErr != "" {
				if err == nil {
					t.Fatalf("got %+v, want an error naming %s", got, tc.wantErr)
				}
				if !strings.Contains(err.Error(), tc.wantErr) {
					t.Errorf("got %q, want it to name %s", err, tc.wantErr)
				}
				if got.Build < 1 || got.System < 1 {
					t.Errorf("got %+v, want usable codes even on error", got)
				}
				return
			}
			if err != nil {
				t.Fatalf("got %v, want no error", err)
			}
			if got != tc.want {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestHelperStage(t *testing.T) {
	tests := map[string]bool{
		"prepare_script":              true,
		"get_sources":                 true,
		"clear_worktree":              true,
		"restore_cache":               true,
		"download_artifacts":          true,
		"archive_cache":               true,
		"archive_cache_on_failure":    true,
		"upload_artifacts_on_success": true,
		"upload_artifacts_on_failure": true,
		"cleanup_file_variables":      true,
		" get_sources\n":              true,
		"build_script":                false,
		"step_script":                 false,
		"step_release":                false,
		"after_script":                false,
		"unknown_stage":               false,
		"":                            false,
		"GET_SOURCES":                 false,
	}
	for stage, want := range tests {
		t.Run(stage, func(t *testing.T) {
			if got := HelperStage(stage); got != want {
				t.Errorf("got %v, want %v", got, want)
			}
		})
	}
}
