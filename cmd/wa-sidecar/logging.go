package main

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/lmittmann/tint"
	"github.com/mattn/go-isatty"

	"github.com/wa-sidecar/wa-sidecar/procmon"
)

// newLogger builds the sidecar's own log: coloured text for a person at a
// terminal, JSON lines for a log collector, unless format says otherwise.
func newLogger(format, level string, w *os.File) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: use debug, info, warn or error", level)
	}
	tty := isatty.IsTerminal(w.Fd()) || isatty.IsCygwinTerminal(w.Fd())
	switch strings.ToLower(format) {
	case "auto":
		if tty {
			return slog.New(textHandler(w, lv, true)), nil
		}
		return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: lv})), nil
	case "text":
		return slog.New(textHandler(w, lv, tty)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: lv})), nil
	default:
		return nil, fmt.Errorf("--log-format %q: use auto, text or json", format)
	}
}

func textHandler(w io.Writer, lv slog.Level, colour bool) slog.Handler {
	return tint.NewHandler(w, &tint.Options{Level: lv, TimeFormat: time.TimeOnly, NoColor: !colour})
}

// bridgeOutput logs each line of the bridge's output as a record of its
// own, marked with the stream and pid, so it stays attributable in a
// collector and readable at a terminal.
func bridgeOutput(logger *slog.Logger) func(procmon.Line) {
	return func(l procmon.Line) {
		attrs := []any{"bridge", l.Stream, "pid", l.Pid}
		if l.Truncated {
			attrs = append(attrs, "truncated", true)
		}
		logger.Info(string(l.Text), attrs...)
	}
}
