package procmon

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/wa-sidecar/wa-sidecar/signals"
)

// Config describes the child and how to supervise it. Zero fields take the
// documented defaults.
type Config struct {
	// Command is the child's argv. Command[0] is looked up in PATH at every
	// spawn, so installing the program later is enough to recover.
	Command []string
	// Name is what the monitor's log calls the child ("bridge started"):
	// a layer above names it for its users; "child" when empty.
	Name string
	// StartHint says how the user sends a start command, for the log's
	// hint when the monitor gives up ("a start command" when empty).
	StartHint string
	Dir       string   // working directory; empty means the sidecar's
	Env       []string // nil passes the sidecar's environment through untouched

	// NormalSignals are the signals whose deaths count as a normal
	// shutdown. nil means TERM, INT and KILL.
	NormalSignals signals.Set
	// Backoff is the respawn policy; the zero value means DefaultBackoff.
	Backoff Backoff
	// CrashloopAfter is how many consecutive failures raise crashloop (5).
	CrashloopAfter int
	// MaxRestarts parks the child in given_up after this many consecutive
	// failed runs (so it is restarted MaxRestarts-1 times). 0 means never
	// give up.
	MaxRestarts int

	StopSignal  syscall.Signal // sent to the child to stop it; SIGTERM
	StopTimeout time.Duration  // then SIGKILL to its group; 10 s
	// SignalGroup sends the stop signal and forwarded signals to the
	// child's whole process group instead of the child alone, for wrappers
	// such as npm or sh that do not pass signals on.
	SignalGroup bool

	// Hooks extend the monitor: each is called, in list order, through
	// the hook interfaces it implements (see Hook).
	Hooks []Hook

	// ExternalReadiness makes readiness wait for SetReady instead of being
	// implied by a successful spawn.
	ExternalReadiness bool

	TailLines    int // lines kept for exit records; 20
	MaxLineBytes int // longer output lines are cut; 64 KiB
	// WaitDelay bounds how long output is still read after the child's
	// exit, while the pipe keeps filling (something the child left behind
	// goes on writing to it); 2 s. What the child itself wrote is always
	// read to the end.
	WaitDelay time.Duration

	Logger *slog.Logger    // nil discards the monitor's own log
	Reaper *signals.Reaper // nil makes the monitor use its own
}

