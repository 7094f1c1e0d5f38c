package daemon_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cockroachdb/errors"
	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"

	"github.com/coil-net/coil/cniproto"
	"github.com/coil-net/coil/cniproto/cniserver/cniservertest"
	"github.com/coil-net/coil/events"
	"github.com/coil-net/coil/internal/testutil"
)

// What coild refuses and why (docs/coild.md): each test here is a row of that table.

// rawPost sends body to coild's socket as the plugin would, but without the plugin's
// (or cniproto.Client's) checks, and returns the HTTP status and the CNI error.
func (e *env) rawPost(path string, body []byte) (int, cniproto.Error) {
	e.t.Helper()
	hc := cniservertest.HTTPClient(e.sock)
	hc.Timeout = 60 * time.Second
	defer hc.CloseIdleConnections()
	resp, err := hc.Post("http://coild"+path, "application/json", bytes.NewReader(body))
	if err != nil {
		e.t.Errorf("POST %s: %v", path, err) // not Fatal: called from goroutines too
		return 0, cniproto.Error{}
	}
	defer func() { _ = resp.Body.Close() }()
	b, _ := io.ReadAll(resp.Body)
	var ce cniproto.Error
	if resp.StatusCode != http.StatusOK {
		if err := json.Unmarshal(b, &ce); err != nil {
			e.t.Errorf("POST %s: %d %q", path, resp.StatusCode, b)
		}
	}
	return resp.StatusCode, ce
}

func protoCode(t *testing.T, err error) (uint, string) {
	t.Helper()
	var ce *cniproto.Error
	if !errors.As(err, &ce) {
		t.Fatalf("want a CNI error from coild, got %v", err)
	}
	return ce.Code, ce.Error()
}

// snapshot of what coild may change: the node's links, addresses and routes, and the
// node stream's events.
func (e *env) nodeState() string {
	e.t.Helper()
	ip := func(args ...string) string {
		out, err := exec.Command("ip", append([]string{"-n", e.nodeNS}, args...)...).CombinedOutput()
		if err != nil {
			e.t.Fatalf("ip %v: %v: %s", args, err, out)
		}
		return string(out)
	}
	// Link names, IPv4 addresses, routes outside the local table: what does not change
	// on its own (carrier, IPv6 duplicate address detection).
	var b strings.Builder
	for _, line := range strings.Split(ip("-o", "link", "show"), "\n") {
		if f := strings.Fields(line); len(f) > 1 {
			b.WriteString("link " + f[1] + "\n")
		}
	}
	b.WriteString(ip("-4", "-o", "addr", "show"))
	for _, fam := range []string{"-4", "-6"} {
		for _, line := range strings.Split(ip(fam, "route", "show", "table", "all"), "\n") {
			if !strings.Contains(line, "table local") {
				b.WriteString(strings.ReplaceAll(line, " linkdown", "") + "\n")
			}
		}
	}
	return b.String()
}

// nodeUplink gives the node namespace an interface and a default route of its own, as a
// real node has (a veth pair inside the namespace; 198.51.100.2/24, default via 198.51.100.1).
func (e *env) nodeUplink() {
	e.t.Helper()
	for _, args := range [][]string{
		{"link", "add", "up0", "type", "veth", "peer", "name", "up1"},
		// No IPv6 link-local addresses (their duplicate address detection changes state).
		{"link", "set", "up0", "addrgenmode", "none"}, {"link", "set", "up1", "addrgenmode", "none"},
		{"addr", "add", "198.51.100.2/24", "dev", "up0"},
		{"link", "set", "up0", "up"}, {"link", "set", "up1", "up"},
		{"route", "add", "default", "via", "198.51.100.1", "dev", "up0"},
	} {
		if out, err := exec.Command("ip", append([]string{"-n", e.nodeNS}, args...)...).CombinedOutput(); err != nil {
			e.t.Fatalf("ip %v: %v: %s", args, err, out)
		}
	}
}

