package lab

import (
	"context"
	"io"
	"net"
	"os"
	"runtime"
	"sync"

	"github.com/cockroachdb/errors"
	"golang.org/x/sys/unix"
)

// DialContext connects to addr ("host:port", TCP) from inside the node's network
// namespace: the socket is created there by a thread that enters the namespace for the
// call, so the connection lives in the node namespace while the caller stays where it is.
// Nothing is added to the caller's namespace.
func (n *Node) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	return DialInNetNS(ctx, n.NetNSPath, network, addr)
}

// DialInNetNS dials addr from inside the network namespace at nsPath (see
// Node.DialContext).
func DialInNetNS(ctx context.Context, nsPath, network, addr string) (net.Conn, error) {
	var c net.Conn
	err := inNetNS(nsPath, func() error {
		var d net.Dialer
		var derr error
		c, derr = d.DialContext(ctx, network, addr)
		return errors.Wrapf(derr, "lab: dial %s in %s", addr, nsPath)
	})
	return c, err
}

// inNetNS runs fn on a thread switched into the network namespace at nsPath and switches
// it back. Sockets fn creates stay in that namespace. A thread that cannot be switched
// back stays locked and dies with its goroutine, so no other goroutine ever runs in the
// wrong namespace.
func inNetNS(nsPath string, fn func() error) error {
	ch := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			ch <- errors.Wrap(err, "lab: open own netns")
			return
		}
		defer orig.Close()
		target, err := os.Open(nsPath)
		if err != nil {
			runtime.UnlockOSThread()
			ch <- errors.Wrapf(err, "lab: open netns %s", nsPath)
			return
		}
		defer target.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			ch <- errors.Wrapf(err, "lab: enter netns %s", nsPath)
			return
		}
		ferr := fn()
		if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
			ch <- errors.CombineErrors(ferr, errors.Wrap(err, "lab: leave netns")) // thread stays locked: discarded
			return
		}
		runtime.UnlockOSThread()
		ch <- ferr
	}()
	return <-ch
}

// Forwarder listens on a loopback port of the caller's network namespace and relays each
// connection to a TCP address inside a node namespace (Node.DialContext). It lets
// programs that cannot enter the namespace (kubectl, coilctl) reach a server that lives
// only there, with the server's own TLS end to end.
type Forwarder struct {
	// Addr is the local address ("127.0.0.1:PORT").
	Addr string

	ln     net.Listener
	wg     sync.WaitGroup
	mu     sync.Mutex
	conns  map[net.Conn]bool
	closed bool
}

// Forward starts a Forwarder from a free loopback port to target inside the node
// namespace. Close it when done (Lab.Close does not know it).
func (n *Node) Forward(target string) (*Forwarder, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, errors.Wrap(err, "lab: forwarder listen")
	}
	f := &Forwarder{Addr: ln.Addr().String(), ln: ln, conns: map[net.Conn]bool{}}
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			f.wg.Add(1)
			go func() {
				defer f.wg.Done()
				f.relay(c, n.NetNSPath, target)
			}()
		}
	}()
	return f, nil
}

func (f *Forwarder) track(c net.Conn) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return false
	}
	f.conns[c] = true
	return true
}

func (f *Forwarder) relay(c net.Conn, nsPath, target string) {
	defer c.Close()
	if !f.track(c) {
		return
	}
	u, err := DialInNetNS(context.Background(), nsPath, "tcp", target)
	if err != nil {
		return
	}
	defer u.Close()
	if !f.track(u) {
		return
	}
	done := make(chan struct{}, 2)
	cp := func(dst, src net.Conn) {
		_, _ = io.Copy(dst, src)
		if tc, ok := dst.(*net.TCPConn); ok {
			_ = tc.CloseWrite()
		}
		done <- struct{}{}
	}
	go cp(u, c)
	go cp(c, u)
	<-done
	<-done
	f.mu.Lock()
	delete(f.conns, c)
	delete(f.conns, u)
	f.mu.Unlock()
}

// Close stops listening, closes every relayed connection and waits for the relays.
func (f *Forwarder) Close() error {
	f.mu.Lock()
	f.closed = true
	for c := range f.conns {
		_ = c.Close()
	}
	f.mu.Unlock()
	err := f.ln.Close()
	f.wg.Wait()
	return errors.Wrap(err, "lab: forwarder close")
}