func (c *Config) applyDefaults() {
	if c.NormalSignals == nil {
		c.NormalSignals = signals.Set{syscall.SIGTERM: true, syscall.SIGINT: true, syscall.SIGKILL: true}
	}
	if c.Backoff == (Backoff{}) {
		c.Backoff = DefaultBackoff
	}
	if c.Backoff.Multiplier == 0 {
		c.Backoff.Multiplier = DefaultBackoff.Multiplier
	}
	if c.CrashloopAfter <= 0 {
		c.CrashloopAfter = 5
	}
	if c.StopSignal == 0 {
		c.StopSignal = syscall.SIGTERM
	}
	if c.StopTimeout <= 0 {
		c.StopTimeout = 10 * time.Second
	}
	if c.TailLines <= 0 {
		c.TailLines = 20
	}
	if c.MaxLineBytes <= 0 {
		c.MaxLineBytes = 64 << 10
	}
	if c.WaitDelay <= 0 {
		c.WaitDelay = 2 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if c.Name == "" {
		c.Name = "child"
	}
}

// Park is a state the child waits in, with a message saying why and what
// the user should do. Without a Recheck it waits for a start command;
// with one it is a standby that the monitor leaves by itself.
type Park struct {
	State   State
	Message string
	// Reason is a machine-readable cause, carried in the state's event.
	Reason string
	// Recheck, when positive, is how long the monitor waits before it tries
	// again (asking the SpawnHolders first).
	Recheck time.Duration
	// Data is added to the state's event.
	Data map[string]any
	// Holder is the process the state waits on, if any (Status.Holder).
	Holder *Holder
}

// Monitor supervises one child. Its state lives in one goroutine (Run);
// everything else reaches it through methods that send it commands.
type Monitor struct {
	cfg    Config
	hooks  hooks
	cmds   chan command
	exits  chan exitMsg
	broker *broker
	status atomic.Pointer[Status]
	once   sync.Once
	done   chan struct{}
	// sweeps counts the stops of processes a child left behind that are
	// still under way; Run waits for them.
	sweeps sync.WaitGroup
}

// ErrNotRunning is returned by commands sent after Run has returned.
var ErrNotRunning = errors.New("the monitor is not running")

// ErrShuttingDown is returned by the commands that start, stop or signal
// the child once Run's context is done and the monitor is bringing it
// down for good.
var ErrShuttingDown = errors.New("the monitor is shutting down")

// StateError is a command refused in the state the child is in: Start
// while a child runs (and was not asked to stop), Signal while none does.
type StateError struct {
	Op    string // "start" or "signal"
	State State
	Pid   int // the running child's, for start
}

func (e *StateError) Error() string {
	if e.Op == "start" {
		return fmt.Sprintf("the child is already running (pid %d)", e.Pid)
	}
	return fmt.Sprintf("the child is not running (state %s)", e.State)
}

// New checks cfg and returns a Monitor ready to Run.
func New(cfg Config) (*Monitor, error) {
	if len(cfg.Command) == 0 || cfg.Command[0] == "" {
		return nil, errors.New("no command to supervise")
	}
	cfg.applyDefaults()
	if err := cfg.Backoff.Validate(); err != nil {
		return nil, err
	}
	if cfg.MaxRestarts < 0 {
		return nil, fmt.Errorf("MaxRestarts must not be negative (got %d); 0 means unlimited", cfg.MaxRestarts)
	}
	hs, err := sortHooks(cfg.Hooks)
	if err != nil {
		return nil, err
	}
	m := &Monitor{
		cfg:   cfg,
		hooks: hs,
		cmds:  make(chan command),
		exits: make(chan exitMsg, 1),
		done:  make(chan struct{}),
	}
	st := Status{State: StateStarting, Since: time.Now()}
	m.status.Store(&st)
	m.broker = newBroker(Event{Status: st})
	return m, nil
}

// Status returns the latest snapshot. It never blocks on the monitor.
func (m *Monitor) Status() Status { return *m.status.Load() }

// Subscribe follows the event stream. It returns the subscription and the
// last event before it (Seq 0 before anything happened): show that event's
// Status, then apply the subscription's events, whose Seq continue from it
// without gaps. buffer bounds the queue; a subscriber that lets it fill is
// dropped with ErrOverflow and never slows the monitor.
func (m *Monitor) Subscribe(buffer int) (*Subscription, Event) {
	return m.broker.subscribe(buffer)
}

// Done is closed when Run has returned.
func (m *Monitor) Done() <-chan struct{} { return m.done }

// Run spawns the child and supervises it until ctx is cancelled, then stops
// it (stop signal, then SIGKILL to its group after StopTimeout) and returns
// once it has been reaped. With ctx already done it spawns nothing: it
// emits stopped and returns. Run may be called once.
func (m *Monitor) Run(ctx context.Context) error {
	started := false
	m.once.Do(func() { started = true })
	if !started {
		return errors.New("Monitor.Run called twice")
	}
	defer close(m.done)
	defer m.broker.close()
	reaper := m.cfg.Reaper
	if reaper == nil {
		reaper = signals.NewReaper(signals.ReaperOptions{})
		defer reaper.Close()
	}
	l := &loop{m: m, cfg: &m.cfg, reaper: reaper, st: m.Status(), log: m.cfg.Logger}
	defer m.sweeps.Wait()
	return l.run(ctx)
}

type commandKind int

const (
	cmdStart commandKind = iota
	cmdStop
	cmdRestart
	cmdKill
	cmdSignal
	cmdReady
	cmdPost
	cmdPing
	cmdRecycle
)

type command struct {
	kind   commandKind
	sig    syscall.Signal
	pid    int
	ready  bool
	ev     Event
	post   func() []Event
	reason string
	reply  chan error
}

func (m *Monitor) send(ctx context.Context, c command) error {
	c.reply = make(chan error, 1)
	select {
	case m.cmds <- c:
	case <-m.done:
		return ErrNotRunning
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-c.reply:
		return err
	case <-m.done:
		return ErrNotRunning
	}
}

// Start spawns the child now if it is stopped, given up or waiting in
// backoff. Starting from given_up or stopped forgives earlier failures.
func (m *Monitor) Start(ctx context.Context) error { return m.send(ctx, command{kind: cmdStart}) }

// Stop stops the child and keeps it down until Start or Restart.
func (m *Monitor) Stop(ctx context.Context) error { return m.send(ctx, command{kind: cmdStop}) }

// Restart stops the child if it runs and spawns it again at once.
func (m *Monitor) Restart(ctx context.Context) error { return m.send(ctx, command{kind: cmdRestart}) }

// Recycle stops the child with the given pid and counts its exit as a
// failure, with reason in the exit record: a layer above uses it for a
// child that is alive but broken (a bridge that no longer answers), so
// that backoff, crashloop and MaxRestarts apply as they would to a crash.
// It is ignored for a child that has already been replaced or is already
// being stopped; a Stop, Restart or shutdown during the recycle wins.
func (m *Monitor) Recycle(ctx context.Context, pid int, reason string) error {
	return m.send(ctx, command{kind: cmdRecycle, pid: pid, reason: reason})
}

// Kill skips the rest of a graceful stop: SIGKILL to the child's group now.
// If no stop was under way it becomes a stop.
func (m *Monitor) Kill(ctx context.Context) error { return m.send(ctx, command{kind: cmdKill}) }

// Signal forwards sig to the child.
func (m *Monitor) Signal(ctx context.Context, sig syscall.Signal) error {
	return m.send(ctx, command{kind: cmdSignal, sig: sig})
}

// SetReady records whether the child with the given pid is ready. It is
// ignored for a child that has already been replaced.
func (m *Monitor) SetReady(ctx context.Context, pid int, ready bool) error {
	return m.send(ctx, command{kind: cmdReady, pid: pid, ready: ready})
}

// Post adds an event from a layer above to the ordered stream. Kind,
// Reason, Message, Data and Private are used. A non-empty Message becomes
// the status message. A non-nil Status.Details is merged into the
// snapshot's Details key by key (a nil value removes its key), so layers
// that own different keys never overwrite each other.
func (m *Monitor) Post(ctx context.Context, ev Event) error {
	return m.send(ctx, command{kind: cmdPost, ev: ev})
}

// PostFunc runs f in the monitor's goroutine and posts the events it
// returns, in order, as Post would. A layer whose hooks emit events too
// computes the events it posts from outside there, in step with its
// hooks: what it finds then never overtakes what a hook found later. f
// must return promptly: the monitor takes no command meanwhile.
func (m *Monitor) PostFunc(ctx context.Context, f func() []Event) error {
	return m.send(ctx, command{kind: cmdPost, post: f})
}

// Ping returns once the monitor's goroutine has taken a command, proving it
// is not stuck; a service watchdog keys on it. It emits no event.
func (m *Monitor) Ping(ctx context.Context) error { return m.send(ctx, command{kind: cmdPing}) }

type afterStop int

const (
	stayDown afterStop = iota
	respawn
	exitRun
)

type run struct {
	child          *signals.Child
	tail           *tail
	requested      bool
	recycle        string   // why a Recycle stops it; its exit is then a failure
	stdout, stderr *os.File // read ends of the child's pipes, owned by watch
	// outside are the descendants it had outside its group when it was
	// asked to stop, found while they were still known to be its own.
	outside atomic.Pointer[[]leftover]
}

type exitMsg struct {
	r *run
	// escaped are the processes the child left behind outside its group;
	// stopping says the monitor is stopping them.
	escaped  []leftover
	stopping bool
}

// loop is the monitor's state, owned by the Run goroutine alone.
type loop struct {
	m      *Monitor
	cfg    *Config
	reaper *signals.Reaper
	log    *slog.Logger

	st      Status
	seq     uint64
	spawns  int
	cur     *run
	after   afterStop
	exiting bool

	backoff, kill, reset *time.Timer
	// held is the standby the child waits in, so that a recheck that finds
	// the same situation adds no event.
	held *Park
	// quickKills counts outside shutdowns in a row that came within
	// Backoff.Initial of the child's start.
	quickKills int
	// spare are the output pipes for the next spawn, made while the
	// current child runs so that a respawn need not wait for them.
	spare *outputPipes
}

func timerC(t *time.Timer) <-chan time.Time {
	if t == nil {
		return nil
	}
	return t.C
}

func stopTimer(t **time.Timer) {
	if *t != nil {
		(*t).Stop()
		*t = nil
	}
}

func (l *loop) run(ctx context.Context) error {
	if ctx.Err() != nil {
		// Told to stop before it began (its owner was stopped while it
		// was setting up): a child spawned now would only be stopped at
		// once, and a bridge would have connected for nothing.
		l.setState(StateStopped)
		l.emit(Event{Kind: EventStopped})
		return nil
	}
	defer func() { l.spare.close() }()
	l.spawn()
	ctxDone := ctx.Done()
	for {
		if l.exiting && l.cur == nil {
			stopTimer(&l.backoff)
			stopTimer(&l.kill)
			stopTimer(&l.reset)
			return nil
		}
		select {
		case <-ctxDone:
			ctxDone = nil
			l.stop(exitRun)
		case c := <-l.m.cmds:
			c.reply <- l.handle(c)
		case e := <-l.m.exits:
			l.exited(e)
		case <-timerC(l.backoff):
			l.backoff = nil
			l.spawn()
		case <-timerC(l.kill):
			l.kill = nil
			l.forceKill("stop timeout")
		case <-timerC(l.reset):
			l.reset = nil
			l.forgive()
		}
	}
}

func (l *loop) emit(ev Event) {
	l.seq++
	ev.Seq = l.seq
	ev.At = time.Now()
	ev.Status = l.st
	st := l.st
	l.m.status.Store(&st)
	l.m.broker.publish(ev)
}

// setState enters s, without a reason; a caller whose state has one sets
// it after.
func (l *loop) setState(s State) {
	l.st.State = s
	l.st.Since = time.Now()
	l.st.Reason, l.st.Holder = "", nil
	if s != StateBackoff {
		l.st.NextStartAt = nil
	}
}

func (l *loop) handle(c command) error {
	if l.exiting && c.kind != cmdReady && c.kind != cmdPost && c.kind != cmdKill && c.kind != cmdPing {
		return ErrShuttingDown
	}
	switch c.kind {
	case cmdStart:
		if l.cur != nil && !l.cur.requested {
			return &StateError{Op: "start", State: l.st.State, Pid: l.cur.child.Pid}
		}
		if l.cur != nil { // stopping: come back up once it is down
			l.after = respawn
			return nil
		}
		l.forgiveIfParked()
		l.spawn()
	case cmdRestart:
		l.forgiveIfParked()
		l.stop(respawn)
	case cmdStop:
		l.stop(stayDown)
	case cmdRecycle:
		if l.cur == nil || l.cur.child.Pid != c.pid || l.cur.requested {
			return nil
		}
		l.stop(respawn)
		l.cur.recycle = c.reason
	case cmdKill:
		if l.cur == nil {
			return nil
		}
		if !l.cur.requested {
			l.stop(stayDown)
		}
		l.forceKill("forced")
	case cmdSignal:
		if l.cur == nil {
			return &StateError{Op: "signal", State: l.st.State}
		}
		if err := l.signal(c.sig); err != nil {
			return fmt.Errorf("signal %s to pid %d: %w", signals.Name(c.sig), l.cur.child.Pid, err)
		}
		l.log.Info("forwarded signal to the "+l.cfg.Name, "signal", signals.Name(c.sig), "pid", l.cur.child.Pid)
		l.emit(Event{Kind: EventSignal, Pid: l.cur.child.Pid, Signal: signals.Name(c.sig)})
	case cmdReady:
		if l.cur == nil || l.cur.child.Pid != c.pid || l.st.Ready == c.ready {
			return nil
		}
		l.st.Ready = c.ready
		ready := c.ready
		l.emit(Event{Kind: EventReady, Pid: c.pid, Ready: &ready})
	case cmdPost:
		if c.post == nil {
			l.post(c.ev)
			break
		}
		for _, ev := range c.post() {
			l.post(ev)
		}
	}
	return nil
}

// post emits an event from a layer above (Post, a hook).
func (l *loop) post(ev Event) {
	if ev.Kind == "" {
		ev.Kind = EventNotice
	}
	if ev.Message != "" {
		l.st.Message = ev.Message
	}
	if ev.Status.Details != nil {
		l.st.Details = mergeDetails(l.st.Details, ev.Status.Details)
	}
	l.emit(Event{Kind: ev.Kind, Pid: l.st.Pid, Reason: ev.Reason, Message: ev.Message, Data: ev.Data, Private: ev.Private})
}

// emitExit emits a child's exit event, and right after it the events the
// AfterExiters derive from the exit, before anything that follows
// from it. The hooks run before the exit is published, so that a layer
// above that follows the stream learns of the exit only once its hook
// has seen it.
func (l *loop) emitExit(ev Event) {
	var after []Event
	if ev.Exit != nil && ev.Exit.Pid != 0 {
		for _, h := range l.m.hooks.exit {
			after = append(after, h.AfterExit(*ev.Exit, l.st)...)
		}
	}
	l.emit(ev)
	for _, a := range after {
		l.post(a)
	}
}

// mergeDetails returns a new map: earlier snapshots share the old one with
// subscribers, so it must never change in place.
func mergeDetails(old, upd map[string]any) map[string]any {
	out := make(map[string]any, len(old)+len(upd))
	for k, v := range old {
		out[k] = v
	}
	for k, v := range upd {
		if v == nil {
			delete(out, k)
			continue
		}
		out[k] = v
	}
	return out
}

// forgiveIfParked clears the failure count when a person brings the child
// back from a state it would not have left on its own.
func (l *loop) forgiveIfParked() {
	if l.cur == nil && l.st.State != StateBackoff && l.st.State != StateStarting {
		l.st.ConsecutiveFailures = 0
		l.st.Crashloop = false
	}
}

func (l *loop) spawn() {
	stopTimer(&l.backoff)
	l.after = stayDown
	if p := l.m.hooks.holdSpawn(); p != nil {
		l.standby(p)
		return
	}
	l.held = nil
	l.setState(StateStarting)
	l.st.Message = ""
	l.emit(Event{Kind: EventStarting, Attempt: l.spawns + 1})

	child, r, err := l.startChild()
	if l.spawns > 0 {
		l.st.Restarts++
	}
	l.spawns++
	if err != nil {
		rec := ExitRecord{Class: ClassFailure, Error: err.Error(), At: time.Now(), Tail: []string{}}
		var ref Refusal
		var holder *Holder
		if errors.As(err, &ref) {
			rec.Reason, holder = ref.Refusal()
		}
		if c := Causer(nil); errors.As(err, &c) {
			l.post(c.CauseEvent())
		}
		l.failed(&rec, EventSpawnFailed, holder, func() { l.log.Error("could not start the "+l.cfg.Name+"; will retry", "error", err) })
		return
	}
	l.cur = r
	for _, h := range l.m.hooks.after {
		h.AfterSpawn(child.Identity)
	}
	now := child.Started
	l.setState(StateRunning)
	l.st.Pid = child.Pid
	l.st.StartedAt = &now
	l.st.Ready = !l.cfg.ExternalReadiness
	l.log.Info(l.cfg.Name+" started", "pid", child.Pid, "command", l.cfg.Command)
	l.emit(Event{Kind: EventStarted, Pid: child.Pid})
	go l.m.watch(r, l.reaper)
	if l.cfg.Backoff.Reset > 0 && (l.st.ConsecutiveFailures > 0 || l.st.Crashloop) {
		l.reset = time.NewTimer(l.cfg.Backoff.Reset)
	}
	// After the start is told, while the child is busy starting: not on
	// the way from an exit to the next spawn. Failing here is not fatal;
	// the next spawn makes its own pipes and says why it could not.
	l.spare, _ = newPipes()
}

// outputPipes are the two output pipes of one child: the read ends are the
// monitor's, the write ends the child's.
type outputPipes struct {
	outR, outW, errR, errW *os.File
}

func newPipes() (*outputPipes, error) {
	outR, outW, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("create stdout pipe: %w", err)
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		outR.Close()
		outW.Close()
		return nil, fmt.Errorf("create stderr pipe: %w", err)
	}
	growPipe(outW)
	growPipe(errW)
	return &outputPipes{outR, outW, errR, errW}, nil
}

