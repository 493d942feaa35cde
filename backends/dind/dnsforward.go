package dind

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"
)

// ForwardDNS relays DNS over UDP and TCP from listen to upstream until ctx
// ends. berth runs it in a small container on the job network, with
// Docker's embedded resolver (127.0.0.11) as upstream, and points the inner
// daemon at it: the inner daemon's containers cannot use 127.0.0.11
// themselves, so without it they could not resolve the job's service
// aliases.
func ForwardDNS(ctx context.Context, listen, upstream string) error {
	pc, err := net.ListenPacket("udp", listen)
	if err != nil {
		return fmt.Errorf("listen udp %s: %w", listen, err)
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		pc.Close()
		return fmt.Errorf("listen tcp %s: %w", listen, err)
	}
	go func() {
		<-ctx.Done()
		pc.Close()
		ln.Close()
	}()
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); forwardUDP(pc, upstream) }()
	go func() { defer wg.Done(); forwardTCP(ln, upstream) }()
	wg.Wait()
	return nil
}

func forwardUDP(pc net.PacketConn, upstream string) {
	buf := make([]byte, 64*1024)
	for {
		n, client, err := pc.ReadFrom(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		query := append([]byte(nil), buf[:n]...)
		go func() {
			conn, err := net.DialTimeout("udp", upstream, 5*time.Second)
			if err != nil {
				return
			}
			defer conn.Close()
			_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
			if _, err := conn.Write(query); err != nil {
				return
			}
			reply := make([]byte, 64*1024)
			m, err := conn.Read(reply)
			if err != nil {
				return
			}
			_, _ = pc.WriteTo(reply[:m], client)
		}()
	}
}

func forwardTCP(ln net.Listener, upstream string) {
	for {
		client, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		go func() {
			defer client.Close()
			server, err := net.DialTimeout("tcp", upstream, 5*time.Second)
			if err != nil {
				return
			}
			defer server.Close()
			deadline := time.Now().Add(time.Minute)
			_ = client.SetDeadline(deadline)
			_ = server.SetDeadline(deadline)
			go func() { _, _ = io.Copy(server, client) }()
			_, _ = io.Copy(client, server)
		}()
	}
}
