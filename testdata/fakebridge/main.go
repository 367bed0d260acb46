// Command fakebridge stands in for the WhatsApp bridge in tests. Each flag
// makes it misbehave in one way the real bridge (or the machine under it)
// can: exit with a code, die by a signal, ignore SIGTERM, leave a grandchild
// behind, flood its output, or hang.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

func main() {
	var (
		after         = flag.Duration("after", 0, "wait this long before -exit or -signal")
		exitCode      = flag.Int("exit", -1, "exit with this code")
		sig           = flag.Int("signal", 0, "kill itself with this signal number")
		ignoreTerm    = flag.Bool("ignore-term", false, "ignore SIGTERM and SIGINT")
		grandchild    = flag.Bool("grandchild", false, "start a grandchild in its process group that hangs")
		escapee       = flag.Bool("escapee", false, "start a grandchild in a new session that keeps stdout open")
		spew          = flag.Int64("spew", 0, "write this many bytes of output lines, then go on")
		lineLen       = flag.Int("line", 100, "length of each -spew line, newline included")
		longLine      = flag.Int("long-line", 0, "print one line this long without a newline first")
		say           = flag.String("say", "", "lines to print on stdout, separated by |")
		sayErr        = flag.String("say-err", "", "lines to print on stderr, separated by |")
		pidFile       = flag.String("pidfile", "", "append own pid (and grandchild pids) to this file")
		hang          = flag.Bool("hang", false, "sleep until killed")
		envOut        = flag.String("env", "", "print this environment variable's value as ENV=value")
		pwd           = flag.Bool("pwd", false, "print the working directory as PWD=dir")
		fds           = flag.Bool("fds", false, "print each open file descriptor as FD=n target")
		orphan        = flag.Duration("orphan", 0, "start a grandchild in a new session that exits after this long")
		failTimes     = flag.Int("fail-times", 0, "with -count-file: exit 1 at once on the first N runs, then hang")
		countFile     = flag.String("count-file", "", "file that counts the runs, for -fail-times")
		reportSignals = flag.Bool("report-signals", false, "print 'got SIGNAME' for HUP, USR1, USR2")
		doneFile      = flag.String("done-file", "", "create this file once all output (-say, -spew, …) is written")
		stampFile     = flag.String("stamp", "", "append 'start|exit MONOTONIC_NS PID' lines to this file, for benchmarks")
	)
	flag.Parse()
	stamp(*stampFile, "start")

	if *countFile != "" {
		b, _ := os.ReadFile(*countFile)
		n, _ := strconv.Atoi(strings.TrimSpace(string(b)))
		os.WriteFile(*countFile, []byte(strconv.Itoa(n+1)), 0o644)
		if n < *failTimes {
			fmt.Println("failing run", n+1)
			os.Exit(1)
		}
	}
	if *reportSignals {
		ch := make(chan os.Signal, 4)
		signal.Notify(ch, syscall.SIGHUP, syscall.SIGUSR1, syscall.SIGUSR2)
		go func() {
			for s := range ch {
				fmt.Println("got", sigName(s))
			}
		}()
	}
	if *orphan > 0 {
		c := exec.Command(os.Args[0], "-after", orphan.String(), "-exit", "0")
		c.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
		if err := c.Start(); err != nil {
			fmt.Fprintln(os.Stderr, "orphan:", err)
			os.Exit(3)
		}
		fmt.Println("orphan", c.Process.Pid)
	}

	if *ignoreTerm {
		signal.Ignore(syscall.SIGTERM, syscall.SIGINT)
	}
	record := func(pid int) {
		if *pidFile == "" {
			return
		}
		f, err := os.OpenFile(*pidFile, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
		if err != nil {
			fmt.Fprintln(os.Stderr, "pidfile:", err)
			os.Exit(3)
		}
		fmt.Fprintln(f, pid)
		f.Close()
	}
	record(os.Getpid())

	if *grandchild || *escapee {
		c := exec.Command(os.Args[0], "-hang")
		if *escapee {
			c.Stdout = os.Stdout
			c.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
		}
		if err := c.Start(); err != nil {
			fmt.Fprintln(os.Stderr, "grandchild:", err)
			os.Exit(3)
		}
		record(c.Process.Pid)
	}
	if *envOut != "" {
		fmt.Printf("ENV=%s\n", os.Getenv(*envOut))
	}
	if *fds {
		entries, _ := os.ReadDir("/proc/self/fd")
		for _, e := range entries {
			target, _ := os.Readlink("/proc/self/fd/" + e.Name())
			fmt.Printf("FD=%s %s\n", e.Name(), target)
		}
		fmt.Println("FDS done")
	}
	if *pwd {
		d, _ := os.Getwd()
		fmt.Printf("PWD=%s\n", d)
	}
	if *longLine > 0 {
		os.Stdout.Write([]byte(strings.Repeat("x", *longLine)))
		os.Stdout.Write([]byte("\nafter-long-line\n"))
	}
	for _, l := range split(*say) {
		fmt.Println(l)
	}
	for _, l := range split(*sayErr) {
		fmt.Fprintln(os.Stderr, l)
	}
	if *spew > 0 {
		w := bufio.NewWriterSize(os.Stdout, 64<<10)
		line := []byte(strings.Repeat("y", max(*lineLen-1, 0)) + "\n")
		for n := int64(0); n < *spew; n += int64(len(line)) {
			w.Write(line)
		}
		w.Flush()
		fmt.Println("spew done " + strconv.FormatInt(*spew, 10))
	}
	if *doneFile != "" {
		os.WriteFile(*doneFile, nil, 0o644)
	}
	time.Sleep(*after)
	if *sig != 0 {
		// The Go runtime turns SEGV and ABRT into its own crash (exit 2), so
		// the shell takes over this pid and dies by the signal instead.
		err := syscall.Exec("/bin/sh", []string{"sh", "-c", "kill -" + strconv.Itoa(*sig) + " $$; sleep 5"}, os.Environ())
		fmt.Fprintln(os.Stderr, "exec sh:", err)
		os.Exit(4)
	}
	if *exitCode >= 0 {
		stamp(*stampFile, "exit")
		os.Exit(*exitCode)
	}
	if *hang || *ignoreTerm || *grandchild || *escapee || *reportSignals || *failTimes > 0 {
		for {
			time.Sleep(time.Hour)
		}
	}
}

// stamp records an instant on CLOCK_MONOTONIC, which every process on the
// machine shares, so a benchmark can subtract it from the moment a
// supervisor or listener saw the same event. One O_APPEND write per line
// keeps lines from concurrent runs whole.
func stamp(file, what string) {
	if file == "" {
		return
	}
	f, err := os.OpenFile(file, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		fmt.Fprintln(os.Stderr, "stamp:", err)
		os.Exit(3)
	}
	// Read the clock after opening, so only one write separates the stamp
	// from the exit that follows it.
	var ts unix.Timespec
	unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	f.Write([]byte(what + " " + strconv.FormatInt(ts.Nano(), 10) + " " + strconv.Itoa(os.Getpid()) + "\n"))
	f.Close()
}

func split(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, "|")
}

func sigName(s os.Signal) string {
	switch s {
	case syscall.SIGHUP:
		return "SIGHUP"
	case syscall.SIGUSR1:
		return "SIGUSR1"
	case syscall.SIGUSR2:
		return "SIGUSR2"
	}
	return s.String()
}
