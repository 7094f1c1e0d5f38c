package daemon_test

// Tests of coild's own decisions over a fake kernel (fakePlumber): no root, no
// namespace. Real etcd (embedded), the real CNI socket and protocol; only the plumbing
// is in memory, so that failures can be injected and calls ordered. The real plumbing
// is tested by netplumb's root tests and by the root daemon tests beside these.

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cockroachdb/errors"

	"github.com/coil-net/coil/cniproto"
	"github.com/coil-net/coil/events"
	"github.com/coil-net/coil/internal/testutil"
	"github.com/coil-net/coil/netplumb"
)

// logRecorder is a slog handler that keeps every message with its attributes
// ("msg k=v k=v") and passes records at its level on.
type logRecorder struct {
	next  slog.Handler
	attrs []slog.Attr
	mu    *sync.Mutex
	lines *[]string
}

func newLogRecorder(next slog.Handler) logRecorder {
	return logRecorder{next: next, mu: &sync.Mutex{}, lines: new([]string)}
}

func (h logRecorder) Enabled(context.Context, slog.Level) bool { return true }

func (h logRecorder) Handle(ctx context.Context, r slog.Record) error {
	var b strings.Builder
	b.WriteString(r.Message)
	add := func(a slog.Attr) bool {
		fmt.Fprintf(&b, " %s=%v", a.Key, a.Value)
		return true
	}
	for _, a := range h.attrs {
		add(a)
	}
	r.Attrs(add)
	h.mu.Lock()
	*h.lines = append(*h.lines, b.String())
	h.mu.Unlock()
	if !h.next.Enabled(ctx, r.Level) {
		return nil
	}
	return h.next.Handle(ctx, r)
}

func (h logRecorder) WithAttrs(as []slog.Attr) slog.Handler {
	return logRecorder{next: h.next.WithAttrs(as), attrs: append(slices.Clone(h.attrs), as...), mu: h.mu, lines: h.lines}
}

func (h logRecorder) WithGroup(name string) slog.Handler {
	return logRecorder{next: h.next.WithGroup(name), attrs: h.attrs, mu: h.mu, lines: h.lines}
}

// has reports whether a logged line contains every one of parts.
func (h logRecorder) has(parts ...string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, l := range *h.lines {
		ok := true
		for _, p := range parts {
			ok = ok && strings.Contains(l, p)
		}
		if ok {
			return true
		}
	}
	return false
}

// startFake starts an in-process coild over e.fake with a log recorder and returns a
// protocol client (the plugin's side of the socket).
func (e *env) startFake() (*cniproto.Client, logRecorder) {
	e.t.Helper()
	cfg := e.config()
	rec := newLogRecorder(cfg.Logger.Handler())
	cfg.Logger = slog.New(rec)
	e.startDaemon(cfg)
	return cniproto.NewClient(e.sock, 30*time.Second), rec
}

// fakeReq is an ADD/DEL/CHECK request for a pod of the fake kernel.
func fakeReq(id string) *cniproto.Request {
	return &cniproto.Request{ContainerID: id, IfName: "eth0", NetNS: "/var/run/netns/" + id, PodNamespace: "default", PodName: "p-" + id}
}

// startFakeWith is a fake-kernel world with pool "default" and coild running, after an
// ADD of each of ids.
func startFakeWith(t *testing.T, ids ...string) (*env, *cniproto.Client, logRecorder) {
	t.Helper()
	e := newFakeEnv(t)
	e.defaultPool()
	client, rec := e.startFake()
	for _, id := range ids {
		if _, err := client.Add(context.Background(), fakeReq(id)); err != nil {
			t.Fatalf("ADD %s: %v", id, err)
		}
	}
	return e, client, rec
}

// teardownWitness records, at each TeardownMany naming an attachment's host veth,
// whether the attachment still held its address then (the veth must go first).
type teardownWitness struct {
	mu   sync.Mutex
	held map[string][]bool
}

// watchTeardowns installs a teardownWitness for the attachments ids.
func (e *env) watchTeardowns(ids ...string) *teardownWitness {
	w := &teardownWitness{held: map[string][]bool{}}
	e.fake.setOnTeardown(func(names []string) {
		for _, id := range ids {
			if slices.Contains(names, netplumb.HostVethName(id, "eth0")) {
				h, err := e.holds(id)
				w.mu.Lock()
				w.held[id] = append(w.held[id], h && err == nil)
				w.mu.Unlock()
			}
		}
	})
	return w
}

