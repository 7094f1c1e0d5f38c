package allocator_test

import (
	"context"
	"net/netip"
	"slices"
	"testing"

	"github.com/cockroachdb/errors"

	"github.com/coil-net/coil/allocator"
	"github.com/coil-net/coil/events"
	"github.com/coil-net/coil/internal/etcdtest"
)

// An operator release (Admin.ReleaseAddress) lands on the stream of a node allocator that
// is alive: its next append conflicts, it takes the release in and drops the
// attachment, and it goes on allocating. A release of a free address is ErrNotHeld; one
// decided on an attachment that was replaced since is a conflict; neither writes.
func TestReleaseAddressUnderLiveNode(t *testing.T) {
	ctx := context.Background()
	c := etcdtest.Start(t)
	admin := &allocator.Admin{Log: events.NewEtcdLog(c.Client(t), events.EtcdConfig{Prefix: "/coil/"}), Clock: events.SystemClock{}, Actor: "coilctl:test"}
	if err := admin.CreatePool(ctx, pool(t, "p", 4, "10.0.0.0/24,fd00::/120")); err != nil {
		t.Fatal(err)
	}
	n, _, _ := etcdNode(t, ctx, c, "n1", 0)
	alloc := func(id string) *allocator.Assignment {
		t.Helper()
		a, err := n.Allocate(ctx, allocator.Request{ContainerID: id, IfName: "eth0", Pool: "p"})
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	a := alloc("a")
	alloc("b")

	if _, err := admin.ReleaseAddress(ctx, "n1", a.Addrs[1], a.Seq+1, "x"); !errors.Is(err, events.ErrConflict) {
		t.Fatalf("release with another attachment's seq: %v, want a conflict", err)
	}
	if _, err := admin.ReleaseAddress(ctx, "n1", netip.MustParseAddr("10.0.0.200"), 0, "x"); !errors.Is(err, allocator.ErrNotHeld) {
		t.Fatalf("release of a free address: %v, want ErrNotHeld", err)
	}
	res, err := admin.ReleaseAddress(ctx, "n1", a.Addrs[1], a.Seq, "pod gone") // by its IPv6 address
	if err != nil {
		t.Fatal(err)
	}
	if res.ContainerID != "a" || !slices.Equal(res.Addrs, a.Addrs) {
		t.Fatalf("released %+v, want a's %v", res, a.Addrs)
	}
	if _, err := admin.ReleaseAddress(ctx, "n1", a.Addrs[0], 0, "again"); !errors.Is(err, allocator.ErrNotHeld) {
		t.Fatalf("second release: %v, want ErrNotHeld", err)
	}

	// The node's next append conflicts with the release and takes it in.
	alloc("c")
	for _, at := range n.Attachments() {
		if at.ContainerID == "a" {
			t.Fatalf("the node still holds a: %+v", at)
		}
	}
	// An ADD of a again is a new attachment, not the released one handed back.
	if a2 := alloc("a"); a2.Seq == a.Seq {
		t.Fatalf("a got its released attachment back: %+v", a2)
	}
}
