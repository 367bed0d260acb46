package procmon

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/wa-sidecar/wa-sidecar/signals"
)

func TestBeforeSpawnErrorIsAFailureWithBackoff(t *testing.T) {
	calls := 0
	h := start(t, Config{Command: []string{fakeBridge, "-hang"}, Backoff: fast, Hooks: []Hook{BeforeSpawnFunc(func(func(Event)) error {
		calls++
		if calls < 3 {
			return errors.New("port 3000 is in use by pid 812 (python3)")
		}
		return nil
	})}})
	for i := 1; i <= 2; i++ {
		ev := h.next(EventSpawnFailed)
		if !strings.Contains(ev.Exit.Error, "python3") {
			t.Fatalf("error not carried: %+v", ev.Exit)
		}
		if bo := h.next(EventBackoff); bo.Status.ConsecutiveFailures != i {
			t.Fatalf("failures %d, want %d", bo.Status.ConsecutiveFailures, i)
		}
	}
	h.next(EventStarted)
}

func TestAfterSpawnGetsTheChildsIdentity(t *testing.T) {
	ids := make(chan signals.Identity, 1)
	h := start(t, Config{Command: []string{fakeBridge, "-hang"}, Hooks: []Hook{afterSpawnFunc(func(id signals.Identity) { ids <- id })}})
	ev := h.next(EventStarted)
	id := <-ids
	if id.Pid != ev.Pid || id.StartTime == 0 || !id.Alive() {
		t.Fatalf("identity %+v for pid %d", id, ev.Pid)
	}
}

