package feed

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/wa-sidecar/wa-sidecar/procmon"
)

func TestDecodeOp(t *testing.T) {
	for _, tc := range []struct {
		in, op, id, err string
	}{
		{in: `{"op":"restart","id":"r1"}`, op: "restart", id: `"r1"`},
		{in: `{"op":"status","id":42}`, op: "status", id: `42`},
		{in: `{"op":"ping"}`, op: "ping"},
		{in: `{"op":"ping","id":null}`, op: "ping"},
		{in: `{"op":"ping","future":true}`, op: "ping"},
		{in: ``, err: "not a JSON object"},
		{in: `null`, err: "not a JSON object"},
		{in: `"ping"`, err: "not a JSON object"},
		{in: `{"op":"ping"`, err: "not a JSON object"},
		{in: `{}`, err: `missing "op"`},
		{in: `{"op":"kill","id":"k"}`, op: "kill", id: `"k"`, err: `unknown op "kill"`},
		{in: `{"op":["ping"]}`, err: `"op" must be a string`},
		{in: `{"op":"ping","id":true}`, err: `"id" must be a string or a number`},
		{in: `{"op":"ping","id":"` + strings.Repeat("x", 200) + `"}`, err: "longer than"},
	} {
		op, err := DecodeOp([]byte(tc.in))
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%s: error %v, want %q", tc.in, err, tc.err)
			}
		} else if err != nil {
			t.Errorf("%s: %v", tc.in, err)
		}
		if op.Op != tc.op || string(op.ID) != tc.id {
			t.Errorf("%s: op %q id %s, want %q %s", tc.in, op.Op, op.ID, tc.op, tc.id)
		}
	}
}

func intp(n int) *int       { return &n }
func strp(s string) *string { return &s }

func TestEncodeEventFlattens(t *testing.T) {
	at := time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)
	status := []byte(`{"state":"backoff"}`)
	for _, tc := range []struct {
		name string
		ev   procmon.Event
		want string
	}{
		{"exit code", procmon.Event{Seq: 7, At: at, Kind: procmon.EventExited, Pid: 12,
			Exit: &procmon.ExitRecord{Pid: 12, Code: intp(1), ReturnCode: 1, Class: procmon.ClassFailure, UptimeMS: 1500, Tail: []string{"❌ Logged out."}}},
			`{"type":"event","seq":7,"at":"2026-01-02T03:04:05.000000006Z","event":"exited","pid":12,"code":1,"signal":null,"returncode":1,"class":"failure","requested":false,"uptime_ms":1500,"tail":["❌ Logged out."],"status":{"state":"backoff"}}`},
		{"signal", procmon.Event{Seq: 8, At: at, Kind: procmon.EventExited, Pid: 12,
			Exit: &procmon.ExitRecord{Pid: 12, Signal: strp("SIGTERM"), ReturnCode: -15, Class: procmon.ClassShutdown}},
			`{"type":"event","seq":8,"at":"2026-01-02T03:04:05.000000006Z","event":"exited","pid":12,"code":null,"signal":"SIGTERM","returncode":-15,"class":"shutdown","requested":false,"uptime_ms":0,"tail":[],"status":{"state":"backoff"}}`},
		{"escaped", procmon.Event{Seq: 13, At: at, Kind: procmon.EventExited, Pid: 12,
			Exit: &procmon.ExitRecord{Pid: 12, Code: intp(0), Class: procmon.ClassFailure, Escaped: []procmon.Escapee{{Pid: 40, Name: "node"}}, EscapedStopped: true}},
			`{"type":"event","seq":13,"at":"2026-01-02T03:04:05.000000006Z","event":"exited","pid":12,"code":0,"signal":null,"returncode":0,"class":"failure","requested":false,"uptime_ms":0,"tail":[],"escaped":[{"pid":40,"name":"node"}],"escaped_stopped":true,"status":{"state":"backoff"}}`},
		{"spawn failed", procmon.Event{Seq: 9, At: at, Kind: procmon.EventSpawnFailed,
			Exit: &procmon.ExitRecord{Class: procmon.ClassFailure, Error: "not found", Tail: []string{}}},
			`{"type":"event","seq":9,"at":"2026-01-02T03:04:05.000000006Z","event":"spawn_failed","pid":0,"code":null,"signal":null,"returncode":null,"class":"failure","requested":false,"uptime_ms":0,"tail":[],"error":"not found","status":{"state":"backoff"}}`},
		{"backoff", procmon.Event{Seq: 10, At: at, Kind: procmon.EventBackoff, DelayMS: 2000, Attempt: 3, Reason: "failure"},
			`{"type":"event","seq":10,"at":"2026-01-02T03:04:05.000000006Z","event":"backoff","delay_ms":2000,"attempt":3,"reason":"failure","status":{"state":"backoff"}}`},
		{"stopping", procmon.Event{Seq: 11, At: at, Kind: procmon.EventStopping, Pid: 12, Signal: "SIGTERM"},
			`{"type":"event","seq":11,"at":"2026-01-02T03:04:05.000000006Z","event":"stopping","pid":12,"signal":"SIGTERM","status":{"state":"backoff"}}`},
		{"extras", procmon.Event{Seq: 12, At: at, Kind: "connection", Data: map[string]any{"b": 2, "a": "x", "status": "no", "x y": 1}, Private: map[string]any{"qr": "secret"}},
			`{"type":"event","seq":12,"at":"2026-01-02T03:04:05.000000006Z","event":"connection","a":"x","b":2,"status":{"state":"backoff"}}`},
	} {
		got, _ := encodeEvent(tc.ev, status, false)
		if string(got) != tc.want {
			t.Errorf("%s:\n got %s\nwant %s", tc.name, got, tc.want)
		}
		if !json.Valid(got) {
			t.Errorf("%s: invalid JSON", tc.name)
		}
	}
	ev := procmon.Event{Kind: "pairing", Data: map[string]any{"bad": make(chan int)}, Private: map[string]any{"qr": "secret"}}
	got, skipped := encodeEvent(ev, status, true)
	if !strings.Contains(string(got), `"qr":"secret"`) || len(skipped) != 1 || !json.Valid(got) {
		t.Fatalf("private encoding %s, skipped %v", got, skipped)
	}
}

