package feed

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/coder/websocket"
	"golang.org/x/sys/unix"

	"github.com/wa-sidecar/wa-sidecar/signals"
)

// DefaultListen is the server's default address: loopback, and outside
// 3000–3999, the ports the bridge and its secondary profiles take.
const DefaultListen = "127.0.0.1:7390"

const unixPrefix = "unix:"

// Listen opens addr, which is host:port for TCP or unix:/path for a Unix
// socket. The socket file is made mode 0600, and a stale one left by a
// crashed sidecar is replaced; any other file at the path is left alone.
func Listen(addr string) (net.Listener, error) {
	if err := CheckListen(addr); err != nil {
		return nil, err
	}
	if path, ok := strings.CutPrefix(addr, unixPrefix); ok {
		return listenUnix(path)
	}
	ln, err := net.Listen("tcp", addr)
	if errors.Is(err, syscall.EADDRINUSE) {
		return nil, &AddrInUseError{Addr: addr, Holder: holderOf(addr), Err: err}
	}
	if err != nil {
		return nil, &ListenError{Addr: addr, Err: err}
	}
	return ln, nil
}

// ListenError is an address Listen cannot open, or one CheckListen
// refuses, and why.
type ListenError struct {
	Addr string // as given: host:port or unix:/path
	Err  error
}

func (e *ListenError) Error() string {
	if strings.HasSuffix(e.Addr, ":") {
		return e.Addr + " " + e.Err.Error() // "unix: needs a path", not "unix:: …"
	}
	return e.Addr + ": " + e.Err.Error()
}

func (e *ListenError) Unwrap() error { return e.Err }

// CheckListen reports whether addr is one Listen can try to open, without
// opening anything: host:port with a port number or service name, or
// unix:/path.
func CheckListen(addr string) error {
	if path, ok := strings.CutPrefix(addr, unixPrefix); ok {
		if path == "" {
			return &ListenError{Addr: addr, Err: errors.New("needs a path, e.g. unix:/run/wa-sidecar.sock")}
		}
		return nil
	}
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return &ListenError{Addr: addr, Err: fmt.Errorf("want host:port or unix:/path (%v)", err)}
	}
	if _, err := net.LookupPort("tcp", port); err != nil {
		return &ListenError{Addr: addr, Err: fmt.Errorf("%q is not a port number", port)}
	}
	return nil
}

// AddrInUseError is Listen's error when another socket holds the address.
// Holder says who, when /proc tells: a process this user can see, else
// one of another user with Pid 0 and its UID; nil when /proc does not
// tell. It is a temporary state: the holder may be an old sidecar still
// stopping.
type AddrInUseError struct {
	Addr   string
	Holder *signals.PortHolder
	Err    error
}

func (e *AddrInUseError) Error() string {
	return fmt.Sprintf("%s is already in use%s", e.Addr, e.By())
}

// By is " by " and the holder, or "" when it is not known.
func (e *AddrInUseError) By() string {
	if e.Holder == nil {
		return ""
	}
	return " by " + e.Holder.String()
}

func (e *AddrInUseError) Unwrap() error { return e.Err }

func listenUnix(path string) (net.Listener, error) {
	// bind creates the socket file with the umask's permissions, so for a
	// moment anyone the umask lets in could connect. The socket is bound
	// instead in a directory only this user can enter, made 0600 there,
	// and then linked into place: at path it is never anything but 0600.
	// link, unlike rename, fails when something is already at path, so
	// two sidecars starting at once cannot both think they have it.
	dir, err := privateDir(filepath.Dir(path))
	if err != nil {
		return nil, &ListenError{Addr: unixPrefix + path, Err: fmt.Errorf("%w (can this user create files in %s?)", err, filepath.Dir(path))}
	}
	defer os.RemoveAll(dir)
	tmp := filepath.Join(dir, "s")
	if longest := maxUnixPath - max(0, len(tmp)-len(path)); len(path) > longest {
		return nil, &ListenError{Addr: unixPrefix + path, Err: fmt.Errorf("the path is too long for a Unix socket (%d bytes, at most %d here); choose a shorter one", len(path), longest)}
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: tmp, Net: "unix"})
	if err != nil {
		return nil, &ListenError{Addr: unixPrefix + path, Err: err}
	}
	ln.SetUnlinkOnClose(false)
	fail := func(err error) (net.Listener, error) {
		ln.Close()
		return nil, err
	}
	if err := os.Chmod(tmp, 0o600); err != nil {
		return fail(&ListenError{Addr: unixPrefix + path, Err: err})
	}
	err = os.Link(tmp, path)
	if errors.Is(err, fs.ErrExist) {
		if err := removeStaleSocket(path); err != nil {
			return fail(err)
		}
		err = os.Link(tmp, path)
	}
	if errors.Is(err, fs.ErrExist) {
		return fail(&ListenError{Addr: unixPrefix + path, Err: errors.New("another server took the path just now (another wa-sidecar starting?); choose another path")})
	}
	if err != nil {
		return fail(&ListenError{Addr: unixPrefix + path, Err: err})
	}
	fi, err := os.Lstat(path)
	if err != nil {
		return fail(&ListenError{Addr: unixPrefix + path, Err: err})
	}
	return &unixListener{UnixListener: ln, path: path, file: fi}, nil
}

