package feed

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
	"unicode"

	"golang.org/x/sys/unix"

	"github.com/wa-sidecar/wa-sidecar/internal/privdir"
	"github.com/wa-sidecar/wa-sidecar/signals"
)

// Names of the files the server keeps in its state directory.
const (
	TokenFileName     = "token"
	DiscoveryFileName = "sidecar.json"
)

// StateDirError is a state directory that cannot be found or made. Dir
// is empty when DefaultStateDir finds none (there is no home directory).
type StateDirError struct {
	Dir string
	Err error
}

func (e *StateDirError) Error() string {
	if e.Dir == "" {
		return "no state directory: " + e.Err.Error()
	}
	return "state directory: " + e.Err.Error()
}

func (e *StateDirError) Unwrap() error { return e.Err }

// DefaultStateDir is where the server keeps its token and discovery file
// unless told otherwise: /var/lib/wa-sidecar for root, otherwise
// $XDG_STATE_HOME/wa-sidecar, or ~/.local/state/wa-sidecar. Without a
// home directory there is none, and the error is a *StateDirError.
func DefaultStateDir() (string, error) {
	if os.Geteuid() == 0 {
		return "/var/lib/wa-sidecar", nil
	}
	if d := os.Getenv("XDG_STATE_HOME"); filepath.IsAbs(d) {
		return filepath.Join(d, "wa-sidecar"), nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", &StateDirError{Err: err}
	}
	return filepath.Join(home, ".local", "state", "wa-sidecar"), nil
}

// maxTokenBytes bounds a token read from a file or the environment.
const maxTokenBytes = 4096

// CheckToken rejects tokens that cannot travel in an Authorization header.
func CheckToken(tok string) error {
	switch {
	case tok == "":
		return errors.New("the token is empty")
	case len(tok) > maxTokenBytes:
		return fmt.Errorf("the token is longer than %d bytes", maxTokenBytes)
	}
	for _, r := range tok {
		if r > unicode.MaxASCII || !unicode.IsPrint(r) || r == ' ' {
			return errors.New("the token must be printable ASCII without spaces")
		}
	}
	return nil
}

// ReadTokenFile reads a token from path. Surrounding white space, such as
// the newline an editor adds, is ignored.
func ReadTokenFile(path string) (string, error) {
	b, err := privdir.ReadRegularFile(path, maxTokenBytes+64)
	if err != nil {
		return "", fmt.Errorf("read token file: %w", err)
	}
	tok := strings.TrimSpace(string(b))
	if err := CheckToken(tok); err != nil {
		return "", fmt.Errorf("token file %s: %w", path, err)
	}
	return tok, nil
}

// NewToken generates a random token: 32 bytes from the system's secure
// source, in hex.
func NewToken() (string, error) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("generate token: %w", err)
	}
	return hex.EncodeToString(b[:]), nil
}

// OpenStateDir opens the state directory dir, which must exist, and checks
// that no other user can change it: owned by this user (or root) and
// writable by no one else. Another user who could write there could plant
// a link where the lock or token goes, or a sidecar.json that sends the
// token elsewhere; such a directory gives a *privdir.UnsafeError that says
// how to fix it.
func OpenStateDir(dir string) (*privdir.Dir, error) {
	d, err := privdir.Open(dir, false)
	if err != nil {
		return nil, fmt.Errorf("state directory: %w", err)
	}
	return d, nil
}

// PrepareStateDir creates dir (mode 0700) if it is missing, and checks it
// as OpenStateDir does. Its error is a *StateDirError.
func PrepareStateDir(dir string) error {
	d, err := privdir.Open(dir, true)
	if err != nil {
		return &StateDirError{Dir: dir, Err: err}
	}
	return d.Close()
}

