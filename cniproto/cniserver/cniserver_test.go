package cniserver_test

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cockroachdb/errors"
	"go.uber.org/goleak"

	"github.com/coil-net/coil/cniproto"
	"github.com/coil-net/coil/cniproto/cniserver"
	"github.com/coil-net/coil/cniproto/cniserver/cniservertest"
	"github.com/coil-net/coil/internal/testutil"
)

func TestMain(m *testing.M) {
	if os.Getenv(peerClientEnv) != "" {
		os.Exit(peerClient()) // a copy of this binary, run as another uid by TestPeerCredentials
	}
	goleak.VerifyTestMain(m)
}

// fakeHandler records calls and returns canned answers.
type fakeHandler struct {
	mu      sync.Mutex
	reqs    []cniproto.Request
	gcs     []cniproto.GCRequest
	addErr  error
	delErr  error
	status  error
	block   bool // Add waits for its context to end (or for release, when set)
	started chan struct{}
	release chan struct{}
}

func (f *fakeHandler) Add(ctx context.Context, r *cniproto.Request) (*cniproto.AddResult, error) {
	f.mu.Lock()
	f.reqs = append(f.reqs, *r)
	err, block := f.addErr, f.block
	f.mu.Unlock()
	if block {
		close(f.started)
		if f.release != nil {
			<-f.release
			return &cniproto.AddResult{PodIfName: "eth0", Addrs: []netip.Addr{netip.MustParseAddr("10.1.0.9")}}, nil
		}
		<-ctx.Done()
		return nil, ctx.Err()
	}
	if err != nil {
		return nil, err
	}
	return &cniproto.AddResult{
		HostVeth: "coil0123", HostMAC: "02:00:00:00:00:01", PodIfName: r.IfName, PodMAC: "02:00:00:00:00:02",
		Addrs:    []netip.Addr{netip.MustParseAddr("10.1.0.5"), netip.MustParseAddr("fd00::5")},
		Gateway4: netip.MustParseAddr("169.254.1.1"), Gateway6: netip.MustParseAddr("fe80::1"),
	}, nil
}

func (f *fakeHandler) Del(_ context.Context, r *cniproto.Request) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reqs = append(f.reqs, *r)
	return f.delErr
}

func (f *fakeHandler) Check(_ context.Context, r *cniproto.Request) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reqs = append(f.reqs, *r)
	return nil
}

func (f *fakeHandler) GC(_ context.Context, r *cniproto.GCRequest) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.gcs = append(f.gcs, *r)
	return nil
}

func (f *fakeHandler) Status(context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.status
}

// addReq is a valid add request for containerID.
func addReq(containerID string) *cniproto.Request {
	return &cniproto.Request{ContainerID: containerID, IfName: "eth0", NetNS: "/var/run/netns/" + containerID}
}

// serve starts a server on a fresh socket and stops it when the test ends.
func serve(t *testing.T, h cniproto.Handler) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "coild.sock")
	cniservertest.Serve(t, h, path, cniservertest.StderrLogger(slog.LevelWarn), cniserver.Options{})
	return path
}