// close closes all four ends; p may be nil.
func (p *outputPipes) close() {
	if p == nil {
		return
	}
	p.outR.Close()
	p.outW.Close()
	p.errR.Close()
	p.errW.Close()
}

func (l *loop) startChild() (*signals.Child, *run, error) {
	for _, h := range l.m.hooks.before {
		if err := h.BeforeSpawn(l.post); err != nil {
			return nil, nil, err
		}
	}
	path, err := resolve(l.cfg.Command[0])
	if err != nil {
		return nil, nil, err
	}
	p := l.spare
	l.spare = nil
	if p == nil {
		if p, err = newPipes(); err != nil {
			return nil, nil, err
		}
	}
	outR, outW, errR, errW := p.outR, p.outW, p.errR, p.errW
	env := l.cfg.Env
	if env == nil {
		env = os.Environ()
	}
	child, err := l.reaper.Spawn(signals.SpawnAttr{
		Path: path, Args: l.cfg.Command, Env: env, Dir: l.cfg.Dir,
		Stdout: outW, Stderr: errW,
		Pdeathsig: syscall.SIGKILL, OwnGroup: true,
	})
	outW.Close()
	errW.Close()
	if err != nil {
		outR.Close()
		errR.Close()
		return nil, nil, describeSpawnError(l.cfg.Command[0], l.cfg.Dir, err)
	}
	// The output is read from when spawn has logged the start, so the
	// bridge's first lines never appear in the log before it.
	r := &run{child: child, tail: newTail(l.cfg.TailLines), stdout: outR, stderr: errR}
	return child, r, nil
}

