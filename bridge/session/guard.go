// Package session protects what one WhatsApp bridge depends on outside its
// own process: the session directory with its creds.json, and the port it
// listens on. A Guard holds a lock on the session so no second sidecar
// runs a bridge on it, keeps a copy of the last good creds.json, stops a
// bridge an earlier sidecar left behind, and refuses to spawn onto a port
// another program holds, without ever signalling that program.
//
// Everything the sidecar keeps about a session lives in the session's own
// .wa-sidecar directory, so deleting the session to pair again also drops
// the copy of credentials that no longer log in.
package session

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/wa-sidecar/wa-sidecar/bridge/gateway"
	"github.com/wa-sidecar/wa-sidecar/internal/lockfile"
	"github.com/wa-sidecar/wa-sidecar/internal/privdir"
	"github.com/wa-sidecar/wa-sidecar/procmon"
	"github.com/wa-sidecar/wa-sidecar/signals"
)

// Event kinds a Guard adds to the monitor's stream.
const (
	EventSession         procmon.Kind = "session"          // details.session was updated
	EventPortBusy        procmon.Kind = "port_busy"        // a foreign process holds the port; spawn refused
	EventCredsRestored   procmon.Kind = "creds_restored"   // a damaged creds.json was replaced by the last good copy
	EventCredsDamaged    procmon.Kind = "creds_damaged"    // creds.json is damaged and was not restored
	EventCredsMissing    procmon.Kind = "creds_missing"    // creds.json is gone but a good copy exists
	EventLeftoverStopped procmon.Kind = "leftover_stopped" // a bridge left by an earlier sidecar was stopped
)

// StateYielded is where the monitor waits while another bridge on this
// session holds the port: the gateway's own, spawned when it found no
// bridge it could adopt. The sidecar never signals it, checks the port
// about once a second, and starts its bridge as soon as the port is free.
const StateYielded procmon.State = "yielded"

// ReasonPortHeldByBridge is the yielded event's reason.
const ReasonPortHeldByBridge = "port_held_by_bridge"

// YieldRecheck is how often the port is checked while yielded, so that the
// sidecar's bridge starts within two seconds of the port being freed.
const YieldRecheck = time.Second

// DetailsKey is the key of the Guard's part of the status details.
const DetailsKey = "session"

// StateDirName is the directory inside the session that holds the
// sidecar's own files: the lock, the last good creds.json and the record
// of the last bridge spawned.
const StateDirName = ".wa-sidecar"

// Config says which session and port to guard.
type Config struct {
	SessionDir string // the bridge's --session directory; created if missing
	Port       int    // the bridge's port on 127.0.0.1; 0 skips the port check
	// RestoreCreds puts the last good copy back when creds.json is found
	// empty or corrupt before a spawn. A missing creds.json is never
	// restored: deleting it is how a user asks to pair again.
	RestoreCreds bool
	// LeftoverTimeout is how long a leftover bridge gets between SIGTERM
	// and SIGKILL; 3 s. StopLeftover, and so the sidecar's start, waits
	// meanwhile, so keep it short.
	LeftoverTimeout time.Duration
	Logger          *slog.Logger
}

// Details is the Guard's part of the status (details.session).
type Details struct {
	Dir    string     `json:"dir"`
	Paired bool       `json:"paired"`
	Creds  CredsState `json:"creds"`
	// Problem says what is wrong with a corrupt or unreadable creds.json.
	Problem string `json:"problem,omitempty"`
	// Backup is the last good copy, null when there is none yet.
	Backup     *Backup    `json:"backup"`
	RestoredAt *time.Time `json:"restored_at,omitempty"`
}

// CredsUnreadable is reported when creds.json exists but cannot be read.
const CredsUnreadable CredsState = "unreadable"

