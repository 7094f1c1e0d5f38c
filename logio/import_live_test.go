package logio_test

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/cockroachdb/errors"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/coil-net/coil/allocator/allocatortest"
	"github.com/coil-net/coil/events"
	"github.com/coil-net/coil/logio"
)

// Issue 10: `log import --force` replaced the log under a live coild, whose every ADD
// then failed. Import refuses while a node's liveness key is held on a lease, names the
// nodes, and writes nothing; naming a node in IgnoreLiveNodes lets it past; a coild that
// starts while the file is being read stops the import before anything is deleted.
func TestImportRefusesLiveNodes(t *testing.T) {
	s := newSite(t)
	s.createPool("default", 3, "10.20.0.0/24")
	nodes := map[string]*allocatortest.Node{}
	for _, nm := range []string{"n1", "n2"} {
		nodes[nm] = allocatortest.Start(t, s.cli, s.log, nm, allocatortest.Options{Clock: s.clock})
		s.nodes[nm] = nodes[nm].Node
		s.alloc(nm, "c-"+nm)
	}
	path := filepath.Join(t.TempDir(), "coil.jsonl")
	export(t, s.log, path)
	s.alloc("n1", "after-export") // the import would lose this one
	_, before := fullState(t, s.log, fromOne)
	unchanged := func(what string) {
		t.Helper()
		if _, h := fullState(t, s.log, fromOne); h != before {
			t.Fatalf("%s changed the log", what)
		}
	}

	confirmed := 0
	opt := logio.ImportOptions{Force: true, Confirm: func(logio.ImportPlan) error { confirmed++; return nil }}
	_, err := logio.Import(ctxT(t), s.log, path, opt)
	if !errors.Is(err, logio.ErrLiveNodes) {
		t.Fatalf("import beside live nodes: err = %v, want ErrLiveNodes", err)
	}
	for _, want := range []string{"2 nodes hold their liveness key under /coil/alive/", "n1 (lease ", "n2 (lease ", "s left)",
		"stop every coild first", "--ignore-live-nodes"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
	if confirmed != 0 {
		t.Fatal("asked for confirmation of a refused import")
	}
	unchanged("a refused import")

	// n1 is named: n2 still refuses.
	opt.IgnoreLiveNodes = []string{"n1", "n7"}
	_, err = logio.Import(ctxT(t), s.log, path, opt)
	if !errors.Is(err, logio.ErrLiveNodes) || !strings.Contains(err.Error(), "1 nodes hold") || strings.Contains(err.Error(), "n1 (") {
		t.Fatalf("import with n1 ignored: err = %v, want ErrLiveNodes naming n2 only", err)
	}
	unchanged("a refused import")

	// Both named, but a third coild starts while the file is read: refused, nothing deleted.
	opt.IgnoreLiveNodes = []string{"n1", "n2"}
	var n3 clientv3.LeaseID
	opt.Confirm = func(p logio.ImportPlan) error {
		g, gerr := s.cli.Grant(ctxT(t), 60)
		if gerr != nil {
			return gerr
		}
		n3 = g.ID
		_, perr := s.cli.Put(ctxT(t), events.AliveKey("", "n3"), "n3", clientv3.WithLease(g.ID))
		return perr
	}
	_, err = logio.Import(ctxT(t), s.log, path, opt)
	if !errors.Is(err, logio.ErrLiveNodes) || !strings.Contains(err.Error(), "a coild started during the import (nothing was deleted: n3)") {
		t.Fatalf("import while n3 starts: err = %v", err)
	}
	unchanged("an import that a starting coild interrupted")
	if _, err = s.cli.Revoke(ctxT(t), n3); err != nil {
		t.Fatal(err)
	}

	// The operator declines: nothing written.
	opt.Confirm = func(logio.ImportPlan) error { return errors.New("declined") }
	if _, err = logio.Import(ctxT(t), s.log, path, opt); err == nil || err.Error() != "declined" {
		t.Fatalf("declined import: err = %v", err)
	}
	unchanged("a declined import")

	// The coilds are gone (their leases revoked): the import goes through, and the plan
	// shown for confirmation describes the log replaced and the file.
	nodes["n1"].Kill()
	nodes["n2"].Kill()
	var plan logio.ImportPlan
	h, err := logio.Import(ctxT(t), s.log, path, logio.ImportOptions{Force: true, Confirm: func(p logio.ImportPlan) error { plan = p; return nil }})
	if err != nil {
		t.Fatalf("import once the coilds are gone: %+v", err)
	}
	// cluster, pool/default, node/n1, node/n2; events: 1 pool + 2 blocks + 2 registrations + 3 addresses.
	if plan.Prefix != "/coil/" || plan.Streams != 4 || plan.Events != 8 || plan.Snapshots != 0 || plan.File.Total() != h.Total() || h.Total() != 7 {
		t.Fatalf("plan = %+v (file %d events)", plan, h.Total())
	}
	if _, after := fullState(t, s.log, fromOne); after == before {
		t.Fatal("the import did not replace the log")
	}
}
