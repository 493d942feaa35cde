package dind

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/berthci/berth/backends"
	"github.com/berthci/berth/config"
)

func TestWriteCertsMakesAVerifiableChain(t *testing.T) {
	dir := t.TempDir()
	if err := writeCerts(dir, []string{"docker", "dockerdaemon"}); err != nil {
		t.Fatal(err)
	}
	caPEM, err := os.ReadFile(filepath.Join(dir, "server", "ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		t.Fatal("ca.pem is not PEM")
	}
	cases := map[string]struct {
		file  string
		usage x509.ExtKeyUsage
		name  string
	}{
		"server for docker":       {"server/cert.pem", x509.ExtKeyUsageServerAuth, "docker"},
		"server for a job alias":  {"server/cert.pem", x509.ExtKeyUsageServerAuth, "dockerdaemon"},
		"client for client auth":  {"client/cert.pem", x509.ExtKeyUsageClientAuth, ""},
		"server for the loopback": {"server/cert.pem", x509.ExtKeyUsageServerAuth, "127.0.0.1"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			data, err := os.ReadFile(filepath.Join(dir, tc.file))
			if err != nil {
				t.Fatal(err)
			}
			block, _ := pem.Decode(data)
			cert, err := x509.ParseCertificate(block.Bytes)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := cert.Verify(x509.VerifyOptions{Roots: pool, DNSName: tc.name, KeyUsages: []x509.ExtKeyUsage{tc.usage}}); err != nil {
				t.Errorf("verify: got %v, want a valid chain", err)
			}
		})
	}
	info, err := os.Stat(filepath.Join(dir, "server", "key.pem"))
	if err != nil || info.Mode().Perm() != 0o600 {
		t.Errorf("server key mode: got %v (%v), want 0600", info.Mode().Perm(), err)
	}
	if _, err := clientTLS(dir); err != nil {
		t.Errorf("clientTLS: %v", err)
	}
}

func TestCertsWorkForMutualTLS(t *testing.T) {
	dir := t.TempDir()
	if err := writeCerts(dir, []string{"docker"}); err != nil {
		t.Fatal(err)
	}
	serverCert, err := tls.LoadX509KeyPair(filepath.Join(dir, "server", "cert.pem"), filepath.Join(dir, "server", "key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	caPEM, _ := os.ReadFile(filepath.Join(dir, "server", "ca.pem"))
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{serverCert}, ClientCAs: pool, ClientAuth: tls.RequireAndVerifyClientCert})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err == nil {
			_ = c.(*tls.Conn).Handshake()
			c.Close()
		}
	}()
	cfg, err := clientTLS(dir)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := tls.Dial("tcp", ln.Addr().String(), cfg)
	if err != nil {
		t.Fatalf("mutual TLS handshake: %v", err)
	}
	conn.Close()
}

func newTestBackend(t *testing.T, mutate func(*config.Config)) *Backend {
	t.Helper()
	cfg := config.Default()
	if mutate != nil {
		mutate(cfg)
	}
	return &Backend{cfg: cfg}
}

