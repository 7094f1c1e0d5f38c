package cniproto

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"syscall"
	"time"

	"github.com/cockroachdb/errors"
)

// Client calls coild over its UNIX socket. It is safe for concurrent use. It never
// retries; each call is bounded by the client's timeout and the caller's context.
type Client struct {
	path    string
	timeout time.Duration
	hc      *http.Client
}

// NewClient returns a client for the server at socketPath. Every call is bounded by
// timeout (no bound when timeout <= 0) and by the caller's context. Nothing is dialled
// until the first call.
func NewClient(socketPath string, timeout time.Duration) *Client {
	d := &net.Dialer{}
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return d.DialContext(ctx, "unix", socketPath)
		},
		// The plugin makes one call per process; don't keep idle connections around.
		DisableKeepAlives:  true,
		DisableCompression: true,
	}
	return &Client{path: socketPath, timeout: timeout, hc: &http.Client{Transport: tr}}
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
		return errors.Wrapf(err, "cniproto: encode %s request", path)
	}
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://coild"+path, bytes.NewReader(body))
	if err != nil {
		return errors.Wrapf(err, "cniproto: build %s request", path)
	}
	hreq.Header.Set("Content-Type", "application/json")
	resp, err := c.hc.Do(hreq)
	if err != nil {
		return c.transportError(ctx, path, err)
	}
	defer func() { _ = resp.Body.Close() }()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	if err != nil {
		return c.transportError(ctx, path, err)
	}
	if resp.StatusCode != http.StatusOK {
		var e Error
		if jerr := json.Unmarshal(data, &e); jerr != nil || e.Code == 0 {
			return errors.Wrapf(ErrProtocol, "%s on %s: HTTP %d %q (coil and coild versions differ?)",
				c.path, path, resp.StatusCode, truncate(data))
		}
		return &e
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return errors.Wrapf(ErrProtocol, "%s on %s: bad reply %q: %v", c.path, path, truncate(data), err)
	}
	return nil
}

// transportError classifies a failure to talk to coild.
func (c *Client) transportError(ctx context.Context, path string, err error) error {
	switch {
	case errors.Is(err, os.ErrNotExist), errors.Is(err, syscall.ENOENT):
		return errors.Wrapf(ErrUnavailable, "socket %s does not exist (is coild running?)", c.path)
	case errors.Is(err, syscall.ECONNREFUSED):
		return errors.Wrapf(ErrUnavailable, "nothing listens on socket %s (is coild running?)", c.path)
	case errors.Is(err, syscall.EACCES), errors.Is(err, syscall.EPERM):
		return errors.Wrapf(ErrPermissionDenied, "cannot open %s as uid %d (the socket is for root only)",
			c.path, os.Geteuid())
	case ctx.Err() != nil || errors.Is(err, context.DeadlineExceeded):
		return errors.Wrapf(ErrTimeout, "%s on %s (timeout %s)", c.path, path, c.timeout)
	default:
		// Connection reset or closed mid-call: coild went away.
		return errors.Wrapf(ErrUnavailable, "%s on %s: %v", c.path, path, err)
	}
}

func truncate(b []byte) string {
	const n = 200
	if len(b) > n {
		return string(b[:n]) + "..."
	}
	return string(bytes.TrimSpace(b))
}
