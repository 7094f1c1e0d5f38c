package daemon_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/errors"
	"github.com/containernetworking/cni/pkg/types"

	"github.com/coil-net/coil/cniproto"
	"github.com/coil-net/coil/internal/testutil"
)

// With etcd gone, coild loses its lease and is not ready: an ADD through the plugin then
// gets "try again" (CNI code 11, what a runtime retries), and coild's STATUS says not
// ready (the plugin reports that as 50). coild stays up and, once etcd is back, serves
// ADDs again by itself.
func TestEtcdDownNotReadyIsTryAgain(t *testing.T) {
	e := newEnv(t)
	e.defaultPool()
	ctx := context.Background()
	e.startDaemon(e.config())
	c, list := e.cni(), e.netList()
	_, path := e.pod("pod")
	e.etcd.Stop()
	client := cniproto.NewClient(e.sock, 5*time.Second)
	testutil.Eventually(t, 60*time.Second, func() bool { return client.Status(ctx) != nil }, "coild not ready with etcd stopped")
	err := client.Status(ctx)
	var pe *cniproto.Error
	if !errors.As(err, &pe) || pe.Code != cniproto.CodeNotReady || !strings.Contains(pe.Msg, "not ready") {
		t.Errorf("STATUS while not ready: %v, want coild's not-ready error", err)
	}
	_, err = c.AddNetworkList(ctx, list, podRT("d0wn0001", path))
	if code, msg := cniCode(t, err); code != types.ErrTryAgainLater || !strings.Contains(msg, "try again") {
		t.Errorf("ADD while not ready: code %d %q, want 11 (try again)", code, msg)
	}
	e.etcd.Restart()
	e.waitReady()
	if _, err := c.AddNetworkList(ctx, list, podRT("d0wn0001", path)); err != nil {
		t.Fatalf("ADD once etcd is back: %v", err)
	}
}
