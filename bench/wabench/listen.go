package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/coder/websocket"
)

// followFeed is a client of wa-sidecar's /v1/events. It reports ready (or
// why not) once the hello has arrived, then notes every exit.
var exitedMarker = []byte(`"event":"exited"`)

func followFeed(ctx context.Context, addr string, add func(note), ready chan<- error) {
	followFeedAs(ctx, addr, "", add, ready)
}

// followFeedAs is followFeed with the token, if not empty: the sidecar
// keeps only 768 of its 1024 places for clients without it.
func followFeedAs(ctx context.Context, addr, token string, add func(note), ready chan<- error) {
	var opts *websocket.DialOptions
	if token != "" {
		opts = &websocket.DialOptions{HTTPHeader: http.Header{"Authorization": {"Bearer " + token}}}
	}
	var ws *websocket.Conn
	deadline := time.Now().Add(20 * time.Second)
	for {
		var err error
		ws, _, err = websocket.Dial(ctx, "ws://"+addr+"/v1/events", opts)
		if err == nil {
			break
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			ready <- fmt.Errorf("connecting to wa-sidecar's events at %s: %w", addr, err)
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	defer ws.CloseNow()
	ws.SetReadLimit(1 << 20)
	first := true
	var msg bytes.Buffer
	for {
		typ, r, err := ws.Reader(ctx)
		if err == nil {
			msg.Reset()
			_, err = msg.ReadFrom(r)
		}
		now := mono()
		if err != nil {
			if first {
				ready <- err
			}
			return
		}
		if typ != websocket.MessageText {
			continue
		}
		// Only the hello and the exited events are looked at, and an exited
		// event only as far as its pid: with a thousand clients in this
		// process, decoding every message whole would take CPU from the
		// sidecar and the other clients, and count against it.
		if first {
			var m struct {
				Type string `json:"type"`
			}
			if json.Unmarshal(msg.Bytes(), &m) != nil || m.Type != "hello" {
				continue
			}
			first = false
			ready <- nil
			continue
		}
		if pid, ok := exitedPid(msg.Bytes()); ok {
			add(note{now, pid})
		}
	}
}

var (
	eventPrefix = []byte(`{"type":"event",`)
	eventField  = []byte(`"event":`)
	pidField    = []byte(`,"pid":`)
)

// exitedWithin is how far into an event its "event" field may start: past
// the type, the seq and the time, before the status and its last exit.
const exitedWithin = 160

// exitedPid reads the pid of an exited event, whose top-level fields come
// first, in the order the protocol gives them ({"type":"event","seq":…,
// "at":…,"event":"exited","pid":…,"status":…}); it reports false for any
// other message. Should the order change, the fan-out figure would find no
// notes and fail, not count wrong ones.
func exitedPid(b []byte) (int, bool) {
	if !bytes.HasPrefix(b, eventPrefix) {
		return 0, false
	}
	// The first "event" field is the event's own.
	i := bytes.Index(b, eventField)
	if i < 0 || i > exitedWithin || !bytes.HasPrefix(b[i:], exitedMarker) {
		return 0, false
	}
	rest := b[i+len(exitedMarker):]
	if !bytes.HasPrefix(rest, pidField) {
		return 0, false
	}
	rest = rest[len(pidField):]
	n := 0
	for n < len(rest) && rest[n] >= '0' && rest[n] <= '9' {
		n++
	}
	pid, err := strconv.Atoi(string(rest[:n]))
	return pid, err == nil
}

// followFifodir listens on an s6 fifodir the way s6-svwait does: a fifo
// named ftrig1… in the event directory, into which s6-supervise writes one
// character per event ('d' when the service goes down).
func followFifodir(ctx context.Context, dir string, add func(note), ready chan<- error) {
	for i := 0; ; i++ {
		if _, err := os.Stat(dir); err == nil {
			break
		}
		if i > 2000 {
			ready <- fmt.Errorf("s6-supervise did not create %s", dir)
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	// s6 only writes to fifos whose names have its prefix and its length.
	name := "ftrig1:@" + strings.Repeat("0", 24) + ":wabnch"
	path := filepath.Join(dir, name)
	if err := syscall.Mkfifo(path, 0o622); err != nil && !errors.Is(err, os.ErrExist) {
		ready <- err
		return
	}
	// Opened for writing too, so the fifo never reads as ended.
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		ready <- err
		return
	}
	defer os.Remove(path)
	go func() { <-ctx.Done(); f.Close() }()
	ready <- nil
	buf := make([]byte, 64)
	for {
		n, err := f.Read(buf)
		now := mono()
		for _, c := range buf[:n] {
			if c == 'd' {
				add(note{now, 0})
			}
		}
		if err != nil {
			return
		}
	}
}

// supervisordListener is run by supervisord as an event listener: it
// notes when each PROCESS_STATE_EXITED reached it, with the pid.
func supervisordListener(args []string) error {
	if len(args) != 1 {
		return errors.New("usage: wabench supervisord-listener NOTES_FILE")
	}
	out, err := os.OpenFile(args[0], os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	in := bufio.NewReader(os.Stdin)
	for {
		os.Stdout.WriteString("READY\n")
		header, err := in.ReadString('\n')
		if err != nil {
			return err
		}
		now := mono()
		var size int
		for _, kv := range strings.Fields(header) {
			if v, ok := strings.CutPrefix(kv, "len:"); ok {
				size, _ = strconv.Atoi(v)
			}
		}
		payload := make([]byte, size)
		if _, err := io.ReadFull(in, payload); err != nil {
			return err
		}
		pid := 0
		for _, kv := range strings.Fields(string(payload)) {
			if v, ok := strings.CutPrefix(kv, "pid:"); ok {
				pid, _ = strconv.Atoi(v)
			}
		}
		fmt.Fprintf(out, "%d %d\n", now, pid)
		os.Stdout.WriteString("RESULT 2\nOK")
	}
}