// Guard protects one session. It is a procmon hook (a SpawnHolder, a
// BeforeSpawner and an AfterSpawner): put it in the monitor's
// Config.Hooks, call StopLeftover before the monitor runs, and Run
// alongside it to keep a copy of creds.json once the bridge is ready.
type Guard struct {
	cfg      Config
	stateDir string
	log      *slog.Logger

	mu         sync.Mutex // orders BeforeSpawn against checkpoints from Run
	lock       *lockfile.Lock
	restoredAt *time.Time
	// posted is the last details.session sent to the monitor, so that a
	// retry that finds the session unchanged adds no event.
	posted *Details
	// leftover is the leftover_stopped event of StopLeftover, waiting for
	// the first BeforeSpawn to put it in the stream.
	leftover  *procmon.Event
	yieldedTo *signals.PortHolder // the bridge HoldSpawn last yielded to; the monitor's goroutine alone uses it

	forgedMu sync.Mutex
	forged   signals.Identity // the record last reported as naming another process
}

// Open takes the session's lock and returns its Guard. If another process
// holds the lock, the error is a *HeldError naming it.
func Open(cfg Config) (*Guard, error) {
	if cfg.SessionDir == "" {
		return nil, errors.New("no session directory to guard")
	}
	dir, err := filepath.Abs(cfg.SessionDir)
	if err != nil {
		return nil, fmt.Errorf("session directory %q: %w", cfg.SessionDir, err)
	}
	cfg.SessionDir = dir
	if err := gateway.CheckPort(cfg.Port); err != nil && cfg.Port != 0 {
		return nil, err
	}
	if cfg.LeftoverTimeout <= 0 {
		cfg.LeftoverTimeout = 3 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	g := &Guard{cfg: cfg, stateDir: filepath.Join(dir, StateDirName), log: cfg.Logger}
	if err := g.makeDirs(); err != nil {
		return nil, err
	}
	g.lock, err = lockFile(g.lockPath(), dir)
	if err != nil {
		return nil, err
	}
	return g, nil
}

// makeDirs makes the session directory and its .wa-sidecar (mode 0700)
// if they are missing, and checks that no other user can change them:
// whoever could would be able to plant links where the sidecar writes, or
// a bridge.json that names a process for it to stop.
func (g *Guard) makeDirs() error {
	// The session directory first: nothing is made in one that is refused.
	for _, dir := range []string{g.cfg.SessionDir, g.stateDir} {
		d, err := privdir.Open(dir, true)
		var unsafe *privdir.UnsafeError
		if errors.As(err, &unsafe) {
			return fmt.Errorf("session directory: %w", err)
		}
		if err != nil {
			return &DirError{Dir: dir, Err: err}
		}
		d.Close()
	}
	return nil
}

func (g *Guard) lockPath() string   { return filepath.Join(g.stateDir, "lock") }
func (g *Guard) backupPath() string { return filepath.Join(g.stateDir, "creds.json.last-good") }
func (g *Guard) recordPath() string { return filepath.Join(g.stateDir, "bridge.json") }

// Close releases the lock. Call it once the monitor has finished.
func (g *Guard) Close() error { return g.lock.Close() }

// BeforeSpawn is the guard's procmon.BeforeSpawner: it checks the lock and
// creds.json, and fails (so the monitor backs off and retries) while a
// foreign process holds the port. What it finds it emits in order, before
// the spawn it precedes: first the leftover_stopped of StopLeftover, then
// what it found of creds.json, then the session details if they changed.
// Each of these checks is quick; stopping a leftover bridge, which is
// not, is StopLeftover's.
func (g *Guard) BeforeSpawn(emit func(procmon.Event)) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.leftover != nil {
		emit(*g.leftover)
		g.leftover = nil
	}
	if err := g.relock(); err != nil {
		return err
	}
	g.checkCreds(emit)
	return g.checkPort()
}

