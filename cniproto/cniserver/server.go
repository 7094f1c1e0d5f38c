package cniserver

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/errors"

	"github.com/coil-net/coil/cniproto"
)

// Sentinel errors of New; test with errors.Is.
var (
	// ErrSocketInUse: New found a live server on the socket path.
	ErrSocketInUse = errors.New("cniserver: socket in use by a live server")
	// ErrNotSocket: New found a file that is not a socket on the socket path.
	ErrNotSocket = errors.New("cniserver: path exists and is not a socket")
)

// drainMax is the largest refused body read (and dropped) before the reply; see decode.
const drainMax = 1 << 20

// shutdownGrace is how long Serve waits for in-flight calls after its context ends.
const shutdownGrace = 10 * time.Second

// Server serves a cniproto.Handler on a UNIX socket.
type Server struct {
	h      cniproto.Handler
	path   string
	log    *slog.Logger
	ln     *net.UnixListener
	lim    *limitListener // ln with the connection limit; what Serve serves
	info   os.FileInfo    // the socket file we created, to remove only our own
	srv    *http.Server
	closed sync.Once
	// stop cancels the context of every call; Close and a shutdown past its grace
	// period call it, so handlers stop working for a client that is gone.
	stop context.CancelFunc
	// mux routes the checked calls; srv serves it behind guard (peer credentials).
	mux          *http.ServeMux
	allow        allowed
	refusedPeers atomic.Int64
	peerLog      logLimiter
}

// Options configure a Server beyond its handler and socket. The zero value is the
// defaults.
type Options struct {
	// Limits bound what connections can hold (zero fields: the defaults).
	Limits Limits
	// AllowUIDs are served besides uid 0 and the server's own effective uid; a caller
	// with any other uid (SO_PEERCRED) is refused with code 5 (coild --allowed-uids).
	AllowUIDs []uint32
}

// New is NewWithOptions with the default Options.
func New(h cniproto.Handler, socketPath string, logger *slog.Logger) (*Server, error) {
	return NewWithOptions(h, socketPath, logger, Options{})
}

// NewWithLimits is NewWithOptions with only Limits set.
func NewWithLimits(h cniproto.Handler, socketPath string, logger *slog.Logger, limits Limits) (*Server, error) {
	return NewWithOptions(h, socketPath, logger, Options{Limits: limits})
}

// NewWithOptions creates the socket at socketPath with mode 0600 (owner only; coild runs
// as root, and so does the plugin) and returns a server that is not yet serving, bounded
// by opt.Limits.
//
// Every connection's peer is checked first (SO_PEERCRED): only uid 0, the server's own
// effective uid and opt.AllowUIDs are served; a request from any other uid gets HTTP 403
// with a cniproto.Error of code CodePermissionDenied naming the uid and pid, and is
// logged (at most 10 lines at once, then one a second).
//
// Every request is checked before the handler sees it: its body is at most
// cniproto.MaxBodyFor(path) bytes (a larger Content-Length is refused before the body is
// read), it is one JSON value and nothing else, and its fields pass Request.Validate or
// GCRequest.Validate. A refused request gets a cniproto.Error with the code chosen there
// (HTTP 400, or 413 for a body too large) and never reaches the handler.
//
// A stale socket file (nothing listening) is removed first. If a server answers on
// the path it returns ErrSocketInUse; if the path is a file that is not a socket, it
// returns ErrNotSocket and leaves the file alone. The parent directory must exist.
//
// The socket is bound under a temporary name in the same directory (".NAME.tmpPID", a
// few bytes longer than socketPath, which must stay under 108 bytes), chmod'ed, then
// renamed into place: it never appears under its final name with a wider mode, and no
// process-wide umask is changed.
func NewWithOptions(h cniproto.Handler, socketPath string, logger *slog.Logger, opt Options) (*Server, error) {
	if h == nil {
		return nil, errors.New("cniserver: nil handler")
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if err := removeStale(socketPath); err != nil {
		return nil, err
	}
	tmp := filepath.Join(filepath.Dir(socketPath),
		"."+filepath.Base(socketPath)+".tmp"+strconv.Itoa(os.Getpid()))
	_ = os.Remove(tmp) // a leftover of a crashed New of the same pid namespace
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: tmp, Net: "unix"})
	if err != nil {
		return nil, errors.Wrapf(err, "cniserver: listen on %s", tmp)
	}
	ln.SetUnlinkOnClose(false)
	fail := func(err error) (*Server, error) {
		_ = ln.Close()
		_ = os.Remove(tmp)
		return nil, err
	}
	if err = os.Chmod(tmp, 0o600); err != nil {
		return fail(errors.Wrapf(err, "cniserver: chmod 0600 %s", tmp))
	}
	if err = os.Rename(tmp, socketPath); err != nil {
		return fail(errors.Wrapf(err, "cniserver: rename socket into %s", socketPath))
	}
	info, err := os.Lstat(socketPath)
	if err != nil {
		return fail(errors.Wrapf(err, "cniserver: stat %s", socketPath))
	}
	limits := opt.Limits.withDefaults()
	base, stop := context.WithCancel(context.Background())
	s := &Server{h: h, path: socketPath, log: logger, ln: ln, info: info, stop: stop,
		lim: newLimitListener(ln, limits.MaxConns, logger), allow: newAllowed(opt.AllowUIDs)}
	mux := http.NewServeMux()
	s.mux = mux
	mux.HandleFunc("POST "+cniproto.PathAdd, s.serveAdd)
	mux.HandleFunc("POST "+cniproto.PathDel, s.serveReq("del", h.Del))
	mux.HandleFunc("POST "+cniproto.PathCheck, s.serveReq("check", h.Check))
	mux.HandleFunc("POST "+cniproto.PathGC, s.serveGC)
	mux.HandleFunc("POST "+cniproto.PathStatus, s.serveStatus)
	s.srv = &http.Server{
		Handler:           s.guard(mux),
		ReadHeaderTimeout: limits.ReadHeaderTimeout,
		ReadTimeout:       limits.ReadTimeout,
		IdleTimeout:       limits.IdleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		BaseContext:       func(net.Listener) context.Context { return base },
		ConnContext:       connContext,
		ConnState:         connState,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
	return s, nil
}

