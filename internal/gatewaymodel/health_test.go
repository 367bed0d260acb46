package gatewaymodel

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func decoded(t *testing.T, s string) map[string]any {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(s))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); err != nil {
		t.Fatal(err)
	}
	return m
}

func TestJudge(t *testing.T) {
	script := filepath.Join(t.TempDir(), "bridge.js")
	write(t, script, "bridge")
	disk := ContentHash(script)
	composite := strings.Repeat("ab", 32)
	for _, tc := range []struct {
		name      string
		health    string // JSON; empty is no answer
		newer     bool
		receipts  bool
		composite bool // compare with a 64-hex hash through Config.ScriptHash
		want      Cause
		why       string
	}{
		{name: "no answer", want: NoBridge},
		{name: "disconnected", health: `{"status":"disconnected","scriptHash":"` + disk + `"}`, want: NotConnected,
			why: "bridge found but not connected (status: disconnected)"},
		{name: "no status", health: `{"scriptHash":"` + disk + `"}`, want: NotConnected, why: "bridge found but not connected (status: unknown)"},
		{name: "status not a string", health: `{"status":true}`, want: NotConnected, why: "bridge found but not connected (status: True)"},
		{name: "connected, same script", health: `{"status":"connected","scriptHash":"` + disk + `"}`},
		{name: "unversioned", health: `{"status":"connected"}`, want: Stale,
			why: "running bridge is stale (running=unversioned, disk=" + disk + ")"},
		{name: "other script", health: `{"status":"connected","scriptHash":"0123456789abcdef"}`, want: Stale,
			why: "running bridge is stale (running=0123456789abcdef, disk=" + disk + ")"},
		{name: "hash a number", health: `{"status":"connected","scriptHash":12}`, want: Stale},
		{name: "older ignores read receipts", health: `{"status":"connected","scriptHash":"` + disk + `","sendReadReceipts":true}`},
		{name: "newer, receipts differ", newer: true, health: `{"status":"connected","scriptHash":"` + disk + `","sendReadReceipts":true}`,
			want: ReadReceipts, why: "running bridge is stale (send_read_receipts config changed)"},
		{name: "newer, receipts agree", newer: true, receipts: true, health: `{"status":"connected","scriptHash":"` + disk + `","sendReadReceipts":true}`},
		{name: "newer, receipts absent are false", newer: true, health: `{"status":"connected","scriptHash":"` + disk + `"}`},
		// Python's bool("false") is True.
		{name: "newer, receipts as a string", newer: true, health: `{"status":"connected","scriptHash":"` + disk + `","sendReadReceipts":"false"}`,
			want: ReadReceipts},
		{name: "newer, receipts 0", newer: true, health: `{"status":"connected","scriptHash":"` + disk + `","sendReadReceipts":0}`},
		{name: "newer, stale and receipts differ", newer: true, health: `{"status":"connected","scriptHash":"0123456789abcdef","sendReadReceipts":true}`,
			want: Stale, why: "running bridge is stale (running=0123456789abcdef, disk=" + disk + ")"},
		{name: "composite hash", composite: true, health: `{"status":"connected","scriptHash":"` + composite + `"}`},
		{name: "composite hash, short report", composite: true, health: `{"status":"connected","scriptHash":"` + disk + `"}`, want: Stale},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := Config{Script: script, Newer: tc.newer, SendReadReceipts: tc.receipts}
			if tc.composite {
				cfg.ScriptHash = func(reported, _ string) (string, bool) { return composite, reported == composite }
			}
			c := New(cfg).cfg
			var h map[string]any
			if tc.health != "" {
				h = decoded(t, tc.health)
			}
			cause, why := judge(h, &c)
			if cause != tc.want || (tc.why != "" && why != tc.why) {
				t.Fatalf("judge = %q, %q; want %q, %q", cause, why, tc.want, tc.why)
			}
		})
	}
}

func TestDecodeJSON(t *testing.T) {
	for _, tc := range []struct {
		contentType, body string
		ok                bool
	}{
		{"application/json; charset=utf-8", `{"a":1}`, true},
		{"Application/JSON", `{"a":1}`, true},
		{"application/vnd.bridge+json", `{"a":1}`, true},
		{"text/plain", `{"a":1}`, false},
		{"", `{"a":1}`, false},
		{"application/json", `{"a":1} {}`, false},
		{"application/json", `{"a":`, false},
		{"application/json", "  ", true},
	} {
		resp := &http.Response{Header: http.Header{}, Body: io.NopCloser(bytes.NewReader([]byte(tc.body)))}
		if tc.contentType != "" {
			resp.Header.Set("Content-Type", tc.contentType)
		}
		if _, err := decodeJSON(resp); (err == nil) != tc.ok {
			t.Errorf("%q %q: err = %v, want ok %v", tc.contentType, tc.body, err, tc.ok)
		}
	}
}

func TestTruthy(t *testing.T) {
	for in, want := range map[string]bool{
		`null`: false, `false`: false, `true`: true, `0`: false, `0.0`: false, `-0`: false, `1e-400`: false,
		`2`: true, `""`: false, `"false"`: true, `[]`: false, `[0]`: true, `{}`: false, `{"a":1}`: true,
	} {
		m := decoded(t, `{"v":`+in+`}`)
		if got := truthy(m["v"]); got != want {
			t.Errorf("truthy(%s) = %v, want %v", in, got, want)
		}
	}
}

func TestNPMWouldInstall(t *testing.T) {
	for _, tc := range []struct {
		name              string
		pkg, stamp        string // empty pkg: no package.json; "-" stamp: no node_modules
		newer, wantNeeded bool
	}{
		{name: "no node_modules", pkg: "{}", stamp: "-", wantNeeded: true},
		{name: "stamp matches", pkg: "{}", stamp: "HASH\n"},
		{name: "stamp differs", pkg: "{}", stamp: "0123456789abcdef", wantNeeded: true},
		{name: "no package.json", stamp: "", wantNeeded: true},
		{name: "byte-order mark, older", pkg: "{}", stamp: "\uFEFFHASH", wantNeeded: true},
		{name: "byte-order mark, newer", pkg: "{}", stamp: "\uFEFFHASH", newer: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if tc.pkg != "" {
				write(t, filepath.Join(dir, "package.json"), tc.pkg)
			}
			if tc.stamp != "-" {
				if err := os.Mkdir(filepath.Join(dir, "node_modules"), 0o700); err != nil {
					t.Fatal(err)
				}
				stamp := strings.ReplaceAll(tc.stamp, "HASH", ContentHash(filepath.Join(dir, "package.json")))
				write(t, filepath.Join(dir, "node_modules", ".hermes-pkg-hash"), stamp)
			}
			if got := npmWouldInstall(dir, tc.newer); got != tc.wantNeeded {
				t.Fatalf("npmWouldInstall = %v, want %v", got, tc.wantNeeded)
			}
		})
	}
}