// maxUnixPath is the longest path a Unix socket can be bound at on Linux
// (sun_path holds 108 bytes with the terminating NUL).
const maxUnixPath = 107

// privateDir makes a directory only this user can enter, with a short name
// so that a socket path in it is not much longer than one beside it.
func privateDir(parent string) (string, error) {
	for range 100 {
		var b [4]byte
		if _, err := rand.Read(b[:]); err != nil {
			return "", err
		}
		dir := filepath.Join(parent, ".wa"+hex.EncodeToString(b[:]))
		err := os.Mkdir(dir, 0o700)
		if err == nil {
			return dir, nil
		}
		if !errors.Is(err, fs.ErrExist) {
			return "", err
		}
	}
	return "", errors.New("no free temporary name")
}

// removeStaleSocket clears path for a new socket: only a socket nobody
// answers on, left over from a sidecar that died, is removed; a live one
// or any other kind of file is left alone, and the error says what is
// there.
func removeStaleSocket(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return &ListenError{Addr: unixPrefix + path, Err: err}
	}
	if fi.Mode().Type() != fs.ModeSocket {
		return &ListenError{Addr: unixPrefix + path, Err: fmt.Errorf("a %s is already there and it is not a socket; choose another path, or move it away", fileKind(fi.Mode()))}
	}
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return &ListenError{Addr: unixPrefix + path, Err: errors.New("a server already answers there (another wa-sidecar?); choose another path")}
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return &ListenError{Addr: unixPrefix + path, Err: fmt.Errorf("stale socket file: %w", err)}
	}
	return nil
}

// unixListener is a Unix socket listener that was bound elsewhere and
// linked at path: it reports path as its address, and on Close removes the
// socket file if it is still the one it put there.
type unixListener struct {
	*net.UnixListener
	path string
	file fs.FileInfo
}

func (l *unixListener) Addr() net.Addr { return &net.UnixAddr{Name: l.path, Net: "unix"} }

func (l *unixListener) Close() error {
	err := l.UnixListener.Close()
	if fi, serr := os.Lstat(l.path); serr == nil && os.SameFile(fi, l.file) {
		os.Remove(l.path)
	}
	return err
}

// fileKind names a file's type for a message.
func fileKind(m fs.FileMode) string {
	switch {
	case m.IsDir():
		return "directory"
	case m.Type() == fs.ModeSymlink:
		return "symbolic link"
	case m.IsRegular():
		return "regular file"
	}
	return "file"
}

// isLoopbackListener reports whether only this machine can reach ln.
func isLoopbackListener(ln net.Listener) bool {
	switch a := ln.Addr().(type) {
	case *net.UnixAddr:
		return true
	case *net.TCPAddr:
		return a.IP.IsLoopback()
	}
	return false
}

// AddrOf renders a listener's address the way Listen and NewClient take it.
func AddrOf(ln net.Listener) string {
	if a, ok := ln.Addr().(*net.UnixAddr); ok {
		return unixPrefix + a.Name
	}
	return ln.Addr().String()
}

// StatusError is an HTTP refusal of a websocket: 401 for a wrong token,
// 403 for a refused origin, 503 when the server is full.
type StatusError struct {
	Code int
	Addr string
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("%s refused the connection: %d %s", e.Addr, e.Code, http.StatusText(e.Code))
}

// ErrUnreachable says no server answered at the address: most likely no
// sidecar is running there.
var ErrUnreachable = errors.New("no sidecar answers")

// MaxServerMessage is the read limit Client sets on the websocket. An
// event is usually a few KiB, but exit records with long output lines and
// fields from the bridge layer can make one far larger.
const MaxServerMessage = 16 << 20

// Client reaches a sidecar's server, over TCP or a Unix socket.
type Client struct {
	addr  string
	base  string // http://host:port
	token string
	http  *http.Client
}

// NewClient returns a client for addr (host:port or unix:/path). token may
// be empty for read access.
func NewClient(addr, token string) (*Client, error) {
	return NewClientOf(addr, token, 0)
}