// removeStale removes a socket file nobody listens on.
func removeStale(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return errors.Wrapf(err, "cniserver: stat %s", path)
	}
	if fi.Mode()&os.ModeSocket == 0 {
		return errors.Wrapf(ErrNotSocket, "%s (mode %s)", path, fi.Mode())
	}
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		_ = c.Close()
		return errors.Wrapf(ErrSocketInUse, "%s", path)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return errors.Wrapf(err, "cniserver: remove stale socket %s", path)
	}
	return nil
}

// Path returns the socket path.
func (s *Server) Path() string { return s.path }

// Serve serves calls until ctx ends or Close is called, then returns nil. When ctx
// ends, calls in flight get up to 10 s to finish; after that their contexts are
// cancelled and their connections closed. Serve removes the socket on return. Call it
// once.
func (s *Server) Serve(ctx context.Context) error {
	shutdownDone := make(chan struct{})
	stopAfter := context.AfterFunc(ctx, func() {
		defer close(shutdownDone)
		sctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
		defer cancel()
		if err := s.srv.Shutdown(sctx); err != nil {
			s.log.Warn("cniserver: shutdown did not finish in time; closing", "err", err.Error())
		}
		s.Close()
	})
	err := s.srv.Serve(s.lim)
	if !stopAfter() {
		// ctx ended: Serve returned as soon as Shutdown closed the listener; wait for
		// the calls in flight (bounded by the grace period).
		<-shutdownDone
	}
	if errors.Is(err, http.ErrServerClosed) {
		s.removeSocket()
		return nil
	}
	s.Close()
	return errors.Wrap(err, "cniserver: serve")
}

// Close stops serving at once: connections are closed and the contexts of calls in
// flight are cancelled. It removes the socket file if it is still the one NewServer
// created. Safe to call more than once and without Serve.
func (s *Server) Close() {
	s.closed.Do(func() {
		_ = s.srv.Close()
		_ = s.lim.Close() // not yet served: srv.Close does not know the listener
		s.stop()          // after the connections are closed, so a cancelled call cannot still answer
		s.removeSocket()
	})
}

func (s *Server) removeSocket() {
	if fi, err := os.Lstat(s.path); err == nil && os.SameFile(fi, s.info) {
		_ = os.Remove(s.path)
	}
}

func (s *Server) serveAdd(w http.ResponseWriter, r *http.Request) {
	var req cniproto.Request
	if !s.decode(w, r, &req, func() *cniproto.Error { return req.Validate("add") }) {
		return
	}
	res, err := s.h.Add(r.Context(), &req)
	if err == nil && res == nil {
		err = errors.New("cniserver: handler returned no result and no error")
	}
	if err != nil {
		s.fail(w, "add", &req, err)
		return
	}
	s.log.Debug("cniserver: add", "container", req.ContainerID, "ifname", req.IfName, "addrs", res.Addrs)
	writeJSON(w, http.StatusOK, res)
}

