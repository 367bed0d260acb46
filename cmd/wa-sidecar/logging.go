package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/wa-sidecar/wa-sidecar/bridge/echo"
	"github.com/wa-sidecar/wa-sidecar/internal/logsink"
	"github.com/wa-sidecar/wa-sidecar/procmon"
)

// logCloseWait is how long the sidecar waits at exit for a stalled reader
// of its log to take what it still has to say.
const logCloseWait = 2 * time.Second

// newLogger builds the sidecar's own log on w, through w's sink in sinks,
// in the style --log-format and w give; it returns that style for the
// rest of what is written to w.
func newLogger(sinks *logsink.Sinks, format, level string, w *os.File) (*slog.Logger, logsink.Style, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, logsink.Style{}, fmt.Errorf("--log-level %q: use debug, info, warn or error", level)
	}
	style, err := logsink.StyleOf(format, w)
	if err != nil {
		return nil, style, fmt.Errorf("--log-format %q: use auto, text or json", format)
	}
	return logsink.NewLogger(sinks.For(w, style.JSON()), lv, style), style, nil
}

// Where the bridge's output goes (--bridge-output).
const (
	bridgeOutputLog = "log" // one record per line in the sidecar's own log
	bridgeOutputRaw = "raw" // the lines as the bridge wrote them, on the same stream
	bridgeOutputOff = "off" // nowhere on the sidecar's stdout or stderr
)

// checkBridgeOutput validates --bridge-output.
func checkBridgeOutput(mode string) (string, error) {
	switch m := strings.ToLower(mode); m {
	case bridgeOutputLog, bridgeOutputRaw, bridgeOutputOff:
		return m, nil
	}
	return "", fmt.Errorf("--bridge-output %q: use log (a record per line in the sidecar's log), raw (the bridge's lines unchanged, its stdout on stdout and its stderr on stderr) or off", mode)
}

// bridgeOutput returns the monitor hooks that send the bridge's output to
// the sidecar's own stdout and stderr (none with --bridge-output off),
// through their sinks in sinks, in the log's style.
//
// In log mode a person at a terminal gets one coloured record per line from
// the logger itself. Otherwise, where a chatty bridge can print millions of
// lines, a line writer formats each line as the handler would (a JSON
// object, or plain tint text) into a per-stream buffer and writes a batch
// with one write, at each flush. Every line stays marked with its stream
// and pid.
//
// In raw mode the bytes go out as the bridge wrote them, its stdout to
// stdout and its stderr to stderr, a whole read at a time, as if the
// sidecar were not there.
func bridgeOutput(logger *slog.Logger, mode string, style logsink.Style, sinks *logsink.Sinks, stdout, stderr *os.File) []procmon.Hook {
	switch mode {
	case bridgeOutputOff:
		return nil
	case bridgeOutputRaw:
		// The notice of dropped output, the one line the sidecar adds,
		// is worded in the log's format.
		return []procmon.Hook{echo.Raw{
			Stdout: echo.Pass(sinks.For(stdout, style.JSON()), isTerminal(stdout)),
			Stderr: echo.Pass(sinks.For(stderr, style.JSON()), style.Terminal),
		}}
	}
	if !logger.Enabled(context.Background(), slog.LevelInfo) {
		return nil
	}
	if style.Terminal && !style.JSON() {
		return []procmon.Hook{echo.NewTerminal(sinks.For(stderr, false), style.Format == logsink.Colour)}
	}
	return []procmon.Hook{echo.NewLog(sinks.For(stderr, style.JSON()), style)}
}