func TestRoundTrip(t *testing.T) {
	h := &fakeHandler{}
	c := cniproto.NewClient(serve(t, h), 10*time.Second)
	ctx := context.Background()
	req := &cniproto.Request{ContainerID: "c1", IfName: "eth0", NetNS: "/var/run/netns/x", Pool: "blue",
		PodNamespace: "ns", PodName: "p", PodUID: "u"}
	res, err := c.Add(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if res.HostVeth != "coil0123" || res.PodIfName != "eth0" || len(res.Addrs) != 2 ||
		res.Addrs[0] != netip.MustParseAddr("10.1.0.5") || res.Gateway6 != netip.MustParseAddr("fe80::1") {
		t.Fatalf("add result %+v", res)
	}
	prev := []netip.Addr{netip.MustParseAddr("10.1.0.5")}
	if err := c.Check(ctx, &cniproto.Request{ContainerID: "c1", IfName: "eth0", NetNS: "/var/run/netns/x", PrevAddrs: prev}); err != nil {
		t.Fatal(err)
	}
	if err := c.Del(ctx, &cniproto.Request{ContainerID: "c1", IfName: "eth0"}); err != nil {
		t.Fatal(err)
	}
	gc := &cniproto.GCRequest{ValidAttachments: []cniproto.Attachment{{ContainerID: "c2", IfName: "eth0"}}}
	if err := c.GC(ctx, gc); err != nil {
		t.Fatal(err)
	}
	if err := c.GC(ctx, &cniproto.GCRequest{ValidAttachments: []cniproto.Attachment{}}); err != nil {
		t.Fatal(err)
	}
	if err := c.Status(ctx); err != nil {
		t.Fatal(err)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.reqs) != 3 || h.reqs[0].Pool != "blue" || h.reqs[0].PodUID != "u" || h.reqs[0].NetNS != "/var/run/netns/x" ||
		len(h.reqs[1].PrevAddrs) != 1 || h.reqs[1].PrevAddrs[0] != prev[0] {
		t.Fatalf("handler saw %+v", h.reqs)
	}
	if len(h.gcs) != 2 || h.gcs[0].ValidAttachments[0].ContainerID != "c2" ||
		h.gcs[1].ValidAttachments == nil || len(h.gcs[1].ValidAttachments) != 0 {
		t.Fatalf("gc saw %+v (an empty list must stay an empty list, not nil)", h.gcs)
	}
}

func TestErrorsCarryCodes(t *testing.T) {
	h := &fakeHandler{addErr: errors.Wrap(cniproto.PoolExhausted("blue"), "allocate"),
		delErr: errors.New("etcd is on fire"), status: cniproto.NotReady("replaying the log")}
	c := cniproto.NewClient(serve(t, h), 10*time.Second)
	ctx := context.Background()

	_, err := c.Add(ctx, addReq("c1"))
	var e *cniproto.Error
	if !errors.As(err, &e) || e.Code != cniproto.CodePoolExhausted || e.Msg != `pool "blue" is exhausted` {
		t.Fatalf("add: %#v", err)
	}
	err = c.Del(ctx, &cniproto.Request{ContainerID: "c1", IfName: "eth0"})
	if !errors.As(err, &e) || e.Code != cniproto.CodeInternal || e.Details != "etcd is on fire" {
		t.Fatalf("del: %#v", err)
	}
	err = c.Status(ctx)
	if !errors.As(err, &e) || e.Code != cniproto.CodeNotReady || e.Details != "replaying the log" {
		t.Fatalf("status: %#v", err)
	}
}

func TestUnavailable(t *testing.T) {
	dir := t.TempDir()
	// No file at all.
	err := cniproto.NewClient(filepath.Join(dir, "none.sock"), time.Second).Status(context.Background())
	if !errors.Is(err, cniproto.ErrUnavailable) {
		t.Fatalf("missing socket: %v", err)
	}
	// A stale socket file nobody listens on.
	stale := filepath.Join(dir, "stale.sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: stale, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	_ = ln.Close()
	_, err = cniproto.NewClient(stale, time.Second).Add(context.Background(), &cniproto.Request{})
	if !errors.Is(err, cniproto.ErrUnavailable) {
		t.Fatalf("stale socket: %v", err)
	}
	// New removes the stale socket and serves.
	srv, err := cniserver.New(&fakeHandler{}, stale, nil)
	if err != nil {
		t.Fatalf("New over a stale socket: %v", err)
	}
	defer srv.Close()
	fi, err := os.Lstat(stale)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket mode %s, want socket 0600", fi.Mode())
	}
	srv.Close()
	if _, err := os.Lstat(stale); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("Close left the socket: %v", err)
	}
}