func TestPlan(t *testing.T) {
	dindSvc := backends.Service{Image: backends.Image{Name: "docker:24-dind"}, Aliases: []string{"dockerdaemon", "docker"}}
	cases := map[string]struct {
		mutate    func(*config.Config)
		job       backends.Job
		wantErr   string
		wantTLS   bool
		wantAlias []string
		wantRest  int
		wantCache bool
	}{
		"defaults": {
			job:     backends.Job{Services: []backends.Service{{Image: backends.Image{Name: "postgres"}, Aliases: []string{"postgres"}}}},
			wantTLS: true, wantAlias: []string{"docker"}, wantRest: 1,
		},
		"dind service is served by the sidecar": {
			job:     backends.Job{Services: []backends.Service{dindSvc}},
			wantTLS: true, wantAlias: []string{"docker", "dockerdaemon"},
		},
		"tls disabled refused": {
			job:     backends.Job{Env: []string{"DOCKER_TLS_CERTDIR="}},
			wantErr: "allow_tls_disabled",
		},
		"tls disabled in the service's variables refused": {
			job:     backends.Job{Services: []backends.Service{{Image: dindSvc.Image, Env: []string{"DOCKER_TLS_CERTDIR="}}}},
			wantErr: "allow_tls_disabled",
		},
		"tls disabled allowed": {
			mutate:  func(c *config.Config) { c.Dind.AllowTLSDisabled = true },
			job:     backends.Job{Env: []string{"DOCKER_TLS_CERTDIR="}},
			wantTLS: false, wantAlias: []string{"docker"},
		},
		"entrypoint override refused": {
			job:     backends.Job{Services: []backends.Service{{Image: backends.Image{Name: "docker:dind", Entrypoint: []string{"sh"}}}}},
			wantErr: "allow_service_overrides",
		},
		"command override refused": {
			job:     backends.Job{Services: []backends.Service{{Image: backends.Image{Name: "docker:dind", Command: []string{"id"}}}}},
			wantErr: "allow_service_overrides",
		},
		"another service may not be docker": {
			job:     backends.Job{Services: []backends.Service{{Image: backends.Image{Name: "evil"}, Aliases: []string{"docker"}}}},
			wantErr: "DinD sidecar",
		},
		"layer cache on": {
			mutate:  func(c *config.Config) { c.Dind.LayerCache = config.LayerCacheProject },
			wantTLS: true, wantAlias: []string{"docker"}, wantCache: true,
		},
		"layer cache opt out": {
			mutate:  func(c *config.Config) { c.Dind.LayerCache = config.LayerCacheProject },
			job:     backends.Job{Env: []string{"BERTH_DIND_CACHE=off"}},
			wantTLS: true, wantAlias: []string{"docker"},
		},
		"layer cache opt in is not possible": {
			job:     backends.Job{Env: []string{"BERTH_DIND_CACHE=on"}},
			wantTLS: true, wantAlias: []string{"docker"},
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			b := newTestBackend(t, tc.mutate)
			job := tc.job
			job.ID, job.Runner, job.BuildsDir, job.ProjectPath = 1, "r", "/builds/r/1", "g/p"
			p, rest, err := b.plan(&job)
			if tc.wantErr != "" {
				var refusal *config.RefusalError
				if err == nil || !errors.As(err, &refusal) || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("got %v, want a refusal mentioning %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if p.tls != tc.wantTLS || strings.Join(p.aliases, ",") != strings.Join(tc.wantAlias, ",") || len(rest) != tc.wantRest || p.cache != tc.wantCache {
				t.Errorf("got tls %v aliases %v rest %d cache %v, want %v %v %d %v", p.tls, p.aliases, len(rest), p.cache, tc.wantTLS, tc.wantAlias, tc.wantRest, tc.wantCache)
			}
			if p.certDir != "/builds/r/1.dind-certs" {
				t.Errorf("cert dir: got %q", p.certDir)
			}
		})
	}
}

func TestParseDevices(t *testing.T) {
	got, err := parseDevices([]string{"/dev/fuse", "/dev/kvm:/dev/kvm:rw"})
	if err != nil || len(got) != 2 || got[0].PathInContainer != "/dev/fuse" || got[1].CgroupPermissions != "rw" {
		t.Errorf("got %+v, %v", got, err)
	}
	if _, err := parseDevices([]string{"fuse"}); err == nil {
		t.Error("a relative device path was accepted")
	}
}

func TestForwardDNSRelaysUDPAndTCP(t *testing.T) {
	// An upstream that answers every query with its own bytes reversed.
	up, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer up.Close()
	go func() {
		buf := make([]byte, 512)
		for {
			n, addr, err := up.ReadFrom(buf)
			if err != nil {
				return
			}
			_, _ = up.WriteTo(reverse(buf[:n]), addr)
		}
	}()
	upTCP, err := net.Listen("tcp", up.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer upTCP.Close()
	go func() {
		for {
			c, err := upTCP.Accept()
			if err != nil {
				return
			}
			buf := make([]byte, 512)
			n, _ := c.Read(buf)
			_, _ = c.Write(reverse(buf[:n]))
			c.Close()
		}
	}()
	probe, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	listen := probe.LocalAddr().String()
	probe.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ForwardDNS(ctx, listen, up.LocalAddr().String()) }()
	defer func() {
		cancel()
		<-done
	}()
	for _, network := range []string{"udp", "tcp"} {
		var reply []byte
		deadline := time.Now().Add(5 * time.Second)
		for time.Now().Before(deadline) {
			conn, err := net.DialTimeout(network, listen, time.Second)
			if err != nil {
				time.Sleep(20 * time.Millisecond)
				continue
			}
			_ = conn.SetDeadline(time.Now().Add(time.Second))
			_, _ = conn.Write([]byte("query"))
			buf := make([]byte, 512)
			n, err := conn.Read(buf)
			conn.Close()
			if err == nil {
				reply = buf[:n]
				break
			}
		}
		if string(reply) != "yreuq" {
			t.Errorf("%s relay: got %q, want %q", network, reply, "yreuq")
		}
	}
}

func reverse(b []byte) []byte {
	out := make([]byte, len(b))
	for i := range b {
		out[len(b)-1-i] = b[i]
	}
	return out
}