func TestOnExitParksInsteadOfRespawning(t *testing.T) {
	h := start(t, Config{Command: []string{fakeBridge, "-say", "Logged out", "-exit", "1"}, Backoff: fast,
		Hooks: []Hook{parkExitFunc(func(rec ExitRecord) *Park {
			if len(rec.Tail) > 0 && rec.Tail[len(rec.Tail)-1] == "Logged out" {
				return &Park{State: "needs_pairing", Message: "pair again"}
			}
			return nil
		})}})
	h.next(EventExited)
	ev := h.next(Kind("needs_pairing"))
	if ev.Status.State != "needs_pairing" || ev.Status.Message != "pair again" || ev.Status.NextStartAt != nil {
		t.Fatalf("parked status: %+v", ev.Status)
	}
	for _, k := range h.kinds() {
		if k == EventBackoff {
			t.Fatal("a parked child was scheduled for respawn")
		}
	}
	if err := h.m.Start(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if st := h.next(EventStarted); st.Status.Message != "" {
		t.Fatalf("message kept after start: %q", st.Status.Message)
	}
}

func TestExternalReadiness(t *testing.T) {
	h := start(t, Config{Command: []string{fakeBridge, "-hang"}, ExternalReadiness: true})
	ev := h.next(EventStarted)
	if ev.Status.Ready {
		t.Fatal("ready before SetReady")
	}
	if err := h.m.SetReady(ctxT(t), ev.Pid+100000, true); err != nil {
		t.Fatal(err)
	}
	if err := h.m.SetReady(ctxT(t), ev.Pid, true); err != nil {
		t.Fatal(err)
	}
	r := h.next(EventReady)
	if r.Ready == nil || !*r.Ready || !r.Status.Ready || r.Pid != ev.Pid {
		t.Fatalf("ready event: %+v", r)
	}
	// The SetReady for another pid was ignored: this is the first ready event.
	for _, e := range h.events.Seen[:len(h.events.Seen)-1] {
		if e.Kind == EventReady {
			t.Fatal("readiness of a pid that is not the child was accepted")
		}
	}
	if err := h.m.Restart(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if st := h.next(EventStarted); st.Status.Ready {
		t.Fatal("new child inherited readiness")
	}
}

func TestPostMergesDetailsAndKeepsOrder(t *testing.T) {
	h := start(t, Config{Command: []string{fakeBridge, "-hang"}})
	h.next(EventStarted)
	post := func(ev Event) {
		if err := h.m.Post(ctxT(t), ev); err != nil {
			t.Fatal(err)
		}
	}
	post(Event{Kind: "connected", Status: Status{Details: map[string]any{"whatsapp": "connected"}}})
	post(Event{Kind: "session", Message: "paired", Status: Status{Details: map[string]any{"session": "ok"}}, Private: map[string]any{"qr": "secret"}})
	h.next("connected")
	ev := h.next("session")
	if ev.Status.Details["whatsapp"] != "connected" || ev.Status.Details["session"] != "ok" || ev.Status.Message != "paired" {
		t.Fatalf("details not merged: %+v", ev.Status)
	}
	if ev.Private["qr"] != "secret" {
		t.Fatal("private data lost")
	}
	post(Event{Kind: "gone", Status: Status{Details: map[string]any{"whatsapp": nil}}})
	if ev := h.next("gone"); len(ev.Status.Details) != 1 {
		t.Fatalf("nil did not remove a key: %+v", ev.Status.Details)
	}
	if err := h.m.Ping(ctxT(t)); err != nil {
		t.Fatal(err)
	}
}

func TestCommandsAfterRunReturnErrNotRunning(t *testing.T) {
	m, err := New(Config{Command: []string{fakeBridge, "-hang"}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := ctxWithCancel()
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	sub, _ := m.Subscribe(64)
	for ev := range sub.C {
		if ev.Kind == EventStarted {
			cancel()
		}
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if err := m.Start(ctxT(t)); !errors.Is(err, ErrNotRunning) {
		t.Fatalf("Start after Run: %v", err)
	}
	if err := m.Run(ctxT(t)); err == nil {
		t.Fatal("second Run accepted")
	}
	if st := m.Status(); st.State != StateStopped {
		t.Fatalf("final state %s", st.State)
	}
	select {
	case <-m.Done():
	case <-time.After(time.Second):
		t.Fatal("Done not closed")
	}
}

func TestKeepInTailLeavesSecretsOut(t *testing.T) {
	h := start(t, Config{Command: []string{fakeBridge, "-say", "before|SECRET 1|after", "-exit", "1"},
		Backoff: Backoff{Initial: time.Hour, Max: time.Hour, Multiplier: 2},
		Hooks:   []Hook{keepFunc(func(text []byte) bool { return !strings.HasPrefix(string(text), "SECRET") })}})
	ex := h.next(EventExited)
	if got := strings.Join(ex.Exit.Tail, "|"); got != "before|after" {
		t.Fatalf("tail %q", got)
	}
}

func TestHoldWaitsInStandbyWithoutCountingOrRestarting(t *testing.T) {
	var holding atomic.Bool
	holding.Store(true)
	calls := atomic.Int32{}
	h := start(t, Config{Command: []string{fakeBridge, "-hang"}, Backoff: fast, Hooks: []Hook{holdFunc(func() *Park {
		calls.Add(1)
		if holding.Load() {
			return &Park{State: "yielded", Reason: "port_held", Message: "pid 42 holds the port", Recheck: 5 * time.Millisecond, Data: map[string]any{"holder_pid": 42}}
		}
		return nil
	})}})
	ev := h.next(Kind("yielded"))
	if ev.Status.State != "yielded" || ev.Reason != "port_held" || ev.Data["holder_pid"] != 42 || ev.Status.NextStartAt == nil {
		t.Fatalf("standby event: %+v", ev)
	}
	// Several rechecks find the same situation: no new event, no failure,
	// no restart counted.
	for calls.Load() < 5 {
		time.Sleep(5 * time.Millisecond)
	}
	if st := h.m.Status(); st.State != "yielded" || st.ConsecutiveFailures != 0 || st.Restarts != 0 || st.Pid != 0 {
		t.Fatalf("status while held: %+v", st)
	}
	holding.Store(false)
	started := h.nextUnless(EventStarted, Kind("yielded"), EventSpawnFailed, EventBackoff)
	if started.Status.Restarts != 0 || started.Status.Message != "" {
		t.Fatalf("after the hold: %+v", started.Status)
	}
	for _, k := range h.kinds() {
		if k == EventStarting {
			return // exactly one starting, for the spawn that happened
		}
	}
	t.Fatal("no starting event before the spawn")
}

func TestHoldSituationChangeIsAnEvent(t *testing.T) {
	n := atomic.Int32{}
	h := start(t, Config{Command: []string{fakeBridge, "-hang"}, Hooks: []Hook{holdFunc(func() *Park {
		switch n.Add(1) {
		case 1:
			return &Park{State: "yielded", Message: "pid 1 holds the port", Recheck: time.Millisecond}
		case 2:
			return &Park{State: "yielded", Message: "pid 2 holds the port", Recheck: time.Millisecond}
		}
		return nil
	})}})
	if ev := h.next(Kind("yielded")); ev.Message != "pid 1 holds the port" {
		t.Fatalf("first: %+v", ev)
	}
	if ev := h.next(Kind("yielded")); ev.Message != "pid 2 holds the port" {
		t.Fatalf("second: %+v", ev)
	}
	h.next(EventStarted)
}

func TestStopAndStartFromStandby(t *testing.T) {
	var holding atomic.Bool
	holding.Store(true)
	h := start(t, Config{Command: []string{fakeBridge, "-hang"}, Hooks: []Hook{holdFunc(func() *Park {
		if holding.Load() {
			return &Park{State: "yielded", Message: "held", Recheck: time.Hour}
		}
		return nil
	})}})
	h.next(Kind("yielded"))
	if err := h.m.Stop(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if ev := h.next(EventStopped); ev.Status.State != StateStopped || ev.Status.NextStartAt != nil {
		t.Fatalf("stopped from standby: %+v", ev.Status)
	}
	holding.Store(false)
	if err := h.m.Start(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	h.next(EventStarted)
}

func TestOnExitStandbyIsNotAFailure(t *testing.T) {
	h := start(t, Config{Command: []string{fakeBridge, "-say", "Error: listen EADDRINUSE", "-exit", "1"}, Backoff: fast,
		Hooks: []Hook{parkExitFunc(func(rec ExitRecord) *Park {
			return &Park{State: "yielded", Reason: "port_taken", Message: "the port was taken", Recheck: time.Hour}
		})}})
	ex := h.next(EventExited)
	if ex.Exit.Reason != "port_taken" {
		t.Fatalf("exit record: %+v", ex.Exit)
	}
	ev := h.nextUnless(Kind("yielded"), EventBackoff, EventCrashloop)
	if ev.Status.ConsecutiveFailures != 0 || ev.Status.Crashloop {
		t.Fatalf("counted as a failure: %+v", ev.Status)
	}
}

func TestAfterExitEventsComeBeforeWhatFollowsTheExit(t *testing.T) {
	var seen atomic.Int64
	h := start(t, Config{Command: []string{fakeBridge, "-hang"}, Backoff: fast,
		Hooks: []Hook{afterExitFunc(func(rec ExitRecord, st Status) []Event {
			seen.Store(int64(rec.Pid))
			return []Event{{Kind: "lost", Data: map[string]any{"bridge_pid": rec.Pid}, Status: Status{Details: map[string]any{"layer": rec.Pid}}}}
		})}})
	expect := func(pid int, next Kind) {
		t.Helper()
		ex := h.next(EventExited)
		if ex.Pid != pid || seen.Load() != int64(pid) {
			t.Fatalf("exit of %d, hook saw %d", ex.Pid, seen.Load())
		}
		kinds := []Kind{"lost", EventStarting, EventStarted, EventBackoff, EventStopped}
		ev := h.next(kinds...)
		if ev.Kind != "lost" || ev.Seq != ex.Seq+1 || ev.Data["bridge_pid"] != pid || ev.Status.Details["layer"] != pid {
			t.Fatalf("after the exit of %d: %+v", pid, ev)
		}
		if ev := h.next(kinds...); ev.Kind != next {
			t.Fatalf("after the hook's event: %s, want %s; seen %v", ev.Kind, next, h.kinds())
		}
	}
	// A restart: the old child's events, then the new one's.
	first := h.next(EventStarted).Pid
	if err := h.m.Restart(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	expect(first, EventStarting)
	// A crash: then the backoff.
	second := h.next(EventStarted).Pid
	if err := syscall.Kill(second, syscall.SIGSEGV); err != nil {
		t.Fatal(err)
	}
	expect(second, EventBackoff)
	// A stop: then stopped.
	third := h.next(EventStarted).Pid
	if err := h.m.Stop(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	expect(third, EventStopped)
}

// The test's own adapters, for the hook interfaces that no caller outside
// needs a function type for.
type (
	holdFunc       func() *Park
	afterSpawnFunc func(signals.Identity)
	parkExitFunc   func(ExitRecord) *Park
	afterExitFunc  func(ExitRecord, Status) []Event
	keepFunc       func([]byte) bool
)

func (f holdFunc) HoldSpawn() *Park                                 { return f() }
func (f afterSpawnFunc) AfterSpawn(id signals.Identity)             { f(id) }
func (f parkExitFunc) ParkExit(rec ExitRecord) *Park                { return f(rec) }
func (f afterExitFunc) AfterExit(rec ExitRecord, st Status) []Event { return f(rec, st) }
func (f keepFunc) KeepInTail(text []byte) bool                      { return f(text) }

// What a BeforeSpawner emits comes in the stream where it happened: after
// the starting it belongs to, before the spawn_failed or started it leads
// to, and with its details merged into the snapshot as a Post's are.
func TestBeforeSpawnEventsComeBeforeTheirEffect(t *testing.T) {
	calls := 0
	h := start(t, Config{Command: []string{fakeBridge, "-hang"}, Backoff: fast, Hooks: []Hook{BeforeSpawnFunc(func(emit func(Event)) error {
		calls++
		emit(Event{Kind: "checked", Data: map[string]any{"call": calls}, Status: Status{Details: map[string]any{"guard": calls}}})
		if calls == 1 {
			return errors.New("not yet")
		}
		return nil
	})}})
	for call, effect := range []Kind{EventSpawnFailed, EventStarted} {
		starting := h.next(EventStarting)
		ev := h.next("checked", EventSpawnFailed, EventStarted)
		if ev.Kind != "checked" || ev.Seq != starting.Seq+1 || ev.Data["call"] != call+1 || ev.Status.Details["guard"] != call+1 {
			t.Fatalf("spawn %d: %+v after starting %d", call+1, ev, starting.Seq)
		}
		if next := h.next(EventSpawnFailed, EventStarted); next.Kind != effect || next.Seq != ev.Seq+1 || next.Status.Details["guard"] != call+1 {
			t.Fatalf("spawn %d: %+v after the hook's event, want %s", call+1, next, effect)
		}
	}
}

// Hooks are asked in list order: a failing BeforeSpawner stops the ones
// after it, the first ExitParker's park wins, and a line stays out of the
// tail if any TailFilter leaves it out.
func TestHooksAreCalledInListOrder(t *testing.T) {
	var order []string
	before := func(name string, fail bool) Hook {
		return BeforeSpawnFunc(func(func(Event)) error {
			order = append(order, name)
			if fail && len(order) < 3 {
				return errors.New(name + " refused")
			}
			return nil
		})
	}
	park := func(state State) Hook {
		return parkExitFunc(func(ExitRecord) *Park { return &Park{State: state, Message: string(state)} })
	}
	h := start(t, Config{Command: []string{fakeBridge, "-say", "a|b|c", "-exit", "1"}, Backoff: fast, Hooks: []Hook{
		before("first", false), before("second", true), before("third", false),
		parkExitFunc(func(ExitRecord) *Park { return nil }), park("parked_first"), park("parked_second"),
		keepFunc(func(text []byte) bool { return string(text) != "a" }),
		keepFunc(func(text []byte) bool { return string(text) != "c" }),
	}})
	failed := h.next(EventSpawnFailed)
	if failed.Exit.Error != "second refused" {
		t.Fatalf("spawn failed with %q, want the second hook's error", failed.Exit.Error)
	}
	// The refused spawn was parked too (it is a failure like any other).
	if ev := h.next("parked_first", "parked_second"); ev.Kind != "parked_first" {
		t.Fatalf("parked by %s, want the first ExitParker that parks", ev.Kind)
	}
	if got := strings.Join(order, ","); got != "first,second" {
		t.Fatalf("BeforeSpawners called: %s", got)
	}
	if err := h.m.Start(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	h.next(EventStarted)
	if got := strings.Join(order, ","); got != "first,second,first,second,third" {
		t.Fatalf("BeforeSpawners called: %s", got)
	}
	ex := h.next(EventExited)
	if got := strings.Join(ex.Exit.Tail, "|"); got != "b" {
		t.Fatalf("tail %q, want only the line both filters keep", got)
	}
}

func TestNewRefusesAHookOfNoInterface(t *testing.T) {
	_, err := New(Config{Command: []string{fakeBridge}, Hooks: []Hook{func() error { return nil }}})
	if err == nil || !strings.Contains(err.Error(), "hook 0 (func() error)") {
		t.Fatalf("New: %v", err)
	}
}

// A monitor told to stop before it runs spawns nothing: its one event is
// stopped, and no hook is asked to prepare a spawn.
func TestRunWithADoneContextSpawnsNothing(t *testing.T) {
	before := BeforeSpawnFunc(func(func(Event)) error {
		t.Error("BeforeSpawn called for a monitor told to stop")
		return nil
	})
	m, err := New(Config{Command: []string{fakeBridge, "-hang"}, Hooks: []Hook{before}})
	if err != nil {
		t.Fatal(err)
	}
	sub, _ := m.Subscribe(64)
	ctx, cancel := ctxWithCancel()
	cancel()
	if err := m.Run(ctx); err != nil {
		t.Fatal(err)
	}
	var kinds []Kind
	for ev := range sub.C {
		kinds = append(kinds, ev.Kind)
	}
	if len(kinds) != 1 || kinds[0] != EventStopped {
		t.Fatalf("events %v, want only stopped", kinds)
	}
	if st := m.Status(); st.State != StateStopped || st.Pid != 0 || st.LastExit != nil {
		t.Fatalf("final status %+v, want stopped with no child", st)
	}
}

// PostFunc's events go out together, in the monitor's goroutine: nothing
// another goroutine posts meanwhile comes between them.
func TestPostFuncEventsGoOutTogether(t *testing.T) {
	h := start(t, Config{Command: []string{fakeBridge, "-hang"}})
	h.next(EventStarted)
	ctx := context.Background()
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		for i := 0; i < 200; i++ {
			if err := h.m.Post(ctx, Event{Kind: "single"}); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	go func() {
		defer wg.Done()
		for i := 0; i < 100; i++ {
			err := h.m.PostFunc(ctx, func() []Event {
				return []Event{{Kind: "first"}, {Kind: "second", Status: Status{Details: map[string]any{"n": i}}}}
			})
			if err != nil {
				t.Error(err)
				return
			}
		}
	}()
	wg.Wait()
	pairs := 0
	for seen := 0; seen < 400; seen++ {
		ev := h.next("single", "first", "second")
		if ev.Kind != "first" {
			continue
		}
		if next := h.next("single", "first", "second"); next.Kind != "second" || next.Status.Details["n"] != pairs {
			t.Fatalf("pair %d: first was followed by %s (details %v)", pairs, next.Kind, next.Status.Details)
		}
		seen++
		pairs++
	}
	if pairs != 100 {
		t.Fatalf("%d pairs, want 100", pairs)
	}
}

// sieve is a LineSieve and a TailSieve: it wants the lines starting with
// '#' and leaves out of the tail those starting with '!' that say "drop";
// it notes every line and every question it is given.
type sieve struct {
	mu     sync.Mutex
	lines  []string
	judged []string
}

var hashLines, bangLines = func() (h, b [256]bool) { h['#'], b['!'] = true, true; return }()

func (s *sieve) LineStarts() *[256]bool { return &hashLines }
func (s *sieve) TailStarts() *[256]bool { return &bangLines }
func (s *sieve) WriteLine(l Line) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lines = append(s.lines, string(l.Text))
}
func (s *sieve) KeepInTail(text []byte) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.judged = append(s.judged, string(text))
	return !strings.Contains(string(text), "drop")
}

// TestSievesGetOnlyTheirLines: a LineSieve is given only the lines whose
// first byte is in its set, and a TailSieve asked only of those in its;
// the other lines, empty ones too, are kept in the tail without asking,
// and a plain LineWriter beside a sieve still gets every line.
func TestSievesGetOnlyTheirLines(t *testing.T) {
	s := &sieve{}
	var mu sync.Mutex
	var all []string
	plain := LineFunc(func(l Line) {
		mu.Lock()
		defer mu.Unlock()
		all = append(all, string(l.Text))
	})
	out := "#one|plain|!drop me|!keep me||#two drop|  #not"
	h := start(t, Config{Command: []string{fakeBridge, "-say", out, "-exit", "1"},
		Backoff: Backoff{Initial: time.Hour, Max: time.Hour, Multiplier: 2},
		Hooks:   []Hook{s, plain}})
	ex := h.next(EventExited)
	if got, want := strings.Join(ex.Exit.Tail, "|"), "#one|plain|!keep me||#two drop|  #not"; got != want {
		t.Fatalf("tail %q, want %q", got, want)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if got, want := strings.Join(s.lines, "|"), "#one|#two drop"; got != want {
		t.Fatalf("the line sieve got %q, want %q", got, want)
	}
	if got, want := strings.Join(s.judged, "|"), "!drop me|!keep me"; got != want {
		t.Fatalf("the tail sieve was asked of %q, want %q", got, want)
	}
	mu.Lock()
	defer mu.Unlock()
	if got := strings.Join(all, "|"); got != out {
		t.Fatalf("the plain writer got %q, want %q", got, out)
	}
}

// TestSievesWithCutAndCRLFLines: lines cut at MaxLineBytes, lines ended by
// "\r\n" and lines of nothing but "\r" reach a sieve by their first byte as
// any other, in order, among plain hooks before and after it; a plain
// TailFilter is still asked of every line, and each hook's verdict counts.
func TestSievesWithCutAndCRLFLines(t *testing.T) {
	s := &sieve{}
	var mu sync.Mutex
	var all, asked []Line
	plain := LineFunc(func(l Line) {
		mu.Lock()
		defer mu.Unlock()
		all = append(all, Line{Text: bytes.Clone(l.Text), Truncated: l.Truncated})
	})
	keep := keepFunc(func(text []byte) bool {
		mu.Lock()
		defer mu.Unlock()
		asked = append(asked, Line{Text: bytes.Clone(text)})
		return !bytes.HasPrefix(text, []byte("secret"))
	})
	long := "#" + strings.Repeat("x", 100)
	out := "plain\r|#crlf drop\r|\r|" + long + "|!drop cut " + strings.Repeat("y", 100) + "|secret|!keep\r||#end"
	h := start(t, Config{Command: []string{fakeBridge, "-say", out, "-exit", "1"},
		Backoff: Backoff{Initial: time.Hour, Max: time.Hour, Multiplier: 2}, MaxLineBytes: 80, TailLines: 50,
		Hooks: []Hook{plain, s, keep}})
	ex := h.next(EventExited)
	cut := func(l string) string { return l[:min(len(l), 80)] }
	if got, want := strings.Join(ex.Exit.Tail, "|"), "plain|#crlf drop||"+cut(long)+"|!keep||#end"; got != want {
		t.Fatalf("tail %q, want %q", got, want)
	}
	texts := func(ls []Line) string {
		var b []string
		for _, l := range ls {
			b = append(b, fmt.Sprintf("%s/%v", l.Text, l.Truncated))
		}
		return strings.Join(b, "|")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if got, want := strings.Join(s.lines, "|"), "#crlf drop|"+cut(long)+"|#end"; got != want {
		t.Errorf("the line sieve got %q, want %q", got, want)
	}
	if got, want := strings.Join(s.judged, "|"), "!drop cut "+strings.Repeat("y", 70)+"|!keep"; got != want {
		t.Errorf("the tail sieve was asked of %q, want %q", got, want)
	}
	mu.Lock()
	defer mu.Unlock()
	if got, want := len(asked), 8; got != want { // all but the line the sieve left out first
		t.Errorf("the plain tail filter was asked of %d lines (%s), want %d", got, texts(asked), want)
	}
	var want []Line
	for _, l := range strings.Split(out, "|") {
		l = strings.TrimSuffix(l, "\r")
		want = append(want, Line{Text: []byte(cut(l)), Truncated: len(l) > 80})
	}
	if texts(all) != texts(want) {
		t.Errorf("the plain writer got %s, want %s", texts(all), texts(want))
	}
}
