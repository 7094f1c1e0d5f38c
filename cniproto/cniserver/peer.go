package cniserver

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/coil-net/coil/cniproto"
)

// Who may call. The socket is created mode 0600 (root only), but a file mode is not the
// only way in: root in a user namespace (a container given the socket by a bind mount)
// is another uid on the node, and a mode can be changed by mistake. So the server also
// asks the kernel who is on the other end of every connection (SO_PEERCRED, the
// credentials of the process that connected, in coild's user namespace) and serves only
// uid 0, coild's own uid, and the uids given in Options.AllowUIDs (coild --allowed-uids).
// Anyone else gets a refusal (HTTP 403, CNI code 5) naming their uid and pid, and is
// logged with both.

// peer is what the kernel says about a connection's other end.
type peer struct {
	pid      int32
	uid, gid uint32
	err      error // SO_PEERCRED failed: refused (fail closed)
}

func (p peer) String() string {
	if p.err != nil {
		return "unknown caller (" + p.err.Error() + ")"
	}
	return fmt.Sprintf("uid %d gid %d pid %d", p.uid, p.gid, p.pid)
}

// peerOf reads the credentials of c's other end. Only UNIX connections have them.
func peerOf(c net.Conn) peer {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return peer{err: fmt.Errorf("not a UNIX connection (%T)", c)}
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return peer{err: err}
	}
	var cred *syscall.Ucred
	var cerr error
	if err := raw.Control(func(fd uintptr) {
		cred, cerr = syscall.GetsockoptUcred(int(fd), syscall.SOL_SOCKET, syscall.SO_PEERCRED)
	}); err != nil {
		return peer{err: err}
	}
	if cerr != nil {
		return peer{err: fmt.Errorf("SO_PEERCRED: %w", cerr)}
	}
	return peer{pid: cred.Pid, uid: cred.Uid, gid: cred.Gid}
}

// allowed is the set of uids the server serves: 0, its own, and the configured ones.
type allowed []uint32

func newAllowed(extra []uint32) allowed {
	a := allowed{0, uint32(os.Geteuid())}
	for _, u := range extra {
		if !slices.Contains(a, u) {
			a = append(a, u)
		}
	}
	return a
}

func (a allowed) has(uid uint32) bool { return slices.Contains(a, uid) }

// permissionDenied is the refusal a caller whose uid coild does not serve gets.
func permissionDenied(p peer) *cniproto.Error {
	return cniproto.NewError(cniproto.CodePermissionDenied,
		fmt.Sprintf("coild refuses this caller: %s is not allowed: coild serves uid 0 and the uids of --allowed-uids only", p),
		"the CNI plugin must run as root, as container runtimes run it")
}

// guard refuses, before anything else, a request whose connection's peer is not
// allowed. A request that did not come through the server's listener (no tracked
// connection) is refused too.
func (s *Server) guard(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, _ := r.Context().Value(connKey{}).(*trackedConn)
		p := peer{err: fmt.Errorf("no connection")}
		if c != nil {
			p = c.peer
		}
		if p.err == nil && s.allow.has(p.uid) {
			next.ServeHTTP(w, r)
			return
		}
		inCall(r)
		s.refusedPeers.Add(1)
		if ok, suppressed := s.peerLog.allow(time.Now()); ok {
			attrs := []any{"path", r.URL.Path, "uid", int64(p.uid), "gid", int64(p.gid), "pid", p.pid, "allowed", []uint32(s.allow)}
			if p.err != nil {
				attrs = append(attrs, "err", p.err.Error())
			}
			if suppressed > 0 {
				attrs = append(attrs, "suppressed", suppressed)
			}
			s.log.Warn("cniserver: caller refused: uid not allowed", attrs...)
		}
		// Read (and drop) a body of plugin size so the client gets the reply rather than
		// a reset; never more, and the connection is closed after the reply.
		if r.ContentLength >= 0 && r.ContentLength <= cniproto.MaxRequestBody {
			_, _ = io.Copy(io.Discard, io.LimitReader(r.Body, cniproto.MaxRequestBody))
		}
		w.Header().Set("Connection", "close")
		writeJSON(w, http.StatusForbidden, permissionDenied(p))
	})
}

// logLimiter lets a burst of 10 log lines through, then one a second: a caller that
// is refused in a loop cannot flood coild's log. The lines it drops are counted in
// the next one.
type logLimiter struct {
	mu         sync.Mutex
	tokens     float64
	last       time.Time
	suppressed int64
}

const (
	logBurst = 10
	logRate  = 1.0 // lines per second after the burst
)

func (l *logLimiter) allow(now time.Time) (bool, int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.last.IsZero() {
		l.tokens = logBurst
	} else {
		l.tokens = min(logBurst, l.tokens+now.Sub(l.last).Seconds()*logRate)
	}
	l.last = now
	if l.tokens < 1 {
		l.suppressed++
		return false, 0
	}
	l.tokens--
	n := l.suppressed
	l.suppressed = 0
	return true, n
}
