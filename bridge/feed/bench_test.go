package feed

import (
	"bytes"
	"context"
	"fmt"
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

type sample struct{ exit, emit, detect time.Duration }

func benchExit(b *testing.B, n int) {
	r := newRig(b, Options{MaxClients: n + 1}, "-hang")
	sub, last := r.m.Subscribe(1024)
	defer sub.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	c := r.client(b, "")

	var killedAt atomic.Int64
	samples := make(chan sample, n)
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
				// Take the time before any decoding: the decoding is the
				// client's cost, not the sidecar's.
				now := time.Now()
				if !bytes.Contains(msg, marker) {
					continue
				}
				m, err := DecodeMessage(msg)
				if err != nil {
					errs <- err
					return
				}
				killed := time.Unix(0, killedAt.Load())
				samples <- sample{exit: now.Sub(killed), emit: now.Sub(m.At), detect: m.At.Sub(killed)}
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
		for range n {
			select {
			case s := <-samples:
				exits = append(exits, s.exit)
				emits = append(emits, s.emit)
				detects = append(detects, s.detect)
			case err := <-errs:
				b.Fatal(err)
			}
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
