package backends

import (
	"context"
	"errors"
	"net"
	"os"
	"syscall"
	"testing"
	"time"
)

func TestDialRetryRetriesOnlyTransientErrors(t *testing.T) {
	tests := map[string]struct {
		errs      []error // what each attempt returns; nil connects
		wantCalls int
		wantErr   error
	}{
		"connects at once":          {errs: []error{nil}, wantCalls: 1},
		"refused, then connects":    {errs: []error{syscall.ECONNREFUSED, syscall.ECONNREFUSED, nil}, wantCalls: 3},
		"socket appears":            {errs: []error{&net.OpError{Op: "dial", Err: &os.SyscallError{Syscall: "connect", Err: syscall.ENOENT}}, nil}, wantCalls: 2},
		"gives up after attempts":   {errs: []error{syscall.ECONNREFUSED, syscall.ECONNREFUSED, syscall.ECONNREFUSED, syscall.ECONNREFUSED}, wantCalls: 4, wantErr: syscall.ECONNREFUSED},
		"permission is not retried": {errs: []error{syscall.EACCES, nil}, wantCalls: 1, wantErr: syscall.EACCES},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			calls := 0
			dial := DialRetry{Attempts: 3, Delay: time.Millisecond}.Wrap(func(context.Context, string, string) (net.Conn, error) {
				err := tc.errs[calls]
				calls++
				if err != nil {
					return nil, err
				}
				c, _ := net.Pipe()
				return c, nil
			})
			conn, err := dial(context.Background(), "unix", "/x.sock")
			if conn != nil {
				conn.Close()
			}
			if calls != tc.wantCalls || !errors.Is(err, tc.wantErr) || (tc.wantErr == nil) != (err == nil) {
				t.Errorf("got %d calls and %v, want %d calls and %v", calls, err, tc.wantCalls, tc.wantErr)
			}
		})
	}
}

func TestDialRetryHonoursContext(t *testing.T) {
	dial := DialRetry{Attempts: 10, Delay: time.Hour}.Wrap(func(context.Context, string, string) (net.Conn, error) {
		return nil, syscall.ECONNREFUSED
	})
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := dial(ctx, "unix", "/x.sock"); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("got %v, want the context's error", err)
	}
	calls := 0
	once := DialRetry{Attempts: 10, Delay: time.Millisecond}.Wrap(func(context.Context, string, string) (net.Conn, error) {
		calls++
		return nil, syscall.ECONNREFUSED
	})
	if _, err := once(WithoutDialRetry(context.Background()), "unix", "/x.sock"); err == nil || calls != 1 {
		t.Errorf("WithoutDialRetry: got %d calls, %v; want one failed call", calls, err)
	}
}
