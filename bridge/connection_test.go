package bridge

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"github.com/wa-sidecar/wa-sidecar/procmon"
)

// The details' JSON is what clients of the status feed read: these are the
// bytes the sidecar sent before Details became comparable, and must stay.
func TestDetailsJSON(t *testing.T) {
	cases := []struct {
		name string
		det  Details
		want string
	}{
		{"no bridge, no port", Details{Connection: ConnectionDown, Health: HealthOff},
			`{"connection":"down","health":"off","flapping":false,"bridge_pid":0}`},
		{"every field, the reported ones zero", Details{
			Connection: ConnectionConnected, Health: HealthFailing, HealthFailures: 2,
			HealthError: "GET /health on port 3000 did not answer within 2s",
			QueueLength: reported(0), ScriptHash: "0123456789abcdef", SendReadReceipts: reported(false),
			Flapping: true, QRCodes: 3, User: User{ID: "1@s.whatsapp.net", Name: "Ann"}, Port: 3000,
			Adoption: &Adoption{Reasons: []AdoptionNote{{Code: "no_creds", Message: "m"}},
				Warnings: []AdoptionNote{{Code: "npm_stamp_differs", Message: "w"}}, DiskHash: "fedcba9876543210"},
			BridgePid: 812,
		}, `{"connection":"connected","health":"failing","health_failures":2,"health_error":"GET /health on port 3000 did not answer within 2s",` +
			`"queue_length":0,"script_hash":"0123456789abcdef","send_read_receipts":false,"flapping":true,"qr_codes":3,` +
			`"user":{"id":"1@s.whatsapp.net","name":"Ann"},"port":3000,"adoption":{"adoptable":false,"reasons":[{"code":"no_creds","message":"m"}],` +
			`"warnings":[{"code":"npm_stamp_differs","message":"w"}],"disk_hash":"fedcba9876543210"},"bridge_pid":812}`},
		{"some fields", Details{Connection: ConnectionPairing, Health: HealthOK, QueueLength: reported(7), User: User{Name: "Bob"}, BridgePid: 9},
			`{"connection":"pairing","health":"ok","queue_length":7,"flapping":false,"user":{"name":"Bob"},"bridge_pid":9}`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b, err := json.Marshal(tc.det)
			if err != nil {
				t.Fatal(err)
			}
			if string(b) != tc.want {
				t.Fatalf("JSON\n%s\nwant\n%s", b, tc.want)
			}
			// A client can read it back: the same details, apart from the
			// adoption verdict, which is compared by pointer.
			var back Details
			if err := json.Unmarshal(b, &back); err != nil {
				t.Fatal(err)
			}
			if !back.Adoption.equal(tc.det.Adoption) {
				t.Fatalf("adoption read back as %+v, want %+v", back.Adoption, tc.det.Adoption)
			}
			back.Adoption = tc.det.Adoption
			if back != tc.det {
				t.Fatalf("read back as %+v, want %+v", back, tc.det)
			}
		})
	}
}

// Reported values compare by value: a queue of 0 the bridge reported is
// not one it has not reported, and two answers of the same are equal.
func TestReportedComparesByValue(t *testing.T) {
	if reported(0) == (Reported[int]{}) {
		t.Error("a reported 0 equals an unreported value")
	}
	a, b := Details{QueueLength: reported(3)}, Details{QueueLength: reported(3)}
	if a != b {
		t.Error("details with equal reported values differ")
	}
	b.SendReadReceipts = reported(false)
	if a == b {
		t.Error("details differing in a reported false are equal")
	}
}