func TestNewRefuses(t *testing.T) {
	path := serve(t, &fakeHandler{})
	if _, err := cniserver.New(&fakeHandler{}, path, nil); !errors.Is(err, cniserver.ErrSocketInUse) {
		t.Fatalf("second server on a live socket: %v", err)
	}
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, []byte("keep me"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := cniserver.New(&fakeHandler{}, file, nil); !errors.Is(err, cniserver.ErrNotSocket) {
		t.Fatalf("regular file: %v", err)
	}
	if b, err := os.ReadFile(file); err != nil || string(b) != "keep me" {
		t.Fatalf("regular file touched: %q %v", b, err)
	}
	// The live server still answers.
	if err := cniproto.NewClient(path, time.Second).Status(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func TestTimeout(t *testing.T) {
	h := &fakeHandler{block: true, started: make(chan struct{})}
	c := cniproto.NewClient(serve(t, h), 200*time.Millisecond)
	_, err := c.Add(context.Background(), addReq("c1"))
	if !errors.Is(err, cniproto.ErrTimeout) {
		t.Fatalf("want ErrTimeout, got %v", err)
	}
	<-h.started
}

func TestCloseCancelsCalls(t *testing.T) {
	h := &fakeHandler{block: true, started: make(chan struct{})}
	path := filepath.Join(t.TempDir(), "coild.sock")
	srv, err := cniserver.New(h, path, nil)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(context.Background()) }()
	callErr := make(chan error, 1)
	go func() {
		_, err := cniproto.NewClient(path, time.Minute).Add(context.Background(), addReq("c"))
		callErr <- err
	}()
	<-h.started
	srv.Close()
	if err := <-done; err != nil {
		t.Fatalf("Serve: %v", err)
	}
	if err := <-callErr; !errors.Is(err, cniproto.ErrUnavailable) {
		t.Fatalf("call cut by Close: want ErrUnavailable, got %v", err)
	}
	if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("socket left: %v", err)
	}
}

func TestServeShutdownIsGraceful(t *testing.T) {
	h := &fakeHandler{block: true, started: make(chan struct{}), release: make(chan struct{})}
	path := filepath.Join(t.TempDir(), "coild.sock")
	srv, err := cniserver.New(h, path, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()
	callErr := make(chan error, 1)
	go func() {
		_, err := cniproto.NewClient(path, time.Minute).Add(context.Background(), addReq("c"))
		callErr <- err
	}()
	<-h.started
	cancel()
	// New calls are refused once shutdown began (the socket is closed for accepting).
	testutil.Eventually(t, 10*time.Second, func() bool {
		return errors.Is(cniproto.NewClient(path, time.Second).Status(context.Background()), cniproto.ErrUnavailable)
	}, "new calls still accepted after shutdown began")
	close(h.release)
	if err := <-callErr; err != nil {
		t.Fatalf("in-flight call cut by a graceful shutdown: %v", err)
	}
	if err := <-done; err != nil {
		t.Fatalf("Serve: %v", err)
	}
	if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("socket left: %v", err)
	}
}

// TestPlainHTTPClient: the server is ordinary HTTP (curl --unix-socket works), and
// every reply has a Content-Length, even one larger than net/http's buffer, so it is
// never chunked.
func TestPlainHTTPClient(t *testing.T) {
	long := strings.Repeat("d", 10000)
	path := serve(t, &fakeHandler{delErr: errors.New(long)})
	hc := cniservertest.HTTPClient(path)
	defer hc.CloseIdleConnections()
	type reply struct {
		status int
		length int64
		te     []string
		body   string
	}
	post := func(p, body string) reply {
		t.Helper()
		resp, err := hc.Post("http://coild"+p, "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = resp.Body.Close() }()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return reply{resp.StatusCode, resp.ContentLength, resp.TransferEncoding, string(b)}
	}
	r := post(cniproto.PathStatus, "{}")
	if r.status != http.StatusOK || r.body != "{}\n" || r.length != 3 || r.te != nil {
		t.Fatalf("status: %+v", r)
	}
	r = post(cniproto.PathDel, `{"containerID":"c","ifName":"eth0"}`)
	if r.status != http.StatusInternalServerError || r.length != int64(len(r.body)) || r.te != nil || !strings.Contains(r.body, long) {
		t.Fatalf("del: %d length %d te %v body of %d bytes", r.status, r.length, r.te, len(r.body))
	}
	r = post(cniproto.PathAdd, `{"containerID":`)
	if r.status != http.StatusBadRequest || !strings.Contains(r.body, `"code":6`) {
		t.Fatalf("bad add: %+v", r)
	}
	// The hand-written client reads the same long error.
	err := cniproto.NewClient(path, 10*time.Second).Del(context.Background(), &cniproto.Request{ContainerID: "c", IfName: "eth0"})
	var e *cniproto.Error
	if !errors.As(err, &e) || e.Code != cniproto.CodeInternal || e.Details != long {
		t.Fatalf("client: %.200v", err)
	}
}
