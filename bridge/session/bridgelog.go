package session

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/wa-sidecar/wa-sidecar/internal/privdir"
	"github.com/wa-sidecar/wa-sidecar/procmon"
)

// BridgeLogPath is where Hermes users look for the bridge's output: the
// gateway has always appended it to bridge.log next to the session
// directory.
func BridgeLogPath(sessionDir string) string {
	return filepath.Join(filepath.Dir(filepath.Clean(sessionDir)), "bridge.log")
}

// BridgeLogConfig says where bridge.log goes and how big it may grow.
type BridgeLogConfig struct {
	Path       string
	MaxSizeMB  int // rotate when the file would pass this size; 10
	MaxBackups int // rotated files kept; 5
	Logger     *slog.Logger
}

// BridgeLog appends the bridge's output lines to a file that rotates by
// size. Line writes each line with one write(2) as it arrives. As a
// procmon hook (a LineWriter, a LineFlusher and an OutputEnder),
// WriteLine and FlushLines write the lines of each read of the bridge's
// output with one write(2) instead, before the sidecar reads (and may
// wait for) more: the file is then complete up to the last line the
// bridge printed before it went quiet, and `tail -f` shows each line as
// soon as the batch it came in is handled. A chatty bridge prints
// millions of lines, and a write(2) and the two stat calls that notice a
// moved file, for each line, cost more than the rest of its way through
// the sidecar. Its large batches are written by a goroutine of their own
// while the next are read, in order and none dropped, and EndOutput waits
// for them when the bridge's output ends.
//
// The file lives in a private directory (see internal/privdir) and is
// never opened through a link, so no one else can make the sidecar append
// to another file. When it has been deleted or moved away (as when its
// directory was removed to pair again) the next line says so once and
// starts a new file.
type BridgeLog struct {
	mu         sync.Mutex
	path       string
	name       string // the file's name in its directory
	maxSize    int64
	maxBackups int
	buf        []byte
	max        int
	log        *slog.Logger
	// A large batch is written by a goroutine of its own, so that the
	// bridge's output is read and handled meanwhile (see flush). While
	// one runs (busy), what is flushed waits in queued, and the writer
	// state below is the goroutine's alone; otherwise it is mu's.
	busy    bool
	queued  []byte
	spare   []byte
	written *sync.Cond // on mu: the goroutine took queued, or ended
	// planned is what size will be once everything flushed is written.
	planned int64
	// The writer state.
	dir    *privdir.Dir // nil while closed
	f      *os.File
	size   int64
	failed bool
}

// OpenBridgeLog checks that the log file can be written and returns the
// writer. The file is created 0600: the bridge prints pairing QR codes,
// and whoever can read one can link their phone to the account.
func OpenBridgeLog(cfg BridgeLogConfig) (*BridgeLog, error) {
	if cfg.Path == "" {
		return nil, fmt.Errorf("no path for bridge.log")
	}
	if cfg.MaxSizeMB < 0 || cfg.MaxSizeMB > 1<<20 {
		return nil, fmt.Errorf("bridge.log: MaxSizeMB must be between 1 and 1048576 (got %d)", cfg.MaxSizeMB)
	}
	if cfg.MaxSizeMB == 0 {
		cfg.MaxSizeMB = 10
	}
	if cfg.MaxBackups < 0 {
		return nil, fmt.Errorf("bridge.log: MaxBackups must not be negative (got %d)", cfg.MaxBackups)
	}
	if cfg.MaxBackups == 0 {
		cfg.MaxBackups = 5
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	path, err := filepath.Abs(cfg.Path)
	if err != nil {
		return nil, fmt.Errorf("bridge.log: %w", err)
	}
	b := &BridgeLog{
		path:       path,
		name:       filepath.Base(path),
		maxSize:    int64(cfg.MaxSizeMB) << 20,
		maxBackups: cfg.MaxBackups,
		buf:        make([]byte, 0, 4096),
		// One line never needs more than a whole file.
		max: cfg.MaxSizeMB<<20 - 1,
		log: cfg.Logger,
	}
	b.written = sync.NewCond(&b.mu)
	if err := b.open(); err != nil {
		return nil, &BridgeLogError{Path: path, Err: err}
	}
	b.planned = b.size
	return b, nil
}

// BridgeLogError is a bridge.log that cannot be opened for writing, and
// why: the caller may put it elsewhere or do without.
type BridgeLogError struct {
	Path string
	Err  error
}

func (e *BridgeLogError) Error() string { return "bridge.log: " + e.Err.Error() }

func (e *BridgeLogError) Unwrap() error { return e.Err }

// open opens (creating if need be) the directory and the file.
func (b *BridgeLog) open() error {
	d, err := privdir.Open(filepath.Dir(b.path), true)
	if err != nil {
		return err
	}
	f, err := d.OpenFile(b.name, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		d.Close()
		return err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		d.Close()
		return err
	}
	b.dir, b.f, b.size = d, f, fi.Size()
	return nil
}

func (b *BridgeLog) close() error {
	if b.f == nil {
		return nil
	}
	err := b.f.Close()
	b.dir.Close()
	b.dir, b.f = nil, nil
	return err
}

// Line writes one line of the bridge's output at once, for a
// procmon.LineFunc; it is safe for the monitor's two output readers.
func (b *BridgeLog) Line(l procmon.Line) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.appendLine(l.Text)
	b.flush()
	b.wait()
}

