package procmon

import (
	"fmt"

	"github.com/wa-sidecar/wa-sidecar/signals"
)

// A Hook extends the monitor: any value that implements one or more of the
// interfaces below (SpawnHolder, BeforeSpawner, AfterSpawner, ExitParker,
// AfterExiter, TailFilter, LineWriter, LineFlusher, RawWriter,
// OutputEnder; TailSieve, LineSieve and RawLineWriter narrow or widen what
// a TailFilter, a LineWriter or a RawWriter is given). The monitor calls
// each interface's method on the hooks of Config.Hooks that have it, in
// the order of the list, so that the list alone says what happens first.
type Hook any

// A SpawnHolder may hold a spawn back in a standby. HoldSpawn is called in
// the monitor's goroutine before each spawn, before anything else: the
// first non-nil Park with a positive Recheck, in list order, holds the
// spawn in its state (such as "yielded": another program has the port)
// without counting a failure or a restart, and the hooks are asked again
// after Recheck. It must return promptly.
type SpawnHolder interface {
	HoldSpawn() *Park
}

// A BeforeSpawner runs before each spawn, in the monitor's goroutine,
// after the starting event. emit adds an event to the stream right away,
// as Post would (Kind, Reason, Message, Data, Private and Status.Details
// are used), so that what the hook finds comes before the started or
// spawn_failed it leads to; emit must not be kept for later. An error
// counts as a failed spawn (with backoff), its text becoming the exit
// record's error, and the hooks after it in the list are not called. It
// must return promptly: the monitor takes no command meanwhile.
type BeforeSpawner interface {
	BeforeSpawn(emit func(Event)) error
}

// An AfterSpawner learns each child's identity right after a successful
// spawn, in the monitor's goroutine, before the started event: a layer
// above can record it so that a later sidecar recognises a child this one
// left behind. It must return promptly.
type AfterSpawner interface {
	AfterSpawn(signals.Identity)
}

// An ExitParker may park the child instead of respawning it after a
// failure. ParkExit is called in the monitor's goroutine; the first
// non-nil Park, in list order, gives the state to enter (such as
// "needs_pairing") and a message telling the user what to do. A Park with
// a Recheck is a standby: the exit is not counted as a failure, and the
// next attempt comes after Recheck. It must return promptly.
type ExitParker interface {
	ParkExit(ExitRecord) *Park
}

// An AfterExiter derives events from each exit of a child. AfterExit is
// called in the monitor's goroutine with the exit record and the status
// the exited event carries, before that event is published. The events it
// returns (used as in Post) are emitted right after the exited event,
// before anything the monitor does next (stopped, backoff, the next
// start), so that an old child's events never come after its successor's.
// It must return promptly.
type AfterExiter interface {
	AfterExit(ExitRecord, Status) []Event
}

// A TailFilter decides which output lines may appear in exit records,
// which anyone who can read the status sees: a layer above leaves out
// lines that carry secrets, such as a pairing QR code. A line is kept only
// if every TailFilter keeps it. KeepInTail is called from the output
// readers (one goroutine per stream) and must not block.
type TailFilter interface {
	KeepInTail(text []byte) bool
}

// A LineWriter receives every line the child prints, from two goroutines
// (one per stream); Line.Text is only valid during the call. WriteLine
// must not block for long: the child blocks once its pipe is full.
type LineWriter interface {
	WriteLine(Line)
}

// A LineFlusher is told, for a stream, each time the lines read so far
// have all gone to the LineWriters and the next read may block: a writer
// can buffer lines and write each batch at once, holding none back. It is
// called from the stream's reader goroutine.
type LineFlusher interface {
	FlushLines(Stream)
}

// A RawWriter receives the child's output as read, every byte unchanged
// (partial lines and overlong lines too), from the stream's reader
// goroutine, before the lines in it reach the LineWriters; a read of very
// many short lines (over 65 536) comes in more than one call. The slice
// is only valid during the call.
type RawWriter interface {
	WriteRaw(Stream, []byte)
}

// An OutputEnder is told when one of a child's output streams has ended
// (every process holding its pipe closed it, or the monitor stopped
// waiting for them), after its last bytes went to the RawWriters and its
// last line to the LineWriters and LineFlushers: a writer that holds
// output back, such as the start of a line not yet ended, writes it out
// now, and one that writes in the background finishes. It is called once
// per stream of each child, from the stream's reader goroutine, before
// the child's exit is reported, so that all a child printed is written by
// the time its exit is known.
type OutputEnder interface {
	EndOutput(Stream)
}

// A RawLineWriter is a RawWriter that is also told where the lines end:
// WriteRawLines is called instead of WriteRaw, with ends holding the index
// in b of each '\n' in b, in order. The monitor finds them anyway to split
// the lines, so a writer that needs the lines of the raw output (to leave
// some out, say) need not look for them again.
type RawLineWriter interface {
	RawWriter
	WriteRawLines(s Stream, b []byte, ends []int)
}

// A LineSieve is a LineWriter that wants only the lines whose first byte
// is in the set LineStarts returns (asked once, when the monitor is made,
// and never to change after):
// the monitor gives it no other line, nor an empty one. A chatty child's
// lines then cost such a writer nothing when they are not its kind.
type LineSieve interface {
	LineWriter
	LineStarts() *[256]bool
}

// A TailSieve is a TailFilter that leaves out only lines whose first byte
// is in the set TailStarts returns (asked once, and never to change after): the monitor keeps every
// other line, and an empty one, without asking it.
type TailSieve interface {
	TailFilter
	TailStarts() *[256]bool
}

// BeforeSpawnFunc adapts a function to a BeforeSpawner.
type BeforeSpawnFunc func(emit func(Event)) error

// BeforeSpawn calls f(emit).
func (f BeforeSpawnFunc) BeforeSpawn(emit func(Event)) error { return f(emit) }