func (s *Server) serveReq(op string, call func(context.Context, *cniproto.Request) error) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var req cniproto.Request
		if !s.decode(w, r, &req, func() *cniproto.Error { return req.Validate(op) }) {
			return
		}
		if err := call(r.Context(), &req); err != nil {
			s.fail(w, op, &req, err)
			return
		}
		s.log.Debug("cniserver: "+op, "container", req.ContainerID, "ifname", req.IfName)
		writeJSON(w, http.StatusOK, struct{}{})
	}
}

func (s *Server) serveGC(w http.ResponseWriter, r *http.Request) {
	var req cniproto.GCRequest
	if !s.decode(w, r, &req, req.Validate) {
		return
	}
	if err := s.h.GC(r.Context(), &req); err != nil {
		s.fail(w, "gc", nil, err)
		return
	}
	s.log.Debug("cniserver: gc", "valid", len(req.ValidAttachments))
	writeJSON(w, http.StatusOK, struct{}{})
}

func (s *Server) serveStatus(w http.ResponseWriter, r *http.Request) {
	inCall(r)
	if err := s.h.Status(r.Context()); err != nil {
		s.fail(w, "status", nil, err)
		return
	}
	writeJSON(w, http.StatusOK, struct{}{})
}

// decode reads the request body into v and checks it with validate; on failure it
// answers with a cniproto.Error and returns false. Either way the connection is then in
// a call (inCall) until its reply is sent. The body must be one JSON value of at
// most cniproto.MaxBodyFor(path) bytes; unknown fields are ignored (a newer plugin may
// send optional fields within v1).
func (s *Server) decode(w http.ResponseWriter, r *http.Request, v any, validate func() *cniproto.Error) bool {
	limit := cniproto.MaxBodyFor(r.URL.Path)
	tooLarge := func(msg string) bool {
		s.refuse(w, r, http.StatusRequestEntityTooLarge, cniproto.NewError(cniproto.CodeDecodingFailure, msg, ""))
		return false
	}
	if r.ContentLength > limit {
		// Refused before decoding. A body of up to drainMax bytes is read and dropped
		// first (within the read timeout), so that a client that writes its whole
		// request before reading the reply gets this error rather than a broken pipe;
		// a larger one is not read at all: the connection is closed after the reply.
		if r.ContentLength <= drainMax {
			_, _ = io.Copy(io.Discard, r.Body)
		}
		w.Header().Set("Connection", "close")
		return tooLarge(fmt.Sprintf("coild refuses a request body of %d bytes on %s: at most %d bytes", r.ContentLength, r.URL.Path, limit))
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, limit))
	err := dec.Decode(v)
	if err == nil {
		// Nothing but white space may follow the value.
		if _, terr := dec.Token(); !errors.Is(terr, io.EOF) {
			err = errors.New("data after the JSON value")
			if terr != nil {
				err = terr
			}
		}
	}
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return tooLarge(fmt.Sprintf("coild refuses a request body of more than %d bytes on %s", limit, r.URL.Path))
		}
		s.refuse(w, r, http.StatusBadRequest, cniproto.NewError(cniproto.CodeDecodingFailure, "coild could not decode the request", err.Error()))
		return false
	}
	if e := validate(); e != nil {
		s.refuse(w, r, http.StatusBadRequest, e)
		return false
	}
	inCall(r)
	return true
}

// refuse answers a request that never reached the handler.
func (s *Server) refuse(w http.ResponseWriter, r *http.Request, status int, e *cniproto.Error) {
	inCall(r)
	s.log.Warn("cniserver: request refused", "path", r.URL.Path, "code", e.Code, "err", e.Error())
	writeJSON(w, status, e)
}

// fail reports a handler error to the client. This is the boundary where the error
// leaves coild, so it is logged here (once) and not returned further.
func (s *Server) fail(w http.ResponseWriter, op string, req *cniproto.Request, err error) {
	var e *cniproto.Error
	if !errors.As(err, &e) {
		e = cniproto.NewError(cniproto.CodeInternal, "coild: "+op+" failed", err.Error())
	}
	attrs := []any{"op", op, "code", e.Code, "err", err.Error()}
	if req != nil {
		attrs = append(attrs, "container", req.ContainerID, "ifname", req.IfName)
	}
	s.log.Warn("cniserver: call failed", attrs...)
	writeJSON(w, http.StatusInternalServerError, e)
}

// writeJSON writes v with an explicit Content-Length, so a reply is never chunked
// (the client reads chunks too, but a length is simpler and cheaper for both sides).
func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		// Our reply types always encode; report the impossible as a protocol-level 500.
		status = http.StatusInternalServerError
		b, _ = json.Marshal(cniproto.NewError(cniproto.CodeInternal, "coild could not encode its reply", err.Error()))
	}
	b = append(b, '\n')
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(status)
	_, _ = w.Write(b)
}
