// Package cniservertest runs a cniserver.Server for a test: the set-up and the checked
// shutdown the server's own tests, the plugin's integration test and others share.
package cniservertest

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"os"
	"testing"

	"github.com/cockroachdb/errors"

	"github.com/coil-net/coil/cniproto"
	"github.com/coil-net/coil/cniproto/cniserver"
)

// StderrLogger logs to stderr from level up.
func StderrLogger(level slog.Level) *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
}

// Serve creates a server for h on socketPath (cniserver.NewWithOptions) and serves it
// until the test ends. Then it stops the server and fails the test if Serve returned an
// error or left the socket behind.
func Serve(t testing.TB, h cniproto.Handler, socketPath string, logger *slog.Logger, opt cniserver.Options) *cniserver.Server {
	t.Helper()
	srv, err := cniserver.NewWithOptions(h, socketPath, logger, opt)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
		if _, err := os.Lstat(socketPath); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("socket %s still there after Serve returned (err %v)", socketPath, err)
		}
	})
	return srv
}

// HTTPClient is a plain HTTP client of the server on socketPath (as curl --unix-socket
// is; any host name reaches it), without keep-alives: each request opens a connection
// of its own. The caller closes its idle connections.
func HTTPClient(socketPath string) *http.Client {
	return &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socketPath)
		},
		DisableKeepAlives: true,
	}}
}