// heldAtEach reports whether id's veth was torn down at least once and id held its
// address at every teardown.
func (w *teardownWitness) heldAtEach(id string) bool {
	h := w.heldAt(id)
	return len(h) > 0 && !slices.Contains(h, false)
}

// heldAt returns, for each teardown of id's veth, whether id held its address then.
func (w *teardownWitness) heldAt(id string) []bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.held[id])
}

// holds reads the log (from any goroutine) and reports whether the attachment holds an
// address.
func (e *env) holds(containerID string) (bool, error) {
	held := false
	_, err := e.log.Read(context.Background(), events.NodeStream(nodeName), 1, 0, func(ev *events.Event) error {
		switch p := ev.Payload.(type) {
		case *events.AddressAssigned:
			if p.ContainerID == containerID {
				held = true
			}
		case *events.AddressReleased:
			if p.ContainerID == containerID {
				held = false
			}
		}
		return nil
	})
	return held, err
}

// attachmentEvents lists an attachment's address events in log order: "assigned" or
// "released: REASON".
func (e *env) attachmentEvents(containerID string) []string {
	e.t.Helper()
	var out []string
	for _, ev := range e.nodeEvents() {
		switch p := ev.Payload.(type) {
		case *events.AddressAssigned:
			if p.ContainerID == containerID {
				out = append(out, "assigned")
			}
		case *events.AddressReleased:
			if p.ContainerID == containerID {
				out = append(out, "released: "+p.Reason)
			}
		}
	}
	return out
}

func cniErrCode(t *testing.T, err error) (uint, string) {
	t.Helper()
	var ce *cniproto.Error
	if !errors.As(err, &ce) {
		t.Fatalf("want a CNI error, got %T %v", err, err)
	}
	return ce.Code, ce.Error()
}

