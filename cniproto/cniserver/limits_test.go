package cniserver_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cockroachdb/errors"

	"github.com/coil-net/coil/cniproto"
	"github.com/coil-net/coil/cniproto/cniserver"
	"github.com/coil-net/coil/cniproto/cniserver/cniservertest"
	"github.com/coil-net/coil/internal/testutil"
)

// serveLimits starts a server with limits on a fresh socket until the test ends.
func serveLimits(t *testing.T, h cniproto.Handler, limits cniserver.Limits) (*cniserver.Server, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "coild.sock")
	srv := cniservertest.Serve(t, h, path, cniservertest.StderrLogger(slog.LevelError), cniserver.Options{Limits: limits})
	return srv, path
}

// rawPost sends raw bytes on a new connection and returns the HTTP status and body of
// the reply.
func rawPost(t *testing.T, path, op string, body []byte, extraHeaders string) (int, string) {
	t.Helper()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c.Close() }()
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	req := "POST " + op + " HTTP/1.1\r\nHost: coild\r\nContent-Type: application/json\r\nConnection: close\r\n" + extraHeaders
	if !strings.Contains(extraHeaders, "Transfer-Encoding") {
		req += "Content-Length: " + strconv.Itoa(len(body)) + "\r\n"
	}
	go func() { _, _ = c.Write(append([]byte(req+"\r\n"), body...)) }()
	b, err := io.ReadAll(c)
	if err != nil && len(b) == 0 {
		t.Fatalf("%s: %v", op, err)
	}
	_, rest, _ := strings.Cut(string(b), " ")
	code, _ := strconv.Atoi(rest[:3])
	_, reply, _ := strings.Cut(string(b), "\r\n\r\n")
	return code, reply
}

// TestRefusesInvalidRequests: coild's server is the trust boundary: a request whose
// fields break the rules the plugin applies (cniproto.Request.Validate) never reaches
// the handler, whoever sent it (issue 10).
func TestRefusesInvalidRequests(t *testing.T) {
	h := &fakeHandler{}
	path := serve(t, h)
	huge := strings.Repeat("a", cniproto.MaxRequestBody)
	for _, tc := range []struct {
		name, op, body string
		status         int
		code           string
		msg            string
	}{
		{"dot-dot container ID", cniproto.PathAdd, `{"containerID":"../../x","ifName":"eth0","netns":"/var/run/netns/p"}`, 400, `"code":4`, `invalid CNI_CONTAINERID \"../../x\"`},
		{"newline in container ID", cniproto.PathDel, `{"containerID":"a\nb","ifName":"eth0"}`, 400, `"code":4`, `invalid CNI_CONTAINERID \"a\\nb\"`},
		{"ifname with newline", cniproto.PathCheck, `{"containerID":"a","ifName":"eth\n0","netns":"/p"}`, 400, `"code":4`, "invalid CNI_IFNAME"},
		{"add without netns", cniproto.PathAdd, `{"containerID":"a","ifName":"eth0"}`, 400, `"code":4`, "CNI_NETNS is empty"},
		{"bad pod namespace", cniproto.PathAdd, `{"containerID":"a","ifName":"eth0","netns":"/p","podNamespace":"../kube-system"}`, 400, `"code":4`, "K8S_POD_NAMESPACE"},
		{"bad pool", cniproto.PathAdd, `{"containerID":"a","ifName":"eth0","netns":"/p","pool":"A"}`, 400, `"code":7`, `invalid \"pool\"`},
		{"gc with a bogus entry", cniproto.PathGC, `{"validAttachments":[{"bogus":"x"}]}`, 400, `"code":7`, "containerID is empty"},
		{"gc with an entry without ifname", cniproto.PathGC, `{"validAttachments":[{"containerID":"a","ifName":"eth0"},{"containerID":"b"}]}`, 400, `"code":7`, "entry 1"},
		{"gc with a null entry", cniproto.PathGC, `{"validAttachments":[null]}`, 400, `"code":7`, "entry 0"},
		{"data after the value", cniproto.PathDel, `{"containerID":"a","ifName":"eth0"} {"containerID":"b"}`, 400, `"code":6`, "after the JSON value"},
		{"not JSON", cniproto.PathDel, `containerID=a`, 400, `"code":6`, "could not decode"},
		{"wrong type", cniproto.PathDel, `{"containerID":5,"ifName":"eth0"}`, 400, `"code":6`, "could not decode"},
		{"body too large", cniproto.PathAdd, `{"containerID":"` + huge + `"}`, 413, `"code":6`, "coild refuses a request body of 65554 bytes on /v1/add: at most 65536 bytes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, reply := rawPost(t, path, tc.op, []byte(tc.body), "")
			if status != tc.status || !strings.Contains(reply, tc.code) || !strings.Contains(reply, tc.msg) {
				t.Errorf("got %d %s, want %d with %s and %q", status, reply, tc.status, tc.code, tc.msg)
			}
		})
	}
	// A chunked body has no Content-Length: it is cut at the limit while read.
	chunked := fmt.Sprintf("%x\r\n%s\r\n0\r\n\r\n", len(huge)+10, `{"x":"`+huge+`"}`)
	if status, reply := rawPost(t, path, cniproto.PathDel, []byte(chunked), "Transfer-Encoding: chunked\r\n"); status != 413 || !strings.Contains(reply, "coild refuses a request body of more than 65536 bytes on /v1/del") {
		t.Errorf("chunked body too large: %d %s", status, reply)
	}
	// An ordinary HTTP client that writes its whole request before reading the reply
	// reads the error too (a body of up to 1 MiB is drained, not cut).
	hc := cniservertest.HTTPClient(path)
	defer hc.CloseIdleConnections()
	resp, err := hc.Post("http://coild"+cniproto.PathAdd, "application/json", strings.NewReader(`{"podName":"`+strings.Repeat("x", 300<<10)+`"}`))
	if err != nil {
		t.Fatalf("300 KB add: %v", err)
	}
	b, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusRequestEntityTooLarge || !strings.Contains(string(b), "coild refuses a request body of 307214 bytes") {
		t.Errorf("300 KB add: %d %s", resp.StatusCode, b)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.reqs) != 0 || len(h.gcs) != 0 {
		t.Fatalf("the handler saw refused requests: %+v %+v", h.reqs, h.gcs)
	}
}