// pipeBytes is the capacity asked for the child's output pipes, instead
// of Linux's 64 KiB: a chatty child then blocks less often on a full pipe,
// and each read takes in more lines at once. The kernel may give less
// (fs.pipe-max-size); the pipe then keeps its size.
const pipeBytes = 1 << 20

func growPipe(f *os.File) {
	if c, err := f.SyscallConn(); err == nil {
		c.Control(func(fd uintptr) { unix.FcntlInt(fd, unix.F_SETPIPE_SZ, pipeBytes) })
	}
}

// SpawnError says why the child could not be started, as exec.Error does
// for os/exec: Op is "find" when the program could not be found or is not
// runnable, "start" when the spawn itself failed.
type SpawnError struct {
	Op   string
	Name string // the program, as given in Config.Command
	Dir  string // Config.Dir, if set
	Err  error
}

func (e *SpawnError) Error() string {
	q := fmt.Sprintf("cannot start %q", e.Name)
	if e.Op == "find" {
		switch {
		case errors.Is(e.Err, exec.ErrNotFound):
			return q + ": not found in PATH; install it or give its full path"
		case errors.Is(e.Err, fs.ErrNotExist):
			return q + ": no such file; check the path"
		case errors.Is(e.Err, fs.ErrPermission):
			return q + ": permission denied (is it executable? a script needs its interpreter, e.g. node script.js)"
		}
		return q + ": " + e.Err.Error()
	}
	switch {
	case errors.Is(e.Err, syscall.ENOENT) && e.Dir != "":
		return fmt.Sprintf("%s in %q: %v (does the working directory exist?)", q, e.Dir, e.Err)
	case errors.Is(e.Err, syscall.EACCES):
		return fmt.Sprintf("%s: %v (is it executable, and the working directory readable?)", q, e.Err)
	}
	return q + ": " + e.Err.Error()
}