// TestFakeErrorMapping: each kernel failure reaches the runtime with its CNI code, and
// coild undoes what the failed call did (a refused namespace allocates nothing; a failed
// plumbing releases the address again, with the reason in the log).
func TestFakeErrorMapping(t *testing.T) {
	e := newFakeEnv(t)
	e.defaultPool()
	f := e.fake
	client, _ := e.startFake()
	ctx := context.Background()

	refusals := []struct {
		name, id string
		setup    func(path string)
		code     uint
		msg      string
	}{
		{"netns missing", "gone0001", func(p string) { f.goneNS[p] = true }, cniproto.CodeInvalidEnv, "network namespace not found"},
		{"node's netns", "node0001", func(p string) { f.nodeNS[p] = true }, cniproto.CodeInvalidEnv, "CNI_NETNS is the node's own network namespace"},
	}
	for _, c := range refusals {
		req := fakeReq(c.id)
		f.mu.Lock()
		c.setup(req.NetNS)
		f.mu.Unlock()
		_, err := client.Add(ctx, req)
		if code, msg := cniErrCode(t, err); code != c.code || !strings.Contains(msg, c.msg) {
			t.Errorf("%s: ADD = %d %q, want %d %q", c.name, code, msg, c.code, c.msg)
		}
		if ev := e.attachmentEvents(c.id); len(ev) != 0 {
			t.Errorf("%s: a refused ADD touched the log: %v", c.name, ev)
		}
		if calls := f.callsOf("prepare " + netplumb.HostVethName(c.id, "eth0")); len(calls) != 0 {
			t.Errorf("%s: a refused ADD prepared a veth", c.name)
		}
	}

	// Plumbing failures after the address is committed: the address goes back.
	boom := errors.New("boom: the kernel said no")
	failures := []struct {
		name, id, op string
		err          error
		code         uint
		msg          string
	}{
		{"interface name in use", "ifnm0001", "prepare", errors.Wrap(netplumb.ErrIfNameInUse, "eth0"), cniproto.CodeInvalidEnv, "interface name already in use"},
		{"prepare fails", "prep0001", "prepare", boom, cniproto.CodeInternal, "boom"},
		{"finish fails", "fini0001", "finish", boom, cniproto.CodeInternal, "boom"},
		{"netns gone before finish", "fins0001", "finish", errors.Wrap(netplumb.ErrNetNSNotFound, "/var/run/netns/fins0001"), cniproto.CodeInvalidEnv, "network namespace not found"},
	}
	for _, c := range failures {
		f.setFail(c.op+" "+netplumb.HostVethName(c.id, "eth0"), c.err)
		_, err := client.Add(ctx, fakeReq(c.id))
		if code, msg := cniErrCode(t, err); code != c.code || !strings.Contains(msg, c.msg) {
			t.Errorf("%s: ADD = %d %q, want %d %q", c.name, code, msg, c.code, c.msg)
		}
		ev := e.attachmentEvents(c.id)
		if len(ev) != 2 || ev[0] != "assigned" || !strings.HasPrefix(ev[1], "released: ADD failed: ") || !strings.Contains(ev[1], c.err.Error()) {
			t.Errorf("%s: log = %q, want assigned, then released with 'ADD failed: %v'", c.name, ev, c.err)
		}
	}

	// Pools: unknown is a configuration error (7), exhausted is "try again" (11).
	req := fakeReq("pool0001")
	req.Pool = "nope"
	_, err := client.Add(ctx, req)
	if code, msg := cniErrCode(t, err); code != cniproto.CodeUnknownPool || !strings.Contains(msg, `pool "nope"`) {
		t.Errorf("unknown pool: ADD = %d %q, want 7", code, msg)
	}
	e.createPool("tiny", 1, "10.200.0.0/31")
	for i := range 3 {
		req := fakeReq(fmt.Sprintf("tiny%04d", i))
		req.Pool = "tiny"
		_, err := client.Add(ctx, req)
		if i < 2 && err != nil {
			t.Fatalf("ADD %d into tiny: %v", i, err)
		}
		if i == 2 {
			if code, msg := cniErrCode(t, err); code != cniproto.CodePoolExhausted || !strings.Contains(msg, "exhausted") {
				t.Errorf("exhausted pool: ADD = %d %q, want 11", code, msg)
			}
		}
	}

	// CHECK: unknown attachment (3), namespace gone (4), plumbing differs (999).
	if code, _ := cniErrCode(t, client.Check(ctx, fakeReq("none0001"))); code != cniproto.CodeUnknownContainer {
		t.Errorf("CHECK of an unknown attachment = %d, want 3", code)
	}
	if _, err := client.Add(ctx, fakeReq("chck0001")); err != nil {
		t.Fatal(err)
	}
	if err := client.Check(ctx, fakeReq("chck0001")); err != nil {
		t.Fatalf("CHECK of a good attachment: %v", err)
	}
	veth := netplumb.HostVethName("chck0001", "eth0")
	f.setFail("check "+veth, errors.Wrap(netplumb.ErrNetNSNotFound, "gone"))
	if code, _ := cniErrCode(t, client.Check(ctx, fakeReq("chck0001"))); code != cniproto.CodeInvalidEnv {
		t.Errorf("CHECK, namespace gone = %d, want 4", code)
	}
	f.setFail("check "+veth, errors.Wrap(netplumb.ErrCheckFailed, "no default route"))
	code, msg := cniErrCode(t, client.Check(ctx, fakeReq("chck0001")))
	if code != cniproto.CodeInternal || !strings.Contains(msg, "pod network is not as coild set it up") {
		t.Errorf("CHECK, plumbing differs = %d %q, want 999", code, msg)
	}
}

// TestFakeExportRouteFailureDoesNotFailAdd: the ADD's block route (the exporter's fast
// path) cannot be added: the ADD still succeeds, and the session's full sync adds the
// route once the kernel lets it.
func TestFakeExportRouteFailureDoesNotFailAdd(t *testing.T) {
	e := newFakeEnv(t)
	e.defaultPool()
	f := e.fake
	f.setFail("route-add", errors.New("boom: no route for you"))
	client, rec := e.startFake()
	res, err := client.Add(context.Background(), fakeReq("rout0001"))
	if err != nil {
		t.Fatalf("ADD with the export route failing: %v", err)
	}
	if !rec.has("export route", "trigger=add", "boom: no route for you") {
		t.Error("the failed export route was not logged")
	}
	f.setFail("route-add", nil)
	block := netip.PrefixFrom(res.Addrs[0], 32-bits).Masked()
	testutil.Eventually(t, 20*time.Second, func() bool { return f.hasRoute(block) }, "block route %s added by a later sync", block)
}