// TestSlowConnectionsAreClosed: connections that send nothing, part of their headers, or
// their headers and part of a body are closed (past the read timeouts, or sooner to make
// room at the connection limit), and STATUS and ADD are served meanwhile (issue 10:
// such connections were held for ever and used up coild's file descriptors).
func TestSlowConnectionsAreClosed(t *testing.T) {
	h := &fakeHandler{}
	limits := cniserver.Limits{MaxConns: 8, ReadHeaderTimeout: 500 * time.Millisecond, ReadTimeout: time.Second}
	srv, path := serveLimits(t, h, limits)
	partial := []string{
		"",                            // nothing at all
		"POST /v1/add HTTP/1.1\r\nHo", // half a header
		"POST /v1/add HTTP/1.1\r\nHost: coild\r\nContent-Length: 100\r\n\r\n{\"contain", // headers and part of the body
	}
	var slow []net.Conn
	for i := range 60 {
		c, err := net.Dial("unix", path)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		if _, err := c.Write([]byte(partial[i%len(partial)])); err != nil {
			t.Fatal(err)
		}
		slow = append(slow, c)
	}
	// Served at once: the oldest slow connections make room.
	c := cniproto.NewClient(path, 5*time.Second)
	if err := c.Status(context.Background()); err != nil {
		t.Fatalf("STATUS with %d slow connections open: %v", len(slow), err)
	}
	if _, err := c.Add(context.Background(), addReq("cafe0001")); err != nil {
		t.Fatalf("ADD with %d slow connections open: %v", len(slow), err)
	}
	if srv.Evicted() == 0 {
		t.Errorf("no slow connection was closed to make room")
	}
	if n := srv.OpenConns(); n > limits.MaxConns {
		t.Errorf("%d connections open, limit %d", n, limits.MaxConns)
	}
	// Every slow connection ends closed by the server (EOF or reset), none is held.
	var wg sync.WaitGroup
	closed := make([]bool, len(slow))
	for i, s := range slow {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = s.SetReadDeadline(time.Now().Add(20 * time.Second))
			_, err := io.Copy(io.Discard, s)
			closed[i] = err == nil || !errors.Is(err, os.ErrDeadlineExceeded)
		}()
	}
	wg.Wait()
	for i, ok := range closed {
		if !ok {
			t.Errorf("slow connection %d (sent %q) still open after 20s", i, partial[i%len(partial)])
		}
	}
	testutil.Eventually(t, 10*time.Second, func() bool { return srv.OpenConns() == 0 }, "the server holds no connection")
}

// gate is a handler whose Add calls wait until released.
type gate struct {
	fakeHandler
	in      chan struct{}
	release chan struct{}
}

func (g *gate) Add(ctx context.Context, r *cniproto.Request) (*cniproto.AddResult, error) {
	g.in <- struct{}{}
	select {
	case <-g.release:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return &cniproto.AddResult{PodIfName: r.IfName, Addrs: []netip.Addr{netip.MustParseAddr("10.0.0.1")}}, nil
}

// TestCallsInProgressAreNotCut: at the connection limit, a connection whose call is
// running is never closed to make room; a new call waits for one to end.
func TestCallsInProgressAreNotCut(t *testing.T) {
	g := &gate{in: make(chan struct{}, 2), release: make(chan struct{})}
	_, path := serveLimits(t, g, cniserver.Limits{MaxConns: 2})
	c := cniproto.NewClient(path, 20*time.Second)
	errs := make(chan error, 2)
	for i := range 2 {
		go func() {
			_, err := c.Add(context.Background(), addReq(fmt.Sprintf("c%d", i)))
			errs <- err
		}()
	}
	<-g.in
	<-g.in
	status := make(chan error, 1)
	go func() { status <- c.Status(context.Background()) }()
	select {
	case err := <-status:
		t.Fatalf("STATUS answered (%v) while both connections were in a call: a call was cut", err)
	case err := <-errs:
		t.Fatalf("an ADD in progress ended (%v) before it was released", err)
	case <-time.After(300 * time.Millisecond): // nothing may happen meanwhile
	}
	close(g.release)
	for range 2 {
		if err := <-errs; err != nil {
			t.Errorf("ADD: %v", err)
		}
	}
	if err := <-status; err != nil {
		t.Errorf("STATUS after the calls ended: %v", err)
	}
}