// relock takes the lock again when its file has gone, as when the session
// directory was deleted to pair again.
func (g *Guard) relock() error {
	if !g.lock.Stale() {
		return nil
	}
	if err := g.makeDirs(); err != nil {
		return err
	}
	l, err := lockFile(g.lockPath(), g.cfg.SessionDir)
	if err != nil {
		return err
	}
	g.lock.Close()
	g.lock = l
	g.log.Info("the session lock file had gone (session directory deleted?); locked the session again", "lock", g.lockPath())
	return nil
}

func (g *Guard) checkCreds(emit func(procmon.Event)) {
	path := credsFile(g.cfg.SessionDir)
	creds, data, err := readCreds(path)
	if err != nil {
		g.log.Warn("cannot read creds.json", "error", err)
		g.emitDetails(emit, Creds{State: CredsUnreadable, Problem: err.Error()})
		return
	}
	backup := statBackup(g.backupPath())
	switch creds.State {
	case CredsEmpty, CredsCorrupt:
		creds = g.damaged(emit, path, creds, data, backup)
	case CredsMissing:
		if backup != nil {
			msg := fmt.Sprintf("creds.json is missing from %s, so the bridge will ask to pair. If you did not delete it on purpose, "+
				"the last good copy (from %s) can be restored: stop wa-sidecar, run `cp %s %s`, and start it again",
				g.cfg.SessionDir, backup.SavedAt.Format(time.DateTime), backup.Path, path)
			g.log.Warn(msg)
			emit(procmon.Event{Kind: EventCredsMissing, Message: msg, Data: map[string]any{"backup": backup.Path}})
		}
	case CredsOK:
		if saved, err := saveBackup(g.backupPath(), creds, data); err != nil {
			g.log.Warn("could not keep a copy of creds.json", "error", err)
		} else if saved {
			g.log.Debug("kept a copy of creds.json", "path", g.backupPath())
		}
	}
	g.emitDetails(emit, creds)
}

// damaged handles an empty or corrupt creds.json: the bridge would take it
// for no pairing at all and ask for a new one, so the last good copy is
// put back (or the user is told how), and the damaged file is kept aside.
func (g *Guard) damaged(emit func(procmon.Event), path string, creds Creds, data []byte, backup *Backup) Creds {
	what := "empty"
	if creds.State == CredsCorrupt {
		what = "corrupt (" + creds.Problem + ")"
	}
	if backup == nil {
		msg := fmt.Sprintf("creds.json in %s is %s and there is no good copy to restore; the bridge will ask to pair again: scan its QR code",
			g.cfg.SessionDir, what)
		g.log.Error(msg)
		emit(procmon.Event{Kind: EventCredsDamaged, Message: msg, Data: map[string]any{"creds": string(creds.State)}})
		return creds
	}
	if !g.cfg.RestoreCreds {
		msg := fmt.Sprintf("creds.json in %s is %s; the last good copy (from %s) is at %s. To restore it: stop wa-sidecar, run `cp %s %s`, and start it again",
			g.cfg.SessionDir, what, backup.SavedAt.Format(time.DateTime), backup.Path, backup.Path, path)
		g.log.Error(msg)
		emit(procmon.Event{Kind: EventCredsDamaged, Message: msg, Data: map[string]any{"creds": string(creds.State), "backup": backup.Path}})
		return creds
	}
	good, err := readPrivate(backup.Path)
	// An empty file is kept aside too: its time and size are what is left
	// to tell what happened, as a corrupt one's content is.
	damagedCopy := filepath.Join(g.stateDir, "creds.json.damaged")
	if err == nil {
		err = writeFileAtomic(damagedCopy, data, 0o600)
	}
	if err == nil {
		err = writeFileAtomic(path, good, 0o600)
	}
	if err != nil {
		msg := fmt.Sprintf("creds.json in %s is %s and restoring the last good copy failed (%v); restore it by hand: stop wa-sidecar, run `cp %s %s`, and start it again",
			g.cfg.SessionDir, what, err, backup.Path, path)
		g.log.Error(msg)
		emit(procmon.Event{Kind: EventCredsDamaged, Message: msg, Data: map[string]any{"creds": string(creds.State), "backup": backup.Path}})
		return creds
	}
	now := time.Now()
	g.restoredAt = &now
	msg := fmt.Sprintf("creds.json in %s was %s; restored the last good copy (from %s)", g.cfg.SessionDir, what, backup.SavedAt.Format(time.DateTime))
	g.log.Warn(msg, "damaged_copy", damagedCopy)
	emit(procmon.Event{Kind: EventCredsRestored, Message: msg, Data: map[string]any{"was": string(creds.State), "backup": backup.Path, "damaged_copy": damagedCopy}})
	return InspectCreds(good)
}