// TestFakeDelTearsDownBeforeRelease: a DEL is answered once its intent is recorded; the
// veth is deleted first and only then is the address released. When the deletion
// fails, the address stays held (and the intent stays) until the reconciler's retry
// deletes the veth.
func TestFakeDelTearsDownBeforeRelease(t *testing.T) {
	ids := []string{"dela0001", "delb0002"}
	e, client, _ := startFakeWith(t, ids...)
	f := e.fake
	ctx := context.Background()
	witness := e.watchTeardowns(ids...)
	if err := client.Del(ctx, fakeReq("dela0001")); err != nil {
		t.Fatalf("DEL: %v", err)
	}
	testutil.Eventually(t, 20*time.Second, func() bool { h, _ := e.holds("dela0001"); return !h }, "dela0001 released")
	if f.hasLink(netplumb.HostVethName("dela0001", "eth0")) {
		t.Error("dela0001 released while its veth exists")
	}
	// delb0002's veth deletion fails until the failure is cleared: tried, and retried
	// by the reconciler; the address is kept meanwhile.
	vethB := netplumb.HostVethName("delb0002", "eth0")
	f.setFail("teardown "+vethB, errors.New("boom: device busy"))
	if err := client.Del(ctx, fakeReq("delb0002")); err != nil {
		t.Fatalf("DEL: %v", err)
	}
	testutil.Eventually(t, 20*time.Second, func() bool { return len(f.callsOf("teardown "+vethB)) >= 2 }, "the failed teardown retried")
	if h, err := e.holds("delb0002"); err != nil || !h {
		t.Fatalf("delb0002 released though its veth could not be deleted (held %v, %v)", h, err)
	}
	f.setFail("teardown "+vethB, nil)
	testutil.Eventually(t, 20*time.Second, func() bool { h, _ := e.holds("delb0002"); return !h }, "delb0002 released after the retry")
	if f.hasLink(vethB) {
		t.Error("delb0002 released while its veth exists")
	}
	for _, id := range ids {
		if !witness.heldAtEach(id) {
			t.Errorf("%s: held at each teardown = %v, want all true (the veth goes before the address)", id, witness.heldAt(id))
		}
	}
	if ev := e.attachmentEvents("dela0001"); !slices.Equal(ev, []string{"assigned", "released: CNI DEL"}) {
		t.Errorf("dela0001 events = %q", ev)
	}
	// The retry is the reconciler's (the intent survived the failure); the reason stays
	// the DEL's.
	if ev := e.attachmentEvents("delb0002"); !slices.Equal(ev, []string{"assigned", "released: CNI DEL"}) {
		t.Errorf("delb0002 events = %q", ev)
	}
}

// TestFakeAddWaitsForDel: an ADD of an attachment whose DEL is still deleting its veth
// waits for the DEL to finish (veth gone, address released), then allocates anew; it
// does not take over the old assignment that the DEL is about to release.
func TestFakeAddWaitsForDel(t *testing.T) {
	const id = "wait0001"
	e, client, rec := startFakeWith(t, id)
	f := e.fake
	ctx := context.Background()
	veth := netplumb.HostVethName(id, "eth0")
	release := f.holdCall("teardown " + veth)
	defer release()
	if err := client.Del(ctx, fakeReq(id)); err != nil {
		t.Fatalf("DEL: %v", err)
	}
	if got := <-f.entered; got != "teardown "+veth {
		t.Fatalf("held call %q, want the teardown", got)
	}
	added := make(chan error, 1)
	go func() { _, err := client.Add(ctx, fakeReq(id)); added <- err }()
	testutil.Eventually(t, 20*time.Second, func() bool { return rec.has("ADD waits for the DEL of its attachment", "veth="+veth) },
		"the second ADD waiting for the DEL")
	if n := len(f.callsOf("prepare " + veth)); n != 1 {
		t.Errorf("the waiting ADD prepared a veth (%d prepares) while the DEL was deleting it", n)
	}
	select {
	case err := <-added:
		t.Fatalf("ADD returned (%v) while the DEL of its attachment was running", err)
	default:
	}
	release()
	if err := <-added; err != nil {
		t.Fatalf("ADD after the DEL: %v", err)
	}
	if ev := e.attachmentEvents(id); !slices.Equal(ev, []string{"assigned", "released: CNI DEL", "assigned"}) {
		t.Errorf("events = %q, want assigned, released by the DEL, assigned again", ev)
	}
	teardown := f.index("teardown "+veth, -1)
	first := f.index("prepare "+veth, -1)
	if second := f.index("prepare "+veth, first); teardown < 0 || second < teardown {
		t.Errorf("calls: teardown at %d, second prepare at %d; want the prepare after the teardown", teardown, second)
	}
	if !f.hasLink(veth) {
		t.Error("the new ADD's veth is missing")
	}
}