func (e *SpawnError) Unwrap() error { return e.Err }

// resolve finds the program the way a shell would, and makes a relative
// path absolute first: the child changes into Dir before exec, and a
// relative path would then point somewhere else.
func resolve(name string) (string, error) {
	path, err := exec.LookPath(name)
	if err != nil && !errors.Is(err, exec.ErrDot) {
		return "", &SpawnError{Op: "find", Name: name, Err: err}
	}
	return filepath.Abs(path)
}

func describeSpawnError(name, dir string, err error) error {
	return &SpawnError{Op: "start", Name: name, Dir: dir, Err: err}
}

// watch drains the child's output and, once the child is reaped and what
// it wrote has been read, reports the exit to the loop. Processes it left
// behind outside its group are found then: stopped when the reaper reaps
// all (they are our children now), reported otherwise.
func (m *Monitor) watch(r *run, reaper *signals.Reaper) {
	outR, errR := r.stdout, r.stderr
	pipes := [2]*pipeReader{{f: outR}, {f: errR}}
	var readers sync.WaitGroup
	readers.Add(2)
	pid := r.child.Pid
	hs := &m.hooks
	drain := func(p *pipeReader, s Stream) {
		defer readers.Done()
		f := p.f
		defer f.Close()
		recent := r.tail.recent()
		batch := func() {
			recent.commit()
			hs.flushLines(s)
		}
		var raw func([]byte, []int)
		if len(hs.raw) > 0 {
			raw = func(b []byte, ends []int) { hs.writeRaw(s, b, ends) }
		}
		readLines(p, m.cfg.MaxLineBytes, func(text []byte, truncated bool) {
			// Most lines of a chatty child are wanted by no hook but the
			// tail: they take no call.
			b := lineStart(text)
			if !hs.askTail[b] || hs.keepInTail(text) {
				recent.note(text)
			}
			if hs.askLine[b] {
				hs.writeLine(Line{Stream: s, Pid: pid, Text: text, Truncated: truncated})
			}
		}, batch, raw)
		// An unterminated last line comes after the last read.
		batch()
		hs.endOutput(s)
	}
	go drain(pipes[0], Stdout)
	go drain(pipes[1], Stderr)
	readersDone := make(chan struct{})
	go func() { readers.Wait(); close(readersDone) }()

	<-r.child.Done()
	msg := exitMsg{r: r}
	if reaper.ReapsAll() {
		msg.escaped = named(reaper.Strays(r.child.StartTime, pid))
		if out := r.outside.Load(); out != nil {
			// Told to stop with the child, some may be gone already.
			msg.escaped = appendNew(msg.escaped, *out, false)
		}
		msg.stopping = len(msg.escaped) > 0
	} else {
		if signals.HasWriters(outR) || signals.HasWriters(errR) {
			// Something still holds the output: a process of the group,
			// dying of the reaper's SIGKILL, or one that left the group.
			msg.escaped = named(signals.PipeHolders(outR, pid))
		}
		if out := r.outside.Load(); out != nil {
			msg.escaped = appendNew(msg.escaped, *out, true)
		}
	}
	if msg.stopping {
		m.sweeps.Add(1)
		go func() {
			defer m.sweeps.Done()
			ids := make([]signals.Identity, len(msg.escaped))
			for i, e := range msg.escaped {
				ids[i] = e.Identity
			}
			signals.Terminate(ids, m.cfg.StopTimeout, func() []signals.Identity {
				return reaper.Strays(r.child.StartTime, pid)
			})
		}()
	}
	for _, p := range pipes {
		p.finish()
	}
	select {
	case <-readersDone: // as usual: the pipes ended with the child
	default:
		t := time.NewTimer(m.cfg.WaitDelay)
		select {
		case <-readersDone:
		case <-t.C:
			outR.Close()
			errR.Close()
			<-readersDone
		}
		t.Stop()
	}
	m.exits <- msg
}

