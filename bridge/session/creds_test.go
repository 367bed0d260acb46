package session

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/wa-sidecar/wa-sidecar/procmon"
)

const (
	pairedCreds   = `{"noiseKey":{"private":"AA==","public":"AQ=="},"registrationId":42,"me":{"id":"15550001111:7@s.whatsapp.net","name":"Test"},"registered":true}`
	repairedCreds = `{"noiseKey":{"private":"Ag==","public":"Aw=="},"registrationId":43,"me":{"id":"15550001111:8@s.whatsapp.net","name":"Test"},"registered":true}`
	pendingCreds  = `{"noiseKey":{"private":"AA==","public":"AQ=="},"registrationId":42,"registered":false}`
)

func TestInspectCreds(t *testing.T) {
	tests := []struct {
		name   string
		in     string
		state  CredsState
		paired bool
	}{
		{"paired", pairedCreds, CredsOK, true},
		{"waiting for a scan", pendingCreds, CredsOK, false},
		{"empty", "", CredsEmpty, false},
		{"blanks", " \n\t", CredsEmpty, false},
		{"truncated mid-write", pairedCreds[:40], CredsCorrupt, false},
		{"zeros after a crash", "\x00\x00\x00\x00", CredsCorrupt, false},
		{"null", "null", CredsCorrupt, false},
		{"array", "[1,2]", CredsCorrupt, false},
		{"me is a string", `{"me":"x"}`, CredsCorrupt, false},
		{"me without id", `{"me":{"name":"x"}}`, CredsOK, false},
		{"me null", `{"me":null}`, CredsOK, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := InspectCreds([]byte(tt.in))
			if c.State != tt.state || c.Paired != tt.paired {
				t.Fatalf("InspectCreds(%q) = %+v, want state %s paired %v", tt.in, c, tt.state, tt.paired)
			}
			if (c.State == CredsCorrupt) != (c.Problem != "") {
				t.Fatalf("problem %q for state %s", c.Problem, c.State)
			}
		})
	}
}

func FuzzInspectCreds(f *testing.F) {
	for _, s := range []string{pairedCreds, pendingCreds, "", "null", `{"me":{"id":""}}`, pairedCreds[:40]} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c := InspectCreds(data)
		switch c.State {
		case CredsOK, CredsEmpty, CredsCorrupt:
		default:
			t.Fatalf("state %q", c.State)
		}
		if c.Paired && c.State != CredsOK {
			t.Fatalf("paired but %s", c.State)
		}
	})
}

func newSession(t *testing.T, creds string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "whatsapp", "session")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if creds != "" {
		writeCreds(t, dir, creds)
	}
	return dir
}

func writeCreds(t *testing.T, dir, creds string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, "creds.json"), []byte(creds), 0o600); err != nil {
		t.Fatal(err)
	}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func openGuard(t *testing.T, cfg Config) *Guard {
	t.Helper()
	g, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.Close() })
	return g
}

// sessionDetails returns details.session of an event's snapshot.
func sessionDetails(t *testing.T, ev procmon.Event) Details {
	t.Helper()
	d, ok := ev.Status.Details[DetailsKey].(Details)
	if !ok {
		t.Fatalf("no %s details in %+v", DetailsKey, ev.Status.Details)
	}
	return d
}

