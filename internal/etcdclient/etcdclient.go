package etcdclient

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/cockroachdb/errors"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// DefaultEndpoint is the default of the --etcd-endpoints flags.
const DefaultEndpoint = "http://127.0.0.1:2379"

// DefaultDialTimeout is used when Config.DialTimeout is 0.
const DefaultDialTimeout = 5 * time.Second

// Keep-alive pings on the client's connections: a member that went silent (host gone,
// no TCP reset) is detected after DefaultKeepAliveTime+DefaultKeepAliveTimeout (8 s), below
// the allocator's 10 s append deadline, so requests move to a live member instead of
// waiting on a dead connection. etcd's server rejects pings more often than every 5 s
// (--grpc-keepalive-min-time), and pings only while a stream is open (coild always has
// its watch and lease keep-alive streams).
const (
	DefaultKeepAliveTime    = 5 * time.Second
	DefaultKeepAliveTimeout = 3 * time.Second
)

// Sentinel errors. Check them with errors.Is.
var (
	// ErrInvalidEndpoint: an endpoint that is not an http://, https:// or unix:// URL,
	// or a list mixing TLS and plain endpoints.
	ErrInvalidEndpoint = errors.New("etcdclient: invalid endpoint")
	// ErrTLS: the CA, certificate or key files cannot be used.
	ErrTLS = errors.New("etcdclient: invalid TLS settings")
	// ErrUnreachable: etcd did not answer within the dial timeout.
	ErrUnreachable = errors.New("etcdclient: etcd unreachable")
	// ErrTLSVerify: etcd answered but the TLS handshake failed: its certificate is not
	// trusted, not for the name dialled, expired or not yet valid; it rejected or
	// required this client's certificate; or one side does not speak TLS. Errors
	// wrapping it also wrap ErrUnreachable (etcd cannot be used).
	ErrTLSVerify = errors.New("etcdclient: TLS verification failed")
)

// Config says how to reach etcd.
type Config struct {
	// Endpoints are URLs as returned by ParseEndpoints (at least one).
	Endpoints []string
	// CACert is a PEM file of CAs to trust (default: the system's); Cert and Key are the
	// client's certificate and key (both or neither). Any of them turns TLS on, as does
	// an https:// endpoint.
	CACert, Cert, Key string
	// DialTimeout bounds connecting and the connectivity check (0: DefaultDialTimeout).
	DialTimeout time.Duration
	// Logger receives the etcd client's own logs; nil discards them (a CLI must not
	// print the client's retry chatter).
	Logger *zap.Logger
}

// ParseEndpoints splits a comma-separated endpoint list and checks every entry is an
// http://HOST:PORT, https://HOST:PORT or unix:///path URL (spaces around an entry are
// trimmed). An empty list, or an empty entry ("a,,b", a trailing comma), is an error
// (ErrInvalidEndpoint): it never silently means the default endpoint. TLS (https) and
// plain (http, unix) endpoints cannot be mixed: the etcd client uses the first
// endpoint's scheme for all of them.
func ParseEndpoints(s string) ([]string, error) {
	if strings.TrimSpace(s) == "" {
		return nil, errors.Wrapf(ErrInvalidEndpoint, "no etcd endpoint given (the list is empty): %s", endpointHelp)
	}
	var out []string
	for i, raw := range strings.Split(s, ",") {
		ep := strings.TrimSpace(raw)
		if ep == "" {
			return nil, errors.Wrapf(ErrInvalidEndpoint, "%q: entry %d is empty (a doubled or trailing comma?)", s, i+1)
		}
		out = append(out, ep)
	}
	if err := CheckEndpoints(out); err != nil {
		return nil, err
	}
	return out, nil
}

// CheckEndpoints checks a parsed endpoint list as ParseEndpoints does: at least one
// endpoint, each a valid URL, not mixing TLS and plain schemes.
func CheckEndpoints(eps []string) error {
	if len(eps) == 0 {
		return errors.Wrapf(ErrInvalidEndpoint, "no etcd endpoint given: %s", endpointHelp)
	}
	secure, plain := "", ""
	for _, ep := range eps {
		if err := checkEndpoint(ep); err != nil {
			return err
		}
		if strings.HasPrefix(ep, "https://") {
			secure = ep
		} else {
			plain = ep
		}
	}
	if secure != "" && plain != "" {
		return errors.Wrapf(ErrInvalidEndpoint, "%q and %q: TLS and plain endpoints cannot be mixed in one list", secure, plain)
	}
	return nil
}

const endpointHelp = "want a URL like http://127.0.0.1:2379, https://HOST:PORT or unix:///path/to/etcd.sock"

