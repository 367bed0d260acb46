package session

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"

	"gopkg.in/natefinch/lumberjack.v2"

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
// size. Each line is written with one write(2) as it arrives, so the file
// is complete up to the last line even if the sidecar is killed, and
// `tail -f` shows each line at once.
type BridgeLog struct {
	mu     sync.Mutex
	lj     *lumberjack.Logger
	buf    []byte
	max    int
	failed bool
	log    *slog.Logger
}

// OpenBridgeLog checks that the log file can be written and returns the
// writer. The file is created 0600: the bridge prints pairing QR codes,
// and whoever can read one can link their phone to the account.
func OpenBridgeLog(cfg BridgeLogConfig) (*BridgeLog, error) {
	if cfg.Path == "" {
		return nil, fmt.Errorf("no path for bridge.log")
	}
	if cfg.MaxSizeMB < 0 || cfg.MaxSizeMB > 1<<20 {
		return nil, fmt.Errorf("--bridge-log-max-size must be between 1 and 1048576 megabytes (got %d)", cfg.MaxSizeMB)
	}
	if cfg.MaxSizeMB == 0 {
		cfg.MaxSizeMB = 10
	}
	if cfg.MaxBackups < 0 {
		return nil, fmt.Errorf("--bridge-log-max-backups must not be negative (got %d)", cfg.MaxBackups)
	}
	if cfg.MaxBackups == 0 {
		cfg.MaxBackups = 5
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if err := os.MkdirAll(filepath.Dir(cfg.Path), 0o700); err != nil {
		return nil, fmt.Errorf("bridge.log: %w; choose another place with --bridge-log PATH, or --bridge-log off", err)
	}
	f, err := os.OpenFile(cfg.Path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("bridge.log: %w; choose another place with --bridge-log PATH, or --bridge-log off", err)
	}
	f.Close()
	return &BridgeLog{
		lj:  &lumberjack.Logger{Filename: cfg.Path, MaxSize: cfg.MaxSizeMB, MaxBackups: cfg.MaxBackups, LocalTime: true},
		buf: make([]byte, 0, 4096),
		// lumberjack refuses a single write larger than the whole file.
		max: cfg.MaxSizeMB<<20 - 1,
		log: cfg.Logger,
	}, nil
}

// Line appends one line of the bridge's output. It has the shape of
// procmon.Config.Output and is safe for its two goroutines.
func (b *BridgeLog) Line(l procmon.Line) {
	text := l.Text
	if len(text) > b.max {
		text = text[:b.max]
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf = append(append(b.buf[:0], text...), '\n')
	_, err := b.lj.Write(b.buf)
	if cap(b.buf) > 64<<10 { // one huge line must not pin its buffer for good
		b.buf = make([]byte, 0, 4096)
	}
	switch {
	case err != nil && !b.failed:
		b.failed = true
		b.log.Warn("cannot write bridge.log; the bridge's output still goes to the sidecar's log", "path", b.lj.Filename, "error", err)
	case err == nil && b.failed:
		b.failed = false
		b.log.Info("writing bridge.log again", "path", b.lj.Filename)
	}
}

// Close closes the file. Lines after Close reopen it.
func (b *BridgeLog) Close() error {
	return b.lj.Close()
}
