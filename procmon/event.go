package procmon

import (
	"errors"
	"sync"
	"time"
)

// Kind names an event.
type Kind string

// The events a Monitor emits, in the order they can happen in a child's life.
const (
	EventStarting    Kind = "starting"     // about to spawn
	EventStarted     Kind = "started"      // spawned; Pid is set
	EventSpawnFailed Kind = "spawn_failed" // could not spawn; Exit.Error says why
	EventReady       Kind = "ready"        // the child became ready (or stopped being: Ready=false)
	EventExited      Kind = "exited"       // the child ended; Exit is set
	EventBackoff     Kind = "backoff"      // waiting DelayMS before spawn Attempt
	EventCrashloop   Kind = "crashloop"    // consecutive failures reached the crash-loop threshold
	EventRecovered   Kind = "recovered"    // the child stayed up long enough; failures forgiven
	EventStopping    Kind = "stopping"     // stop signal sent
	EventKilling     Kind = "killing"      // stop timed out, or was forced; SIGKILL to the group
	EventStopped     Kind = "stopped"      // down on request, waiting for a start
	EventGivenUp     Kind = "given_up"     // Config.MaxRestarts reached; parked until a start
	EventSignal      Kind = "signal"       // a signal was forwarded to the child
	EventNotice      Kind = "notice"       // something posted by a layer above (Post)
)

// State is where the supervised child is in its life.
type State string

// The states of a Monitor.
const (
	StateStarting State = "starting"
	StateRunning  State = "running"
	StateBackoff  State = "backoff"
	StateStopping State = "stopping"
	StateStopped  State = "stopped"
	StateGivenUp  State = "given_up"
)

// Status is a snapshot of the Monitor, derived from the events so far.
type Status struct {
	State               State       `json:"state"`
	Pid                 int         `json:"pid"`
	Since               time.Time   `json:"since"`      // when State was entered
	StartedAt           *time.Time  `json:"started_at"` // when the current child was spawned
	Ready               bool        `json:"ready"`
	Restarts            int         `json:"restarts"`
	ConsecutiveFailures int         `json:"consecutive_failures"`
	Crashloop           bool        `json:"crashloop"`
	LastExit            *ExitRecord `json:"last_exit"`
	NextStartAt         *time.Time  `json:"next_start_at"`
	Message             string      `json:"message,omitempty"`
	// Reason is the state's cause in a form a program can read, when it
	// has one: in backoff "failure", "crashloop" (failures go on at the
	// longest delay), "shutdown" (killed from outside right after its
	// start, twice in a row) or a refused spawn's own reason (such as
	// "port_busy"); "max_restarts" in given_up; and a parked or standby
	// state's reason (such as "port_held_by_bridge" in yielded).
	Reason string `json:"reason,omitempty"`
	// Holder is the process the state waits on, when its reason names
	// one: whoever holds the bridge's port, for one.
	Holder *Holder `json:"holder,omitempty"`
	// Details is owned by a layer above (the WhatsApp bridge's connection
	// state, for one); the monitor only carries it. Replace it through Post.
	Details map[string]any `json:"details,omitempty"`
}

// The reasons of the monitor's own states (Status.Reason).
const (
	ReasonFailure     = string(ClassFailure)
	ReasonShutdown    = string(ClassShutdown)
	ReasonCrashloop   = "crashloop"
	ReasonMaxRestarts = "max_restarts"
)

// Holder is a process outside the monitor's control that the child
// waits on, such as the one holding the port it needs. Pid is 0 for a
// process the sidecar cannot see (in another PID namespace); Name is then
// empty.
type Holder struct {
	Pid  int    `json:"pid"`
	Name string `json:"name"`
}

// A Refusal is an error from a BeforeSpawner that says, in a form a
// program can read, why the spawn was refused: the status in backoff then
// carries its reason and holder, and so does the exit record's Reason.
type Refusal interface {
	error
	Refusal() (reason string, holder *Holder)
}

// A Causer is an error from a BeforeSpawner that comes with an event
// of its own, telling what refused the spawn (such as port_busy): the
// monitor emits it, as it would a Post, right before spawn_failed, so that
// the cause comes before its effect.
type Causer interface {
	error
	CauseEvent() Event
}

// Event is one thing that happened, with the snapshot right after it.
type Event struct {
	Seq     uint64      `json:"seq"`
	At      time.Time   `json:"at"`
	Kind    Kind        `json:"event"`
	Pid     int         `json:"pid,omitempty"`
	Exit    *ExitRecord `json:"exit,omitempty"`
	DelayMS int64       `json:"delay_ms,omitempty"`
	Attempt int         `json:"attempt,omitempty"`
	Signal  string      `json:"signal,omitempty"`
	Reason  string      `json:"reason,omitempty"`
	Message string      `json:"message,omitempty"`
	Ready   *bool       `json:"ready,omitempty"`
	// Data carries fields of events posted by a layer above.
	Data map[string]any `json:"data,omitempty"`
	// Private carries fields only for trusted subscribers (those that hold
	// the control token), such as a pairing QR code. It is never marshalled.
	Private map[string]any `json:"-"`
	Status  Status         `json:"status"`
}

// ErrOverflow ends a subscription whose reader fell too far behind.
var ErrOverflow = errors.New("subscriber fell behind and was dropped")

// Subscription receives events in order. C is closed when the subscription
// ends; Err then says why.
type Subscription struct {
	C <-chan Event

	c      chan Event
	broker *broker
	err    error // set by the broker under its lock, before c is closed
}

// Err is nil while the subscription runs, ErrOverflow if the reader fell
// behind, or a closed error after Close.
func (s *Subscription) Err() error {
	s.broker.mu.Lock()
	defer s.broker.mu.Unlock()
	return s.err
}

// Close ends the subscription. It is safe to call more than once.
func (s *Subscription) Close() {
	s.broker.mu.Lock()
	defer s.broker.mu.Unlock()
	s.broker.drop(s, errors.New("subscription closed"))
}

// broker fans events out to subscribers without ever blocking the sender:
// each subscriber has its own bounded queue, and one that is full is
// dropped with ErrOverflow so it can resubscribe and resync.
type broker struct {
	mu   sync.Mutex
	subs map[*Subscription]struct{}
	last Event
	done bool
}

func newBroker(initial Event) *broker {
	return &broker{subs: map[*Subscription]struct{}{}, last: initial}
}

func (b *broker) publish(ev Event) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.last = ev
	for s := range b.subs {
		select {
		case s.c <- ev:
		default:
			b.drop(s, ErrOverflow)
		}
	}
}

func (b *broker) drop(s *Subscription, err error) {
	if _, ok := b.subs[s]; !ok {
		return
	}
	delete(b.subs, s)
	s.err = err
	close(s.c)
}

// subscribe returns a subscription and the event it starts after, so the
// caller can show that snapshot and then apply every later event.
func (b *broker) subscribe(buffer int) (*Subscription, Event) {
	if buffer < 1 {
		buffer = 1
	}
	c := make(chan Event, buffer)
	s := &Subscription{C: c, c: c, broker: b}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.done {
		s.err = errors.New("monitor has finished")
		close(c)
		return s, b.last
	}
	b.subs[s] = struct{}{}
	return s, b.last
}

func (b *broker) close() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.done = true
	for s := range b.subs {
		b.drop(s, errors.New("monitor has finished"))
	}
}
