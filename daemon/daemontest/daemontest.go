// Package daemontest runs a coild in-process for a test or a benchmark: the start, the
// wait until it answers and the checked stop that the daemon's own tests and benchmarks
// and test/runtimes share.
package daemontest

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/coil-net/coil/cniproto"
	"github.com/coil-net/coil/daemon"
	"github.com/coil-net/coil/internal/testutil"
)

// Coild is a coild running in-process.
type Coild struct {
	D      *daemon.Daemon
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
}

// Start runs coild with cfg until Stop or the end of the test; it does not wait until
// coild is ready (WaitReady).
func Start(tb testing.TB, cfg daemon.Config) *Coild {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	d, err := daemon.New(ctx, cfg)
	if err != nil {
		cancel()
		tb.Fatalf("daemon.New: %v", err)
	}
	c := &Coild{D: d, cancel: cancel, done: make(chan error, 1)}
	go func() { c.done <- d.Run(ctx) }()
	tb.Cleanup(func() { c.Stop(tb) })
	return c
}

// Stop ends coild's Run and closes it. It fails the test when Run returned an error or
// did not return within 30 s. Stopping a stopped coild does nothing.
func (c *Coild) Stop(tb testing.TB) {
	tb.Helper()
	c.once.Do(func() {
		c.cancel()
		select {
		case err := <-c.done:
			if err != nil {
				tb.Errorf("Run: %v", err)
			}
		case <-time.After(30 * time.Second):
			tb.Errorf("Run did not return within 30s of cancel")
		}
		c.D.Close()
	})
}

// WaitReady waits until the coild serving socket answers STATUS with success (30 s at
// most; the test fails with the last answer).
func WaitReady(tb testing.TB, socket string) {
	tb.Helper()
	c := cniproto.NewClient(socket, 2*time.Second)
	var last error
	testutil.Eventually(tb, 30*time.Second, func() bool {
		last = c.Status(context.Background())
		return last == nil
	}, "coild ready (last STATUS: %v)", &last)
}
