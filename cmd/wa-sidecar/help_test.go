package main

import (
	"os/exec"
	"strings"
	"testing"
)

// TestEveryCommandHasExamples runs --help for every visible command of the
// real binary: each must show examples, so nobody has to guess the syntax.
func TestEveryCommandHasExamples(t *testing.T) {
	bin, _ := binaries(t)
	for _, c := range commands() {
		if c.Hidden {
			continue
		}
		t.Run(c.Name, func(t *testing.T) {
			out, err := exec.Command(bin, c.Name, "--help").CombinedOutput()
			if err != nil {
				t.Fatalf("%s --help: %v\n%s", c.Name, err, out)
			}
			if !strings.Contains(string(out), "Examples:\n      wa-sidecar "+c.Name) {
				t.Errorf("%s --help shows no examples of itself:\n%s", c.Name, out)
			}
		})
	}
}