func checkEndpoint(ep string) error {
	u, err := url.Parse(ep)
	if ep == "" {
		return errors.Wrapf(ErrInvalidEndpoint, "an endpoint is empty: %s", endpointHelp)
	}
	if err != nil || !strings.Contains(ep, "://") {
		return errors.Wrapf(ErrInvalidEndpoint, "%q: %s", ep, endpointHelp)
	}
	switch u.Scheme {
	case "http", "https":
		if u.Host == "" || u.Hostname() == "" {
			return errors.Wrapf(ErrInvalidEndpoint, "%q has no host: %s", ep, endpointHelp)
		}
		if (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.User != nil {
			return errors.Wrapf(ErrInvalidEndpoint, "%q: an etcd endpoint is scheme://host:port only, without path, query or user", ep)
		}
	case "unix":
		if u.Host != "" || !strings.HasPrefix(u.Path, "/") {
			return errors.Wrapf(ErrInvalidEndpoint, "%q: a unix socket endpoint needs an absolute path, like unix:///run/etcd.sock", ep)
		}
	default:
		return errors.Wrapf(ErrInvalidEndpoint, "%q: unsupported scheme %q: %s", ep, u.Scheme, endpointHelp)
	}
	return nil
}

// New returns a client of etcd at cfg.Endpoints, after checking that etcd answers a read
// within cfg.DialTimeout. If it does not, New returns an error wrapping ErrUnreachable that
// names the endpoints and the wait, and closes the client. Bad endpoints return
// ErrInvalidEndpoint, unusable TLS files ErrTLS. The caller closes the client.
func New(cfg Config) (*clientv3.Client, error) {
	eps := cfg.Endpoints
	if err := CheckEndpoints(eps); err != nil {
		return nil, err
	}
	timeout := cfg.DialTimeout
	if timeout <= 0 {
		timeout = DefaultDialTimeout
	}
	ccfg, err := clientConfig(cfg, eps, timeout)
	if err != nil {
		return nil, err
	}
	cli, err := clientv3.New(ccfg)
	if err != nil {
		return nil, errors.Wrapf(err, "etcd client for %s", strings.Join(eps, ","))
	}
	if err := probe(cli, ccfg, cfg, timeout); err != nil {
		_ = cli.Close()
		return nil, err
	}
	return cli, nil
}

// clientConfig is the clientv3 configuration New uses.
func clientConfig(cfg Config, eps []string, timeout time.Duration) (clientv3.Config, error) {
	lg := cfg.Logger
	if lg == nil {
		lg = zap.NewNop()
	}
	ccfg := clientv3.Config{
		Endpoints: eps, DialTimeout: timeout, Logger: lg,
		DialKeepAliveTime: DefaultKeepAliveTime, DialKeepAliveTimeout: DefaultKeepAliveTimeout,
	}
	if strings.HasPrefix(eps[0], "https://") || cfg.CACert != "" || cfg.Cert != "" || cfg.Key != "" {
		tc, err := tlsConfig(cfg)
		if err != nil {
			return clientv3.Config{}, err
		}
		ccfg.TLS = tc
	}
	return ccfg, nil
}

// probe reads one key (linearizable, so a member without a leader does not pass). When
// etcd does not answer, it tells a TLS failure (diagnoseTLS) from an etcd that is not
// there: the etcd client only reports a deadline either way.
func probe(cli *clientv3.Client, ccfg clientv3.Config, cfg Config, timeout time.Duration) error {
	eps := ccfg.Endpoints
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	_, err := cli.Get(ctx, "health", clientv3.WithCountOnly())
	if err == nil || errors.Is(err, rpctypes.ErrPermissionDenied) {
		// Denied: etcd answered and knows the user (RBAC limits it to Coil's keys).
		return nil
	}
	if ctx.Err() != nil || isUnavailable(err) {
		if terr := diagnoseTLS(ccfg.TLS, cfg, eps, timeout); terr != nil {
			return terr
		}
		e := errors.Newf("etcd at %s is unreachable after %s: is etcd running? check --etcd-endpoints",
			strings.Join(eps, ","), timeout)
		return errors.WithSecondaryError(errors.Mark(e, ErrUnreachable), err)
	}
	return errors.Wrapf(err, "etcd at %s", strings.Join(eps, ","))
}

func isUnavailable(err error) bool {
	code := status.Code(errors.UnwrapAll(err))
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, clientv3.ErrNoAvailableEndpoints) ||
		code == codes.Unavailable || code == codes.DeadlineExceeded
}

func tlsConfig(cfg Config) (*tls.Config, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if cfg.CACert != "" {
		pem, err := os.ReadFile(cfg.CACert)
		if err != nil {
			return nil, errors.Mark(errors.Wrap(err, "--etcd-cacert"), ErrTLS)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, errors.Wrapf(ErrTLS, "--etcd-cacert %s holds no PEM certificate", cfg.CACert)
		}
		tc.RootCAs = pool
	}
	if (cfg.Cert == "") != (cfg.Key == "") {
		return nil, errors.Wrap(ErrTLS, "--etcd-cert and --etcd-key go together: give both or neither")
	}
	if cfg.Cert != "" {
		pair, err := tls.LoadX509KeyPair(cfg.Cert, cfg.Key)
		if err != nil {
			return nil, errors.Mark(errors.Wrapf(err, "--etcd-cert %s / --etcd-key %s", cfg.Cert, cfg.Key), ErrTLS)
		}
		tc.Certificates = []tls.Certificate{pair}
	}
	return tc, nil
}
