package feed

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"golang.org/x/time/rate"

	"github.com/wa-sidecar/wa-sidecar/procmon"
)

// Options configure a Server. Zero fields take the defaults in brackets.
type Options struct {
	Monitor *procmon.Monitor // required
	Listen  string           // host:port or unix:/path [DefaultListen]
	// Token allows control ops and, from other machines, read access. An
	// empty token allows no control ops at all.
	Token string
	// AllowOrigins are browser origins allowed besides the server's own,
	// as host patterns ("app.example.com", "*.example.com") or with a
	// scheme ("https://app.example.com").
	AllowOrigins []string
	// GatewayURL, if set, makes the server also dial out to a ws:// or
	// wss:// URL and send the same messages there (push mode).
	GatewayURL string
	Version    string
	Logger     *slog.Logger // nil discards

	MaxClients int // websocket clients at once [1024, at most three quarters of MaxConns]
	// MaxAnonymousClients bounds the websocket clients without the token,
	// so that they cannot take the places token holders need [three
	// quarters of MaxClients]. When they are all taken, a new anonymous
	// client takes the place of the one quiet longest if that one has
	// sent nothing for AnonymousIdle [1 min]; a token holder that finds
	// every place taken takes the place of the quietest anonymous client.
	MaxAnonymousClients int
	AnonymousIdle       time.Duration
	// MaxConns bounds the connections the server holds at once; more wait
	// in the kernel's backlog until one closes [RLIMIT_NOFILE, less the
	// file descriptors open at New and 64 kept for spawning the bridge;
	// at most 4096].
	MaxConns         int
	IdleTimeout      time.Duration // a keep-alive connection idle this long is closed [60 s]
	MaxMessageBytes  int64         // largest message a client may send [4096]
	QueueLen         int           // events queued for one client, or waiting for its socket, before it is dropped as too slow [256]
	QueueBytes       int           // bytes of events queued for one client, or waiting for its socket, before it is dropped as too slow [8 MiB]
	FlushTimeout     time.Duration // when the event stream ends, how long clients have to take the last events [2 s]
	PingInterval     time.Duration // keepalive ping period [15 s]
	PingTimeout      time.Duration // a peer that has not answered a ping by then is dropped [10 s]
	WriteTimeout     time.Duration // a send to the peer (at most 256 KiB of what waits for its socket) that takes longer drops it [10 s]
	OpsPerSecond     float64       // ops one connection may send, sustained [20, burst 40]
	ControlPerSecond float64       // control ops of all clients together, sustained [1, burst 5]
	// PushBackoff paces reconnection in push mode [0.5 s doubling to 30 s,
	// ±20 %; a connection that lasted 30 s starts the delays over].
	PushBackoff procmon.Backoff
	// Summary reads the status aloud for /readyz's reason: the layers'
	// reasons, and how to start a stopped bridge again in a program's own
	// words [procmon's line, the child called "bridge"].
	Summary procmon.Summary
}