// emitDetails emits the session event with details.session as creds
// leave it, unless they are what was last emitted. g.mu is held.
func (g *Guard) emitDetails(emit func(procmon.Event), creds Creds) {
	if ev, ok := g.details(creds); ok {
		emit(ev)
	}
}

// details is the session event for creds, and whether it says anything
// new. g.mu is held.
func (g *Guard) details(creds Creds) (procmon.Event, bool) {
	d := Details{
		Dir:        g.cfg.SessionDir,
		Paired:     creds.State == CredsOK && creds.Paired,
		Creds:      creds.State,
		Problem:    creds.Problem,
		Backup:     statBackup(g.backupPath()),
		RestoredAt: g.restoredAt,
	}
	// DeepEqual follows the pointers, and cannot miss a field added later.
	if g.posted != nil && reflect.DeepEqual(*g.posted, d) {
		return procmon.Event{}, false
	}
	g.posted = &d
	return procmon.Event{Kind: EventSession, Status: procmon.Status{Details: map[string]any{DetailsKey: d}}}, true
}

// checkpoint keeps a copy of creds.json once the bridge is connected, so a
// fresh pairing is protected before the next spawn, and reports whether it
// saved one. The bridge may be writing the file right now; a torn read is
// simply not copied.
func (g *Guard) checkpoint() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	creds, data, err := readCreds(credsFile(g.cfg.SessionDir))
	if err != nil || creds.State != CredsOK || !creds.Paired {
		return false
	}
	saved, err := saveBackup(g.backupPath(), creds, data)
	if err != nil {
		g.log.Warn("could not keep a copy of creds.json", "error", err)
		return false
	}
	return saved
}

// sessionNow is the session event for creds.json as it is now, if it says
// anything new. It runs in the monitor's goroutine (PostFunc), as the
// hooks do, so that a checkpoint's details never overwrite newer ones
// that a spawn found in between.
func (g *Guard) sessionNow() []procmon.Event {
	g.mu.Lock()
	defer g.mu.Unlock()
	creds, _, err := readCreds(credsFile(g.cfg.SessionDir))
	if err != nil {
		creds = Creds{State: CredsUnreadable, Problem: err.Error()}
	}
	if ev, ok := g.details(creds); ok {
		return []procmon.Event{ev}
	}
	return nil
}

// spawnRecord is the identity of the last bridge spawned on this session.
type spawnRecord struct {
	signals.Identity
	BootID string `json:"boot_id"` // start times only compare within one boot
	// Cmdline is the bridge's argument vector as /proc showed it after the
	// spawn: a process with the recorded pid and start time but another
	// command line is not the bridge (the record was forged), and is
	// never signalled.
	Cmdline []string  `json:"cmdline"`
	Port    int       `json:"port,omitempty"`
	At      time.Time `json:"at"`
}

