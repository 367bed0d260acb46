package procmon

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"
)

// refused is a BeforeSpawner's error that names its reason and holder, as the
// session guard's port_busy does.
type refused struct{ holder *Holder }

func (r refused) Error() string { return "port 3000 is in use by pid 812 (python3)" }
func (r refused) Refusal() (string, *Holder) {
	return "port_busy", r.holder
}
func (r refused) CauseEvent() Event {
	return Event{Kind: "port_busy", Message: r.Error(), Data: map[string]any{"holder_pid": r.holder.Pid}}
}

func TestStatusCarriesAReasonAProgramCanRead(t *testing.T) {
	calls := 0
	h := start(t, Config{Command: []string{fakeBridge, "-exit", "1"}, Backoff: fast, CrashloopAfter: 2, MaxRestarts: 3,
		Hooks: []Hook{BeforeSpawnFunc(func(func(Event)) error {
			calls++
			if calls == 1 {
				return fmt.Errorf("checking the port: %w", refused{&Holder{Pid: 812, Name: "python3"}})
			}
			return nil
		})}})
	// A refused spawn: its cause's event first, then the failure, with
	// its reason and holder in the snapshot and on the wire.
	cause := h.nextUnless("port_busy", EventSpawnFailed)
	failed := h.next(EventSpawnFailed)
	if failed.Seq != cause.Seq+1 || cause.Data["holder_pid"] != 812 || failed.Status.Message != cause.Message {
		t.Fatalf("cause %+v, then %+v", cause, failed)
	}
	if failed.Exit.Reason != "port_busy" || failed.Status.State != StateBackoff || failed.Status.Reason != "port_busy" ||
		failed.Status.Holder == nil || *failed.Status.Holder != (Holder{Pid: 812, Name: "python3"}) {
		t.Fatalf("refused spawn: exit %+v, status %+v", failed.Exit, failed.Status)
	}
	b, err := json.Marshal(failed.Status)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"reason":"port_busy","holder":{"pid":812,"name":"python3"}`) {
		t.Fatalf("status JSON: %s", b)
	}
	// The next run fails: an ordinary failure, no holder kept.
	if st := h.next(EventExited).Status; st.Reason != ReasonCrashloop || st.Holder != nil {
		t.Fatalf("second failure (CrashloopAfter 2): %+v", st)
	}
	// The third failure meets MaxRestarts.
	if gu := h.next(EventGivenUp); gu.Status.Reason != ReasonMaxRestarts {
		t.Fatalf("given up: %+v", gu.Status)
	}
	if err := h.m.Start(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if st := h.next(EventStarting); st.Status.Reason != "" || st.Status.Holder != nil {
		t.Fatalf("reason kept after a start: %+v", st.Status)
	}
	if bo := h.next(EventBackoff); bo.Status.Reason != ReasonFailure {
		t.Fatalf("a first failure: %+v", bo.Status)
	}
}

func TestStandbyAndParkCarryTheirReason(t *testing.T) {
	held := 0
	h := start(t, Config{Command: []string{fakeBridge, "-exit", "1"}, Backoff: fast,
		Hooks: []Hook{
			holdFunc(func() *Park {
				held++
				if held > 1 {
					return nil
				}
				return &Park{State: "yielded", Reason: "port_held_by_bridge", Message: "another bridge", Recheck: 10 * time.Millisecond,
					Holder: &Holder{Pid: 4242, Name: "node"}}
			}),
			parkExitFunc(func(ExitRecord) *Park {
				return &Park{State: "needs_pairing", Reason: "logged_out", Message: "pair again"}
			}),
		},
	})
	y := h.next(Kind("yielded"))
	if y.Status.Reason != "port_held_by_bridge" || y.Status.Holder == nil || y.Status.Holder.Pid != 4242 || y.Reason != "port_held_by_bridge" {
		t.Fatalf("yielded: %+v", y)
	}
	if st := h.next(EventStarting); st.Status.Reason != "" || st.Status.Holder != nil {
		t.Fatalf("standby reason kept after it: %+v", st.Status)
	}
	p := h.next(Kind("needs_pairing"))
	if p.Status.Reason != "logged_out" || p.Reason != "logged_out" || p.Status.Holder != nil {
		t.Fatalf("parked: %+v", p)
	}
}
