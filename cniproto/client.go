package cniproto

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/textproto"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// The client speaks HTTP/1.1 by hand rather than through net/http: the plugin that
// uses it is exec'd for every pod, and net/http (with the TLS and HTTP/2 code its
// package init links) roughly doubles the binary and its start-up time. One request
// per connection ("Connection: close"), a body with Content-Length; the reply is read
// by its Content-Length, as chunks (Transfer-Encoding: chunked), or to EOF.

// Client calls coild over its UNIX socket. It is safe for concurrent use. It never
// retries; each call is bounded by the client's timeout and the caller's context.
type Client struct {
	path    string
	timeout time.Duration
}

// NewClient returns a client for the server at socketPath. Every call is bounded by
// timeout (no bound when timeout <= 0) and by the caller's context. Nothing is dialled
// until the first call; every call opens its own connection and closes it.
func NewClient(socketPath string, timeout time.Duration) *Client {
	return &Client{path: socketPath, timeout: timeout}
}

// Add calls Handler.Add. Errors: *Error from coild (errors.As), or one wrapping
// ErrUnavailable, ErrPermissionDenied, ErrTimeout or ErrProtocol.
func (c *Client) Add(ctx context.Context, req *Request) (*AddResult, error) {
	var res AddResult
	if err := c.call(ctx, PathAdd, req, &res); err != nil {
		return nil, err
	}
	return &res, nil
}

// Del calls Handler.Del. Errors as for Add.
func (c *Client) Del(ctx context.Context, req *Request) error {
	return c.call(ctx, PathDel, req, nil)
}

// Check calls Handler.Check. Errors as for Add.
func (c *Client) Check(ctx context.Context, req *Request) error {
	return c.call(ctx, PathCheck, req, nil)
}

// GC calls Handler.GC. Errors as for Add.
func (c *Client) GC(ctx context.Context, req *GCRequest) error {
	return c.call(ctx, PathGC, req, nil)
}

// Status calls Handler.Status: nil when coild is ready. Errors as for Add.
func (c *Client) Status(ctx context.Context) error {
	return c.call(ctx, PathStatus, struct{}{}, nil)
}

func (c *Client) call(ctx context.Context, path string, in, out any) error {
	if c.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.timeout)
		defer cancel()
	}
	body, err := json.Marshal(in)
	if err != nil {
		return fmt.Errorf("cniproto: encode %s request: %w", path, err)
	}
	if limit := MaxBodyFor(path); int64(len(body)) > limit {
		return fmt.Errorf("%s request of %d bytes is larger than coild accepts (%d): %w", path, len(body), limit, ErrTooLarge)
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", c.path)
	if err != nil {
		return c.transportError(ctx, path, err)
	}
	defer func() { _ = conn.Close() }()
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	// Cancellation without a deadline (or before it): a deadline in the past unblocks
	// the read or write in progress.
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	if _, werr := conn.Write(appendRequest(make([]byte, 0, 160+len(body)), path, body)); werr != nil {
		return c.transportError(ctx, path, werr)
	}
	status, data, err := readResponse(bufio.NewReaderSize(conn, 4096))
	if err != nil {
		if errors.Is(err, ErrProtocol) {
			return fmt.Errorf("%s on %s: %w", c.path, path, err)
		}
		return c.transportError(ctx, path, err)
	}
	if status != 200 {
		var e Error
		if jerr := json.Unmarshal(data, &e); jerr != nil || e.Code == 0 {
			return fmt.Errorf("%s on %s: HTTP %d %q (coil and coild versions differ?): %w",
				c.path, path, status, truncate(data), ErrProtocol)
		}
		return &e
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("%s on %s: bad reply %q: %w: %w", c.path, path, truncate(data), err, ErrProtocol)
	}
	return nil
}

// appendRequest appends the request line, headers and body of a POST to path.
func appendRequest(b []byte, path string, body []byte) []byte {
	b = append(b, "POST "...)
	b = append(b, path...)
	b = append(b, " HTTP/1.1\r\nHost: coild\r\nUser-Agent: coil\r\nContent-Type: application/json\r\nContent-Length: "...)
	b = strconv.AppendInt(b, int64(len(body)), 10)
	b = append(b, "\r\nConnection: close\r\n\r\n"...)
	return append(b, body...)
}

// protoErr reports a reply that is not HTTP as the client understands it.
func protoErr(format string, args ...any) error {
	return fmt.Errorf("%s: %w", fmt.Sprintf(format, args...), ErrProtocol)
}

