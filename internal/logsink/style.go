package logsink

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/lmittmann/tint"
	"github.com/mattn/go-isatty"
	"golang.org/x/sys/unix"
)

// Format is what the sidecar's log looks like.
type Format int

// The formats of the sidecar's log.
const (
	JSON    Format = iota // JSON lines, for a log collector
	Text                  // plain text with the time and level
	Colour                // the same, coloured, for a person at a terminal
	Journal               // plain text behind syslog priorities, for journald
)

// Style is how the sidecar's log is written on one stream: its format,
// and whether a person reads the stream at a terminal. It is decided once,
// by StyleOf, and everything that writes to the stream follows it.
type Style struct {
	Format   Format
	Terminal bool
}

// JSON reports whether the log is JSON lines.
func (s Style) JSON() bool { return s.Format == JSON }

// FormatError says a log format is not one StyleOf knows.
type FormatError struct {
	Format string
}

func (e *FormatError) Error() string {
	return fmt.Sprintf("log format %q: use auto, text or json", e.Format)
}

// StyleOf is the style of the sidecar's log on w for the format asked
// for: auto is text at a terminal (coloured, unless $NO_COLOR is set),
// plain text with priorities when w is journald's stream (systemd sets
// $JOURNAL_STREAM to it), and JSON lines anywhere else; text and json
// are those, coloured at a terminal too. An unknown format gives a
// *FormatError.
func StyleOf(format string, w *os.File) (Style, error) {
	tty := isTerminal(w)
	text := Text
	if tty && os.Getenv("NO_COLOR") == "" {
		text = Colour
	}
	switch strings.ToLower(format) {
	case "auto":
		switch {
		case tty:
			return Style{text, tty}, nil
		case isJournal(w):
			return Style{Journal, tty}, nil
		}
		return Style{JSON, tty}, nil
	case "text":
		return Style{text, tty}, nil
	case "json":
		return Style{JSON, tty}, nil
	}
	return Style{JSON, tty}, &FormatError{Format: format}
}

func isTerminal(f *os.File) bool {
	return isatty.IsTerminal(f.Fd()) || isatty.IsCygwinTerminal(f.Fd())
}

// isJournal reports whether w is the stream systemd connected to journald
// for this service: $JOURNAL_STREAM names its device and inode. A child
// that inherited the variable but writes elsewhere (a pipe, a file) gets
// no match.
func isJournal(w *os.File) bool {
	devText, inoText, ok := strings.Cut(os.Getenv("JOURNAL_STREAM"), ":")
	if !ok {
		return false
	}
	dev, err1 := strconv.ParseUint(devText, 10, 64)
	ino, err2 := strconv.ParseUint(inoText, 10, 64)
	var st unix.Stat_t
	if err1 != nil || err2 != nil || unix.Fstat(int(w.Fd()), &st) != nil {
		return false
	}
	return uint64(st.Dev) == dev && st.Ino == ino
}

// NewLogger is a logger of records at lv and above, written to out in
// style: slog's JSON handler, tint's text (coloured or not), or text
// behind syslog priorities for journald.
func NewLogger(out io.Writer, lv slog.Level, style Style) *slog.Logger {
	switch style.Format {
	case Text, Colour:
		return slog.New(tint.NewTextHandler(out, &tint.Options{Level: lv, TimeFormat: time.TimeOnly, NoColor: style.Format != Colour}))
	case Journal:
		return slog.New(newJournalHandler(out, lv))
	}
	return slog.New(slog.NewJSONHandler(out, &slog.HandlerOptions{Level: lv}))
}

// journalHandler writes records for journald: each line starts with its
// syslog priority (<3> error, <4> warning, <6> info, <7> debug), which
// journald takes as the record's priority and strips, then the message and
// attributes as plain text. No time: journald stamps every line itself.
type journalHandler struct {
	inner slog.Handler // writes into *buf
	buf   *bytes.Buffer
	mu    *sync.Mutex // guards buf, shared by the handlers WithAttrs makes
	out   io.Writer
}

func newJournalHandler(out io.Writer, lv slog.Level) *journalHandler {
	buf := new(bytes.Buffer)
	inner := tint.NewTextHandler(buf, &tint.Options{Level: lv, NoColor: true,
		ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			if len(groups) == 0 && (a.Key == slog.TimeKey || a.Key == slog.LevelKey) {
				return slog.Attr{}
			}
			return a
		}})
	return &journalHandler{inner: inner, buf: buf, mu: new(sync.Mutex), out: out}
}

// journalPriority is the syslog priority of a level.
func journalPriority(lv slog.Level) string {
	switch {
	case lv >= slog.LevelError:
		return "<3>"
	case lv >= slog.LevelWarn:
		return "<4>"
	case lv >= slog.LevelInfo:
		return "<6>"
	}
	return "<7>"
}

func (h *journalHandler) Enabled(ctx context.Context, lv slog.Level) bool {
	return h.inner.Enabled(ctx, lv)
}

func (h *journalHandler) Handle(ctx context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.buf.Reset()
	h.buf.WriteString(journalPriority(r.Level))
	if err := h.inner.Handle(ctx, r); err != nil {
		return err
	}
	_, err := h.out.Write(h.buf.Bytes())
	return err
}

func (h *journalHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &journalHandler{inner: h.inner.WithAttrs(attrs), buf: h.buf, mu: h.mu, out: h.out}
}

func (h *journalHandler) WithGroup(name string) slog.Handler {
	return &journalHandler{inner: h.inner.WithGroup(name), buf: h.buf, mu: h.mu, out: h.out}
}
