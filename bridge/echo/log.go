package echo

import (
	"io"
	"strconv"
	"sync"
	"time"

	"github.com/wa-sidecar/wa-sidecar/internal/logsink"
	"github.com/wa-sidecar/wa-sidecar/procmon"
)

// Log writes the bridge's lines as records of the sidecar's log, formatted
// as its handler would (a JSON object, tint's plain text, or text behind a
// journald priority) into one buffer per stream, and writes a batch with
// one write at each flush: a chatty bridge can print millions of lines,
// which one slog record each would make slow. Every line stays marked
// with its stream and pid.
type Log struct {
	out     io.Writer
	json    bool
	journal bool // text for journald: a priority instead of the time and level
	bufs    [2]lineBuf
}

// NewLog writes the bridge's lines to out in the log's style: a JSON
// object, text behind a journald priority, or else tint's plain text.
func NewLog(out io.Writer, style logsink.Style) *Log {
	return &Log{out: out, json: style.JSON(), journal: style.Format == logsink.Journal}
}

// write hands the batch in lb on and empties lb; to a log sink, waiting
// for room rather than dropping it, and giving it the buffer itself (see
// Sink.Hand), so that a chatty bridge's batches are not copied once more.
func (w *Log) write(lb *lineBuf) {
	if s, ok := w.out.(*logsink.Sink); ok {
		lb.b = s.Hand(lb.b)
		return
	}
	w.out.Write(lb.b)
	lb.b = lb.b[:0]
}

type lineBuf struct {
	mu sync.Mutex
	b  []byte
	// What comes before and after each line's text: the batch's time,
	// formatted once per batch, and the stream and pid, formatted once per
	// child.
	prefix []byte
	suffix []byte
	pid    int
}

// maxBatch bounds a buffer when a batch is very large; it is written out
// early rather than grown.
const maxBatch = 256 << 10

func (w *Log) buf(s procmon.Stream) *lineBuf {
	if s == procmon.Stderr {
		return &w.bufs[1]
	}
	return &w.bufs[0]
}

// WriteLine adds one line to its stream's batch.
func (w *Log) WriteLine(l procmon.Line) {
	if pairingLine(l.Text) {
		return
	}
	lb := w.buf(l.Stream)
	lb.mu.Lock()
	if len(lb.b) == 0 {
		lb.prefix = lb.prefix[:0]
		switch {
		case w.json:
			lb.prefix = append(lb.prefix, `{"time":"`...)
			lb.prefix = time.Now().AppendFormat(lb.prefix, time.RFC3339Nano)
			lb.prefix = append(lb.prefix, `","level":"INFO","msg":"`...)
		case w.journal:
			lb.prefix = append(lb.prefix, "<6>"...)
		default:
			lb.prefix = time.Now().AppendFormat(lb.prefix, time.TimeOnly)
			lb.prefix = append(lb.prefix, " INF "...)
		}
	}
	if lb.pid != l.Pid || len(lb.suffix) == 0 {
		lb.pid = l.Pid
		if w.json {
			lb.suffix = append(lb.suffix[:0], `","bridge":"`...)
			lb.suffix = append(lb.suffix, l.Stream...)
			lb.suffix = append(lb.suffix, `","pid":`...)
			lb.suffix = strconv.AppendInt(lb.suffix, int64(l.Pid), 10)
		} else {
			lb.suffix = append(lb.suffix[:0], " bridge="...)
			lb.suffix = append(lb.suffix, l.Stream...)
			lb.suffix = append(lb.suffix, " pid="...)
			lb.suffix = strconv.AppendInt(lb.suffix, int64(l.Pid), 10)
		}
	}
	lb.b = append(lb.b, lb.prefix...)
	if w.json {
		lb.b = logsink.AppendJSONString(lb.b, l.Text)
	} else {
		lb.b = logsink.AppendText(lb.b, l.Text)
	}
	lb.b = append(lb.b, lb.suffix...)
	switch {
	case l.Truncated && w.json:
		lb.b = append(lb.b, `,"truncated":true}`+"\n"...)
	case l.Truncated:
		lb.b = append(lb.b, " truncated=true\n"...)
	case w.json:
		lb.b = append(lb.b, "}\n"...)
	default:
		lb.b = append(lb.b, '\n')
	}
	if len(lb.b) >= maxBatch {
		w.write(lb)
	}
	lb.mu.Unlock()
}

// FlushLines writes out the batch of stream s.
func (w *Log) FlushLines(s procmon.Stream) {
	lb := w.buf(s)
	lb.mu.Lock()
	defer lb.mu.Unlock()
	if len(lb.b) > 0 {
		w.write(lb)
	}
}