// TestGCMalformedListReleasesNothing: a GC list with an entry that is not a whole, valid
// attachment fails the GC with code 7 and releases nothing, whether it comes through
// libcni, the plugin's stdin or straight to coild's socket (issue 10, item 1: such a GC
// released every pod of the node).
func TestGCMalformedListReleasesNothing(t *testing.T) {
	e := newServingEnv(t)
	ctx := context.Background()
	c, list := e.cni(), e.netList()
	ids := []string{"aaaa0001", "bbbb0002", "cccc0003"}
	e.addPods(c, list, ids...)
	before := e.nodeState()
	events0 := len(e.nodeEvents())
	expectNothingReleased := func(what string) {
		t.Helper()
		if h := e.held(); len(h) != len(ids) {
			t.Errorf("%s: %d attachments hold addresses, want %d: %v", what, len(h), len(ids), h)
		}
		if n := len(e.nodeEvents()); n != events0 {
			t.Errorf("%s: %d events appended", what, n-events0)
		}
		if ents := e.delIntents(); len(ents) != 0 {
			t.Errorf("%s: DEL intents recorded: %v", what, ents)
		}
		if after := e.nodeState(); after != before {
			t.Errorf("%s: the node changed:\nbefore:\n%s\nafter:\n%s", what, before, after)
		}
	}

	// libcni (its cache empty, so it DELs nothing itself): an entry without an ifname.
	for _, valid := range [][]types.GCAttachment{
		{{ContainerID: "aaaa0001"}},
		{{ContainerID: "aaaa0001", IfName: "eth0"}, {}},
		{{ContainerID: "../aaaa0001", IfName: "eth0"}},
	} {
		err := e.cni().GCNetworkList(ctx, list, &libcni.GCArgs{ValidAttachments: valid})
		if code, msg := cniCode(t, err); code != types.ErrInvalidNetworkConfig || !strings.Contains(msg, "is not a valid attachment") {
			t.Errorf("GC with %+v: %d %q, want 7 saying which entry is not a valid attachment", valid, code, msg)
		}
		expectNothingReleased(fmt.Sprintf("GC with %+v", valid))
	}

	// The plugin's stdin, exactly as probed.
	got := runPlugin(t, "GC", "", "", `{"cniVersion":"1.1.0","name":"coilnet","type":"coil","socket":"`+e.sock+
		`","cni.dev/valid-attachments":[{"bogus":"x"}]}`)
	if got.Code != types.ErrInvalidNetworkConfig || !strings.Contains(got.Msg, `entry 0 of "cni.dev/valid-attachments" is not a valid attachment: containerID is empty`) {
		t.Errorf("plugin GC with {\"bogus\":\"x\"}: %d %q", got.Code, got.Msg)
	}
	expectNothingReleased("plugin GC with a bogus entry")

	// Straight to coild: the server is the trust boundary.
	for _, body := range []string{
		`{"validAttachments":[{"bogus":"x"}]}`,
		`{"validAttachments":[{"containerID":"aaaa0001"}]}`,
		`{"validAttachments":[{"containerID":"aaaa0001","ifName":"eth0"},null]}`,
	} {
		status, ce := e.rawPost(cniproto.PathGC, []byte(body))
		if status != http.StatusBadRequest || ce.Code != cniproto.CodeInvalidNetworkConfig || !strings.Contains(ce.Details, "nothing was released") {
			t.Errorf("GC %s: %d %+v, want 400 with code 7", body, status, ce)
		}
		expectNothingReleased("raw GC " + body)
	}

	// A valid list still works.
	if err := e.cni().GCNetworkList(ctx, list, &libcni.GCArgs{ValidAttachments: []types.GCAttachment{{ContainerID: "aaaa0001", IfName: "eth0"}}}); err != nil {
		t.Fatalf("valid GC: %v", err)
	}
	testutil.Eventually(t, 20*time.Second, func() bool { return len(e.held()) == 1 }, "valid GC released the two others")
}