// TestFakeGCDecisions: a CNI GC releases every attachment the runtime does not list,
// deleting its veth first, and keeps the listed ones and those whose ADD is in
// progress (the runtime's list may predate that ADD); a GC without a list does nothing.
func TestFakeGCDecisions(t *testing.T) {
	e, client, _ := startFakeWith(t, "keep0001", "gone0002", "gone0003")
	f := e.fake
	ctx := context.Background()
	// An ADD in progress: allocated, its plumbing held in Finish.
	busy := netplumb.HostVethName("busy0004", "eth0")
	release := f.holdCall("finish " + busy)
	defer release()
	added := make(chan error, 1)
	go func() { _, err := client.Add(ctx, fakeReq("busy0004")); added <- err }()
	if got := <-f.entered; got != "finish "+busy {
		t.Fatalf("held call %q", got)
	}
	if h, err := e.holds("busy0004"); err != nil || !h {
		t.Fatalf("busy0004 not allocated yet: %v %v", h, err)
	}
	if err := client.GC(ctx, &cniproto.GCRequest{}); err != nil { // no list: nothing
		t.Fatalf("GC without a list: %v", err)
	}
	if n := len(f.callsOf("teardown")); n != 0 {
		t.Fatalf("GC without a list deleted %d veths", n)
	}
	witness := e.watchTeardowns("gone0002", "gone0003")
	// GC returns once its releases are done.
	err := client.GC(ctx, &cniproto.GCRequest{ValidAttachments: []cniproto.Attachment{{ContainerID: "keep0001", IfName: "eth0"}}})
	if err != nil {
		t.Fatalf("GC: %v", err)
	}
	for _, id := range []string{"gone0002", "gone0003"} {
		if ev := e.attachmentEvents(id); len(ev) != 2 || ev[1] != "released: CNI GC: not in the runtime's valid attachments" {
			t.Errorf("%s: events %q, want released by GC", id, ev)
		}
		if f.hasLink(netplumb.HostVethName(id, "eth0")) {
			t.Errorf("%s: veth still there after GC", id)
		}
		if !witness.heldAtEach(id) {
			t.Errorf("%s: address released before its veth was deleted", id)
		}
	}
	for _, id := range []string{"keep0001", "busy0004"} {
		if h, err := e.holds(id); err != nil || !h {
			t.Errorf("%s: released by GC (%v)", id, err)
		}
	}
	if f.index("teardown "+busy, -1) >= 0 || f.index("teardown "+netplumb.HostVethName("keep0001", "eth0"), -1) >= 0 {
		t.Error("GC deleted the veth of a kept attachment")
	}
	release()
	if err := <-added; err != nil {
		t.Fatalf("the ADD in progress during GC: %v", err)
	}
	if h, _ := e.holds("busy0004"); !h {
		t.Error("busy0004 lost its address")
	}
}

// TestFakeReconcileDecisions: the reconciler deletes a Coil veth no attachment owns,
// releases the address of an attachment whose veth is gone, and for a veth left
// prepared but never configured (an interrupted ADD) deletes the veth first, then
// releases; attachments whose veth is in place are kept.
func TestFakeReconcileDecisions(t *testing.T) {
	e, _, _ := startFakeWith(t, "fine0001", "miss0002", "pend0003")
	f := e.fake
	pend := netplumb.HostVethName("pend0003", "eth0")
	witness := e.watchTeardowns("pend0003")
	f.putLink("coil-leaked", false) // no attachment
	f.dropLink(netplumb.HostVethName("miss0002", "eth0"))
	f.putLink(pend, true)
	testutil.Eventually(t, 20*time.Second, func() bool {
		m, _ := e.holds("miss0002")
		p, _ := e.holds("pend0003")
		return !m && !p && !f.hasLink("coil-leaked") && !f.hasLink(pend)
	}, "the reconciler's pass")
	if ev := e.attachmentEvents("miss0002"); len(ev) != 2 || !strings.HasPrefix(ev[1], "released: reconcile: host veth "+netplumb.HostVethName("miss0002", "eth0")+" missing") {
		t.Errorf("miss0002 events %q", ev)
	}
	if ev := e.attachmentEvents("pend0003"); len(ev) != 2 || !strings.Contains(ev[1], "missing its addresses and routes") {
		t.Errorf("pend0003 events %q", ev)
	}
	if !witness.heldAtEach("pend0003") {
		t.Error("pend0003: address released before its veth was deleted")
	}
	if h, _ := e.holds("fine0001"); !h || !f.hasLink(netplumb.HostVethName("fine0001", "eth0")) {
		t.Error("fine0001 touched by the reconciler")
	}
}
