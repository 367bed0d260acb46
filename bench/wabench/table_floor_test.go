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
