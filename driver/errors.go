package driver

import (
	"context"
	"errors"
	"fmt"

	"github.com/berthci/berth/config"
)

// Failure classes. Every error a stage returns is classified once, here at
// the boundary, into one of them; cmd/berth maps the class to the runner's
// exit code.
var (
	// ErrBuild is the job's own failure: its script failed, or it asked for
	// something the admin's policy refuses. The runner does not retry it.
	ErrBuild = errors.New("build failure")
	// ErrSystem is an infrastructure failure: engine trouble, bad admin
	// config, a failed pull. The runner retries prepare on it.
	ErrSystem = errors.New("system failure")
	// ErrCanceled is a stage stopped by SIGTERM or SIGINT.
	ErrCanceled = errors.New("canceled")
)

// Error is a classified stage failure. errors.Is(err, ErrSystem) tests its
// class and errors.As reaches its cause.
type Error struct {
	Class error
	Err   error
	// ScriptExitCode is the user script's exit code for a build failure that
	// the script itself caused; 0 otherwise.
	ScriptExitCode int
}

func (e *Error) Error() string { return e.Err.Error() }

// Unwrap returns both the cause and the class sentinel.
func (e *Error) Unwrap() []error { return []error{e.Err, e.Class} }

// ScriptFailed is the error of a user script that exited with code.
func ScriptFailed(code int) error {
	return &Error{Class: ErrBuild, Err: fmt.Errorf("script failed with exit code %d", code), ScriptExitCode: code}
}

// classify wraps err in its failure class. An error that is already
// classified keeps its class; an unclassified one is a system failure unless
// the context was canceled.
func classify(ctx context.Context, err error) error {
	if err == nil {
		return nil
	}
	var classified *Error
	if errors.As(err, &classified) {
		return err
	}
	if ctx.Err() != nil || errors.Is(err, context.Canceled) {
		return &Error{Class: ErrCanceled, Err: err}
	}
	// A backend refusing what the job asked for is the job's fault.
	var refusal *config.RefusalError
	if errors.As(err, &refusal) {
		return &Error{Class: ErrBuild, Err: err}
	}
	return &Error{Class: ErrSystem, Err: err}
}

func buildErr(err error) error  { return &Error{Class: ErrBuild, Err: err} }
func systemErr(err error) error { return &Error{Class: ErrSystem, Err: err} }