// Adoption.equal decides whether a new verdict keeps the old pointer, and
// so whether Details change: it must see a change in any field of
// Adoption, including one added later. This test fails for a field it
// does not know how to change, so that equal is looked at then.
func TestAdoptionEqualSeesEveryField(t *testing.T) {
	base := Adoption{Reasons: []AdoptionNote{{Code: ReasonNoCreds, Message: "m"}}}
	typ := reflect.TypeFor[Adoption]()
	for i := range typ.NumField() {
		f := typ.Field(i)
		changed := base
		v := reflect.ValueOf(&changed).Elem().Field(i)
		switch {
		case f.Type.Kind() == reflect.Bool:
			v.SetBool(!v.Bool())
		case f.Type.Kind() == reflect.String:
			v.SetString(v.String() + "x")
		case f.Type == reflect.TypeFor[[]AdoptionNote]():
			v.Set(reflect.ValueOf([]AdoptionNote{{Code: "other", Message: "m"}}))
		default:
			t.Fatalf("Adoption.%s is a %s, which this test cannot change: make sure Adoption.equal compares it, then teach this test", f.Name, f.Type)
		}
		if base.equal(&changed) || changed.equal(&base) {
			t.Errorf("Adoption.equal does not see a change of %s", f.Name)
		}
	}
	if !base.equal(&Adoption{Reasons: []AdoptionNote{{Code: ReasonNoCreds, Message: "m"}}}) {
		t.Error("equal verdicts are not equal")
	}
	var none *Adoption
	if !none.equal(nil) || none.equal(&base) || base.equal(nil) {
		t.Error("a missing verdict compared wrong")
	}
}

// assess keeps the pointer of an equal verdict, which is what lets
// Details compare with ==; a changed one is a new value.
func TestAssessKeepsAnEqualVerdict(t *testing.T) {
	h, err := New(Options{Expect: &Expect{}})
	if err != nil {
		t.Fatal(err)
	}
	det := Details{Connection: ConnectionDown}
	first := h.assess(0, false, procmon.StateStopped, &det, nil)
	det.Adoption = first
	if again := h.assess(0, false, procmon.StateStopped, &det, nil); again != first {
		t.Fatalf("an equal verdict is a new pointer: %+v", again)
	}
	before := det
	next := h.assess(0, false, procmon.StateBackoff, &det, nil)
	if next == first || next.equal(first) {
		t.Fatalf("a changed verdict (another state) kept the old: %+v", next)
	}
	det.Adoption = next
	if det == before {
		t.Fatal("details with a changed verdict compare equal")
	}
}

// A child whose files changed under it is restarted once, only after it
// had matched them, not while pairing, and not while messages wait in its
// queue unless they have waited staleQueueWait.
func TestStaleFilesRestartIsDue(t *testing.T) {
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	matching := &Adoption{Reasons: []AdoptionNote{}}
	stale := &Adoption{Reasons: []AdoptionNote{{Code: ReasonScriptHashDiffers, Message: "m"}}}
	connected := Details{Connection: ConnectionConnected, ScriptHash: "abc", QueueLength: reported(0)}
	queued := connected
	queued.QueueLength = reported(2)
	pairing := connected
	pairing.Connection = ConnectionPairing
	type step struct {
		at      time.Duration
		a       *Adoption
		det     Details
		stopped bool
		want    bool
	}
	cases := []struct {
		name  string
		steps []step
	}{
		{"matched, then changed", []step{
			{a: matching, det: connected},
			{at: time.Second, a: stale, det: connected, want: true},
			{at: 2 * time.Second, a: stale, det: connected}, // once
		}},
		{"never matched", []step{
			{a: stale, det: connected},
			{at: time.Hour, a: stale, det: connected},
		}},
		{"a match without a hash is no match", []step{
			{a: matching, det: Details{Connection: ConnectionConnected}},
			{at: time.Second, a: stale, det: connected},
		}},
		{"not while pairing or stopped", []step{
			{a: matching, det: connected},
			{at: time.Second, a: stale, det: pairing},
			{at: 2 * time.Second, a: stale, det: connected, stopped: true},
			{at: 3 * time.Second, a: stale, det: connected, want: true},
		}},
		{"a queue waits, up to staleQueueWait from the first stale sight", []step{
			{a: matching, det: connected},
			{at: time.Second, a: stale, det: queued},
			{at: time.Second + staleQueueWait - time.Millisecond, a: stale, det: queued},
			{at: time.Second + staleQueueWait, a: stale, det: queued, want: true},
		}},
		{"matching again starts the wait anew", []step{
			{a: matching, det: connected},
			{at: time.Second, a: stale, det: queued},
			{at: staleQueueWait, a: matching, det: queued},
			{at: staleQueueWait + time.Second, a: stale, det: queued},
			{at: 2*staleQueueWait + time.Second, a: stale, det: queued, want: true},
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var s staleFiles
			for i, st := range tc.steps {
				if got := s.due(t0.Add(st.at), st.a, &st.det, !st.stopped); got != st.want {
					t.Fatalf("step %d at %s: due %t, want %t", i, st.at, got, st.want)
				}
			}
		})
	}
}
