package backends

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"sync"
	"time"
)

// ServiceLogs writes the log lines of a job's services into the job log for
// CI_DEBUG_SERVICES, each prefixed with "[service:<alias>]", from several
// streams at once without mixing their lines.
type ServiceLogs struct {
	w  io.Writer
	mu sync.Mutex
	wg sync.WaitGroup
}

// NewServiceLogs returns a ServiceLogs writing into w.
func NewServiceLogs(w io.Writer) *ServiceLogs { return &ServiceLogs{w: w} }

// Follow runs stream, which copies one service's log into the writer it is
// given until the log ends or its context is canceled, and writes the
// lines it copies with the service's alias in front.
func (s *ServiceLogs) Follow(alias string, stream func(w io.Writer) error) {
	pr, pw := io.Pipe()
	s.wg.Add(2)
	go func() {
		defer s.wg.Done()
		pw.CloseWithError(stream(pw))
	}()
	go func() {
		defer s.wg.Done()
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64*1024), 1024*1024)
		for sc.Scan() {
			s.mu.Lock()
			fmt.Fprintf(s.w, "[service:%s] %s\n", alias, sc.Text())
			s.mu.Unlock()
		}
		pr.Close()
	}()
}

// Stop gives lines the services already wrote a moment to arrive, then
// cancels the streams' context and waits for them to end.
func (s *ServiceLogs) Stop(cancel context.CancelFunc) {
	time.Sleep(100 * time.Millisecond)
	cancel()
	s.wg.Wait()
}
