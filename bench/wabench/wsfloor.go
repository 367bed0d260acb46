package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"
)

// The events wa-sidecar sends for one crash at the smallest delay, and
// about how long each is (measured on its /v1/events with the token):
// the exited event first, as in the sidecar.
var (
	sidecarEvents = []string{"exited", "backoff", "starting", "started"}
	sidecarSizes  = []int{956, 890, 812, 839}
)

// wsFanoutFloorServer is run by measureFanoutWSFloor as "wabench
// fanout-ws-floor CLIENTS ROUNDS EVENTS -- ARGV": the bare-TCP floor's
// work through the websocket library wa-sidecar uses. It serves
// websockets on /v1/events with net/http and coder/websocket, sends each
// a hello, prints its address and then "ready" once CLIENTS are there,
// waits for a line on stdin, and then ROUNDS times runs ARGV, waits for it
// and writes the first EVENTS of sidecarEvents, each the size the
// sidecar's is, to every client, one websocket message each, all from one
// goroutine. No per-client goroutine, queue or encoding: what is left is
// the library's framing and the clients' reading, which the sidecar's
// figure holds too.
func wsFanoutFloorServer(args []string) error {
	if len(args) < 5 || args[3] != "--" {
		return fmt.Errorf("usage: wabench fanout-ws-floor CLIENTS ROUNDS EVENTS -- ARGV")
	}
	clients, err1 := strconv.Atoi(args[0])
	rounds, err2 := strconv.Atoi(args[1])
	events, err3 := strconv.Atoi(args[2])
	if err1 != nil || err2 != nil || err3 != nil || clients < 1 || events < 1 || events > len(sidecarEvents) {
		return fmt.Errorf("fanout-ws-floor: CLIENTS, ROUNDS and EVENTS (1–%d) must be numbers", len(sidecarEvents))
	}
	argv := args[4:]
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	joined := make(chan *websocket.Conn, clients)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		// Reads go on in the library's own goroutine, which answers
		// pings and closes, as the sidecar's reader does.
		ctx := ws.CloseRead(context.Background())
		if err := ws.Write(ctx, websocket.MessageText, []byte(`{"type":"hello"}`)); err != nil {
			ws.CloseNow()
			return
		}
		joined <- ws
	})}
	go srv.Serve(ln)
	defer srv.Close()
	fmt.Println(ln.Addr())
	conns := make([]*websocket.Conn, 0, clients)
	for len(conns) < clients {
		conns = append(conns, <-joined)
	}
	attr, err := readyToGo()
	if err != nil {
		return err
	}
	seq := 0
	for range rounds {
		pid, err := forkWait(argv[0], argv, attr)
		if err != nil {
			return err
		}
		for i := range events {
			seq++
			msg := floorEvent(seq, sidecarEvents[i], pid, sidecarSizes[i])
			for _, ws := range conns {
				if err := ws.Write(context.Background(), websocket.MessageText, msg); err != nil {
					return err
				}
			}
		}
	}
	for _, ws := range conns {
		ws.CloseNow()
	}
	return nil
}

// floorEvent is an event of the sidecar's shape as far as the clients
// look ({"type":"event","seq":…,"at":…,"event":…,"pid":…), padded to size
// bytes.
func floorEvent(seq int, event string, pid, size int) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, `{"type":"event","seq":%d,"at":%q,"event":%q,"pid":%d,"pad":"`, seq, time.Now().UTC().Format(time.RFC3339Nano), event, pid)
	for b.Len() < size-2 {
		b.WriteByte('x')
	}
	b.WriteString(`"}`)
	return b.Bytes()
}

// measureFanoutWSFloor times wsFanoutFloorServer with the first events of
// the sidecar's events per exit, at c.clients of the same websocket
// clients as wa-sidecar's fan-out figure has.
func measureFanoutWSFloor(c *config, events int) ([]int64, int, error) {
	dir := freshDir(c, "floor-fanout-ws"+strconv.Itoa(events))
	stamps := filepath.Join(dir, "stamps")
	const rounds = 10
	srv := exec.Command(c.self, append([]string{"fanout-ws-floor", strconv.Itoa(c.clients), strconv.Itoa(rounds), strconv.Itoa(events), "--"}, c.argv(fanoutSpec, stamps)...)...)
	srv.Stderr = os.Stderr
	in, err := srv.StdinPipe()
	if err != nil {
		return nil, 0, err
	}
	out, err := srv.StdoutPipe()
	if err != nil {
		return nil, 0, err
	}
	if err := srv.Start(); err != nil {
		return nil, 0, err
	}
	defer srv.Wait()
	defer in.Close()
	lines := bufio.NewScanner(out)
	if !lines.Scan() {
		srv.Process.Kill()
		return nil, 0, fmt.Errorf("the websocket fan-out floor printed no address")
	}
	addr := lines.Text()
	logf("floor: %d websocket clients, %d exits, %d events each", c.clients, rounds, events)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	sessions := make([]*session, c.clients)
	readyc := make(chan error, c.clients)
	for i := range sessions {
		sessions[i] = &session{}
		wg.Add(1)
		go func(s *session) {
			defer wg.Done()
			followFeedAs(ctx, addr, "", s.addNote, readyc)
		}(sessions[i])
	}
	var errs []string
	for range sessions {
		if err := <-readyc; err != nil {
			errs = append(errs, err.Error())
		}
	}
	if len(errs) > 0 {
		srv.Process.Kill()
		cancel()
		wg.Wait()
		return nil, 0, fmt.Errorf("%d of the websocket floor's clients did not connect: %s", len(errs), errs[0])
	}
	if !lines.Scan() || lines.Text() != "ready" {
		srv.Process.Kill()
		cancel()
		wg.Wait()
		return nil, 0, fmt.Errorf("the websocket fan-out floor did not take every client")
	}
	fmt.Fprintln(in, "go")
	// The server hangs up on every client once its last round is sent;
	// each client reads what came before that first.
	wg.Wait()
	var lat []int64
	st := readStamps(stamps)
	for _, s := range sessions {
		l, _ := notifyTimes(st, s.takeNotes(), mono())
		lat = append(lat, l...)
	}
	if want := rounds * c.clients; len(lat) != want {
		return lat, c.clients, fmt.Errorf("the websocket floor's clients heard %d exits of %d", len(lat), want)
	}
	return lat, c.clients, nil
}

// wsFloorLabel names the websocket floors in the fan-out row.
func wsFloorLabel(events int) string {
	if events == 1 {
		return "coder/websocket, the exited event alone"
	}
	return "coder/websocket, the sidecar's " + strings.Join(sidecarEvents[:events], ", ") + " events"
}