// AfterSpawn is the guard's procmon.AfterSpawner: it records the new bridge's
// pid, start time and command line, so that a later sidecar recognises it
// if this one dies without stopping it.
func (g *Guard) AfterSpawn(id signals.Identity) {
	args, err := signals.CmdlineOfSpawned(id.Pid)
	if err == nil && len(args) == 0 {
		err = errors.New("an empty command line")
	}
	if err == nil {
		var data []byte
		data, err = json.Marshal(spawnRecord{Identity: id, BootID: bootID(), Cmdline: args, Port: g.cfg.Port, At: time.Now().UTC()})
		if err == nil {
			err = writeFileAtomic(g.recordPath(), append(data, '\n'), 0o600)
		}
	}
	if err != nil {
		g.log.Warn("could not record the bridge's pid; a bridge left behind by a crash would not be recognised", "error", err)
	}
}

// StopLeftover stops the recorded bridge if it still runs, and what is
// left of its process group. With the lock held, no other sidecar can be
// running it, so it is left over from an earlier sidecar of this session
// that died without stopping it (#19124) and would fight the new bridge
// for the WhatsApp session, even when it does not hold the port. The
// parent-death signal reaches only the bridge itself, so a node under npm
// or sh outlives it in its group.
//
// Call it once, after Open and before the monitor runs: it can wait
// LeftoverTimeout and then as long again for the processes to go, which
// no hook may. Its leftover_stopped event is emitted by the next
// BeforeSpawn, before the spawn that follows it.
func (g *Guard) StopLeftover() {
	g.mu.Lock()
	defer g.mu.Unlock()
	rec, ok := g.readRecord()
	if !ok {
		return
	}
	procs := g.leftoverProcs(rec)
	if len(procs) == 0 {
		return
	}
	leaderAlive := procs[0] == rec.Identity
	name := signals.ProcessName(procs[0].Pid)
	g.log.Warn("processes started by an earlier wa-sidecar on this session are still running; stopping them",
		"pid", rec.Pid, "name", name, "bridge_running", leaderAlive, "processes", len(procs))
	stopped, err := signals.Terminate(procs, g.cfg.LeftoverTimeout, nil)
	if err != nil {
		g.log.Error("could not stop the leftover bridge", "pid", rec.Pid, "error", err)
		return
	}
	if stopped == 0 {
		return
	}
	msg := fmt.Sprintf("stopped bridge pid %d (%s), left running by an earlier wa-sidecar", rec.Pid, name)
	switch {
	case !leaderAlive:
		msg = fmt.Sprintf("stopped %d process(es) (%s, …) left in the process group of bridge pid %d by an earlier wa-sidecar", stopped, name, rec.Pid)
	case stopped > 1:
		msg = fmt.Sprintf("stopped bridge pid %d (%s) and %d more process(es) of its group, left running by an earlier wa-sidecar", rec.Pid, name, stopped-1)
	}
	// "pid" is the event's own field on the wire (the current bridge).
	g.leftover = &procmon.Event{Kind: EventLeftoverStopped, Message: msg,
		Data: map[string]any{"bridge_pid": rec.Pid, "name": name, "processes": stopped}}
}

// HoldSpawn is the guard's procmon.SpawnHolder: while another bridge on
// this session (not one an earlier sidecar left, which StopLeftover
// stops) holds the port, the spawn waits in yielded instead of failing.
// Any other holder is left to BeforeSpawn, which reports port_busy and
// backs off.
func (g *Guard) HoldSpawn() *procmon.Park {
	if g.cfg.Port == 0 {
		return nil
	}
	if free, err := portFree(g.cfg.Port); err != nil || free {
		return nil
	}
	if h := g.yieldedTo; h != nil && h.Pid != 0 && h.Alive() {
		// Still the one yielded to, and the port still busy: no need to
		// walk /proc again, once a second, for as long as it runs.
		return g.yieldPark(*h)
	}
	g.yieldedTo = nil
	holders, err := portHolders(g.cfg.Port)
	if err != nil {
		return nil
	}
	ours := g.leftovers()
	for _, h := range holders {
		if h.Pid == 0 {
			if g.gatewayStartedABridge() {
				return g.yieldPark(h)
			}
			continue
		}
		if ours[h.Identity] || !g.bridgeOnSession(h.Pid) {
			continue
		}
		g.yieldedTo = &h
		return g.yieldPark(h)
	}
	return nil
}