// readResponse reads one HTTP/1.x reply: its status code and its body (at most
// MaxBody bytes). A malformed reply is an error wrapping ErrProtocol; an I/O error
// (EOF before the end of the reply, a deadline) is returned as it is.
func readResponse(br *bufio.Reader) (int, []byte, error) {
	tp := textproto.NewReader(br)
	var status int
	var hdr textproto.MIMEHeader
	for {
		line, err := tp.ReadLine()
		if err != nil {
			return 0, nil, err
		}
		proto, rest, _ := strings.Cut(line, " ")
		code, _, _ := strings.Cut(rest, " ")
		if !strings.HasPrefix(proto, "HTTP/1.") || len(code) != 3 {
			return 0, nil, protoErr("bad status line %q", truncate([]byte(line)))
		}
		if status, err = strconv.Atoi(code); err != nil || status < 100 {
			return 0, nil, protoErr("bad status line %q", truncate([]byte(line)))
		}
		if hdr, err = tp.ReadMIMEHeader(); err != nil {
			var pe textproto.ProtocolError
			if errors.As(err, &pe) {
				return 0, nil, protoErr("bad header: %v", err)
			}
			return 0, nil, err
		}
		if status >= 200 {
			break
		}
		// 1xx (e.g. 100 Continue): a final reply follows.
	}
	if te := hdr.Get("Transfer-Encoding"); te != "" {
		if !strings.EqualFold(te, "chunked") {
			return 0, nil, protoErr("unsupported Transfer-Encoding %q", te)
		}
		body, err := readChunked(tp)
		return status, body, err
	}
	if cl := hdr.Get("Content-Length"); cl != "" {
		n, err := strconv.ParseInt(strings.TrimSpace(cl), 10, 64)
		if err != nil || n < 0 {
			return 0, nil, protoErr("bad Content-Length %q", cl)
		}
		if n > MaxBody {
			return 0, nil, protoErr("reply of %d bytes is larger than %d", n, MaxBody)
		}
		body := make([]byte, n)
		if _, err := io.ReadFull(br, body); err != nil {
			return 0, nil, err
		}
		return status, body, nil
	}
	if status == 204 || status == 304 {
		return status, nil, nil
	}
	// No length: the body ends when the server closes the connection.
	body, err := io.ReadAll(io.LimitReader(br, MaxBody+1))
	if err != nil {
		return 0, nil, err
	}
	if len(body) > MaxBody {
		return 0, nil, protoErr("reply larger than %d bytes", MaxBody)
	}
	return status, body, nil
}

// readChunked reads a chunked body and its trailer.
func readChunked(tp *textproto.Reader) ([]byte, error) {
	var body []byte
	for {
		line, err := tp.ReadLine()
		if err != nil {
			return nil, err
		}
		size, _, _ := strings.Cut(line, ";") // chunk extensions are ignored
		n, err := strconv.ParseInt(strings.TrimSpace(size), 16, 64)
		if err != nil || n < 0 {
			return nil, protoErr("bad chunk size %q", truncate([]byte(line)))
		}
		if n == 0 {
			// Trailer fields, if any, up to the empty line.
			if _, err := tp.ReadMIMEHeader(); err != nil {
				var pe textproto.ProtocolError
				if errors.As(err, &pe) {
					return nil, protoErr("bad trailer: %v", err)
				}
				return nil, err
			}
			return body, nil
		}
		if int64(len(body))+n > MaxBody {
			return nil, protoErr("reply larger than %d bytes", MaxBody)
		}
		start := len(body)
		body = append(body, make([]byte, n)...)
		if _, err := io.ReadFull(tp.R, body[start:]); err != nil {
			return nil, err
		}
		if end, err := tp.ReadLine(); err != nil {
			return nil, err
		} else if end != "" {
			return nil, protoErr("chunk not followed by CRLF")
		}
	}
}

// transportError classifies a failure to talk to coild.
func (c *Client) transportError(ctx context.Context, path string, err error) error {
	switch {
	case errors.Is(err, os.ErrNotExist), errors.Is(err, syscall.ENOENT):
		return fmt.Errorf("socket %s does not exist (is coild running?): %w", c.path, ErrUnavailable)
	case errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Errorf("nothing listens on socket %s (is coild running?): %w", c.path, ErrUnavailable)
	case errors.Is(err, syscall.EACCES), errors.Is(err, syscall.EPERM):
		return fmt.Errorf("cannot open %s as uid %d (the socket is for root only): %w",
			c.path, os.Geteuid(), ErrPermissionDenied)
	case ctx.Err() != nil, errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded):
		return fmt.Errorf("%s on %s (timeout %s): %w", c.path, path, c.timeout, ErrTimeout)
	default:
		// Connection reset or closed mid-call: coild went away.
		return fmt.Errorf("%s on %s: %w: %w", c.path, path, err, ErrUnavailable)
	}
}

func truncate(b []byte) string {
	const n = 200
	if len(b) > n {
		return string(b[:n]) + "..."
	}
	return string(bytes.TrimSpace(b))
}
