package etcdtest

import (
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"

	"github.com/coil-net/coil/internal/etcdembed"
)

// Option changes how Start runs etcd.
type Option func(*options)

type options struct {
	tls     *TLSFiles
	certCA  bool // WithClientCertAuth
	tcp     bool
	fsync   bool
	quota   int64
	timings bool
}

// WithTCP serves clients on a free loopback TCP port instead of a unix socket.
func WithTCP() Option { return func(o *options) { o.tcp = true } }

// Transport is a way Start serves clients, for tests that cover each.
type Transport struct {
	Name string
	Opts []Option
}

// Transports are "unix" (a socket, the default) and "tcp" (WithTCP).
func Transports() []Transport {
	return []Transport{{"unix", nil}, {"tcp", []Option{WithTCP()}}}
}

// TLSFiles are a server certificate and key, and optionally a CA whose client
// certificates the server requires.
type TLSFiles struct {
	CertFile, KeyFile, ClientCAFile string
}

// WithTLS serves clients over TLS on a loopback TCP port (https://127.0.0.1:PORT) with
// these files. Cluster.Client does not speak TLS: dial such a cluster with
// etcdclient.New and the matching CA.
func WithTLS(f TLSFiles) Option { return func(o *options) { o.tls = &f; o.tcp = true } }

// WithFsync turns fsync on (it is off by default in tests: faster, and a test never
// survives a machine crash anyway). Benchmarks of write throughput want it on.
func WithFsync() Option { return func(o *options) { o.fsync = true } }

// WithQuota sets etcd's backend quota in bytes.
func WithQuota(bytes int64) Option { return func(o *options) { o.quota = bytes } }

// WithDefaultTimings keeps etcd's production raft timings (TickMs 100, ElectionMs 1000)
// instead of the fast test timings (10/100).
func WithDefaultTimings() Option { return func(o *options) { o.timings = true } }

// Cluster is a running (or stopped) single-member etcd.
type Cluster struct {
	t       testing.TB
	cfg     etcdembed.Config
	sockDir string

	ca *CA // WithClientCertAuth

	mu      sync.Mutex
	etcd    *embed.Etcd
	clients []*clientv3.Client
}

// Start starts etcd with data in t.TempDir() and stops it when the test ends (after
// closing every client it handed out). It fails the test if etcd does not start.
func Start(tb testing.TB, opts ...Option) *Cluster {
	tb.Helper()
	var o options
	for _, f := range opts {
		f(&o)
	}
	c := &Cluster{t: tb}
	tb.Cleanup(c.cleanup) // also removes the socket directory if the start fails
	if o.certCA {
		c.clientCertAuth(tb, &o)
	}
	c.cfg = etcdembed.Config{
		Dir:               filepath.Join(tb.TempDir(), "etcd"),
		NoFsync:           !o.fsync,
		QuotaBackendBytes: o.quota,
		Logger:            zap.NewNop(),
	}
	if !o.timings {
		c.cfg.TickMs, c.cfg.ElectionMs = 10, 100
	}
	if o.tcp {
		u, err := etcdembed.FreeLoopbackURL()
		if err != nil {
			tb.Fatal(err)
		}
		c.cfg.ClientURL = u
		if o.tls != nil {
			c.cfg.ClientURL = "https://" + strings.TrimPrefix(u, "http://")
			c.cfg.ClientCertFile, c.cfg.ClientKeyFile, c.cfg.ClientCAFile = o.tls.CertFile, o.tls.KeyFile, o.tls.ClientCAFile
		}
	} else {
		// Unix socket paths are limited to ~107 bytes and tb.TempDir() can be long.
		dir, err := os.MkdirTemp("", "etcd")
		if err != nil {
			tb.Fatal(err)
		}
		c.sockDir = dir
		c.cfg.ClientURL = "unix://" + filepath.Join(dir, "etcd.sock")
	}
	peer, err := etcdembed.FreeLoopbackURL()
	if err != nil {
		tb.Fatal(err)
	}
	c.cfg.PeerURL = peer
	e, err := etcdembed.Start(c.cfg)
	if err != nil {
		tb.Fatal(err)
	}
	c.mu.Lock()
	c.etcd = e
	c.mu.Unlock()
	return c
}

func (c *Cluster) cleanup() {
	c.mu.Lock()
	clients := c.clients
	c.clients = nil
	c.mu.Unlock()
	// Clients (and their watches) first: with open watch streams e.Close() waits
	// for etcd's request timeout (seconds).
	for _, cli := range clients {
		_ = cli.Close()
	}
	c.Stop()
	if c.sockDir != "" {
		_ = os.RemoveAll(c.sockDir)
	}
}

// Endpoints returns the client URLs to dial.
func (c *Cluster) Endpoints() []string { return []string{c.cfg.ClientURL} }

// Etcd returns the running server (nil while stopped).
func (c *Cluster) Etcd() *embed.Etcd {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.etcd
}

// Client returns a new client of the cluster, closed when t ends (or when the cluster is
// cleaned up, whichever is first). Closing it earlier is fine.
func (c *Cluster) Client(tb testing.TB) *clientv3.Client {
	tb.Helper()
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   c.Endpoints(),
		DialTimeout: 5 * time.Second,
		Logger:      zap.NewNop(),
	})
	if err != nil {
		tb.Fatalf("etcd client for %v: %v", c.Endpoints(), err)
	}
	c.mu.Lock()
	c.clients = append(c.clients, cli)
	c.mu.Unlock()
	tb.Cleanup(func() { _ = cli.Close() })
	return cli
}

// Stop stops the server, keeping its data; clients stay open and see it as unreachable.
// Stopping a stopped cluster does nothing. With watches open, Stop takes etcd's request
// timeout (about 5 s) to give up on them.
func (c *Cluster) Stop() {
	c.mu.Lock()
	e := c.etcd
	c.etcd = nil
	c.mu.Unlock()
	if e != nil {
		e.Close()
	}
}

// Restart starts a stopped server again on the same data and URLs (stopping it first if
// it runs). Clients handed out before reconnect by themselves.
func (c *Cluster) Restart() {
	c.t.Helper()
	c.Stop()
	e, err := etcdembed.Start(c.cfg)
	if err != nil {
		c.t.Fatal(err)
	}
	c.mu.Lock()
	c.etcd = e
	c.mu.Unlock()
}