// NewClientOf is NewClient for the sidecar of process pid, the one whose
// sidecar.json names addr: over a Unix socket, nothing is sent unless the
// kernel says pid listens on it (SO_PEERCRED), and the request fails with
// a *PeerError. A socket is only a name in a directory, and whoever can
// write that directory can move the sidecar's away and put their own
// there while the sidecar runs. A TCP port needs no such check: while the
// sidecar runs, no one else can listen on it. A pid of 0 checks nothing.
func NewClientOf(addr, token string, pid int) (*Client, error) {
	c := &Client{addr: addr, token: token}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if path, ok := strings.CutPrefix(addr, unixPrefix); ok {
		if path == "" {
			return nil, errors.New("address unix: needs a path")
		}
		var d net.Dialer
		tr.DialContext = func(ctx context.Context, _, _ string) (net.Conn, error) {
			conn, err := d.DialContext(ctx, "unix", path)
			if err != nil || pid == 0 {
				return conn, err
			}
			if err := checkPeer(conn, path, pid); err != nil {
				conn.Close()
				return nil, err
			}
			return conn, nil
		}
		c.base = "http://localhost"
	} else {
		host, port, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, fmt.Errorf("address %q: want host:port or unix:/path", addr)
		}
		// A server that listens on every address (0.0.0.0, written [::]
		// in sidecar.json) is reached here through loopback: the URL's
		// host is the Host header, and the server answers only to
		// loopback names and the host of its --listen.
		if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
			host = "127.0.0.1"
		}
		c.base = "http://" + net.JoinHostPort(host, port)
	}
	c.http = &http.Client{Transport: tr}
	return c, nil
}

// PeerError says that a Unix socket is served by another process than
// the sidecar that the client was made for.
type PeerError struct {
	Path     string
	Pid, UID int // who listens on the socket
	Want     int // the sidecar's pid
}

func (e *PeerError) Error() string {
	return fmt.Sprintf("the socket %s is served by pid %d (uid %d), not by the sidecar (pid %d) that sidecar.json names: whoever can write %s may have put it there; nothing was sent to it",
		e.Path, e.Pid, e.UID, e.Want, filepath.Dir(e.Path))
}

// checkPeer says whether pid listens on the Unix socket conn reached.
func checkPeer(conn net.Conn, path string, pid int) error {
	uc, ok := conn.(*net.UnixConn)
	if !ok {
		return fmt.Errorf("%s: not a Unix socket connection", path)
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return err
	}
	var cred *unix.Ucred
	cerr := raw.Control(func(fd uintptr) {
		cred, err = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	})
	if cerr != nil {
		return cerr
	}
	if err != nil {
		return fmt.Errorf("%s: who listens: %w", path, err)
	}
	if int(cred.Pid) != pid {
		return &PeerError{Path: path, Pid: int(cred.Pid), UID: int(cred.Uid), Want: pid}
	}
	return nil
}

// Addr is the address the client dials.
func (c *Client) Addr() string { return c.addr }

// Close releases idle connections.
func (c *Client) Close() { c.http.CloseIdleConnections() }

func (c *Client) header() http.Header {
	h := http.Header{}
	if c.token != "" {
		h.Set("Authorization", "Bearer "+c.token)
	}
	return h
}

// Get performs GET path. A failure to connect wraps ErrUnreachable.
func (c *Client) Get(ctx context.Context, path string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+path, nil)
	if err != nil {
		return nil, err
	}
	req.Header = c.header()
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, c.unreachable(err)
	}
	return resp, nil
}

// Events opens the event websocket. A failure to connect wraps
// ErrUnreachable; a refused token gives a 401 in the error.
func (c *Client) Events(ctx context.Context) (*websocket.Conn, error) {
	ws, resp, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(c.base, "http")+"/v1/events", &websocket.DialOptions{
		HTTPClient: c.http,
		HTTPHeader: c.header(),
	})
	if err != nil {
		if resp != nil && resp.StatusCode != http.StatusSwitchingProtocols {
			return nil, &StatusError{Code: resp.StatusCode, Addr: c.addr}
		}
		return nil, c.unreachable(err)
	}
	ws.SetReadLimit(MaxServerMessage)
	return ws, nil
}

func (c *Client) unreachable(err error) error {
	var op *net.OpError
	if errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, os.ErrNotExist) || errors.Is(err, syscall.ENOENT) ||
		(errors.As(err, &op) && op.Op == "dial") {
		return fmt.Errorf("%w at %s: %v", ErrUnreachable, c.addr, rootCause(err))
	}
	return err
}

func rootCause(err error) error {
	for {
		u := errors.Unwrap(err)
		if u == nil {
			return err
		}
		err = u
	}
}

// holderOf finds what holds a TCP address: the first process /proc
// names, else a socket of another user's, else nil.
func holderOf(addr string) *signals.PortHolder {
	host, portText, _ := net.SplitHostPort(addr)
	port, err := strconv.Atoi(portText)
	if err != nil {
		return nil
	}
	// A host name, or none, may stand for any address: every holder of
	// the port counts.
	ip, _ := netip.ParseAddr(host)
	holders, err := signals.PortHolders(ip, port)
	if err != nil || len(holders) == 0 {
		return nil
	}
	for _, h := range holders {
		if h.Pid != 0 {
			return &h
		}
	}
	return &holders[0]
}
