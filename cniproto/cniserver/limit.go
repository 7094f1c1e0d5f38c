package cniserver

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Limits bound what connections can hold of the server, so that a client that opens
// connections and sends nothing, or headers and half a body, can neither starve other
// calls nor use up coild's file descriptors. The zero value means the defaults.
type Limits struct {
	// MaxConns is the most connections open at once (default: DefaultMaxConns, but at
	// most a quarter of the process's open-file limit, and at least 16). When a new
	// connection arrives at the limit, the oldest connection that has not finished
	// sending its request is closed to make room; when every connection is in a call
	// (its request read, the handler running), the new one waits until one ends.
	MaxConns int
	// ReadHeaderTimeout bounds reading a request's headers (default 5 s); ReadTimeout
	// bounds reading the whole request, headers and body (default 10 s). A connection
	// past either is closed. The plugin writes its request in one write, so neither is
	// ever close for it. Neither bounds the call itself (the handler's run).
	ReadHeaderTimeout time.Duration
	ReadTimeout       time.Duration
	// IdleTimeout closes a kept-alive connection that sends no new request (default
	// 30 s; the plugin closes its connection after one call anyway).
	IdleTimeout time.Duration
}

// Defaults of Limits.
const (
	DefaultMaxConns          = 1024
	DefaultReadHeaderTimeout = 5 * time.Second
	DefaultReadTimeout       = 10 * time.Second
	DefaultIdleTimeout       = 30 * time.Second
	// maxHeaderBytes bounds a request's headers; the plugin's are ~150 bytes.
	maxHeaderBytes = 16 << 10
	minMaxConns    = 16
)

func (l Limits) withDefaults() Limits {
	if l.MaxConns <= 0 {
		l.MaxConns = DefaultMaxConns
		var rl syscall.Rlimit
		if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err == nil && rl.Cur/4 < uint64(l.MaxConns) {
			// A call in flight holds a few more descriptors (the pod's namespace, netlink
			// sockets): leave them room.
			l.MaxConns = max(int(rl.Cur/4), minMaxConns)
		}
	}
	if l.ReadHeaderTimeout <= 0 {
		l.ReadHeaderTimeout = DefaultReadHeaderTimeout
	}
	if l.ReadTimeout <= 0 {
		l.ReadTimeout = DefaultReadTimeout
	}
	if l.IdleTimeout <= 0 {
		l.IdleTimeout = DefaultIdleTimeout
	}
	return l
}

// limitListener hands out at most max connections at once (see Limits.MaxConns).
// Accept is called from one goroutine (http.Server.Serve).
type limitListener struct {
	net.Listener
	max       int
	log       *slog.Logger
	mu        sync.Mutex
	conns     map[*trackedConn]struct{}
	freed     chan struct{} // a connection closed (capacity 1: a wake-up is never lost)
	done      chan struct{} // closed by Close
	closeOnce sync.Once
	evicted   atomic.Int64
}

func newLimitListener(ln net.Listener, maxConns int, log *slog.Logger) *limitListener {
	return &limitListener{
		Listener: ln, max: maxConns, log: log,
		conns: map[*trackedConn]struct{}{}, freed: make(chan struct{}, 1), done: make(chan struct{}),
	}
}

func (l *limitListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	tc := &trackedConn{Conn: c, l: l, since: time.Now(), peer: peerOf(c)}
	for {
		l.mu.Lock()
		if len(l.conns) < l.max {
			l.conns[tc] = struct{}{}
			l.mu.Unlock()
			return tc, nil
		}
		victim := l.slowestLocked()
		l.mu.Unlock()
		if victim != nil {
			l.evicted.Add(1)
			l.log.Warn("cniserver: connection limit reached; closing the oldest connection that has not sent its whole request",
				"limit", l.max, "age", time.Since(victim.since).Round(time.Millisecond).String())
			_ = victim.Close()
			continue
		}
		// Every connection is in a call: wait for one to end.
		select {
		case <-l.freed:
		case <-l.done:
			_ = c.Close()
			return nil, net.ErrClosed
		}
	}
}

// slowestLocked returns the oldest connection not in a call, or nil. Caller holds l.mu.
func (l *limitListener) slowestLocked() *trackedConn {
	var victim *trackedConn
	for c := range l.conns {
		if c.busy.Load() {
			continue
		}
		if victim == nil || c.since.Before(victim.since) {
			victim = c
		}
	}
	return victim
}

func (l *limitListener) release(c *trackedConn) {
	l.mu.Lock()
	delete(l.conns, c)
	l.mu.Unlock()
	select {
	case l.freed <- struct{}{}:
	default:
	}
}

func (l *limitListener) Close() error {
	l.closeOnce.Do(func() { close(l.done) })
	return l.Listener.Close()
}

// open returns the number of connections open now.
func (l *limitListener) open() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.conns)
}

// trackedConn is a connection counted by a limitListener.
type trackedConn struct {
	net.Conn
	l     *limitListener
	since time.Time
	peer  peer // who connected (SO_PEERCRED), read at accept
	// busy is set from the moment a request has been read whole (or refused) until its
	// reply has been sent: such a connection is never closed to make room.
	busy atomic.Bool
	once sync.Once
}

func (c *trackedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { c.l.release(c) })
	return err
}

type connKey struct{}

// connContext puts the connection in the context of its requests (http.Server.ConnContext).
func connContext(ctx context.Context, c net.Conn) context.Context {
	return context.WithValue(ctx, connKey{}, c)
}

// inCall marks the request's connection as in a call (its request read whole, or refused:
// a reply is coming) until its reply has been sent (connState).
func inCall(r *http.Request) {
	if c, ok := r.Context().Value(connKey{}).(*trackedConn); ok {
		c.busy.Store(true)
	}
}

// connState ends the call of a connection once its reply is sent
// (http.Server.ConnState): a kept-alive connection waiting for its next request may be
// closed to make room again.
func connState(c net.Conn, st http.ConnState) {
	if tc, ok := c.(*trackedConn); ok && st == http.StateIdle {
		tc.busy.Store(false)
	}
}
