package session

import (
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/wa-sidecar/wa-sidecar/procmon"
)

// Both streams' readers write at once, in batches small and large (and
// lines longer than a batch), while the background writer rotates the
// file: every line of each stream ends up in the files, in its stream's
// order, no file passes the size limit, and EndOutput of one stream
// returns while the other goes on.
func TestBridgeLogTwoStreamsWithTheBackgroundWriter(t *testing.T) {
	dir := t.TempDir()
	bl, err := OpenBridgeLog(BridgeLogConfig{Path: filepath.Join(dir, "bridge.log"), MaxSizeMB: 1, MaxBackups: 1000})
	if err != nil {
		t.Fatal(err)
	}
	sizes := []int{10, 100, 400, 3000, 40 << 10, 200 << 10, 300 << 10}
	var wg sync.WaitGroup
	counts := map[procmon.Stream]int{}
	var cmu sync.Mutex
	for k, s := range []procmon.Stream{procmon.Stdout, procmon.Stderr} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n := 0
			for batch := range 120 {
				size := sizes[(batch*3+k*2)%len(sizes)]
				for written := 0; written < size; {
					pad := strings.Repeat("x", min(size, 100+batch%50))
					if size >= 300<<10 && written == 0 {
						pad = strings.Repeat("y", size) // one long line
					}
					l := fmt.Sprintf("%s %07d %s", s, n, pad)
					bl.WriteLine(procmon.Line{Stream: s, Text: []byte(l)})
					written += len(l) + 1
					n++
				}
				bl.FlushLines(s)
			}
			bl.EndOutput(s)
			cmu.Lock()
			counts[s] = n
			cmu.Unlock()
		}()
	}
	wg.Wait()
	if err := bl.Close(); err != nil {
		t.Fatal(err)
	}
	next := map[string]int{}
	eachLoggedLine(t, dir, 1<<20, func(f, l string) {
		var s string
		var i int
		if _, err := fmt.Sscanf(l, "%s %d", &s, &i); err != nil {
			t.Fatalf("%s: line %.30q", f, l)
		}
		if i != next[s] {
			t.Fatalf("%s: stream %s line %d where %d was due", f, s, i, next[s])
		}
		next[s]++
	})
	for s, n := range counts {
		if next[string(s)] != n {
			t.Errorf("stream %s: %d lines in the files, want %d", s, next[string(s)], n)
		}
	}
}
