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
	for {
		_, b, err := ws.Read(ctx)
		now := mono()
		if err != nil {
			if first {
				ready <- err
			}
			return
		}
		// Only the hello and the exited events are decoded: with a thousand
		// clients in this process, decoding every message would take CPU
		// from the sidecar and the other clients, and count against it.
		if !first && !bytes.Contains(b, exitedMarker) {
			continue
		}
		var m struct {
			Type  string `json:"type"`
			Event string `json:"event"`
			Pid   int    `json:"pid"`
		}
		if json.Unmarshal(b, &m) != nil {
			continue
		}
		if first {
			first = false
			ready <- nil
		}
		if m.Type == "event" && m.Event == "exited" {
			add(note{now, m.Pid})
		}
	}
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
