// Command stackfloor is the idle-memory floor of wa-sidecar's required
// stack: the same libraries (urfave/cli for the command line, net/http and
// coder/websocket for the status feed, log/slog and encoding/json for the
// log, go-isatty and x/sys) doing the least a supervisor must: start the
// bridge, wait for it, and serve a websocket that says hello. It
// supervises nothing. bench/run.sh measures its idle cost beside
// wa-sidecar's, so the table shows how much of wa-sidecar's resident size
// the stack alone takes.
package main

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"syscall"

	"github.com/coder/websocket"
	"github.com/mattn/go-isatty"
	"github.com/urfave/cli/v2"
	"golang.org/x/sys/unix"
)

func main() {
	app := &cli.App{
		Name:  "stackfloor",
		Usage: "wa-sidecar's libraries, supervising nothing (a benchmark floor)",
		Commands: []*cli.Command{{
			Name:      "run",
			ArgsUsage: "-- COMMAND [ARG...]",
			Flags:     []cli.Flag{&cli.StringFlag{Name: "listen", Value: "127.0.0.1:0"}},
			Action:    run,
		}},
	}
	if err := app.Run(os.Args); err != nil {
		fmt.Fprintln(os.Stderr, "stackfloor:", err)
		os.Exit(1)
	}
}

func run(c *cli.Context) error {
	if c.NArg() == 0 {
		return fmt.Errorf("no command to run")
	}
	log := slog.New(slog.NewJSONHandler(os.Stderr, nil))
	ln, err := net.Listen("tcp", c.String("listen"))
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok\n")) })
	mux.HandleFunc("GET /v1/events", func(w http.ResponseWriter, r *http.Request) {
		ws, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer ws.CloseNow()
		hello, _ := json.Marshal(map[string]any{"type": "hello", "pid": os.Getpid()})
		ws.Write(r.Context(), websocket.MessageText, hello)
		<-r.Context().Done()
	})
	go http.Serve(ln, mux)

	cmd := exec.Command(c.Args().First(), c.Args().Tail()...)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: unix.SIGKILL}
	if err := cmd.Start(); err != nil {
		return err
	}
	log.Info("bridge started", "pid", cmd.Process.Pid, "listen", ln.Addr().String(), "tty", isatty.IsTerminal(os.Stderr.Fd()))
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, unix.SIGTERM, unix.SIGINT)
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	select {
	case sig := <-stop:
		cmd.Process.Signal(sig)
		<-exited
	case err := <-exited:
		log.Info("bridge exited", "error", err)
	}
	return nil
}
