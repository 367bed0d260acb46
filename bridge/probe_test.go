package bridge

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"
)

// One probe at a time: one asked for while another is in flight is not
// sent, but remembered, and the answer comes back for the child it asked.
func TestProbeSchedulerOneAtATime(t *testing.T) {
	release := make(chan struct{})
	var requests atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		<-release
		w.Write([]byte(`{"status":"connected","queueLength":0,"scriptHash":"abc","sendReadReceipts":false}`))
	}))
	defer srv.Close()
	port := srv.Listener.Addr().(*net.TCPAddr).Port

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s := newProbeScheduler(ctx, newProber(), Options{Port: port, HealthTimeout: 10 * time.Second, HealthPeriod: time.Hour})
	defer s.stop()

	s.ask(41)
	s.ask(41) // in flight: only remembered
	close(release)
	r := <-s.results
	if r.pid != 41 || r.err != nil || r.health.Status != ConnectionConnected {
		t.Fatalf("answer %+v", r)
	}
	if !s.landed() {
		t.Fatal("the probe asked for while one was in flight was forgotten")
	}
	if n := requests.Load(); n != 1 {
		t.Fatalf("%d requests while one was in flight, want 1", n)
	}
	if s.landed() {
		t.Fatal("a second landing asks for another probe")
	}
	s.ask(42)
	if r := <-s.results; r.pid != 42 || r.err != nil {
		t.Fatalf("answer after the first %+v", r)
	}
	if s.landed() || requests.Load() != 2 {
		t.Fatalf("after the second: %d requests", requests.Load())
	}
}

// Ending the context ends a probe in flight, and stop waits for it.
func TestProbeSchedulerStopEndsAProbeInFlight(t *testing.T) {
	arrived := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(arrived)
		<-r.Context().Done()
	}))
	defer srv.Close()
	port := srv.Listener.Addr().(*net.TCPAddr).Port

	ctx, cancel := context.WithCancel(context.Background())
	s := newProbeScheduler(ctx, newProber(), Options{Port: port, HealthTimeout: time.Minute, HealthPeriod: time.Hour})
	s.startTicking()
	if s.tickC() == nil {
		t.Fatal("no ticks while ticking")
	}
	s.ask(7)
	<-arrived
	cancel()
	s.stop()
	if s.tickC() != nil {
		t.Fatal("still ticking after stop")
	}
	select {
	case r := <-s.results:
		// The answer may have been taken before the context ended; then
		// it is the cancellation's error.
		if r.err == nil {
			t.Fatalf("a cancelled probe answered %+v", r)
		}
	default:
	}
}