// WriteLine adds one line of the bridge's output to what the next
// FlushLines writes: the log's procmon.LineWriter.
func (b *BridgeLog) WriteLine(l procmon.Line) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.appendLine(l.Text)
}

// FlushLines writes the lines added so far, of both streams, in the order
// they came: the log's procmon.LineFlusher.
func (b *BridgeLog) FlushLines(procmon.Stream) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.flush()
}

// EndOutput writes what is left of a stream that has ended, and waits
// until everything flushed is in the file: the log's procmon.OutputEnder,
// so that the file holds all a bridge printed once its exit is reported.
func (b *BridgeLog) EndOutput(procmon.Stream) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.flush()
	b.wait()
}

// wait returns once nothing is being written in the background; the
// caller holds mu.
func (b *BridgeLog) wait() {
	for b.busy {
		b.written.Wait()
	}
}

// flushBytes bounds what WriteLine holds before it writes on its own.
const flushBytes = 256 << 10

func (b *BridgeLog) appendLine(text []byte) {
	if len(text) > b.max {
		text = text[:b.max]
	}
	// A line that would take the file past its size is written after a
	// rotation, as when each line was written on its own.
	if n := int64(len(b.buf) + len(text) + 1); len(b.buf) > 0 && (n > flushBytes || b.planned+n > b.maxSize) {
		b.flush()
	}
	b.buf = append(append(b.buf, text...), '\n')
}

// asyncBytes is the smallest batch that flush gives to a goroutine of its
// own: a chatty bridge's. A smaller one, such as a quiet bridge's line, is
// written at once, as it is cheaper to write than to hand over.
const asyncBytes = 32 << 10

// queueBytes bounds what waits for the writing goroutine: past it, flush
// waits for it to take the queue, as a pipe would make the bridge wait,
// so no line is lost.
const queueBytes = 512 << 10

// flush writes what WriteLine added, or has it written, after everything
// flushed before it; the caller holds mu.
func (b *BridgeLog) flush() {
	if len(b.buf) == 0 {
		return
	}
	b.plan(len(b.buf))
	switch {
	case b.busy:
		for len(b.queued) > 0 && len(b.queued)+len(b.buf) > queueBytes {
			b.written.Wait()
		}
		if b.busy {
			b.queued = append(b.queued, b.buf...)
			b.buf = b.buf[:0]
			return
		}
		fallthrough
	case len(b.buf) < asyncBytes:
		b.report(b.write(b.buf))
		b.planned = b.size
		b.buf = b.buf[:0]
	default:
		// The goroutine takes the batch itself, and the caller goes on
		// with a buffer of its own.
		b.busy = true
		go b.writeBehind(b.buf)
		b.buf = b.spare[:0]
		b.spare = nil
	}
	if cap(b.buf) > 2*flushBytes { // one huge line must not pin its buffer for good
		b.buf = make([]byte, 0, 4096)
	}
}

// plan moves planned on by a write of n bytes, as write will move size.
func (b *BridgeLog) plan(n int) {
	if b.planned > 0 && b.planned+int64(n) > b.maxSize {
		b.planned = 0
	}
	b.planned += int64(n)
}