// gatewayStartedABridge says the gateway's bridge.pid in the session was
// written after the sidecar last spawned a bridge there: a holder of the
// port that the sidecar cannot see (in another PID namespace, as in a
// compose or Kubernetes pod without a shared one, or of another user) is
// then most likely that bridge. The gateway removes the file when it stops
// its bridge.
func (g *Guard) gatewayStartedABridge() bool {
	st, err := os.Lstat(filepath.Join(g.cfg.SessionDir, "bridge.pid"))
	if err != nil || !st.Mode().IsRegular() {
		return false
	}
	rec, ok := g.readRecord()
	return !ok || st.ModTime().After(rec.At)
}

// yieldPark is the standby for a bridge on this session holding the port.
func (g *Guard) yieldPark(h signals.PortHolder) *procmon.Park {
	who := fmt.Sprintf("pid %d (%s),", h.Pid, h.Name)
	if h.Pid == 0 {
		who = fmt.Sprintf("a process of uid %d that wa-sidecar cannot see (another PID namespace?), started by the gateway as its bridge.pid says,", h.UID)
	}
	msg := fmt.Sprintf("another bridge on this session, %s holds port %d: most likely the gateway's own, "+
		"started when it found no bridge it could use. wa-sidecar does not signal it, and starts its bridge "+
		"within 2 s once the port is free. To hand the bridge over, restart the gateway after wa-sidecar "+
		"(for example: systemctl --user restart hermes-gateway)", who, g.cfg.Port)
	return &procmon.Park{
		State: StateYielded, Reason: ReasonPortHeldByBridge, Message: msg, Recheck: YieldRecheck,
		// Not "pid": that is the event's own field.
		Data:   map[string]any{"port": g.cfg.Port, "holder_pid": h.Pid, "holder_name": h.Name},
		Holder: procmonHolder(h),
	}
}

// leftovers lists the processes of the bridge an earlier sidecar of this
// session recorded, which StopLeftover stops rather than yields to.
func (g *Guard) leftovers() map[signals.Identity]bool {
	rec, ok := g.readRecord()
	if !ok {
		return nil
	}
	out := map[signals.Identity]bool{}
	for _, id := range g.leftoverProcs(rec) {
		out[id] = true
	}
	return out
}

// leftoverProcs is what is left of the bridge rec names, checked against
// the record beyond its pid and start time, which anyone can read in
// /proc: a live bridge must still have the recorded command line, and
// every process must run as this user, as the bridges it spawns do. A
// record that names anything else names nothing, and is reported.
func (g *Guard) leftoverProcs(rec spawnRecord) []signals.Identity {
	procs := leftoverGroup(rec.Identity)
	if len(procs) > 0 && procs[0] == rec.Identity {
		args, err := signals.Cmdline(rec.Pid)
		if err != nil || !slices.Equal(args, rec.Cmdline) {
			g.warnForged(rec)
			return nil
		}
	}
	out := procs[:0]
	for _, id := range procs {
		if uid, ok := processUID(id.Pid); ok && uid == os.Geteuid() {
			out = append(out, id)
		}
	}
	return out
}

// warnForged says, once per record, that it names a process that is not
// the bridge it recorded.
func (g *Guard) warnForged(rec spawnRecord) {
	g.forgedMu.Lock()
	defer g.forgedMu.Unlock()
	if g.forged == rec.Identity {
		return
	}
	g.forged = rec.Identity
	g.log.Warn("the record of the last bridge names a process that is not that bridge (another command line); not stopping it",
		"record", g.recordPath(), "pid", rec.Pid, "name", signals.ProcessName(rec.Pid))
}