// TestAddIntoNodeNetNSRefused: ADD with CNI_NETNS naming the node's own namespace is
// refused with code 4 before anything is allocated or created, and the DEL the runtime
// sends afterwards succeeds; the node's links, addresses and routes (its default route)
// stay as they were (issue 10, item 5).
func TestAddIntoNodeNetNSRefused(t *testing.T) {
	e := newEnv(t)
	e.defaultPool()
	e.nodeUplink()
	e.startDaemon(e.config())
	ctx := context.Background()
	before := e.nodeState()
	const id = "0de0de01"
	rt := podRT(id, e.nodePath)
	rt.IfName = "eth9"

	_, err := e.cni().AddNetworkList(ctx, e.netList(), rt)
	if code, msg := cniCode(t, err); code != types.ErrInvalidEnvironmentVariables || !strings.Contains(msg, "CNI_NETNS is the node's own network namespace") {
		t.Errorf("ADD into the node namespace: %d %q, want 4 saying CNI_NETNS is the node's own namespace", code, msg)
	}
	cc := cniproto.NewClient(e.sock, 20*time.Second)
	_, err = cc.Add(ctx, &cniproto.Request{ContainerID: id, IfName: "eth9", NetNS: e.nodePath})
	if code, msg := protoCode(t, err); code != cniproto.CodeInvalidEnv || !strings.Contains(msg, e.nodePath) {
		t.Errorf("raw ADD into the node namespace: %d %q, want 4 naming the path", code, msg)
	}
	if after := e.nodeState(); after != before {
		t.Errorf("the node changed after a refused ADD:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	for _, ev := range e.nodeEvents() {
		if p, ok := ev.Payload.(*events.AddressAssigned); ok && p.ContainerID == id {
			t.Errorf("an address was assigned for the refused ADD: %+v", p)
		}
	}
	// The runtime's DEL after the failed ADD: success, and still nothing changes.
	if err := e.cni().DelNetworkList(ctx, e.netList(), rt); err != nil {
		t.Errorf("DEL after the refused ADD: %v", err)
	}
	if err := cc.Del(ctx, &cniproto.Request{ContainerID: id, IfName: "eth9", NetNS: e.nodePath}); err != nil {
		t.Errorf("raw DEL: %v", err)
	}
	e.waitDelsFinished()
	if after := e.nodeState(); after != before {
		t.Errorf("the node changed after DEL:\nbefore:\n%s\nafter:\n%s", before, after)
	}
}

// TestAddIntoCoildOwnNetNSRefused: coild resolves "/proc/self/ns/net" to its own
// namespace (the node's): refused too. coild runs as a process inside a throwaway node
// namespace, so the path names that namespace and nothing else.
func TestAddIntoCoildOwnNetNSRefused(t *testing.T) {
	e := newEnv(t)
	e.defaultPool()
	e.nodeUplink()
	e.startCoild("")
	e.waitReady()
	before := e.nodeState()
	ctx := context.Background()
	cc := cniproto.NewClient(e.sock, 20*time.Second)
	for i, path := range []string{"/proc/self/ns/net", "/proc/thread-self/ns/net", "/proc/self/../self/ns/net"} {
		req := &cniproto.Request{ContainerID: fmt.Sprintf("5e1f%04d", i), IfName: "eth9", NetNS: path, PodNamespace: "default", PodName: "x"}
		_, err := cc.Add(ctx, req)
		if code, msg := protoCode(t, err); code != cniproto.CodeInvalidEnv || !strings.Contains(msg, "CNI_NETNS is the node's own network namespace") {
			t.Errorf("ADD with CNI_NETNS=%s: %d %q, want 4", path, code, msg)
		}
		if err := cc.Del(ctx, req); err != nil {
			t.Errorf("DEL with CNI_NETNS=%s: %v", path, err)
		}
	}
	e.waitDelsFinished()
	if after := e.nodeState(); after != before {
		t.Errorf("the node changed:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	if h := e.held(); len(h) != 0 {
		t.Errorf("addresses held: %v", h)
	}
}

// TestCoildRefusesInvalidFields: coild checks every field of a request with the rules
// the plugin applies (cniproto.Request.Validate), so a request sent straight to its
// socket cannot smuggle in what the plugin refuses (issue 10, item 6).
func TestCoildRefusesInvalidFields(t *testing.T) {
	e := newServingEnv(t)
	ctx := context.Background()
	_, podPath := e.pod("inv")
	before := e.nodeState()
	cc := cniproto.NewClient(e.sock, 20*time.Second)
	good := cniproto.Request{ContainerID: "600d0001", IfName: "eth0", NetNS: podPath, PodNamespace: "default", PodName: "web"}
	for _, tc := range []struct {
		name string
		op   string
		edit func(*cniproto.Request)
		code uint
		msg  string
	}{
		{"dot-dot container ID", "add", func(r *cniproto.Request) { r.ContainerID = "../../etc/x" }, 4, `invalid CNI_CONTAINERID "../../etc/x"`},
		{"newline in container ID", "add", func(r *cniproto.Request) { r.ContainerID = "abc\neth0\nCNI DEL" }, 4, "invalid CNI_CONTAINERID"},
		{"newline in container ID on DEL", "del", func(r *cniproto.Request) { r.ContainerID = "abc\neth0" }, 4, "invalid CNI_CONTAINERID"},
		{"long container ID", "add", func(r *cniproto.Request) { r.ContainerID = strings.Repeat("a", 300) }, 4, "longer than 256 bytes"},
		{"ifname with a slash", "add", func(r *cniproto.Request) { r.IfName = "../eth0" }, 4, "invalid CNI_IFNAME"},
		{"long ifname", "check", func(r *cniproto.Request) { r.IfName = "eth0123456789abc" }, 4, "invalid CNI_IFNAME"},
		{"relative netns", "add", func(r *cniproto.Request) { r.NetNS = "var/run/netns/x" }, 4, "invalid CNI_NETNS"},
		{"netns with a newline", "add", func(r *cniproto.Request) { r.NetNS = podPath + "\n" }, 4, "invalid CNI_NETNS"},
		{"pod namespace path", "add", func(r *cniproto.Request) { r.PodNamespace = "../kube-system" }, 4, "K8S_POD_NAMESPACE"},
		{"pod name with newline", "add", func(r *cniproto.Request) { r.PodName = "web\nx" }, 4, "K8S_POD_NAME"},
		{"long pod UID", "add", func(r *cniproto.Request) { r.PodUID = strings.Repeat("f", 200) }, 4, "K8S_POD_UID"},
		{"bad pool", "add", func(r *cniproto.Request) { r.Pool = "Default" }, 7, `invalid "pool"`},
		{"mtu below IPv4's minimum", "add", func(r *cniproto.Request) { r.MTU = 100 }, 7, `invalid "mtu" 100: below 576`},
		{"mtu above a link's", "check", func(r *cniproto.Request) { r.MTU = 1 << 20 }, 7, `invalid "mtu" 1048576: above 65535`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := good
			tc.edit(&r)
			var err error
			switch tc.op {
			case "add":
				_, err = cc.Add(ctx, &r)
			case "del":
				err = cc.Del(ctx, &r)
			case "check":
				err = cc.Check(ctx, &r)
			}
			if code, msg := protoCode(t, err); code != tc.code || !strings.Contains(msg, tc.msg) {
				t.Errorf("got %d %q, want %d with %q", code, msg, tc.code, tc.msg)
			}
		})
	}
	if after := e.nodeState(); after != before {
		t.Errorf("the node changed:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	for _, ev := range e.nodeEvents() {
		if _, ok := ev.Payload.(*events.NodeRegistered); !ok {
			t.Errorf("an event was appended for a refused request: %s %+v", ev.Payload.EventType(), ev.Payload)
		}
	}
	if ents := e.delIntents(); len(ents) != 0 {
		t.Errorf("DEL intents recorded for refused requests: %v", ents)
	}
	// The good request itself is served.
	if _, err := cc.Add(ctx, &good); err != nil {
		t.Fatalf("valid ADD: %v", err)
	}
}

// TestHugeAddsDoNotFailOthers: huge ADD requests sent straight to coild at the same time
// as normal ones are refused on their own, early and with a clear error, and every normal
// ADD succeeds (issue 10, item 6: five huge ADDs failed 18 of 20 normal ones with "batch
// too large").
func TestHugeAddsDoNotFailOthers(t *testing.T) {
	e := newServingEnv(t)
	ctx := context.Background()
	const normal, huge = 20, 5
	paths := make([]string, normal+huge)
	for i := range paths {
		_, paths[i] = e.pod(fmt.Sprintf("h%02d", i))
	}
	cc := cniproto.NewClient(e.sock, 60*time.Second)
	errs := make([]error, normal)
	statuses := make([]int, huge)
	hugeErrs := make([]cniproto.Error, huge)
	testutil.Burst(normal+huge, func(i int) {
		id := fmt.Sprintf("a%07d", i)
		if i < normal {
			_, errs[i] = cc.Add(ctx, &cniproto.Request{ContainerID: id, IfName: "eth0", NetNS: paths[i], PodNamespace: "default", PodName: "web-" + strconv.Itoa(i)})
			return
		}
		body, _ := json.Marshal(cniproto.Request{ContainerID: id, IfName: "eth0", NetNS: paths[i], PodNamespace: "default",
			PodName: strings.Repeat("x", 300<<10)})
		statuses[i-normal], hugeErrs[i-normal] = e.rawPost(cniproto.PathAdd, body)
	})
	for i, err := range errs {
		if err != nil {
			t.Errorf("normal ADD %d: %v", i, err)
		}
	}
	for i := range huge {
		if statuses[i] != http.StatusRequestEntityTooLarge || hugeErrs[i].Code != cniproto.CodeDecodingFailure ||
			!strings.Contains(hugeErrs[i].Msg, "coild refuses a request body of") {
			t.Errorf("huge ADD %d: %d %+v, want 413 with code 6 saying the body is too large", i, statuses[i], hugeErrs[i])
		}
	}
	if h := e.held(); len(h) != normal {
		t.Errorf("%d attachments hold addresses, want %d", len(h), normal)
	}
}

// startCoildNoFile runs coild in the node namespace with an open-file limit of nofile
// (prlimit), stopped at the end of the test.
func (e *env) startCoildNoFile(nofile int) *testutil.Proc {
	e.t.Helper()
	testutil.RequireCommand(e.t, "prlimit")
	n := strconv.Itoa(nofile)
	args := []string{"prlimit", "--nofile=" + n + ":" + n, coildBin(e.t),
		"--node", nodeName, "--etcd-endpoints", e.etcd.Endpoints()[0], "--socket", e.sock, "--state-dir", e.stateDir,
		"--metrics-addr", "", "--lease-ttl", "3s", "--reconcile-interval", "200ms", "--log-level", "info"}
	return e.startIn(e.nodeNS, "coild", args...)
}

// TestSlowConnectionsDoNotStarveCoild: connections that send part of their headers, or
// their headers and part of a body, and then nothing, cannot use up coild's file
// descriptors: STATUS and ADD are still served while hundreds are open, and coild closes
// them all (issue 10, item 6: they were held for ever until STATUS and ADD timed out).
func TestSlowConnectionsDoNotStarveCoild(t *testing.T) {
	e := newEnv(t)
	e.defaultPool()
	e.startCoildNoFile(256)
	e.waitReady()
	partial := []string{
		"POST /v1/add HTTP/1.1\r\nHost: coi",
		"POST /v1/add HTTP/1.1\r\nHost: coild\r\nContent-Length: 200\r\n\r\n{\"containerID\":\"",
	}
	const n = 400 // more than coild's 256 file descriptors
	slow := make([]net.Conn, 0, n)
	for i := range n {
		c, err := net.Dial("unix", e.sock)
		if err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		t.Cleanup(func() { _ = c.Close() })
		_, _ = c.Write([]byte(partial[i%2]))
		slow = append(slow, c)
	}
	status := cniproto.NewClient(e.sock, 5*time.Second)
	if err := status.Status(context.Background()); err != nil {
		t.Fatalf("STATUS with %d slow connections open: %v", n, err)
	}
	_, podPath := e.pod("slow")
	res, err := e.cni().AddNetworkList(context.Background(), e.netList(), podRT("51c0c0de", podPath))
	if err != nil {
		t.Fatalf("ADD with %d slow connections open: %v", n, err)
	}
	if addrs := addrsOf(t, res); len(addrs) != 2 {
		t.Errorf("ADD gave %v", addrs)
	}
	// Every slow connection is closed by coild (the oldest at once to make room, the
	// rest by the read timeouts).
	var wg sync.WaitGroup
	var mu sync.Mutex
	open := 0
	for _, c := range slow {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
			if _, err := io.Copy(io.Discard, c); errors.Is(err, os.ErrDeadlineExceeded) {
				mu.Lock()
				open++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if open > 0 {
		t.Errorf("%d of %d slow connections still open after 30s", open, n)
	}
}
