package proctest

import (
	"testing"
	"time"
)

// Events reads one subscription's stream of events for a test, keeping
// every event it passes over so that a failure can say what came instead.
// E is always procmon.Event and K procmon.Kind; the type parameters only
// keep this package from importing procmon.
type Events[E any, K comparable] struct {
	C    <-chan E       // the stream
	Err  func() error   // why C was closed
	Kind func(E) K      // an event's kind
	Seq  func(E) uint64 // an event's sequence number; a gap fails the test
	Seen []E            // every event read so far, in order
}

// Next waits for the next event of one of kinds. The 20 s deadline only
// stops a test that would hang; no test depends on how fast anything
// happens.
func (s *Events[E, K]) Next(t testing.TB, kinds ...K) E {
	t.Helper()
	deadline := time.After(20 * time.Second)
	for {
		select {
		case ev, ok := <-s.C:
			if !ok {
				t.Fatalf("event stream ended (%v) while waiting for %v; seen %v", s.Err(), kinds, s.Kinds())
			}
			if n := len(s.Seen); n > 0 && s.Seq(ev) != s.Seq(s.Seen[n-1])+1 {
				t.Fatalf("sequence gap: %d after %d", s.Seq(ev), s.Seq(s.Seen[n-1]))
			}
			s.Seen = append(s.Seen, ev)
			for _, k := range kinds {
				if s.Kind(ev) == k {
					return ev
				}
			}
		case <-deadline:
			t.Fatalf("timed out waiting for %v; seen %v", kinds, s.Kinds())
		}
	}
}

// NextUnless is Next, but fails the test if one of forbidden comes first.
func (s *Events[E, K]) NextUnless(t testing.TB, want K, forbidden ...K) E {
	t.Helper()
	ev := s.Next(t, append([]K{want}, forbidden...)...)
	if s.Kind(ev) != want {
		t.Fatalf("got %v while waiting for %v; seen %v", s.Kind(ev), want, s.Kinds())
	}
	return ev
}

// Saw reports whether an event of kind has been read.
func (s *Events[E, K]) Saw(kind K) bool {
	for _, ev := range s.Seen {
		if s.Kind(ev) == kind {
			return true
		}
	}
	return false
}

// Kinds lists the kinds of the events read so far.
func (s *Events[E, K]) Kinds() []K {
	out := make([]K, len(s.Seen))
	for i, ev := range s.Seen {
		out[i] = s.Kind(ev)
	}
	return out
}