// A child that never ran has no return code: the snapshot's last_exit
// says null, as the spawn_failed event does, not a clean-looking 0.
func TestSpawnFailureHasNoReturnCode(t *testing.T) {
	for _, tc := range []struct {
		rec  procmon.ExitRecord
		want string
	}{
		{procmon.ExitRecord{Class: procmon.ClassFailure, Error: "not found"}, `"returncode":null`},
		{procmon.ExitRecord{Code: intp(0), Class: procmon.ClassFailure}, `"returncode":0`},
	} {
		b, err := json.Marshal(procmon.Status{LastExit: &tc.rec})
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(b), tc.want) || strings.Count(string(b), `"returncode"`) != 1 {
			t.Errorf("%+v marshals as %s, want %s once", tc.rec, b, tc.want)
		}
	}
}

func TestDecodeMessage(t *testing.T) {
	m, err := DecodeMessage([]byte(`{"type":"event","seq":3,"at":"2026-01-02T03:04:05Z","event":"exited","pid":9,"code":null,"signal":"SIGKILL","returncode":-9,"class":"shutdown","requested":false,"uptime_ms":5,"tail":["a"],"status":{"state":"backoff","pid":0}}`))
	if err != nil {
		t.Fatal(err)
	}
	rec := m.Exit()
	if rec == nil || rec.Pid != 9 || rec.Code != nil || *rec.Signal != "SIGKILL" || rec.ReturnCode != -9 || rec.Describe() != "SIGKILL (normal shutdown)" {
		t.Fatalf("Exit() = %+v", rec)
	}
	if m.Status == nil || m.Status.State != procmon.StateBackoff {
		t.Fatalf("status %+v", m.Status)
	}
	for _, bad := range []string{``, `[]`, `null`, `{}`, `{"type":1}`, `{"type":"event","seq":-1}`} {
		if _, err := DecodeMessage([]byte(bad)); err == nil {
			t.Errorf("%q decoded without error", bad)
		}
	}
	if m, err := DecodeMessage([]byte(`{"type":"future","x":1}`)); err != nil || m.Type != "future" || m.Exit() != nil {
		t.Errorf("unknown type: %+v %v", m, err)
	}
}

// FuzzDecodeOp feeds the op decoder what a client might send. It must
// never panic, and what it accepts must be an op it knows, with an id it
// can echo as valid JSON.
func FuzzDecodeOp(f *testing.F) {
	for _, s := range []string{`{"op":"restart","id":"1"}`, `{"op":"ping","id":-1.5e3}`, `{"op":null}`, `{"id":"\u0000"}`, `[`, `{"op":"status","op":"stop"}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		op, err := DecodeOp(b)
		if op.ID != nil && !json.Valid(op.ID) {
			t.Fatalf("id %q is not valid JSON", op.ID)
		}
		if err == nil && !isKnownOp(op.Op) {
			t.Fatalf("accepted unknown op %q", op.Op)
		}
		res, merr := json.Marshal(Result{Type: TypeResult, ID: op.ID})
		if merr != nil || !json.Valid(res) {
			t.Fatalf("result for %q does not encode: %v", b, merr)
		}
	})
}

func isKnownOp(s string) bool {
	for _, o := range ops {
		if o == s {
			return true
		}
	}
	return false
}

// FuzzDecodeMessage feeds the client's decoder what a server might send.
func FuzzDecodeMessage(f *testing.F) {
	for _, s := range []string{
		`{"type":"hello","protocol":1,"sidecar":{"version":"1","pid":1},"seq":0,"control":false,"status":{"state":"starting"}}`,
		`{"type":"event","seq":2,"at":"2026-01-02T03:04:05Z","event":"exited","pid":1,"code":1,"signal":null,"tail":["x"],"status":{}}`,
		`{"type":"result","id":"1","ok":false,"error":"no"}`,
		`{"type":"event","event":"exited","tail":7}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := DecodeMessage(b)
		if err != nil {
			return
		}
		if m.Type == "" {
			t.Fatal("accepted a message without a type")
		}
		m.Exit()
	})
}