// processUID is the user pid runs as (the owner of its /proc directory).
func processUID(pid int) (int, bool) {
	fi, err := os.Stat("/proc/" + strconv.Itoa(pid))
	if err != nil {
		return 0, false
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	return int(st.Uid), ok
}

// bridgeOnSession says whether pid runs with this session as its
// --session argument, as every Hermes bridge does.
func (g *Guard) bridgeOnSession(pid int) bool {
	args, err := signals.Cmdline(pid)
	if err != nil {
		return false
	}
	for i, a := range args {
		var dir string
		switch {
		case a == "--session" && i+1 < len(args):
			dir = args[i+1]
		case strings.HasPrefix(a, "--session="):
			dir = a[len("--session="):]
		default:
			continue
		}
		if sameDir(dir, g.cfg.SessionDir, pid) {
			return true
		}
	}
	return false
}

// sameDir compares a session path as another process gave it with ours.
// A relative path is its own working directory's business, so it is read
// against /proc/PID/cwd; symlinks are resolved on both sides.
func sameDir(theirs, ours string, pid int) bool {
	if !filepath.IsAbs(theirs) {
		cwd, err := os.Readlink("/proc/" + strconv.Itoa(pid) + "/cwd")
		if err != nil {
			return false
		}
		theirs = filepath.Join(cwd, theirs)
	}
	theirs, ours = filepath.Clean(theirs), filepath.Clean(ours)
	if theirs == ours {
		return true
	}
	a, errA := filepath.EvalSymlinks(theirs)
	b, errB := filepath.EvalSymlinks(ours)
	return errA == nil && errB == nil && a == b
}

func (g *Guard) checkPort() error {
	if g.cfg.Port == 0 {
		return nil
	}
	free, err := portFree(g.cfg.Port)
	if err != nil || free {
		return err
	}
	holders, err := portHolders(g.cfg.Port)
	if err != nil {
		g.log.Warn("could not find who holds the port", "port", g.cfg.Port, "error", err)
	}
	// The monitor emits its port_busy event (CauseEvent) before the
	// spawn_failed it causes.
	return &PortBusyError{Port: g.cfg.Port, Holders: holders}
}

// readRecord reads the last spawn on this session, if it was in this boot.
// Only a private file counts (see readPrivate).
func (g *Guard) readRecord() (spawnRecord, bool) {
	var rec spawnRecord
	data, err := readPrivate(g.recordPath())
	if err != nil {
		return rec, false
	}
	if json.Unmarshal(data, &rec) != nil || rec.Pid <= 0 || rec.BootID == "" || rec.BootID != bootID() {
		return rec, false
	}
	return rec, true
}

// bootID names this boot of the machine.
func bootID() string {
	b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// Watch follows m from now on, for the returned Watcher's Run. Call it
// once, with the monitor made with the guard in its hooks, before m.Run,
// so that no readiness of the bridge is missed.
func (g *Guard) Watch(m *procmon.Monitor) *Watcher {
	return &Watcher{g: g, m: m, f: m.Follow(256)}
}

// A Watcher is the guard following one monitor, to keep a copy of
// creds.json each time the bridge becomes ready.
type Watcher struct {
	g *Guard
	m *procmon.Monitor
	f *procmon.Follower
}

// Run keeps a copy of creds.json each time the bridge becomes ready, and
// posts the session event that says so. It returns when ctx is cancelled
// or the monitor has finished, and releases the follower.
func (x *Watcher) Run(ctx context.Context) error {
	defer x.f.Close()
	for {
		// After a resync the update is the newest event, which is as good
		// a sign of readiness as any.
		u, err := x.f.Next(ctx)
		if err != nil {
			return nil
		}
		if u.Kind != procmon.EventReady || u.Ready == nil || !*u.Ready {
			continue
		}
		if x.g.checkpoint() && x.m.PostFunc(ctx, x.g.sessionNow) != nil {
			return nil
		}
	}
}
