package cniproto_test

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	"go.uber.org/goleak"

	"github.com/coil-net/coil/cniproto"
)

// The round trip against the real server is tested in package cniserver; these tests
// hold the hand-written HTTP client to canned replies.

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// rawServer answers each connection with the next canned reply (raw bytes, then
// close) and sends the parsed request on the returned channel.
func rawServer(t *testing.T, replies ...string) (string, <-chan *http.Request) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "raw.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	reqs := make(chan *http.Request, len(replies))
	done := make(chan struct{})
	go func() {
		defer close(done)
		for _, reply := range replies {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			r, err := http.ReadRequest(bufio.NewReader(c))
			if err == nil {
				body, _ := io.ReadAll(r.Body)
				r.Body = io.NopCloser(strings.NewReader(string(body)))
				reqs <- r
			}
			_, _ = io.WriteString(c, reply)
			_ = c.Close()
		}
	}()
	t.Cleanup(func() { _ = ln.Close(); <-done })
	return path, reqs
}

func TestRequestIsPlainHTTP(t *testing.T) {
	path, reqs := rawServer(t, "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n{}\n")
	err := cniproto.NewClient(path, 5*time.Second).Del(context.Background(),
		&cniproto.Request{ContainerID: "c1", IfName: "eth0"})
	if err != nil {
		t.Fatal(err)
	}
	r := <-reqs
	body, _ := io.ReadAll(r.Body)
	if r.Method != http.MethodPost || r.URL.Path != cniproto.PathDel || r.Proto != "HTTP/1.1" || r.Host != "coild" ||
		r.Header.Get("Content-Type") != "application/json" || !r.Close || r.ContentLength != int64(len(body)) ||
		string(body) != `{"containerID":"c1","ifName":"eth0"}` {
		t.Fatalf("request %s %s %s host %q close %v length %d headers %v body %q",
			r.Method, r.URL, r.Proto, r.Host, r.Close, r.ContentLength, r.Header, body)
	}
}

func TestReplyFraming(t *testing.T) {
	const res = `{"hostVeth":"coil1","podIfName":"eth0","addrs":["10.1.0.7"],"gateway4":"169.254.1.1"}`
	for name, reply := range map[string]string{
		"content-length": "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: " +
			itoa(len(res)) + "\r\n\r\n" + res,
		"chunked": "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" +
			"10;ext=1\r\n" + res[:16] + "\r\n" + hex(len(res)-16) + "\r\n" + res[16:] + "\r\n0\r\nX-Trailer: y\r\n\r\n",
		"to EOF":   "HTTP/1.0 200 OK\r\n\r\n" + res,
		"continue": "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: " + itoa(len(res)) + "\r\n\r\n" + res,
	} {
		t.Run(name, func(t *testing.T) {
			path, _ := rawServer(t, reply)
			got, err := cniproto.NewClient(path, 5*time.Second).Add(context.Background(), &cniproto.Request{})
			if err != nil {
				t.Fatal(err)
			}
			if got.HostVeth != "coil1" || len(got.Addrs) != 1 || got.Addrs[0].String() != "10.1.0.7" ||
				got.Gateway4.String() != "169.254.1.1" {
				t.Fatalf("result %+v", got)
			}
		})
	}
}

func TestErrorReply(t *testing.T) {
	body := `{"code":11,"msg":"pool \"blue\" is exhausted","details":"` + strings.Repeat("x", 5000) + `"}`
	path, _ := rawServer(t, "HTTP/1.1 500 Internal Server Error\r\nContent-Length: "+itoa(len(body))+"\r\n\r\n"+body)
	_, err := cniproto.NewClient(path, 5*time.Second).Add(context.Background(), &cniproto.Request{})
	var e *cniproto.Error
	if !errors.As(err, &e) || e.Code != cniproto.CodePoolExhausted || len(e.Details) != 5000 {
		t.Fatalf("want *Error code 11 with 5000 bytes of details, got %v", err)
	}
}

