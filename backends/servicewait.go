package backends

import (
	"context"
	"fmt"
	"sync"

	"github.com/sirupsen/logrus"
)

// ServiceWait is prepare's wait for the job's services to listen, which
// runs while prepare makes the rest of the job: the services' start-up
// overlaps with the helper, the proxy and the job container.
type ServiceWait struct {
	ctx      context.Context
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	warnings []string
	log      logrus.FieldLogger
}

// StartServiceWait calls check for each of n services at once. check
// returns "" when the service came up, else the warning to log.
func StartServiceWait(ctx context.Context, n int, log logrus.FieldLogger, check func(ctx context.Context, i int) string) *ServiceWait {
	w := &ServiceWait{ctx: ctx, warnings: make([]string, n), log: log}
	var waitCtx context.Context
	waitCtx, w.cancel = context.WithCancel(ctx)
	for i := range n {
		w.wg.Add(1)
		go func() {
			defer w.wg.Done()
			if warning := check(waitCtx, i); waitCtx.Err() == nil {
				w.warnings[i] = warning
			}
		}()
	}
	return w
}

// Finish waits for every check and logs the warnings; with abort, when
// prepare failed before, it stops the checks instead and logs nothing. A
// nil ServiceWait (no services, or no wait) finishes at once.
func (w *ServiceWait) Finish(abort bool) error {
	if w == nil {
		return nil
	}
	if abort {
		w.cancel()
	} else {
		defer StartSection(w.log, "prepare_wait_services", "Waiting for services").End()
	}
	w.wg.Wait()
	w.cancel()
	if w.ctx.Err() != nil {
		return fmt.Errorf("wait for services: %w", w.ctx.Err())
	}
	if !abort {
		for _, warning := range w.warnings {
			if warning != "" {
				w.log.Warn(warning)
			}
		}
	}
	return nil
}
