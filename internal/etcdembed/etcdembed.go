package etcdembed

import (
	"net"
	"net/url"
	"strconv"
	"time"

	"github.com/cockroachdb/errors"
	"go.etcd.io/etcd/client/pkg/v3/transport"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// ErrStart: the embedded etcd did not start.
var ErrStart = errors.New("etcdembed: etcd did not start")

// Config describes an embedded single-member etcd.
type Config struct {
	// Dir holds etcd's data (created if missing). Required.
	Dir string
	// ClientURL is where clients connect: "unix:///abs/path/etcd.sock" (keep the path under
	// ~100 bytes) or "http://127.0.0.1:PORT". Required.
	ClientURL string
	// PeerURL is the raft peer URL; empty picks a free loopback TCP port.
	// (Unix-socket peer URLs are not supported by etcd's peer listener.)
	PeerURL string
	// Name of the member; empty means "coil".
	Name string
	// InitialCluster lists every member of a new multi-member cluster as
	// "name=peerURL,..." (etcd's --initial-cluster); empty means this member alone. The
	// members must be started concurrently: each waits for a quorum to be ready.
	InitialCluster string
	// NoFsync disables fsync (tests and benchmark set-up only: a crash loses writes).
	NoFsync bool
	// TickMs and ElectionMs are raft timings; zero keeps etcd's defaults (100/1000).
	TickMs, ElectionMs uint
	// QuotaBackendBytes is the database size quota; zero keeps etcd's default (2 GiB).
	QuotaBackendBytes int64
	// Logger receives etcd's logs; nil discards them.
	Logger *zap.Logger
	// ReadyTimeout bounds the wait for the server to be ready; zero means 60 s.
	ReadyTimeout time.Duration
	// ClientCertFile and ClientKeyFile, when set, serve clients over TLS with this
	// certificate (ClientURL must then be https://). ClientCAFile, when also set, makes
	// etcd require client certificates signed by that CA.
	ClientCertFile, ClientKeyFile, ClientCAFile string
}

// StartEmbedded starts a single-member etcd with data in dir, serving clients at clientURL,
// with etcd's default timings and logs discarded. fsync false trades durability for speed.
// The caller must e.Close() it (after closing its clients and watches, or Close blocks
// for several seconds).
func StartEmbedded(dir, clientURL string, fsync bool) (*embed.Etcd, error) {
	return Start(Config{Dir: dir, ClientURL: clientURL, NoFsync: !fsync})
}

// Start starts etcd as cfg says and waits until it serves clients. On error nothing is
// left running.
func Start(cfg Config) (*embed.Etcd, error) {
	if cfg.Dir == "" || cfg.ClientURL == "" {
		return nil, errors.Wrap(ErrStart, "data directory and client URL are required")
	}
	curl, err := url.Parse(cfg.ClientURL)
	if err != nil {
		return nil, errors.Wrapf(ErrStart, "client URL %q: %v", cfg.ClientURL, err)
	}
	var lastErr error
	// A free port picked for the peer URL can be taken before etcd binds it: retry.
	for attempt := 0; attempt < 3; attempt++ {
		purlStr := cfg.PeerURL
		if purlStr == "" {
			p, err := freePort()
			if err != nil {
				return nil, errors.Wrap(ErrStart, err.Error())
			}
			purlStr = "http://127.0.0.1:" + strconv.Itoa(p)
		}
		purl, err := url.Parse(purlStr)
		if err != nil {
			return nil, errors.Wrapf(ErrStart, "peer URL %q: %v", purlStr, err)
		}
		e, err := start(cfg, *curl, *purl)
		if err == nil {
			return e, nil
		}
		lastErr = err
		if cfg.PeerURL != "" {
			break
		}
	}
	return nil, lastErr
}

func start(cfg Config, curl, purl url.URL) (*embed.Etcd, error) {
	ec := embed.NewConfig()
	ec.Name = cfg.Name
	if ec.Name == "" {
		ec.Name = "coil"
	}
	ec.Dir = cfg.Dir
	ec.ListenClientUrls = []url.URL{curl}
	ec.AdvertiseClientUrls = []url.URL{curl}
	ec.ListenPeerUrls = []url.URL{purl}
	ec.AdvertisePeerUrls = []url.URL{purl}
	ec.InitialCluster = ec.Name + "=" + purl.String()
	if cfg.InitialCluster != "" {
		ec.InitialCluster = cfg.InitialCluster
	}
	ec.InitialClusterToken = "coil-embedded"
	if cfg.ClientCertFile != "" {
		ec.ClientTLSInfo = transport.TLSInfo{
			CertFile: cfg.ClientCertFile, KeyFile: cfg.ClientKeyFile,
			TrustedCAFile: cfg.ClientCAFile, ClientCertAuth: cfg.ClientCAFile != "",
		}
	}
	ec.UnsafeNoFsync = cfg.NoFsync
	if cfg.TickMs != 0 {
		ec.TickMs = cfg.TickMs
	}
	if cfg.ElectionMs != 0 {
		ec.ElectionMs = cfg.ElectionMs
	}
	if cfg.QuotaBackendBytes != 0 {
		ec.QuotaBackendBytes = cfg.QuotaBackendBytes
	}
	lg := cfg.Logger
	if lg == nil {
		lg = zap.NewNop()
	}
	ec.Logger = "zap"
	ec.ZapLoggerBuilder = embed.NewZapLoggerBuilder(lg)
	ec.LogLevel = "error"

	e, err := embed.StartEtcd(ec)
	if err != nil {
		return nil, errors.Wrapf(ErrStart, "data %s, clients %s: %v", cfg.Dir, curl.String(), err)
	}
	timeout := cfg.ReadyTimeout
	if timeout == 0 {
		timeout = 60 * time.Second
	}
	select {
	case <-e.Server.ReadyNotify():
		return e, nil
	case err := <-e.Err():
		e.Close()
		return nil, errors.Wrapf(ErrStart, "data %s: %v", cfg.Dir, err)
	case <-time.After(timeout):
		e.Server.Stop()
		e.Close()
		return nil, errors.Wrapf(ErrStart, "data %s: not ready within %s", cfg.Dir, timeout)
	}
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, errors.Wrap(err, "pick a free loopback port")
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// FreeLoopbackURL returns http://127.0.0.1:PORT with a port that was free a moment ago.
func FreeLoopbackURL() (string, error) {
	p, err := freePort()
	if err != nil {
		return "", err
	}
	return "http://127.0.0.1:" + strconv.Itoa(p), nil
}