// WriteToken stores tok in dir with mode 0600 and returns the file's path.
// A link already at that name is replaced, never written through.
func WriteToken(dir, tok string) (string, error) {
	d, err := OpenStateDir(dir)
	if err != nil {
		return "", err
	}
	defer d.Close()
	if err := d.WriteFile(TokenFileName, []byte(tok+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("write token: %w", err)
	}
	return filepath.Join(d.Path(), TokenFileName), nil
}

// Discovery is what the server leaves in its state directory so the CLI
// clients can find it.
type Discovery struct {
	Listen    string `json:"listen"`     // address as Dial takes it
	TokenFile string `json:"token_file"` // where the token is, if in a file
	Pid       int    `json:"pid"`
	// StartTime is the server's start time (signals.Identity), so a pid
	// reused after the server died is not taken for it.
	StartTime uint64    `json:"start_time,omitempty"`
	Version   string    `json:"version"`
	StartedAt time.Time `json:"started_at"`

	owner uint32 // who owns the file it was read from
}

// WriteDiscovery stores d in dir (mode 0600), filling in the start time of
// d.Pid.
func WriteDiscovery(dir string, d Discovery) error {
	if d.StartTime == 0 && d.Pid > 0 {
		d.StartTime, _ = signals.StartTime(d.Pid)
	}
	b, err := json.MarshalIndent(d, "", "  ")
	if err != nil {
		return err
	}
	sd, err := OpenStateDir(dir)
	if err != nil {
		return err
	}
	defer sd.Close()
	if err := sd.WriteFile(DiscoveryFileName, append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("write discovery file: %w", err)
	}
	return nil
}

// maxDiscoveryBytes bounds what is read of sidecar.json.
const maxDiscoveryBytes = 64 << 10

// DiscoveryError says sidecar.json holds something no client may act on.
type DiscoveryError struct {
	Path    string
	Problem string
}

func (e *DiscoveryError) Error() string {
	return fmt.Sprintf("%s %s; remove it, and restart the sidecar if one should be running", e.Path, e.Problem)
}

// StaleDiscoveryError says sidecar.json names a sidecar that no longer
// runs: one that was killed before it could remove the file. It matches
// fs.ErrNotExist, since it names no sidecar, and whatever answers at its
// address now is not that sidecar.
type StaleDiscoveryError struct {
	Path string
	Pid  int
}

func (e *StaleDiscoveryError) Error() string {
	return fmt.Sprintf("%s names pid %d, which is no longer the sidecar that wrote it (killed before it could remove the file?)", e.Path, e.Pid)
}

// Unwrap makes a stale file count as a missing one.
func (e *StaleDiscoveryError) Unwrap() error { return fs.ErrNotExist }

// ReadDiscovery reads the discovery file in dir and checks it, so that a
// client never sends its token where a forged or stale file points: the
// directory and the file must be private (as OpenStateDir checks, never
// through a link), the address must be a Unix socket or an address of
// this machine, the token file an absolute path, and the pid that of a
// running process, with the recorded start time, of the file's owner. A
// missing file, or a stale one (*StaleDiscoveryError), gives an error that
// matches fs.ErrNotExist; a bad one a *DiscoveryError.
func ReadDiscovery(dir string) (Discovery, error) {
	var d Discovery
	sd, err := OpenStateDir(dir)
	if err != nil {
		return d, err
	}
	defer sd.Close()
	path := filepath.Join(sd.Path(), DiscoveryFileName)
	f, err := sd.OpenFile(DiscoveryFileName, os.O_RDONLY, 0)
	if err != nil {
		return d, err
	}
	defer f.Close()
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return d, &os.PathError{Op: "fstat", Path: path, Err: err}
	}
	b, err := io.ReadAll(io.LimitReader(f, maxDiscoveryBytes+1))
	if err != nil {
		return d, err
	}
	if len(b) > maxDiscoveryBytes {
		return d, &DiscoveryError{Path: path, Problem: fmt.Sprintf("is larger than %d bytes", maxDiscoveryBytes)}
	}
	if err := json.Unmarshal(b, &d); err != nil {
		return Discovery{}, fmt.Errorf("%s: %w", path, err)
	}
	d.owner = st.Uid
	if err := d.check(path); err != nil {
		return Discovery{}, err
	}
	return d, nil
}

