package cniserver

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
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

// shutdownGrace is how long Serve waits for in-flight calls after its context ends.
const shutdownGrace = 10 * time.Second

// Server serves a cniproto.Handler on a UNIX socket.
type Server struct {
	h      cniproto.Handler
	path   string
	log    *slog.Logger
	ln     *net.UnixListener
	info   os.FileInfo // the socket file we created, to remove only our own
	srv    *http.Server
	closed sync.Once
	// stop cancels the context of every call; Close and a shutdown past its grace
	// period call it, so handlers stop working for a client that is gone.
	stop context.CancelFunc
}

// New creates the socket at socketPath with mode 0600 (owner only; coild runs as
// root, and so does the plugin) and returns a server that is not yet serving.
//
// A stale socket file (nothing listening) is removed first. If a server answers on
// the path it returns ErrSocketInUse; if the path is a file that is not a socket, it
// returns ErrNotSocket and leaves the file alone. The parent directory must exist.
//
// The socket is bound under a temporary name in the same directory (".NAME.tmpPID", a
// few bytes longer than socketPath, which must stay under 108 bytes), chmod'ed, then
// renamed into place: it never appears under its final name with a wider mode, and no
// process-wide umask is changed.
func New(h cniproto.Handler, socketPath string, logger *slog.Logger) (*Server, error) {
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
	base, stop := context.WithCancel(context.Background())
	s := &Server{h: h, path: socketPath, log: logger, ln: ln, info: info, stop: stop}
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+cniproto.PathAdd, s.serveAdd)
	mux.HandleFunc("POST "+cniproto.PathDel, s.serveReq("del", h.Del))
	mux.HandleFunc("POST "+cniproto.PathCheck, s.serveReq("check", h.Check))
	mux.HandleFunc("POST "+cniproto.PathGC, s.serveGC)
	mux.HandleFunc("POST "+cniproto.PathStatus, s.serveStatus)
	s.srv = &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		BaseContext:       func(net.Listener) context.Context { return base },
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
	err := s.srv.Serve(s.ln)
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
		_ = s.ln.Close() // not yet served: srv.Close does not know the listener
		s.stop()         // after the connections are closed, so a cancelled call cannot still answer
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
	if !s.decode(w, r, &req) {
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
		if !s.decode(w, r, &req) {
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
	if !s.decode(w, r, &req) {
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
	if err := s.h.Status(r.Context()); err != nil {
		s.fail(w, "status", nil, err)
		return
	}
	writeJSON(w, http.StatusOK, struct{}{})
}

func (s *Server) decode(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, cniproto.MaxBody))
	// Unknown fields are ignored: a newer plugin may send optional fields within v1.
	if err := dec.Decode(v); err != nil {
		e := cniproto.NewError(cniproto.CodeDecodingFailure, "coild could not decode the request", err.Error())
		s.log.Warn("cniserver: bad request", "path", r.URL.Path, "err", err.Error())
		writeJSON(w, http.StatusBadRequest, e)
		return false
	}
	_, _ = io.Copy(io.Discard, r.Body)
	return true
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
