package feed

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"slices"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/wa-sidecar/wa-sidecar/procmon"
)

// BenchmarkExitToClient measures how long an exit of the bridge takes to
// reach websocket clients: from the SIGKILL sent to the bridge to each
// client holding the exited event (exit→client), and from the monitor
// emitting the event to each client holding it (emit→client); exit→emit
// is the monitor's part, from the SIGKILL to the event. It reports
// the median and 99th percentile over every client and iteration.
// Run it with e.g. -benchtime=200x.
func BenchmarkExitToClient(b *testing.B) {
	for _, n := range []int{1, 1000} {
		b.Run(fmt.Sprintf("clients=%d", n), func(b *testing.B) { benchExit(b, n) })
	}
}

// arrival is one client holding the exited event; it is decoded only
// once every client has it, so decoding, the client's cost, does not
// delay the clients still waiting.
type arrival struct {
	at     time.Time
	killed time.Time
	msg    []byte
}

func benchExit(b *testing.B, n int) {
	// The clients hold no token: three quarters of the places are open to
	// them, and a quarter of the connections is kept for probes.
	r := newRig(b, Options{MaxClients: 2 * n, MaxConns: 3*n + 64}, "-hang")
	sub, last := r.m.Subscribe(1024)
	defer sub.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	c := r.client(b, "")

	var killedAt atomic.Int64
	arrivals := make(chan arrival, n)
	errs := make(chan error, n)
	marker := []byte(`"event":"exited"`)
	for range n {
		ws, err := c.Events(ctx)
		if err != nil {
			b.Fatal(err)
		}
		defer ws.CloseNow()
		go func() {
			for {
				_, msg, err := ws.Read(ctx)
				if err != nil {
					errs <- err
					return
				}
				now := time.Now()
				if bytes.Contains(msg, marker) {
					arrivals <- arrival{now, time.Unix(0, killedAt.Load()), msg}
				}
			}
		}()
	}
	waitStarted := func() int {
		for {
			select {
			case ev := <-sub.C:
				if ev.Kind == procmon.EventStarted {
					return ev.Pid
				}
			case <-ctx.Done():
				b.Fatal("no started event")
			}
		}
	}
	pid := last.Status.Pid
	if last.Status.State != procmon.StateRunning {
		pid = waitStarted()
	}
	var exits, emits, detects []time.Duration
	b.ResetTimer()
	for range b.N {
		killedAt.Store(time.Now().UnixNano())
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			b.Fatal(err)
		}
		got := make([]arrival, 0, n)
		for range n {
			select {
			case a := <-arrivals:
				got = append(got, a)
			case err := <-errs:
				b.Fatal(err)
			}
		}
		for _, a := range got {
			m, err := DecodeMessage(a.msg)
			if err != nil {
				b.Fatal(err)
			}
			exits = append(exits, a.at.Sub(a.killed))
			emits = append(emits, a.at.Sub(m.At))
			detects = append(detects, m.At.Sub(a.killed))
		}
		pid = waitStarted()
	}
	b.StopTimer()
	report := func(name string, d []time.Duration) {
		slices.Sort(d)
		ms := func(q float64) float64 { return float64(d[int(q*float64(len(d)-1))]) / float64(time.Millisecond) }
		b.ReportMetric(ms(0.50), name+"-p50-ms")
		b.ReportMetric(ms(0.99), name+"-p99-ms")
	}
	report("exit→client", exits)
	report("emit→client", emits)
	report("exit→emit", detects)
	b.ReportMetric(0, "ns/op")
}

// BenchmarkFanoutFloor is the floor under the 1 000-client figure of
// BenchmarkExitToClient on this machine: no websocket, no monitor, no
// queues, only 1 000 loopback TCP connections in this process, one write
// of an event-sized message to each from a single loop, and a reader
// goroutine on each that takes the time when the whole message is in. It
// reports the median and 99th percentile, over all clients and
// iterations, from the first write to each arrival.
func BenchmarkFanoutFloor(b *testing.B) {
	const clients, size = 1000, 1100 // an exited and a backoff event
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	arrivals := make(chan time.Time, clients)
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range clients {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			b.Fatal(err)
		}
		conns = append(conns, c)
		s, err := ln.Accept()
		if err != nil {
			b.Fatal(err)
		}
		conns = append(conns, s)
		go func() {
			buf := make([]byte, size)
			for {
				if _, err := io.ReadFull(c, buf); err != nil {
					return
				}
				arrivals <- time.Now()
			}
		}()
	}
	msg := bytes.Repeat([]byte("x"), size)
	var lat []time.Duration
	b.ResetTimer()
	for range b.N {
		start := time.Now()
		for i := 1; i < len(conns); i += 2 {
			if _, err := conns[i].Write(msg); err != nil {
				b.Fatal(err)
			}
		}
		for range clients {
			lat = append(lat, (<-arrivals).Sub(start))
		}
	}
	b.StopTimer()
	slices.Sort(lat)
	ms := func(q float64) float64 { return float64(lat[int(q*float64(len(lat)-1))]) / float64(time.Millisecond) }
	b.ReportMetric(ms(0.50), "write→client-p50-ms")
	b.ReportMetric(ms(0.99), "write→client-p99-ms")
	b.ReportMetric(0, "ns/op")
}