func (l *loop) exited(e exitMsg) {
	r := e.r
	ws := r.child.Status()
	class := Classify(ws, l.cfg.NormalSignals, r.requested)
	rec := newExitRecord(r.child.Pid, ws, class)
	if r.recycle != "" {
		rec.Class, rec.Reason = ClassFailure, r.recycle
		class = ClassFailure
	}
	// When it was reaped, not when its output was finished.
	rec.At = r.child.Ended()
	uptime := rec.At.Sub(r.child.Started)
	rec.UptimeMS = uptime.Milliseconds()
	rec.Tail = r.tail.snapshot()
	l.escaped(&rec, e)
	if class == ClassShutdown && !l.exiting && killedBySIGKILL(ws) &&
		(l.cfg.Backoff.Reset == 0 || uptime < l.cfg.Backoff.Reset) {
		// Nobody stops a bridge with SIGKILL on purpose, least of all
		// soon after its start: that is the OOM killer (or systemd-oomd),
		// and a bridge that runs out of memory again and again must back
		// off, raise crashloop and meet MaxRestarts like one that crashes.
		rec.Class, rec.Reason = ClassFailure, ReasonKilledEarly
		class = ClassFailure
	}

	// Outside kills within Backoff.Initial of the start, in a row: any
	// other end, or a child that lived longer, starts the count again.
	if class == ClassShutdown && uptime < l.cfg.Backoff.Initial {
		l.quickKills++
	} else {
		l.quickKills = 0
	}

	l.cur = nil
	stopTimer(&l.kill)
	stopTimer(&l.reset)
	l.st.Pid = 0
	l.st.StartedAt = nil
	l.st.Ready = false
	if l.cfg.Backoff.Reset > 0 && uptime >= l.cfg.Backoff.Reset {
		l.st.ConsecutiveFailures = 0
		l.st.Crashloop = false
	}

	switch class {
	case ClassRequested:
		l.st.LastExit = &rec
		stopped := func() {
			l.log.Info(l.cfg.Name+" stopped", "pid", rec.Pid, "exit", rec.Describe(), "uptime", uptime.Round(time.Millisecond).String())
		}
		switch {
		case l.exiting || l.after == stayDown:
			l.setState(StateStopped)
			l.emitExit(Event{Kind: EventExited, Pid: rec.Pid, Exit: &rec})
			stopped()
			l.emit(Event{Kind: EventStopped})
		default:
			l.emitExit(Event{Kind: EventExited, Pid: rec.Pid, Exit: &rec})
			stopped()
			l.spawn()
		}
	case ClassShutdown:
		l.st.LastExit = &rec
		// At once: whoever stopped it (a gateway freeing the port for a
		// bridge of its own, an OOM kill) should find it back before
		// anything else can take its port. Only when a child is killed
		// within Backoff.Initial of its start twice in a row does the next
		// one wait that long, so that something that keeps killing it
		// cannot make a tight loop.
		if l.quickKills < 2 {
			l.emitExit(Event{Kind: EventExited, Pid: rec.Pid, Exit: &rec})
			l.log.Info(l.cfg.Name+" was shut down from outside; starting it again at once", "pid", rec.Pid, "exit", rec.Describe(), "uptime", uptime.Round(time.Millisecond).String())
			l.spawn()
			return
		}
		// Jittered: the gateway spawns its own bridge exactly 1 s after
		// its kill, and the default Initial is 1 s too.
		delay := l.cfg.Backoff.Delay(1)
		l.enterBackoff(delay)
		l.st.Reason = ReasonShutdown
		l.emitExit(Event{Kind: EventExited, Pid: rec.Pid, Exit: &rec})
		l.log.Info(l.cfg.Name+" was shut down from outside right after it started, again; starting it again after a delay", "pid", rec.Pid, "exit", rec.Describe(), "uptime", uptime.Round(time.Millisecond).String())
		l.emit(Event{Kind: EventBackoff, DelayMS: delay.Milliseconds(), Attempt: l.spawns + 1, Reason: string(ClassShutdown)})
	default:
		l.failed(&rec, EventExited, nil, func() {
			l.log.Warn(l.cfg.Name+" failed", "pid", rec.Pid, "exit", rec.Describe(), "uptime", uptime.Round(time.Millisecond).String(), "tail", lastLines(rec.Tail, 3))
		})
	}
}

