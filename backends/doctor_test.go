package backends

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/berthci/berth/config"
)

func TestJudgeMTU(t *testing.T) {
	tests := map[string]struct {
		facts      MTUFacts
		want       Status
		wantDetail string
	}{
		"engine default, uplink not compared": {
			facts: MTUFacts{Network: "bridge", NetworkMTU: 1500, NoUplinkReason: "remote"},
			want:  StatusOK, wantDetail: "remote",
		},
		"network_mtu differs from the default network": {
			facts: MTUFacts{Network: "bridge", NetworkMTU: 1500, ConfiguredMTU: 1400},
			want:  StatusWarn, wantDetail: "docker.network_mtu 1400 differs from the default network's 1500",
		},
		"nested MTU larger than the job network": {
			facts: MTUFacts{Network: "bridge", NetworkMTU: 1400, NestedMTU: 1500},
			want:  StatusWarn, wantDetail: "dind.mtu 1500 exceeds the job network's 1400",
		},
		"everything equal": {
			facts: MTUFacts{Network: "bridge", NetworkMTU: 1400, ConfiguredMTU: 1400, NestedMTU: 1400},
			want:  StatusOK,
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got := JudgeMTU("mtu", tc.facts)
			if got.Status != tc.want || !strings.Contains(got.Detail, tc.wantDetail) {
				t.Errorf("got %s %q, want %s containing %q", got.Status, got.Detail, tc.want, tc.wantDetail)
			}
			if got.Status == StatusWarn && got.Fix == "" {
				t.Errorf("got a WARN without a fix: %+v", got)
			}
		})
	}
}

func TestJudgeMTUComparesTheUplink(t *testing.T) {
	iface, uplink, err := UplinkMTU()
	if err != nil {
		t.Skipf("this host has no IPv4 default route: %v", err)
	}
	over := JudgeMTU("mtu", MTUFacts{Network: "bridge", NetworkMTU: uplink + 100, UplinkCompared: true})
	if over.Status != StatusWarn || !strings.Contains(over.Detail, iface) || !strings.Contains(over.Fix, "docker.network_mtu") {
		t.Errorf("job networks above the uplink %s (%d): got %+v, want a WARN naming the uplink with a network_mtu fix", iface, uplink, over)
	}
	fits := JudgeMTU("mtu", MTUFacts{Network: "bridge", NetworkMTU: uplink, UplinkCompared: true})
	if fits.Status != StatusOK {
		t.Errorf("job networks at the uplink's MTU: got %+v, want OK", fits)
	}
}

func TestJudgeSpace(t *testing.T) {
	const gib = 1 << 30
	tests := map[string]struct {
		free, total        int64
		freeInodes, inodes uint64
		want               Status
	}{
		"plenty":            {free: 100 * gib, total: 200 * gib, freeInodes: 90, inodes: 100, want: StatusOK},
		"under 5 GiB":       {free: 4 * gib, total: 20 * gib, freeInodes: 90, inodes: 100, want: StatusWarn},
		"under 10 percent":  {free: 50 * gib, total: 1000 * gib, freeInodes: 90, inodes: 100, want: StatusWarn},
		"few inodes":        {free: 100 * gib, total: 200 * gib, freeInodes: 5, inodes: 100, want: StatusWarn},
		"under 1 GiB":       {free: gib / 2, total: 200 * gib, freeInodes: 90, inodes: 100, want: StatusFail},
		"no inodes left":    {free: 100 * gib, total: 200 * gib, freeInodes: 0, inodes: 100, want: StatusFail},
		"no inode accounts": {free: 100 * gib, total: 200 * gib, want: StatusOK},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got := JudgeSpace("disk", "dir", tc.free, tc.total, tc.freeInodes, tc.inodes, "/x")
			if got.Status != tc.want {
				t.Errorf("got %s (%s), want %s", got.Status, got.Detail, tc.want)
			}
			if got.Status != StatusOK && got.Fix == "" {
				t.Errorf("got %s without a fix", got.Status)
			}
		})
	}
}

