// Package earlysignal catches SIGINT and SIGTERM from the first moments of
// the process. berth's main package imports it; it needs only the standard
// library, so Go initialises it before most of the engine client packages,
// whose initialisation takes tens of milliseconds (it is about the 28th of
// some 330 packages, some 9 ms into the process; GODEBUG=inittrace=1). A
// signal that the runner sends while they initialise (a job canceled just
// as a stage starts) is then kept for main, instead of killing berth before
// it can clean up. One before that still ends the process, with nothing
// made yet.
package earlysignal

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

// signals holds the first signal until Context's watcher takes it.
var signals = make(chan os.Signal, 1)

func init() {
	signal.Notify(signals, os.Interrupt, syscall.SIGTERM)
}

// Context returns a copy of parent that is canceled by the first SIGINT or
// SIGTERM, including one that came before the call. Later signals are
// caught and dropped until stop, which restores their default action.
func Context(parent context.Context) (ctx context.Context, stop context.CancelFunc) {
	ctx, cancel := context.WithCancel(parent)
	go func() {
		select {
		case <-signals:
			cancel()
		case <-ctx.Done():
		}
	}()
	return ctx, func() {
		signal.Stop(signals)
		cancel()
	}
}