func TestBadReplies(t *testing.T) {
	for name, c := range map[string]struct {
		reply string
		want  error
	}{
		"not HTTP":          {"SSH-2.0-OpenSSH\r\n\r\n", cniproto.ErrProtocol},
		"bad status":        {"HTTP/1.1 2x0 OK\r\n\r\n", cniproto.ErrProtocol},
		"bad header":        {"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n{}", cniproto.ErrProtocol},
		"bad length":        {"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", cniproto.ErrProtocol},
		"huge length":       {"HTTP/1.1 200 OK\r\nContent-Length: 999999999\r\n\r\n", cniproto.ErrProtocol},
		"bad chunk":         {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", cniproto.ErrProtocol},
		"gzip":              {"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", cniproto.ErrProtocol},
		"bad JSON":          {"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n{", cniproto.ErrProtocol},
		"500 without Error": {"HTTP/1.1 500 Oops\r\nContent-Length: 4\r\n\r\noops", cniproto.ErrProtocol},
		"short body":        {"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n{}", cniproto.ErrUnavailable},
		"cut in headers":    {"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n", cniproto.ErrUnavailable},
		"closed at once":    {"", cniproto.ErrUnavailable},
	} {
		t.Run(name, func(t *testing.T) {
			path, _ := rawServer(t, c.reply)
			_, err := cniproto.NewClient(path, 5*time.Second).Add(context.Background(), &cniproto.Request{})
			if !errors.Is(err, c.want) {
				t.Fatalf("want %v, got %v", c.want, err)
			}
		})
	}
}

func TestCancel(t *testing.T) {
	// A server that accepts and never answers: the caller's cancellation ends the call.
	path := filepath.Join(t.TempDir(), "mute.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = ln.Close() }()
	accepted := make(chan net.Conn, 1)
	go func() {
		defer close(accepted)
		if c, err := ln.Accept(); err == nil {
			accepted <- c
		}
	}()
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- cniproto.NewClient(path, time.Minute).Status(ctx) }()
	c, ok := <-accepted
	if !ok {
		t.Fatal("accept failed")
	}
	defer func() { _ = c.Close() }()
	cancel()
	if err := <-errc; !errors.Is(err, cniproto.ErrTimeout) {
		t.Fatalf("cancelled call: want ErrTimeout, got %v", err)
	}
}

func itoa(n int) string { return strconv.Itoa(n) }
func hex(n int) string  { return strconv.FormatInt(int64(n), 16) }

func TestCodesMatchCNI(t *testing.T) {
	for _, c := range []struct{ ours, cni uint }{
		{cniproto.CodeIncompatibleVersion, types.ErrIncompatibleCNIVersion},
		{cniproto.CodeUnsupportedField, types.ErrUnsupportedField},
		{cniproto.CodeUnknownContainer, types.ErrUnknownContainer},
		{cniproto.CodeInvalidEnv, types.ErrInvalidEnvironmentVariables},
		{cniproto.CodeIOFailure, types.ErrIOFailure},
		{cniproto.CodeDecodingFailure, types.ErrDecodingFailure},
		{cniproto.CodeInvalidNetworkConfig, types.ErrInvalidNetworkConfig},
		{cniproto.CodeTryAgainLater, types.ErrTryAgainLater},
		{cniproto.CodePluginNotAvailable, types.ErrPluginNotAvailable},
		{cniproto.CodeLimitedConnectivity, types.ErrLimitedConnectivity},
		{cniproto.CodeInternal, types.ErrInternal},
	} {
		if c.ours != c.cni {
			t.Errorf("code %d != CNI %d", c.ours, c.cni)
		}
	}
}

func TestProtocolMismatch(t *testing.T) {
	// A server that speaks no v1 (e.g. a future coild with only /v2) answers 404.
	path := filepath.Join(t.TempDir(), "other.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: http.NotFoundHandler(), ReadHeaderTimeout: time.Second}
	done := make(chan struct{})
	go func() { defer close(done); _ = hs.Serve(ln) }()
	defer func() { _ = hs.Close(); <-done }()
	err = cniproto.NewClient(path, time.Second).Status(context.Background())
	if !errors.Is(err, cniproto.ErrProtocol) {
		t.Fatalf("want ErrProtocol, got %v", err)
	}
}

// TestClientRefusesTooLarge: a request over coild's limit is not sent at all (coild would
// refuse it): ErrTooLarge, and nothing is dialled (the socket does not even exist here).
func TestClientRefusesTooLarge(t *testing.T) {
	c := cniproto.NewClient(filepath.Join(t.TempDir(), "none.sock"), time.Second)
	_, err := c.Add(context.Background(), &cniproto.Request{ContainerID: "c", IfName: "eth0", NetNS: "/p",
		PodName: strings.Repeat("x", cniproto.MaxRequestBody)})
	if !errors.Is(err, cniproto.ErrTooLarge) || !strings.Contains(err.Error(), "larger than coild accepts (65536)") {
		t.Fatalf("got %v, want ErrTooLarge", err)
	}
	list := make([]cniproto.Attachment, 200000)
	for i := range list {
		list[i] = cniproto.Attachment{ContainerID: strings.Repeat("f", 64), IfName: "eth0"}
	}
	if err := c.GC(context.Background(), &cniproto.GCRequest{ValidAttachments: list}); !errors.Is(err, cniproto.ErrTooLarge) {
		t.Fatalf("GC of %d attachments: got %v, want ErrTooLarge", len(list), err)
	}
}