// failed handles an exit or spawn error counted as a failure: it backs off,
// raises crashloop, or gives up, and emits kind first. A spawn refused
// with a Refusal has its reason in rec.Reason and the holder it names.
// announce logs the failure; it runs right after that first event, so
// that listeners hear of the exit without waiting for the log to be
// written.
func (l *loop) failed(rec *ExitRecord, kind Kind, holder *Holder, announce func()) {
	l.st.LastExit = rec
	park := l.m.hooks.parkExit(*rec)
	if park != nil && park.Recheck > 0 {
		// Not the bridge's fault (its port was taken as it started): the
		// exit is told, and the monitor waits in the standby.
		if park.Reason != "" && rec.Reason == "" {
			rec.Reason = park.Reason
		}
		l.emitExit(Event{Kind: kind, Pid: rec.Pid, Exit: rec, Reason: rec.Reason})
		l.log.Info(l.cfg.Name+" exited: "+park.Message, "pid", rec.Pid, "exit", rec.Describe())
		l.standby(park)
		return
	}
	l.st.ConsecutiveFailures++
	n := l.st.ConsecutiveFailures
	if p := park; p != nil {
		l.setState(p.State)
		l.st.Message = p.Message
		l.st.Reason, l.st.Holder = p.Reason, p.Holder
		l.emitExit(Event{Kind: kind, Pid: rec.Pid, Exit: rec, Reason: rec.Reason})
		announce()
		l.log.Warn(l.cfg.Name+" parked until a start command", "state", p.State, "message", p.Message)
		l.emit(Event{Kind: Kind(p.State), Reason: p.Reason, Message: p.Message, Data: p.Data})
		return
	}
	if l.cfg.MaxRestarts > 0 && n >= l.cfg.MaxRestarts {
		l.setState(StateGivenUp)
		l.st.Reason = ReasonMaxRestarts
		l.st.Message = "it failed " + plural(n, "time") + " in a row, the most allowed; a start command tries again"
		l.emitExit(Event{Kind: kind, Pid: rec.Pid, Exit: rec, Reason: rec.Reason})
		announce()
		l.log.Error("giving up on the "+l.cfg.Name, "failures", n, "hint", cmp.Or(l.cfg.StartHint, "a start command")+" tries again")
		l.emit(Event{Kind: EventGivenUp, Message: l.st.Message})
		return
	}
	entering := !l.st.Crashloop && n >= l.cfg.CrashloopAfter
	if entering {
		l.st.Crashloop = true
	}
	var delay time.Duration
	if l.st.Crashloop {
		delay = l.cfg.Backoff.Capped()
	} else {
		delay = l.cfg.Backoff.Delay(n)
	}
	l.enterBackoff(delay)
	switch {
	case rec.Error != "" && rec.Reason != "":
		l.st.Reason, l.st.Holder = rec.Reason, holder
	case l.st.Crashloop:
		l.st.Reason = ReasonCrashloop
	default:
		l.st.Reason = ReasonFailure
	}
	l.emitExit(Event{Kind: kind, Pid: rec.Pid, Exit: rec, Reason: rec.Reason})
	announce()
	if entering {
		l.log.Error(l.cfg.Name+" is crash-looping; restarts continue at the longest delay", "failures", n, "delay", delay.Round(time.Millisecond).String())
		l.emit(Event{Kind: EventCrashloop, Attempt: n})
	}
	l.log.Info("restarting the "+l.cfg.Name+" after a delay", "delay", delay.Round(time.Millisecond).String(), "failures", n)
	l.emit(Event{Kind: EventBackoff, DelayMS: delay.Milliseconds(), Attempt: l.spawns + 1, Reason: string(ClassFailure)})
}

// standby waits in p's state and tries again after p.Recheck. Entering it,
// or finding a different situation on a recheck, is an event; finding the
// same one again is not.
func (l *loop) standby(p *Park) {
	same := l.held != nil && l.st.State == p.State && l.held.Message == p.Message && l.held.Reason == p.Reason
	l.held = p
	if !same {
		l.setState(p.State)
	}
	l.st.Message = p.Message
	l.st.Reason, l.st.Holder = p.Reason, p.Holder
	next := time.Now().Add(p.Recheck)
	l.st.NextStartAt = &next
	stopTimer(&l.backoff)
	l.backoff = time.NewTimer(p.Recheck)
	if same {
		return
	}
	l.log.Warn(l.cfg.Name+" on standby", "state", p.State, "reason", p.Reason, "message", p.Message)
	l.emit(Event{Kind: Kind(p.State), Reason: p.Reason, Message: p.Message, Data: p.Data})
}

func (l *loop) enterBackoff(d time.Duration) {
	l.setState(StateBackoff)
	next := time.Now().Add(d)
	l.st.NextStartAt = &next
	stopTimer(&l.backoff)
	l.backoff = time.NewTimer(d)
}

func (l *loop) forgive() {
	if l.cur == nil || (l.st.ConsecutiveFailures == 0 && !l.st.Crashloop) {
		return
	}
	l.log.Info(l.cfg.Name+" has stayed up; earlier failures forgiven", "pid", l.cur.child.Pid, "failures", l.st.ConsecutiveFailures)
	l.st.ConsecutiveFailures = 0
	l.st.Crashloop = false
	l.emit(Event{Kind: EventRecovered, Pid: l.cur.child.Pid})
}