// A creds.json truncated while the bridge was down (the crash of #58936)
// is put back from the copy taken before the previous spawn, and that
// copy is never replaced by the damaged file.
func TestCredsTruncatedBetweenSpawnsIsRestored(t *testing.T) {
	dir := newSession(t, pairedCreds)
	g := openGuard(t, Config{SessionDir: dir, RestoreCreds: true})
	h := startMonitor(t, g, procmon.Config{Command: []string{fakeBridge, "-hang"}})
	// What the guard found comes before the spawn it precedes.
	d := sessionDetails(t, h.nextUnless(EventSession, procmon.EventStarted))
	if !d.Paired || d.Creds != CredsOK || d.Backup == nil {
		t.Fatalf("first spawn: details %+v, want paired with a backup", d)
	}
	h.next(procmon.EventStarted)
	backup := filepath.Join(dir, StateDirName, "creds.json.last-good")
	if got := readFile(t, backup); got != pairedCreds {
		t.Fatalf("backup holds %q", got)
	}

	writeCreds(t, dir, "") // the bridge died mid-write
	if err := h.m.Restart(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	ev := h.nextUnless(EventCredsRestored, procmon.EventStarted)
	if !strings.Contains(ev.Message, "was empty") {
		t.Fatalf("restore message %q does not say what was wrong", ev.Message)
	}
	// Kept aside like a corrupt file: the empty one's time says when.
	damaged := filepath.Join(dir, StateDirName, "creds.json.damaged")
	if fi, err := os.Stat(damaged); err != nil || fi.Size() != 0 || fi.Mode().Perm() != 0o600 {
		t.Fatalf("the empty creds.json was not kept aside as %s (0 bytes, 0600): %v", damaged, err)
	}
	if ev.Data["damaged_copy"] != damaged {
		t.Fatalf("creds_restored names the damaged copy %v, want %s", ev.Data["damaged_copy"], damaged)
	}
	d = sessionDetails(t, h.nextUnless(EventSession, procmon.EventStarted))
	if !d.Paired || d.Creds != CredsOK || d.RestoredAt == nil {
		t.Fatalf("after restore: details %+v", d)
	}
	h.next(procmon.EventStarted)
	if got := readFile(t, filepath.Join(dir, "creds.json")); got != pairedCreds {
		t.Fatalf("creds.json after restore holds %q", got)
	}
	if got := readFile(t, backup); got != pairedCreds {
		t.Fatalf("backup was changed to %q", got)
	}
	if fi, err := os.Stat(filepath.Join(dir, "creds.json")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("restored creds.json: %v, mode %v; want 0600", err, fi.Mode())
	}
}

// Without automatic restore, a corrupt creds.json is reported with the
// command that restores it, and the good copy stays as it was.
func TestCorruptCredsWithoutRestoreSaysHow(t *testing.T) {
	dir := newSession(t, pairedCreds)
	g := openGuard(t, Config{SessionDir: dir})
	h := startMonitor(t, g, procmon.Config{Command: []string{fakeBridge, "-hang"}})
	h.nextUnless(EventSession, procmon.EventStarted)
	h.next(procmon.EventStarted)

	torn := pairedCreds[:len(pairedCreds)/2]
	writeCreds(t, dir, torn)
	if err := h.m.Restart(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	ev := h.nextUnless(EventCredsDamaged, procmon.EventStarted)
	backup := filepath.Join(dir, StateDirName, "creds.json.last-good")
	if !strings.Contains(ev.Message, "cp "+backup+" "+filepath.Join(dir, "creds.json")) {
		t.Fatalf("message %q does not say how to restore", ev.Message)
	}
	d := sessionDetails(t, h.nextUnless(EventSession, procmon.EventStarted))
	if d.Paired || d.Creds != CredsCorrupt || d.Problem == "" || d.Backup == nil || d.Backup.Path != backup {
		t.Fatalf("details %+v", d)
	}
	if got := readFile(t, backup); got != pairedCreds {
		t.Fatalf("backup was changed to %q", got)
	}
	if got := readFile(t, filepath.Join(dir, "creds.json")); got != torn {
		t.Fatalf("creds.json was changed to %q without --restore-creds", got)
	}
}

// Credentials of a pairing that is still waiting for a scan, or of a
// later pairing, are handled as they should: the first never replace the
// copy, the second do.
func TestBackupFollowsPairingsOnly(t *testing.T) {
	dir := newSession(t, pairedCreds)
	g := openGuard(t, Config{SessionDir: dir, RestoreCreds: true})
	var stream emitted
	backup := filepath.Join(dir, StateDirName, "creds.json.last-good")

	steps := []struct {
		creds      string
		wantBackup string
		wantState  CredsState
		wantPaired bool
	}{
		{pairedCreds, pairedCreds, CredsOK, true},
		{pendingCreds, pairedCreds, CredsOK, false},
		{repairedCreds, repairedCreds, CredsOK, true},
		{"{", repairedCreds, CredsOK, true}, // restored
	}
	for i, s := range steps {
		writeCreds(t, dir, s.creds)
		if err := g.BeforeSpawn(stream.emit); err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		if got := readFile(t, backup); got != s.wantBackup {
			t.Fatalf("step %d: backup %q, want %q", i, got, s.wantBackup)
		}
		evs := stream.take()
		d := evs[len(evs)-1].Status.Details[DetailsKey].(Details)
		if d.Creds != s.wantState || d.Paired != s.wantPaired {
			t.Fatalf("step %d: details %+v", i, d)
		}
	}
	if got := readFile(t, filepath.Join(dir, StateDirName, "creds.json.damaged")); got != "{" {
		t.Fatalf("damaged copy holds %q", got)
	}
}

// A missing creds.json is how a user asks to pair again: it is reported
// as unpaired and never restored, but the way back is named.
func TestMissingCredsIsUnpairedAndNotRestored(t *testing.T) {
	dir := newSession(t, pairedCreds)
	g := openGuard(t, Config{SessionDir: dir, RestoreCreds: true})
	var stream emitted
	if err := g.BeforeSpawn(stream.emit); err != nil {
		t.Fatal(err)
	}
	stream.take()
	os.Remove(filepath.Join(dir, "creds.json"))
	if err := g.BeforeSpawn(stream.emit); err != nil {
		t.Fatal(err)
	}
	evs := stream.take()
	if len(evs) != 2 || evs[0].Kind != EventCredsMissing || !strings.Contains(evs[0].Message, "cp ") {
		t.Fatalf("events %+v", evs)
	}
	d := evs[1].Status.Details[DetailsKey].(Details)
	if d.Paired || d.Creds != CredsMissing || d.Backup == nil {
		t.Fatalf("details %+v", d)
	}
	if _, err := os.Stat(filepath.Join(dir, "creds.json")); !os.IsNotExist(err) {
		t.Fatalf("creds.json came back: %v", err)
	}
}

// The session's details sit next to what other layers post, and updating
// one key leaves the others alone.
func TestDetailsMergeWithOtherLayers(t *testing.T) {
	dir := newSession(t, "")
	g := openGuard(t, Config{SessionDir: dir})
	h := startMonitor(t, g, procmon.Config{Command: []string{fakeBridge, "-hang"}})
	h.next(procmon.EventStarted)
	if err := h.m.Post(ctxT(t), procmon.Event{Kind: "health", Status: procmon.Status{Details: map[string]any{"whatsapp": "connected"}}}); err != nil {
		t.Fatal(err)
	}
	h.next("health")
	writeCreds(t, dir, pairedCreds)
	if err := h.m.Restart(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	ev := h.next(EventSession)
	if ev.Status.Details["whatsapp"] != "connected" {
		t.Fatalf("the other layer's details were lost: %+v", ev.Status.Details)
	}
	if d := sessionDetails(t, ev); !d.Paired {
		t.Fatalf("details %+v", d)
	}
}

// Once the bridge is ready, a fresh pairing is copied at once rather than
// at the next spawn.
func TestReadyCheckpointsCreds(t *testing.T) {
	dir := newSession(t, "")
	g := openGuard(t, Config{SessionDir: dir})
	h := startMonitor(t, g, procmon.Config{Command: []string{fakeBridge, "-hang"}, ExternalReadiness: true})
	if d := sessionDetails(t, h.nextUnless(EventSession, procmon.EventStarted)); d.Paired || d.Creds != CredsMissing || d.Backup != nil {
		t.Fatalf("details %+v", d)
	}
	started := h.next(procmon.EventStarted)
	writeCreds(t, dir, pairedCreds) // the phone scanned the QR code
	if err := h.m.SetReady(ctxT(t), started.Pid, true); err != nil {
		t.Fatal(err)
	}
	d := sessionDetails(t, h.next(EventSession))
	if !d.Paired || d.Backup == nil {
		t.Fatalf("details after ready %+v", d)
	}
	got := readFile(t, filepath.Join(dir, StateDirName, "creds.json.last-good"))
	if !bytes.Equal([]byte(got), []byte(pairedCreds)) {
		t.Fatalf("backup %q", got)
	}
}
