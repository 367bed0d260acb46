package bridge

import (
	"math"
	"testing"
	"time"
)

// Each step happens at a time, given in seconds after t0, and checks what
// the detector answers then.
func TestFlapDetector(t *testing.T) {
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	at := func(s float64) time.Time { return t0.Add(time.Duration(math.Round(s*1000)) * time.Millisecond) }
	const (
		flip     = "flip"     // want n and began
		settle   = "settle"   // want settled
		settleIn = "settleIn" // want in and ok
	)
	type step struct {
		op      string
		at      float64
		n       int
		began   bool
		settled bool
		in      time.Duration
		ok      bool
	}
	ms := time.Millisecond
	cases := []struct {
		name  string
		steps []step
	}{
		{"a flip alone is no flapping", []step{
			{op: flip, at: 0, n: 1},
			{op: settleIn, at: 0},
			{op: settle, at: 100},
		}},
		{"more flips than the limit in the window", []step{
			{op: flip, at: 0, n: 1},
			{op: flip, at: 1, n: 2},
			{op: flip, at: 2, n: 3, began: true},
			// It has begun: the next flip does not begin it again.
			{op: flip, at: 3, n: 4},
		}},
		{"flips spread wider than the window never flap", []step{
			{op: flip, at: 0, n: 1},
			{op: flip, at: 6, n: 2},
			{op: flip, at: 12, n: 2}, // the one at 0 has left the window
			{op: flip, at: 20, n: 2},
		}},
		{"a flip exactly one window old still counts", []step{
			{op: flip, at: 0, n: 1},
			{op: flip, at: 5, n: 2},
			{op: flip, at: 10, n: 3, began: true},
		}},
		{"it settles when the flip limit+1 from the newest leaves the window", []step{
			{op: flip, at: 0, n: 1},
			{op: flip, at: 1, n: 2},
			{op: flip, at: 2, n: 3, began: true},
			// Two flips (the limit) must remain: the one at 0 leaves at
			// 10, and a millisecond later the window is past it.
			{op: settleIn, at: 2, in: 8*time.Second + ms, ok: true},
			{op: settleIn, at: 9, in: time.Second + ms, ok: true},
			{op: settle, at: 10},
			{op: settle, at: 10.001, settled: true},
			{op: settleIn, at: 10.001},
			// Settled, it can begin again.
			{op: flip, at: 10.5, n: 3, began: true},
		}},
		{"a new flip while flapping pushes the end later", []step{
			{op: flip, at: 0, n: 1},
			{op: flip, at: 1, n: 2},
			{op: flip, at: 2, n: 3, began: true},
			{op: flip, at: 4, n: 4},
			{op: settleIn, at: 4, in: 7*time.Second + ms, ok: true}, // the one at 1 has to leave
			{op: settle, at: 10.5},
			{op: settle, at: 11.001, settled: true},
		}},
		{"an end already due is due now", []step{
			{op: flip, at: 0, n: 1},
			{op: flip, at: 1, n: 2},
			{op: flip, at: 2, n: 3, began: true},
			{op: settleIn, at: 30, in: 0, ok: true},
			{op: settle, at: 30, settled: true},
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := flapDetector{limit: 2, window: 10 * time.Second}
			for i, s := range tc.steps {
				switch s.op {
				case flip:
					if n, began := f.flip(at(s.at)); n != s.n || began != s.began {
						t.Fatalf("step %d, flip at %gs: %d flips, began %t; want %d, %t", i, s.at, n, began, s.n, s.began)
					}
				case settle:
					if got := f.settle(at(s.at)); got != s.settled {
						t.Fatalf("step %d, settle at %gs: %t, want %t", i, s.at, got, s.settled)
					}
				case settleIn:
					if in, ok := f.settleIn(at(s.at)); in != s.in || ok != s.ok {
						t.Fatalf("step %d, settleIn at %gs: %s, %t; want %s, %t", i, s.at, in, ok, s.in, s.ok)
					}
				}
			}
		})
	}
}