func TestDirCheck(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	tests := map[string]struct {
		path       string
		wantDetail string
		wantFail   bool
	}{
		"exists":           {path: dir, wantDetail: "exists"},
		"creatable":        {path: filepath.Join(dir, "a", "b"), wantDetail: "does not exist yet"},
		"a file":           {path: file, wantDetail: "is not a directory", wantFail: true},
		"under a file":     {path: filepath.Join(file, "x"), wantDetail: "is not a directory", wantFail: true},
		"relative missing": {path: filepath.Join(dir, "new"), wantDetail: "under " + dir},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got := DirCheck("builds-dir", "builds_dir", tc.path)
			if (got.Status == StatusFail) != tc.wantFail || !strings.Contains(got.Detail, tc.wantDetail) {
				t.Errorf("got %s %q, want fail=%v containing %q", got.Status, got.Detail, tc.wantFail, tc.wantDetail)
			}
		})
	}
}

func TestSocketCheck(t *testing.T) {
	dir := t.TempDir()
	listening := filepath.Join(dir, "up.sock")
	ln, err := net.Listen("unix", listening)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	dead := filepath.Join(dir, "dead.sock")
	deadLn, err := net.Listen("unix", dead)
	if err != nil {
		t.Fatal(err)
	}
	deadLn.(*net.UnixListener).SetUnlinkOnClose(false)
	deadLn.Close()
	regular := filepath.Join(dir, "file")
	if err := os.WriteFile(regular, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	tests := map[string]struct {
		path       string
		want       Status
		wantDetail string
	}{
		"listening":      {path: listening, want: StatusOK, wantDetail: "can connect"},
		"nobody listens": {path: dead, want: StatusFail, wantDetail: "connection refused"},
		"missing":        {path: filepath.Join(dir, "none.sock"), want: StatusFail, wantDetail: "does not exist"},
		"not a socket":   {path: regular, want: StatusFail, wantDetail: "is not a socket"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got := SocketCheck("socket", tc.path, "the test socket", "start it")
			if got.Status != tc.want || !strings.Contains(got.Detail, tc.wantDetail) {
				t.Errorf("got %s %q, want %s containing %q", got.Status, got.Detail, tc.want, tc.wantDetail)
			}
			if got.Status == StatusFail && got.Fix == "" {
				t.Errorf("got a FAIL without a fix")
			}
		})
	}
}

func TestRunCheckBoundsAHungCheck(t *testing.T) {
	block := make(chan struct{})
	defer close(block)
	start := time.Now()
	got := RunCheck(context.Background(), 50*time.Millisecond, "engine", func(context.Context) Check {
		<-block // a library that ignores ctx
		return OK("engine", "never")
	})
	if got.Status != StatusFail || !strings.Contains(got.Detail, "no answer within") {
		t.Errorf("got %+v, want a FAIL for no answer", got)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("got RunCheck returning after %s, want about the timeout plus a second", took)
	}
}

func TestRunCheckTurnsAPanicIntoAFail(t *testing.T) {
	got := RunCheck(context.Background(), time.Second, "images", func(context.Context) Check { panic("boom") })
	if got.Status != StatusFail || !strings.Contains(got.Detail, "boom") {
		t.Errorf("got %+v, want a FAIL naming the panic", got)
	}
}

func TestNeededJobImages(t *testing.T) {
	cfg := config.Default().Docker
	cfg.UseHelper = false
	got := NeededJobImages(cfg)
	if len(got) != 2 || got[0].Check != "helper-image" || got[1].Check != "job-image" {
		t.Fatalf("got %+v, want the helper and job images", got)
	}
	if got[0].Unused == "" || got[1].Unused == "" {
		t.Errorf("got %+v, want both unused (no helper, no docker.image)", got)
	}
}

func TestSocketGuardUse(t *testing.T) {
	no, yes := false, true
	cfg := config.Default()
	cfg.Policy.Rules = []config.Rule{{Name: "trusted", SocketGuard: &no}, {Name: "strict", SocketGuard: &yes}}
	guarded, unguarded := SocketGuardUse(cfg, false)
	if !guarded || strings.Join(unguarded, ",") != `guard = false,policy rule "trusted"` {
		t.Errorf("got guarded %v, unguarded by %q; want true and the config and the trusted rule", guarded, unguarded)
	}
}