// stop brings the child down and then does what after says. A stop that is
// already under way only has its outcome updated; exiting wins over all.
func (l *loop) stop(after afterStop) {
	if after == exitRun {
		l.exiting = true
	}
	if l.cur == nil {
		stopTimer(&l.backoff)
		switch {
		case after == respawn:
			l.spawn()
		case l.st.State != StateStopped:
			l.setState(StateStopped)
			l.emit(Event{Kind: EventStopped})
		}
		return
	}
	if l.cur.requested {
		l.cur.recycle = "" // a person's stop, restart or shutdown decides what follows
		if after != exitRun {
			l.after = after
		}
		return
	}
	l.cur.requested = true
	l.after = after
	pid := l.cur.child.Pid
	l.setState(StateStopping)
	l.log.Info("stopping the "+l.cfg.Name, "pid", pid, "signal", signals.Name(l.cfg.StopSignal), "timeout", l.cfg.StopTimeout.String())
	l.emit(Event{Kind: EventStopping, Pid: pid, Signal: signals.Name(l.cfg.StopSignal)})
	// What it started outside its group gets none of the signals below.
	// Note it now, while it is still known to be its own: it is reported
	// with the exit if it outlives it. Reaping all, the monitor stops it
	// after the exit, and tells it to stop now already.
	outside := signals.Descendants(pid, pid)
	if len(outside) > 0 {
		found := named(outside)
		l.cur.outside.Store(&found)
	}
	if err := l.signal(l.cfg.StopSignal); err != nil && !errors.Is(err, signals.ErrFinished) {
		l.log.Warn("could not send the stop signal", "pid", pid, "error", err)
	}
	// A stopped (SIGSTOP, Ctrl-Z) process would not act on the stop signal.
	_ = l.signal(syscall.SIGCONT)
	if len(outside) > 0 && l.reaper.ReapsAll() {
		signals.SignalAll(outside, syscall.SIGTERM)
	}
	stopTimer(&l.kill)
	l.kill = time.NewTimer(l.cfg.StopTimeout)
}

// signal sends sig to the current child, or to its group with SignalGroup.
func (l *loop) signal(sig syscall.Signal) error {
	if l.cfg.SignalGroup {
		return l.cur.child.SignalGroup(sig)
	}
	return l.cur.child.Signal(sig)
}

func (l *loop) forceKill(reason string) {
	if l.cur == nil {
		return
	}
	stopTimer(&l.kill)
	pid := l.cur.child.Pid
	l.log.Warn("killing the "+l.cfg.Name+"'s process group", "pid", pid, "reason", reason)
	l.emit(Event{Kind: EventKilling, Pid: pid, Reason: reason, Signal: "SIGKILL"})
	if err := l.cur.child.SignalGroup(syscall.SIGKILL); err != nil && !errors.Is(err, signals.ErrFinished) {
		l.log.Warn("could not kill the process group", "pid", pid, "error", err)
	}
}

// ReasonKilledEarly is the exit record's reason when a SIGKILL the
// monitor did not send ends the child before Backoff.Reset, which counts
// as a failure.
const ReasonKilledEarly = "killed by SIGKILL from outside before the backoff reset time (the OOM killer?)"

// killedBySIGKILL says the child died by SIGKILL, or is a wrapper (a
// shell, npm) that reported its own child's SIGKILL as exit 137.
func killedBySIGKILL(ws syscall.WaitStatus) bool {
	if ws.Signaled() {
		return ws.Signal() == syscall.SIGKILL
	}
	return ws.Exited() && ws.ExitStatus() == 128+int(syscall.SIGKILL)
}

// leftover is a process a child left behind, with its name as it was
// when it was found.
type leftover struct {
	signals.Identity
	name string
}

func named(ids []signals.Identity) []leftover {
	out := make([]leftover, len(ids))
	for i, id := range ids {
		out[i] = leftover{id, signals.ProcessName(id.Pid)}
	}
	return out
}

// appendNew adds to found those of more it does not hold yet; with
// alive, only those that still run.
func appendNew(found, more []leftover, alive bool) []leftover {
	for _, l := range more {
		if !slices.ContainsFunc(found, func(f leftover) bool { return f.Identity == l.Identity }) && (!alive || l.Alive()) {
			found = append(found, l)
		}
	}
	return found
}

// escaped notes in rec the processes the child left behind outside its
// group, and says so in the log.
func (l *loop) escaped(rec *ExitRecord, e exitMsg) {
	if len(e.escaped) == 0 {
		return
	}
	rec.Escaped = make([]Escapee, len(e.escaped))
	pids := make([]int, len(e.escaped))
	for i, l := range e.escaped {
		rec.Escaped[i] = Escapee{Pid: l.Pid, Name: l.name}
		pids[i] = l.Pid
	}
	rec.EscapedStopped = e.stopping
	if e.stopping {
		l.log.Warn("the "+l.cfg.Name+" left processes behind outside its process group; stopping them (SIGTERM, then SIGKILL after the stop timeout)",
			"pid", rec.Pid, "processes", pids, "timeout", l.cfg.StopTimeout.String())
		return
	}
	l.log.Warn("the "+l.cfg.Name+" left processes behind outside its process group, which outlive it; they are not stopped (a subreaper would stop them)",
		"pid", rec.Pid, "processes", pids)
}

func lastLines(lines []string, n int) []string {
	if len(lines) > n {
		return lines[len(lines)-n:]
	}
	return lines
}