func (d Discovery) check(path string) error {
	if problem := checkLocalAddr(d.Listen); problem != "" {
		return &DiscoveryError{Path: path, Problem: problem}
	}
	if d.TokenFile != "" && (!filepath.IsAbs(d.TokenFile) || filepath.Clean(d.TokenFile) != d.TokenFile) {
		return &DiscoveryError{Path: path, Problem: fmt.Sprintf("names the token file %q, which is not a clean absolute path", d.TokenFile)}
	}
	if d.Pid <= 0 {
		return &DiscoveryError{Path: path, Problem: fmt.Sprintf("names no process (pid %d)", d.Pid)}
	}
	var pst unix.Stat_t
	alive := unix.Stat("/proc/"+strconv.Itoa(d.Pid), &pst) == nil && pst.Uid == d.owner
	if alive && d.StartTime != 0 {
		alive = signals.Identity{Pid: d.Pid, StartTime: d.StartTime}.Alive()
	}
	if !alive {
		return &StaleDiscoveryError{Path: path, Pid: d.Pid}
	}
	return nil
}

// checkLocalAddr says what is wrong with addr as the address of a sidecar
// on this machine, or "" when nothing is: a token goes only to a Unix
// socket or to an IP address of this host.
func checkLocalAddr(addr string) string {
	if p, ok := strings.CutPrefix(addr, unixPrefix); ok {
		if !filepath.IsAbs(p) {
			return fmt.Sprintf("names the address %q, whose socket path is not absolute", addr)
		}
		return ""
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Sprintf("names the address %q, which is not host:port or unix:/path", addr)
	}
	ip := net.ParseIP(host)
	if ip == nil {
		return fmt.Sprintf("names the address %q, whose host is not an IP address", addr)
	}
	if ip.IsLoopback() || ip.IsUnspecified() {
		return ""
	}
	if addrs, err := net.InterfaceAddrs(); err == nil {
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok && n.IP.Equal(ip) {
				return ""
			}
		}
	}
	return fmt.Sprintf("names the address %q, which is not an address of this machine", addr)
}

// ReadDiscoveredToken reads the token of the sidecar d, as read by
// ReadDiscovery from dir. A token file in the state directory is read as
// OpenStateDir's files are (never through a link); one elsewhere (run
// --token-file) must be a regular file owned by root or by the sidecar's
// user and writable by no one else, so a forged name can never make a
// client send the contents of an arbitrary file.
func ReadDiscoveredToken(dir string, d Discovery) (string, error) {
	if d.TokenFile == "" {
		return "", fmt.Errorf("%s names no token file: %w", DiscoveryFileName, fs.ErrNotExist)
	}
	sd, err := OpenStateDir(dir)
	if err != nil {
		return "", err
	}
	defer sd.Close()
	var b []byte
	if filepath.Dir(d.TokenFile) == sd.Path() {
		b, err = sd.ReadFile(filepath.Base(d.TokenFile), maxTokenBytes+64)
	} else {
		b, err = readForeignToken(d.TokenFile, d.owner)
	}
	if err != nil {
		return "", fmt.Errorf("read token file: %w", err)
	}
	tok := strings.TrimSpace(string(b))
	if err := CheckToken(tok); err != nil {
		return "", fmt.Errorf("token file %s: %w", d.TokenFile, err)
	}
	return tok, nil
}

func readForeignToken(path string, owner uint32) ([]byte, error) {
	return privdir.ReadRegularFileChecked(path, maxTokenBytes+64, func(st *unix.Stat_t) error {
		switch {
		case st.Uid != 0 && st.Uid != owner:
			return &privdir.UnsafeError{Path: path, Problem: fmt.Sprintf("is owned by uid %d, neither root nor the sidecar's user", st.Uid), Fix: "chown it to root or to the sidecar's user"}
		case st.Mode&0o022 != 0:
			return &privdir.UnsafeError{Path: path, Problem: fmt.Sprintf("is writable by other users (mode %04o)", st.Mode&0o7777), Fix: "chmod go-w " + path}
		}
		return nil
	})
}

// RemoveDiscovery removes the discovery file in dir if it is still the
// one process pid wrote, so a newer sidecar's file survives.
func RemoveDiscovery(dir string, pid int) error {
	sd, err := OpenStateDir(dir)
	if err != nil {
		return err
	}
	defer sd.Close()
	b, err := sd.ReadFile(DiscoveryFileName, maxDiscoveryBytes)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	var d Discovery
	if err == nil && json.Unmarshal(b, &d) == nil && d.Pid != pid {
		return nil
	}
	return sd.Remove(DiscoveryFileName)
}
