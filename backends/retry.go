package backends

import (
	"context"
	"errors"
	"fmt"
	"net"
	"syscall"
	"time"
)

// maxRetryDelay caps the doubling delay between connection attempts.
const maxRetryDelay = 4 * time.Second

// DialRetry is how berth connects to an engine that is briefly away, as
// when its daemon restarts: a refused connection, or a unix socket that is
// not there yet, is tried again Attempts more times, Delay apart at first,
// doubling up to 4 s. Only connecting is retried: a request the engine has
// received may have had effects, so it is never sent twice.
type DialRetry struct {
	Attempts int
	Delay    time.Duration
}

type noRetryKey struct{}

// WithoutDialRetry marks ctx so that dials under it are tried once, for
// callers that want to know whether the engine answers right now.
func WithoutDialRetry(ctx context.Context) context.Context {
	return context.WithValue(ctx, noRetryKey{}, true)
}

// TransientDialError reports whether a dial error may pass by itself.
func TransientDialError(err error) bool {
	return errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.EAGAIN)
}

// Wrap returns dial with the retries.
func (r DialRetry) Wrap(dial func(ctx context.Context, network, addr string) (net.Conn, error)) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		delay := r.Delay
		for attempt := 0; ; attempt++ {
			conn, err := dial(ctx, network, addr)
			if err == nil || !TransientDialError(err) || attempt >= r.Attempts || ctx.Value(noRetryKey{}) != nil {
				if err != nil && attempt > 0 {
					err = fmt.Errorf("%w (after %d attempts)", err, attempt+1)
				}
				return conn, err
			}
			select {
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-time.After(delay):
			}
			delay = min(2*delay, maxRetryDelay)
		}
	}
}