// LineFunc adapts a function to a LineWriter.
type LineFunc func(Line)

// WriteLine calls f(l).
func (f LineFunc) WriteLine(l Line) { f(l) }

// FlushFunc adapts a function to a LineFlusher.
type FlushFunc func(Stream)

// FlushLines calls f(s).
func (f FlushFunc) FlushLines(s Stream) { f(s) }

// RawFunc adapts a function to a RawWriter.
type RawFunc func(Stream, []byte)

// WriteRaw calls f(s, b).
func (f RawFunc) WriteRaw(s Stream, b []byte) { f(s, b) }

// hooks is Config.Hooks sorted by interface, once, in list order.
type hooks struct {
	hold   []SpawnHolder
	before []BeforeSpawner
	after  []AfterSpawner
	park   []ExitParker
	exit   []AfterExiter
	keep   []TailFilter
	lines  []LineWriter
	// The first bytes of the lines each TailFilter and LineWriter is
	// given, nil for all lines and empty ones; askTail and askLine are
	// their union, for a line's first byte, with askTail[256] and
	// askLine[256] for an empty line: a line that no hook wants goes to
	// none of them without a call.
	keepStarts, lineStarts []*[256]bool
	askTail, askLine       [257]bool
	flush                  []LineFlusher
	raw                    []RawWriter
	end                    []OutputEnder
}

// sortHooks files each hook under the interfaces it implements. A hook
// that implements none is a mistake (a method value where the value
// itself was meant, say), refused rather than silently never called.
func sortHooks(list []Hook) (hooks, error) {
	var hs hooks
	for i, h := range list {
		n := 0
		if x, ok := h.(SpawnHolder); ok {
			hs.hold, n = append(hs.hold, x), n+1
		}
		if x, ok := h.(BeforeSpawner); ok {
			hs.before, n = append(hs.before, x), n+1
		}
		if x, ok := h.(AfterSpawner); ok {
			hs.after, n = append(hs.after, x), n+1
		}
		if x, ok := h.(ExitParker); ok {
			hs.park, n = append(hs.park, x), n+1
		}
		if x, ok := h.(AfterExiter); ok {
			hs.exit, n = append(hs.exit, x), n+1
		}
		if x, ok := h.(TailFilter); ok {
			hs.keep, n = append(hs.keep, x), n+1
		}
		if x, ok := h.(LineWriter); ok {
			hs.lines, n = append(hs.lines, x), n+1
		}
		if x, ok := h.(LineFlusher); ok {
			hs.flush, n = append(hs.flush, x), n+1
		}
		if x, ok := h.(RawWriter); ok {
			hs.raw, n = append(hs.raw, x), n+1
		}
		if x, ok := h.(OutputEnder); ok {
			hs.end, n = append(hs.end, x), n+1
		}
		if n == 0 {
			return hooks{}, fmt.Errorf("hook %d (%T) implements none of the hook interfaces", i, h)
		}
	}
	for _, k := range hs.keep {
		var set *[256]bool
		if x, ok := k.(TailSieve); ok {
			set = x.TailStarts()
		}
		hs.keepStarts = append(hs.keepStarts, set)
		union(&hs.askTail, set)
	}
	for _, l := range hs.lines {
		var set *[256]bool
		if x, ok := l.(LineSieve); ok {
			set = x.LineStarts()
		}
		hs.lineStarts = append(hs.lineStarts, set)
		union(&hs.askLine, set)
	}
	return hs, nil
}

// union adds set to ask; a nil set is every line, an empty one too.
func union(ask *[257]bool, set *[256]bool) {
	for b := range ask {
		ask[b] = ask[b] || set == nil || b < 256 && set[b]
	}
}

// lineStart is the index of text in askTail and askLine: its first byte, or
// 256 for an empty line.
func lineStart(text []byte) int {
	if len(text) == 0 {
		return 256
	}
	return int(text[0])
}

// wants reports whether a hook given the lines in set wants text.
func wants(set *[256]bool, text []byte) bool {
	return set == nil || len(text) > 0 && set[text[0]]
}

// holdSpawn asks the SpawnHolders in order; the first standby wins.
func (hs *hooks) holdSpawn() *Park {
	for _, h := range hs.hold {
		if p := h.HoldSpawn(); p != nil && p.Recheck > 0 {
			return p
		}
	}
	return nil
}

// parkExit asks the ExitParkers in order; the first park wins.
func (hs *hooks) parkExit(rec ExitRecord) *Park {
	for _, h := range hs.park {
		if p := h.ParkExit(rec); p != nil {
			return p
		}
	}
	return nil
}

// keepInTail says whether every TailFilter keeps text; the caller has
// found askTail true for it.
func (hs *hooks) keepInTail(text []byte) bool {
	for i, h := range hs.keep {
		if wants(hs.keepStarts[i], text) && !h.KeepInTail(text) {
			return false
		}
	}
	return true
}

// writeLine gives l to the LineWriters that want it; the caller has found
// askLine true for it.
func (hs *hooks) writeLine(l Line) {
	for i, h := range hs.lines {
		if wants(hs.lineStarts[i], l.Text) {
			h.WriteLine(l)
		}
	}
}

func (hs *hooks) flushLines(s Stream) {
	for _, h := range hs.flush {
		h.FlushLines(s)
	}
}

func (hs *hooks) endOutput(s Stream) {
	for _, h := range hs.end {
		h.EndOutput(s)
	}
}

func (hs *hooks) writeRaw(s Stream, b []byte, ends []int) {
	for _, h := range hs.raw {
		if l, ok := h.(RawLineWriter); ok {
			l.WriteRawLines(s, b, ends)
		} else {
			h.WriteRaw(s, b)
		}
	}
}
