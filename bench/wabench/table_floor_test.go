package main

import (
	"strings"
	"testing"
)

// TestTableJSONFloorLabel: with pipe-json2 measured but not pipe-json, the
// two-thread C floor must not read as part of "to a file directly".
func TestTableJSONFloorLabel(t *testing.T) {
	res := map[string]*result{
		"pipe-cat":   {output: []int64{150e6}},
		"floor":      {output: []int64{75e6}},
		"pipe-json2": {output: []int64{200e6}},
		"wa-sidecar": {output: []int64{300e6}},
	}
	out := table(&config{}, nil, res)
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, "default (`--bridge-output log`)") && strings.Contains(l, "to a file directly 0.075 s (0.50×), two threads") {
			t.Fatalf("the two-thread JSON floor is labelled as the direct file: %s", l)
		}
	}
}

// The respawn and fan-out rows name each floor and give the sidecar's
// ratio to the Go floor and to the websocket floor beside the goal's.
func TestTableGoAndWebsocketFloors(t *testing.T) {
	res := map[string]*result{
		"floor": {respawn: []int64{1e6}, respawnGo: []int64{1.2e6}, notify: []int64{2e5}, notifyGo: []int64{3e5},
			fanout: []int64{10e6}, fanoutWS: map[int][]int64{1: {12e6}, 4: {16e6}}},
		"wa-sidecar": {respawn: []int64{1.5e6}, notify: []int64{6e5}, fanout: []int64{24e6}, fanClients: 1000},
	}
	out := table(&config{clients: 1000}, nil, res)
	want := []string{
		"| C: 1.00 ms", "; Go: 1.20 ms", "**not met**: 1.50× (+ 0.50 ms) (1.25× the Go floor, + 0.30 ms)",
		"C parent's waitpid: 0.20 ms", "; Go parent's wait4: 0.30 ms",
		"coder/websocket, the exited event alone: 12.00 ms", "coder/websocket, the sidecar's exited, backoff, starting, started events: 16.00 ms",
		"**not met**: 2.40× (1.50× the same events through coder/websocket)",
	}
	for _, w := range want {
		if !strings.Contains(out, w) {
			t.Errorf("the table lacks %q:\n%s", w, out)
		}
	}
}
