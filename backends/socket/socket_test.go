package socket

import (
	"testing"

	"github.com/sirupsen/logrus"

	"github.com/berthci/berth/backends"
	"github.com/berthci/berth/config"
)

func TestGuarded(t *testing.T) {
	on, off := true, false
	tests := map[string]struct {
		configGuard bool
		policy      *bool
		want        bool
	}{
		"config default":         {configGuard: true, want: true},
		"config off":             {configGuard: false, want: false},
		"policy turns it off":    {configGuard: true, policy: &off, want: false},
		"policy turns it on":     {configGuard: false, policy: &on, want: true},
		"policy agrees (guard)":  {configGuard: true, policy: &on, want: true},
		"policy agrees (direct)": {configGuard: false, policy: &off, want: false},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			cfg := config.Default()
			cfg.Socket.Guard = tc.configGuard
			b, err := New(cfg, logrus.New())
			if err != nil {
				t.Fatal(err)
			}
			job := &backends.Job{Policy: backends.JobPolicy{SocketGuard: tc.policy}}
			if got := b.guarded(job); got != tc.want {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
}