func (o *Options) applyDefaults() {
	if o.Summary.Name == "" {
		o.Summary.Name = "bridge"
	}
	if o.Listen == "" {
		o.Listen = DefaultListen
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.MaxClients <= 0 {
		o.MaxClients = 1024
	}
	if o.AnonymousIdle <= 0 {
		o.AnonymousIdle = time.Minute
	}
	if o.MaxConns <= 0 {
		o.MaxConns = connLimit()
	}
	if o.IdleTimeout <= 0 {
		o.IdleTimeout = time.Minute
	}
	if o.QueueBytes <= 0 {
		o.QueueBytes = 8 << 20
	}
	if o.FlushTimeout <= 0 {
		o.FlushTimeout = 2 * time.Second
	}
	if o.MaxMessageBytes <= 0 {
		o.MaxMessageBytes = 4096
	}
	if o.QueueLen <= 0 {
		o.QueueLen = 256
	}
	if o.PingInterval <= 0 {
		o.PingInterval = 15 * time.Second
	}
	if o.PingTimeout <= 0 {
		o.PingTimeout = 10 * time.Second
	}
	if o.WriteTimeout <= 0 {
		o.WriteTimeout = 10 * time.Second
	}
	if o.OpsPerSecond <= 0 {
		o.OpsPerSecond = 20
	}
	if o.ControlPerSecond <= 0 {
		o.ControlPerSecond = 1
	}
	if o.PushBackoff == (procmon.Backoff{}) {
		o.PushBackoff = procmon.Backoff{Initial: 500 * time.Millisecond, Max: 30 * time.Second, Multiplier: 2, Jitter: 0.2, Reset: 30 * time.Second}
	}
}

// Server publishes one monitor's state: the /v1/events websocket, the
// /v1/status snapshot, the /healthz and /readyz probes, and push mode.
type Server struct {
	opts     Options
	log      *slog.Logger
	ln       net.Listener
	loopback bool
	mux      *http.ServeMux
	follow   *procmon.Follower
	hub      *hub
	token    [sha256.Size]byte
	hasToken bool
	control  *rate.Limiter
	admit    *admission
	epoch    time.Time // the server's clock starts here; see now
	started  atomic.Bool

	// ctx ends every connection: it is cancelled once clients have had
	// FlushTimeout to take the last events, or when Run returns.
	ctx context.Context

	mu      sync.Mutex
	closing bool
	conns   sync.WaitGroup // websocket sessions and the push loop
}

// PushBackoffError says Options.PushBackoff cannot work. It is feed's own
// setting, not the monitor's restart backoff, though both are checked by
// procmon.Backoff.Validate, whose error it wraps.
type PushBackoffError struct {
	Err error
}

func (e *PushBackoffError) Error() string { return "feed: Options.PushBackoff: " + e.Err.Error() }

func (e *PushBackoffError) Unwrap() error { return e.Err }

// New checks opts, binds the listener, so a taken address is reported
// before anything starts, and follows the monitor at once, so that clients
// see every event from the first even if the monitor runs before Run
// starts.
func New(opts Options) (*Server, error) {
	if opts.Monitor == nil {
		return nil, errors.New("feed: no monitor")
	}
	opts.applyDefaults()
	if err := opts.Check(); err != nil {
		return nil, err
	}
	if err := opts.PushBackoff.Validate(); err != nil {
		return nil, &PushBackoffError{Err: err}
	}
	ln, err := Listen(opts.Listen)
	if err != nil {
		return nil, err
	}
	s := &Server{
		opts:     opts,
		log:      opts.Logger,
		ln:       ln,
		loopback: isLoopbackListener(ln),
		mux:      http.NewServeMux(),
		hub:      newHub(opts.Logger, opts.QueueBytes, opts.QueueLen),
		control:  rate.NewLimiter(rate.Limit(opts.ControlPerSecond), 5),
		epoch:    time.Now(),
		ctx:      context.Background(),
	}
	s.follow = opts.Monitor.Follow(hubQueue)
	s.hub.setLast(s.hub.encode(s.follow.Last()))
	maxClients, maxAnon := clientLimits(&opts)
	s.admit = newAdmission(maxClients, maxAnon, opts.AnonymousIdle)
	if opts.Token != "" {
		s.token = sha256.Sum256([]byte(opts.Token))
		s.hasToken = true
	}
	s.mux.HandleFunc("GET /healthz", s.healthz)
	s.mux.HandleFunc("GET /readyz", s.readyz)
	s.mux.Handle("GET /v1/status", s.guard(http.HandlerFunc(s.status)))
	s.mux.Handle("GET /v1/events", s.guard(http.HandlerFunc(s.events)))
	return s, nil
}

// Check reports what New would refuse in the token, the gateway URL, the
// allowed origins and the address, without binding or writing anything,
// so that a command line can be checked before anything is touched.
func (o Options) Check() error {
	if o.Token != "" {
		if err := CheckToken(o.Token); err != nil {
			return err
		}
	}
	if o.GatewayURL != "" {
		if err := checkGatewayURL(o.GatewayURL); err != nil {
			return err
		}
	}
	for _, p := range o.AllowOrigins {
		if err := checkOriginPattern(p); err != nil {
			return err
		}
	}
	if o.Listen != "" {
		return CheckListen(o.Listen)
	}
	return nil
}

// OriginError is a pattern of Options.AllowOrigins that Check refuses,
// and why.
type OriginError struct {
	Pattern string
	Err     error
}

func (e *OriginError) Error() string { return fmt.Sprintf("allowed origin %q %v", e.Pattern, e.Err) }

func (e *OriginError) Unwrap() error { return e.Err }

// errWideOrigin is why a pattern with too few literal labels is refused.
var errWideOrigin = errors.New("would let in pages from too many sites, and any of them could control the bridge; " +
	"name the origins, e.g. app.example.com or *.example.com")

// checkOriginPattern refuses allowed-origin patterns that would let in
// any web page, or every page under a public suffix: '*', 'https://*',
// '*.com'. A pattern with wildcards must spell out at least two labels of
// the host, as in '*.example.com'.
func checkOriginPattern(p string) error {
	host := p
	if _, h, ok := strings.Cut(p, "://"); ok {
		host = h
	}
	if !strings.ContainsAny(host, `*?[\`) {
		return nil // one origin, such as localhost:8080
	}
	literal := 0
	for _, label := range strings.Split(host, ".") {
		if label != "" && !strings.ContainsAny(label, `*?[\`) {
			literal++
		}
	}
	if literal < 2 {
		return &OriginError{Pattern: p, Err: errWideOrigin}
	}
	return nil
}

// GatewayURLError is an Options.GatewayURL that Check refuses, and why.
// URL is redacted as in logs: it holds no credentials.
type GatewayURLError struct {
	URL string
	Err error
}

func (e *GatewayURLError) Error() string { return fmt.Sprintf("gateway URL %q: %v", e.URL, e.Err) }

func (e *GatewayURLError) Unwrap() error { return e.Err }

func checkGatewayURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "ws" && u.Scheme != "wss") || u.Host == "" {
		return &GatewayURLError{URL: redactURL(raw), Err: errors.New("want a ws:// or wss:// URL, e.g. ws://127.0.0.1:8650/whatsapp/sidecar")}
	}
	return nil
}

// redactURL keeps secrets a gateway URL may carry (user info, query) out
// of logs and errors.
func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparsable URL)"
	}
	u.User = nil
	if u.RawQuery != "" {
		u.RawQuery = "…"
	}
	return u.String()
}

// Addr is the address the server listens on, as NewClient takes it.
func (s *Server) Addr() string { return AddrOf(s.ln) }

// Close releases the address and the monitor's events of a server that
// will not run, as when setup fails after New. Once Run has been called,
// end it through its context instead.
func (s *Server) Close() error {
	if s.started.Load() {
		return errors.New("feed: Close after Run; cancel Run's context instead")
	}
	s.follow.Close()
	return s.ln.Close()
}

// Clients is the number of websocket clients connected now, push mode's
// connection not included.
func (s *Server) Clients() int { return s.admit.count() }

// now reads the server's clock, which is monotonic.
func (s *Server) now() time.Duration { return time.Since(s.epoch) }

// Handle serves h for pattern (http.ServeMux syntax) on the server's
// listener, behind the same access rule as /v1/status: open to this
// machine, the token needed from others. It is safe to call at any time,
// though a request that comes before it gets a 404.
func (s *Server) Handle(pattern string, h http.Handler) {
	s.mux.Handle(pattern, s.guard(h))
}

// Run answers requests, and in push mode dials the gateway, until the
// monitor has finished and every client has been sent its last event, or
// until ctx is cancelled. It closes the listener and releases the
// monitor's events before it returns.
func (s *Server) Run(ctx context.Context) error {
	if !s.started.CompareAndSwap(false, true) {
		return errors.New("feed: Run called twice")
	}
	defer s.follow.Close()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	hard, cut := context.WithCancel(context.Background())
	defer cut()
	s.ctx = hard
	if !s.loopback {
		s.log.Warn("the status server listens beyond this machine; status and events need the token from other hosts, probes are open to all",
			"listen", s.Addr())
	}

	reaper := newIdleReaper(s.opts.MaxConns)
	hs := &http.Server{
		Handler:           s.checkHost(s.mux),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       s.opts.IdleTimeout,
		ConnState:         reaper.track,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	// Each connection takes a file descriptor: past MaxConns the next one
	// waits in the kernel's backlog, so that clients cannot take the
	// descriptors the sidecar needs to spawn the bridge. The idle reaper
	// keeps idle keep-alive connections from making it wait long.
	ln := reaper.listener(s.ln)
	served := make(chan error, 1)
	go func() { served <- hs.Serve(ln) }()
	s.log.Info("status server listening", "listen", s.Addr())
	if s.opts.GatewayURL != "" {
		s.conns.Add(1)
		go func() {
			defer s.conns.Done()
			s.push(ctx)
		}()
	}

	hubDone := make(chan struct{})
	go func() {
		defer close(hubDone)
		s.hub.run(ctx, s.follow, s.opts.FlushTimeout)
	}()
	var serveErr error
	select {
	case <-hubDone:
	case serveErr = <-served:
		s.log.Error("status server stopped accepting; events still go to connected clients", "error", serveErr)
		<-hubDone
	}

	s.mu.Lock()
	s.closing = true
	s.mu.Unlock()
	// Every client has been written the last event, or has it waiting for
	// its socket; each session says goodbye, and is cut off if sending
	// what is left takes longer than FlushTimeout.
	flushed := time.AfterFunc(s.opts.FlushTimeout, cut)
	defer flushed.Stop()
	shutdown, stop := context.WithTimeout(context.Background(), 5*time.Second)
	defer stop()
	if err := hs.Shutdown(shutdown); err != nil {
		hs.Close()
	}
	s.conns.Wait()
	if serveErr == nil {
		if err := <-served; !errors.Is(err, http.ErrServerClosed) {
			serveErr = err
		}
	}
	return serveErr
}

// enter registers a session unless the server is closing; Run waits for
// every registered one.
func (s *Server) enter() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		return false
	}
	s.conns.Add(1)
	return true
}

// checkHost refuses requests from this machine that name another host: a
// web page that rebinds its own DNS name to 127.0.0.1 would otherwise pass
// as same-origin and get the read access this machine has. Requests from
// other hosts need the token whatever their Host, and a Unix socket is out
// of a browser's reach. A name the operator gave in --listen is allowed.
func (s *Server) checkHost(h http.Handler) http.Handler {
	if _, ok := s.ln.Addr().(*net.TCPAddr); !ok {
		return h
	}
	configured, _, _ := net.SplitHostPort(s.opts.Listen)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// The probes are open to every host anyway, and the probes of
		// container runtimes and load balancers often speak HTTP/1.0
		// without a Host.
		if !fromThisMachine(r) || isProbe(r.URL.Path) {
			h.ServeHTTP(w, r)
			return
		}
		host := r.Host
		if hh, _, err := net.SplitHostPort(host); err == nil {
			host = hh
		}
		host = strings.Trim(host, "[]")
		ip := net.ParseIP(host)
		if !strings.EqualFold(host, "localhost") && (ip == nil || !ip.IsLoopback()) &&
			(configured == "" || !strings.EqualFold(host, configured)) {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "this server answers only to localhost, 127.0.0.1, ::1 or the host of the address it listens on as Host"})
			return
		}
		h.ServeHTTP(w, r)
	})
}

// isProbe reports whether path is one of the probes, which need no token
// and answer whatever the Host.
func isProbe(path string) bool { return path == "/healthz" || path == "/readyz" }

// auth reports whether the request carries a token, and whether it is the
// right one. The comparison takes the same time whatever the token.
func (s *Server) auth(r *http.Request) (present, valid bool) {
	h := r.Header.Get("Authorization")
	if h == "" {
		return false, false
	}
	scheme, tok, _ := strings.Cut(h, " ")
	if !strings.EqualFold(scheme, "Bearer") {
		return true, false
	}
	sum := sha256.Sum256([]byte(strings.TrimSpace(tok)))
	return true, s.hasToken && subtle.ConstantTimeCompare(sum[:], s.token[:]) == 1
}

// fromThisMachine reports whether the request came over the Unix socket
// or from a loopback address.
func fromThisMachine(r *http.Request) bool {
	if _, ok := r.Context().Value(http.LocalAddrContextKey).(*net.UnixAddr); ok {
		return true
	}
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return false
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

type ctxKey struct{}

// guard applies the read-access rule and records whether the request holds
// the token, for the websocket to allow control ops.
func (s *Server) guard(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		present, valid := s.auth(r)
		switch {
		case present && !valid:
			writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "the token does not match; use the one in the sidecar's state directory (file 'token') or its WA_SIDECAR_TOKEN"})
			return
		case !valid && !fromThisMachine(r):
			writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "access from another host needs the token: send 'Authorization: Bearer <token>'"})
			return
		}
		h.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), ctxKey{}, valid)))
	})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	b, _ := json.Marshal(v)
	w.Write(append(b, '\n'))
}

func (s *Server) healthz(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{"ok": true, "pid": os.Getpid()})
}

// readiness is the /readyz body.
type readiness struct {
	Ready  bool          `json:"ready"`
	State  procmon.State `json:"state"`
	Pid    int           `json:"pid,omitempty"`
	Reason string        `json:"reason,omitempty"`
}

func (s *Server) readyz(w http.ResponseWriter, _ *http.Request) {
	st := s.opts.Monitor.Status()
	rd := readiness{State: st.State, Pid: st.Pid}
	if st.State == procmon.StateRunning && st.Ready {
		rd.Ready = true
		writeJSON(w, http.StatusOK, rd)
		return
	}
	rd.Reason = s.opts.Summary.Line(st, time.Now())
	writeJSON(w, http.StatusServiceUnavailable, rd)
}

func (s *Server) status(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, s.opts.Monitor.Status())
}

func (s *Server) events(w http.ResponseWriter, r *http.Request) {
	trusted, _ := r.Context().Value(ctxKey{}).(bool)
	c := newClient(s.opts.QueueLen, trusted, s.now())
	if err := s.admit.admit(c, s.now()); err != nil {
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": err.Error()})
		return
	}
	defer s.admit.release(c)
	if !s.enter() {
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": "the sidecar is exiting"})
		return
	}
	defer s.conns.Done()
	cw := &outWriter{ResponseWriter: w, timeout: s.opts.WriteTimeout}
	ws, err := websocket.Accept(cw, r, &websocket.AcceptOptions{
		OriginPatterns: s.opts.AllowOrigins,
		// A pong waits, as a result does (see readOps), until flush has
		// taken the bytes written before it; one that cannot wait that
		// long is not sent.
		OnPingReceived: func(ctx context.Context, _ []byte) bool {
			return cw.conn == nil || cw.conn.wait(ctx) == nil
		},
	})
	if err != nil {
		s.log.Info("refused a websocket", "remote", r.RemoteAddr, "origin", r.Header.Get("Origin"), "error", err)
		return
	}
	s.session(ws, cw.conn, c, r.RemoteAddr)
}

// session runs one websocket until it ends, and reports whether it ended
// because the event stream did (the monitor finished or Run was
// cancelled) rather than because of the peer. out is the connection under
// ws if the server accepted it, nil in push mode.
func (s *Server) session(ws *websocket.Conn, out *outConn, c *client, peer string) (finished bool) {
	ctx, cancel := context.WithCancel(s.ctx)
	var wg sync.WaitGroup
	trusted := c.trusted
	// abort cuts the connection at once, dropping what waits for its
	// socket: for a peer that is gone or stopped answering pings. Writes
	// through out never wait; what it keeps for the socket is sent under
	// its deadline, not a context (see write), and once the websocket is
	// closed (a goodbye, or the answer to the peer's close frame, among
	// it) for at most the write timeout more, or until the server is cut
	// off as it stops (FlushTimeout).
	abort := func() {}
	stop := func() bool { return false }
	if out != nil {
		abort = out.abort
		stop = context.AfterFunc(s.ctx, out.abort)
	}
	defer func() {
		cancel()
		ws.CloseNow()
		wg.Wait()
		s.hub.leave(c)
		if out != nil {
			// Nothing writes to it any more: the reader and keepalive
			// are done and the hub has let go.
			out.flushes.Wait()
		}
		stop()
	}()
	ws.SetReadLimit(s.opts.MaxMessageBytes)
	log := s.log.With("peer", peer)

	last, qr, open := s.hub.join(c)
	hl := hello{
		Type: TypeHello, Protocol: Protocol,
		Sidecar: Sidecar{Version: s.opts.Version, Pid: os.Getpid()},
		Seq:     last.seq, Control: trusted, Status: last.status,
	}
	if trusted && qr != nil && len(qr.private)+len(last.status) < maxFrame-4096 {
		hl.QR = qr.private
	}
	h, _ := json.Marshal(hl)
	if err := s.write(ctx, ws, out, h); err != nil {
		log.Debug("client gone before hello", "error", err)
		return false
	}
	if !open {
		ws.Close(websocket.StatusGoingAway, "the sidecar is exiting")
		return true
	}
	log.Debug("client connected", "control", trusted)
	if out != nil {
		// From here on the hub writes this client's events itself; the
		// queue only tells of the stream's end.
		if err := s.hub.direct(c, ws, out); err != nil {
			log.Debug("client gone", "error", err)
			return false
		}
	}

	wg.Add(1)
	go func() {
		defer wg.Done()
		defer cancel()
		err := s.readOps(ctx, ws, out, c, log)
		if ctx.Err() == nil && websocket.CloseStatus(err) == -1 && !errors.Is(err, net.ErrClosed) && !errors.Is(err, websocket.ErrMessageTooBig) {
			// Not a close frame, nor the session ending, nor this side
			// closing the websocket (a goodbye or a drop whose close
			// handshake gave up, or a 1009 for a message over the
			// limit: what waits still goes out, for at most the write
			// timeout): the peer is gone, or broke the protocol.
			abort()
		}
	}()

	wg.Add(1)
	go func() {
		defer wg.Done()
		s.keepalive(ctx, cancel, abort, ws, log)
	}()

	for {
		select {
		case f, ok := <-c.q:
			if !ok {
				ws.Close(websocket.StatusGoingAway, "the sidecar is exiting")
				return true
			}
			c.took(f)
			if err := s.write(ctx, ws, out, c.msg(f)); err != nil {
				log.Debug("client gone", "error", err)
				return false
			}
		case <-c.kick:
			log.Info("dropping a websocket client", "code", int(c.code), "why", c.why)
			ws.Close(c.code, c.why)
			return false
		case <-ctx.Done():
			return s.ctx.Err() != nil
		}
	}
}

// keepalive pings the peer every PingInterval, and ends the session and
// cuts the connection if a ping is not answered within PingTimeout. It
// runs apart from the session's loop, so that no event's write waits on a
// timer.
func (s *Server) keepalive(ctx context.Context, cancel context.CancelFunc, abort func(), ws *websocket.Conn, log *slog.Logger) {
	t := time.NewTicker(s.opts.PingInterval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
		case <-ctx.Done():
			return
		}
		pctx, stop := context.WithTimeout(ctx, s.opts.PingTimeout)
		err := ws.Ping(pctx)
		stop()
		if err != nil {
			if ctx.Err() == nil && !errors.Is(err, net.ErrClosed) {
				log.Info("dropping a websocket client that stopped answering pings", "error", err)
				abort()
			}
			cancel()
			return
		}
	}
}

// write sends msg as one text message. Through an outConn the write needs
// no context of its own: it never waits for the peer, and what the socket
// does not take at once is sent under the connection's deadline. That
// saves a timer for every event sent to every client.
func (s *Server) write(ctx context.Context, ws *websocket.Conn, out *outConn, msg []byte) error {
	if out != nil {
		return ws.Write(context.Background(), websocket.MessageText, msg)
	}
	ctx, cancel := context.WithTimeout(ctx, s.opts.WriteTimeout)
	defer cancel()
	return ws.Write(ctx, websocket.MessageText, msg)
}

// readOps answers the client's ops until the connection ends, and says
// why it ended.
func (s *Server) readOps(ctx context.Context, ws *websocket.Conn, out *outConn, c *client, log *slog.Logger) error {
	lim := rate.NewLimiter(rate.Limit(s.opts.OpsPerSecond), int(2*s.opts.OpsPerSecond))
	for {
		typ, b, err := ws.Read(ctx)
		if err != nil {
			if websocket.CloseStatus(err) == websocket.StatusMessageTooBig || errors.Is(err, websocket.ErrMessageTooBig) {
				log.Info("closed a websocket that sent a message over the limit", "limit", s.opts.MaxMessageBytes)
			}
			return err
		}
		c.hear(s.now())
		res := s.do(ctx, typ, b, c.trusted, lim, log)
		msg, _ := json.Marshal(res)
		if err := s.write(ctx, ws, out, msg); err != nil {
			return err
		}
		// The result goes out without waiting; before reading on, wait
		// until flush has taken it, so that a peer that sends ops and
		// reads nothing is held back by its own socket.
		if out != nil {
			if err := out.wait(ctx); err != nil {
				return err
			}
		}
	}
}

// do carries out one op.
func (s *Server) do(ctx context.Context, typ websocket.MessageType, b []byte, trusted bool, lim *rate.Limiter, log *slog.Logger) Result {
	res := Result{Type: TypeResult}
	if typ != websocket.MessageText {
		res.Error = "send ops as text messages holding JSON"
		return res
	}
	op, err := DecodeOp(b)
	res.ID = op.ID
	if err != nil {
		res.Error = err.Error()
		return res
	}
	if !lim.Allow() {
		res.Error = fmt.Sprintf("too many messages; at most %g per second on one connection", s.opts.OpsPerSecond)
		return res
	}
	m := s.opts.Monitor
	switch op.Op {
	case OpPing:
		res.OK = true
		return res
	case OpStatus:
		st := m.Status()
		res.OK, res.Status = true, &st
		return res
	}
	if !trusted {
		res.Error = op.Op + " needs the control token: connect with 'Authorization: Bearer <token>' (the sidecar keeps it in the file 'token' in its state directory, unless it was given one)"
		return res
	}
	if !s.control.Allow() {
		res.Error = fmt.Sprintf("too many control ops (at most %g per second, all clients together); try again in a moment", s.opts.ControlPerSecond)
		return res
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	switch op.Op {
	case OpRestart:
		err = m.Restart(cctx)
	case OpStop:
		err = m.Stop(cctx)
	case OpStart:
		err = m.Start(cctx)
	}
	log.Info("control op", "op", op.Op, "ok", err == nil)
	if err != nil {
		res.Error = refusal(err)
		return res
	}
	st := m.Status()
	res.OK, res.Status = true, &st
	return res
}

// refusal words a control op the monitor refused for a client, to whom
// the monitor's child is the bridge and the monitor is the sidecar.
func refusal(err error) string {
	var se *procmon.StateError
	switch {
	case errors.As(err, &se) && se.Op == "start":
		return fmt.Sprintf("the bridge is already running (pid %d)", se.Pid)
	case errors.As(err, &se):
		return fmt.Sprintf("the bridge is not running (state %s)", se.State)
	case errors.Is(err, procmon.ErrShuttingDown):
		return "the sidecar is shutting down"
	}
	return err.Error()
}
