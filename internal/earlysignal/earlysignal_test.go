package earlysignal

import (
	"context"
	"syscall"
	"testing"
	"time"
)

// TestSignalBeforeContextIsKept: a SIGTERM that comes before main asks for
// its context neither kills the process nor is lost.
func TestSignalBeforeContextIsKept(t *testing.T) {
	if err := syscall.Kill(syscall.Getpid(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	// Let the signal arrive before the context exists.
	deadline := time.Now().Add(5 * time.Second)
	for len(signals) == 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	ctx, stop := Context(context.Background())
	defer stop()
	select {
	case <-ctx.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("got no cancellation, want the early SIGTERM to cancel the context")
	}
}
