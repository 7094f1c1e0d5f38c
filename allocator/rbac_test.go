package allocator_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/errors"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/coil-net/coil/allocator"
	"github.com/coil-net/coil/allocator/allocatortest"
	"github.com/coil-net/coil/events"
	"github.com/coil-net/coil/internal/etcdclient"
	"github.com/coil-net/coil/internal/etcdtest"
)

// TestPerNodeCredentials: etcd with client-certificate authentication and RBAC on, the
// roles from events.Keys (coil-admin, coil-node-NODE) applied. The admin creates a pool;
// nodes n1 and n2, each with its own certificate, register and allocate (their own
// stream, their liveness key, the pool stream); n1's credentials cannot write n2's
// stream or liveness key (etcd refuses: events.ErrPermissionDenied with a message that
// names the stream and the cause), nor anything outside Coil's prefix, and a client
// without a certificate gets nowhere.
func TestPerNodeCredentials(t *testing.T) {
	ctx := context.Background()
	c := etcdtest.Start(t, etcdtest.WithClientCertAuth())
	root := c.EnableAuth(t)
	keys := events.NewKeys("/coil/")
	roles := []events.Role{keys.AdminRole()}
	for _, n := range []string{"n1", "n2"} {
		r, err := keys.NodeRole(n)
		if err != nil {
			t.Fatal(err)
		}
		roles = append(roles, r)
	}
	for _, r := range roles {
		if err := events.ApplyRole(ctx, root, r); err != nil {
			t.Fatal(err)
		}
	}
	adminLog := events.NewEtcdLog(c.ClientAs(t, "coil-admin"), events.EtcdConfig{Prefix: "/coil/"})
	t.Cleanup(func() { _ = adminLog.Close() })
	admin := &allocator.Admin{Log: adminLog, Clock: events.SystemClock{}, Actor: "test"}
	if err := admin.CreatePool(ctx, pool(t, "p", 2, "10.0.0.0/26")); err != nil {
		t.Fatal(err)
	}

	clients := map[string]*clientv3.Client{}
	for _, name := range []string{"n1", "n2"} {
		cli := c.ClientAs(t, "coil-node-"+name)
		clients[name] = cli
		log := coilLog(t, cli)
		n := allocatortest.Start(t, cli, log, name, allocatortest.Options{Prefix: "/coil/"})
		if _, err := n.Allocate(ctx, allocator.Request{ContainerID: "c-" + name, IfName: "eth0", Pool: "p"}); err != nil {
			t.Fatalf("%s allocates with its own credentials: %+v", name, err)
		}
	}

	// n1's credentials, used as if they were n2's (a compromised or misconfigured node).
	n1 := clients["n1"]
	g, err := n1.Grant(ctx, 60)
	if err != nil {
		t.Fatal(err)
	}
	forged := allocator.NewNode(allocator.NodeConfig{Node: "n2", Log: events.NewEtcdLog(n1, events.EtcdConfig{Prefix: "/coil/"}),
		Clock: events.SystemClock{}, AliveKey: keys.Alive("n2"), Lease: int64(g.ID)})
	if _, _, err = forged.Load(ctx); err != nil {
		t.Fatalf("reading is allowed: %+v", err)
	}
	err = forged.Register(ctx)
	if !errors.Is(err, events.ErrPermissionDenied) {
		t.Fatalf("append to node/n2 with n1's credentials: %+v, want ErrPermissionDenied", err)
	}
	for _, want := range []string{"append to node/n2 refused by etcd's RBAC for these credentials", "its own stream node/NODE",
		"coilctl etcd roles", "etcdserver: permission denied"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
	for _, key := range []string{keys.Alive("n2"), keys.Head(events.NodeStream("n2")), keys.Event(events.NodeStream("n2"), 99),
		keys.Event(events.ClusterStream, 99), keys.Event(events.NodeStream("n10"), 1), "/other/x", "/coil/alive/n10"} {
		if _, err := n1.Put(ctx, key, "x"); err == nil || !strings.Contains(err.Error(), "permission denied") {
			t.Errorf("n1 puts %s: %v, want permission denied", key, err)
		}
	}
	if _, err := n1.Get(ctx, "/other/x"); err == nil {
		t.Error("n1 reads outside Coil's prefix")
	}
	noCert := c.ClientConfig(t, "nobody")
	noCert.Cert, noCert.Key, noCert.DialTimeout = "", "", time.Second
	if cli, err := etcdclient.New(noCert); err == nil {
		_ = cli.Close()
		t.Error("a client without a certificate connected")
	}
	// The admin can; etcd checked the events above, not a client-side rule.
	if _, err := c.ClientAs(t, "coil-admin").Put(ctx, "/coil/alive/n10", "x"); err != nil {
		t.Errorf("admin: %v", err)
	}
}