// writeBehind writes p, then what was queued meanwhile, until nothing is.
func (b *BridgeLog) writeBehind(p []byte) {
	for {
		err := b.write(p)
		b.mu.Lock()
		b.report(err)
		if len(b.queued) == 0 {
			b.busy = false
			// A failed or partial write leaves the file shorter than
			// planned; from here on mu's writes see the real size.
			b.planned = b.size
			if cap(p) <= 2*flushBytes {
				b.spare = p[:0]
			}
			b.written.Broadcast()
			b.mu.Unlock()
			return
		}
		p, b.queued = b.queued, p[:0]
		if cap(b.queued) > 2*queueBytes {
			b.queued = nil
		}
		b.written.Broadcast()
		b.mu.Unlock()
	}
}

// report logs the first write that fails, and the first that works again.
func (b *BridgeLog) report(err error) {
	switch {
	case err != nil && !b.failed:
		b.failed = true
		b.log.Warn("cannot write bridge.log; the bridge's output still goes to the sidecar's log", "path", b.path, "error", err)
	case err == nil && b.failed:
		b.failed = false
		b.log.Info("writing bridge.log again", "path", b.path)
	}
}

func (b *BridgeLog) write(p []byte) error {
	if b.f != nil && b.moved() {
		b.log.Warn("bridge.log was deleted or moved away while the sidecar was writing it (was its directory removed?); starting a new one", "path", b.path)
		b.close()
	}
	if b.f == nil {
		if err := b.open(); err != nil {
			return err
		}
	}
	if b.size > 0 && b.size+int64(len(p)) > b.maxSize {
		if err := b.rotate(); err != nil {
			return err
		}
	}
	n, err := b.f.Write(p)
	b.size += int64(n)
	return err
}

// moved reports whether the open file is no longer the one at the path:
// unlinked (with its directory, perhaps) or replaced.
func (b *BridgeLog) moved() bool {
	var st unix.Stat_t
	if err := unix.Fstat(int(b.f.Fd()), &st); err != nil || st.Nlink == 0 {
		return true
	}
	at, err := b.dir.Lstat(b.name)
	return err != nil || at.Dev != st.Dev || at.Ino != st.Ino
}

// backupClock gives the time for a rotated file's name; a test stops it.
var backupClock = time.Now

// backupTime is the time in a rotated file's name, as
// bridge-2006-01-02T15-04-05.000.log.
const backupTime = "2006-01-02T15-04-05.000"

// rotate renames the full file to a name with the time in it, starts a
// new one, and removes the oldest backups beyond maxBackups.
func (b *BridgeLog) rotate() error {
	ext := filepath.Ext(b.name)
	prefix := strings.TrimSuffix(b.name, ext) + "-"
	// Two rotations within a millisecond (a bridge printing over a
	// gigabyte a second into a 1 MB file) would give the second backup
	// the first one's name: it takes the next free millisecond instead of
	// replacing it, which keeps the names in the order of their contents.
	at := backupClock()
	for tries := 0; ; tries++ {
		err := b.dir.RenameNoReplace(b.name, prefix+at.Format(backupTime)+ext)
		if err == nil {
			break
		}
		if !errors.Is(err, unix.EEXIST) || tries == 1000 {
			return err
		}
		at = at.Add(time.Millisecond)
	}
	d := b.dir
	b.f.Close()
	b.f = nil
	f, err := d.OpenFile(b.name, os.O_WRONLY|os.O_APPEND|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		d.Close()
		b.dir = nil
		return err
	}
	b.f, b.size = f, 0
	names, err := d.Names()
	if err != nil {
		return nil
	}
	var backups []string
	for _, n := range names {
		if stamp, ok := strings.CutPrefix(n, prefix); ok && strings.HasSuffix(stamp, ext) {
			if _, err := time.Parse(backupTime, strings.TrimSuffix(stamp, ext)); err == nil {
				backups = append(backups, n)
			}
		}
	}
	sort.Strings(backups) // the time in the name sorts as text
	for len(backups) > b.maxBackups {
		if err := d.Remove(backups[0]); err != nil {
			b.log.Warn("could not remove an old bridge.log", "error", err)
		}
		backups = backups[1:]
	}
	return nil
}

// Close writes what was appended and closes the file. Lines after Close
// reopen it.
func (b *BridgeLog) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.flush()
	b.wait()
	return b.close()
}
