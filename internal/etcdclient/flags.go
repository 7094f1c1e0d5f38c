package etcdclient

import (
	"time"

	"github.com/spf13/pflag"

	"github.com/coil-net/coil/events"
)

// Flags are the etcd client flags that coild, coil-controller and coilctl share, declared
// here once so that their names, defaults and help agree:
//
//	--etcd-endpoints  comma-separated URLs (default DefaultEndpoint)
//	--etcd-cacert     CA file; --etcd-cert, --etcd-key: client certificate and key
//	--etcd-prefix     key prefix of Coil's data (default events.DefaultPrefix)
//
// Each command checks the values its own way (its exit code, its message prefix); Config
// parses the endpoints.
type Flags struct {
	// Endpoints is the flag's text, unparsed (Config parses it).
	Endpoints         string
	CACert, Cert, Key string
	Prefix            string
}

// Register declares the flags on fs (a command's Flags or PersistentFlags).
func (f *Flags) Register(fs *pflag.FlagSet) {
	fs.StringVar(&f.Endpoints, "etcd-endpoints", DefaultEndpoint,
		"etcd client URLs, comma-separated: http://HOST:PORT, https://HOST:PORT or unix:///PATH")
	fs.StringVar(&f.CACert, "etcd-cacert", "", "PEM file of CAs trusted for etcd's certificate (turns TLS on; default: the system's CAs)")
	fs.StringVar(&f.Cert, "etcd-cert", "", "PEM client certificate for etcd (with --etcd-key)")
	fs.StringVar(&f.Key, "etcd-key", "", "PEM client key for etcd (with --etcd-cert)")
	fs.StringVar(&f.Prefix, "etcd-prefix", events.DefaultPrefix, "key prefix of Coil's data in etcd")
}

// Config returns the client configuration the flags say, with the endpoints parsed
// (ParseEndpoints: its error, ErrInvalidEndpoint, is returned as is, for the caller to
// name the flag its own way) and dialTimeout.
func (f *Flags) Config(dialTimeout time.Duration) (Config, error) {
	eps, err := ParseEndpoints(f.Endpoints)
	if err != nil {
		return Config{}, err
	}
	return Config{Endpoints: eps, CACert: f.CACert, Cert: f.Cert, Key: f.Key, DialTimeout: dialTimeout}, nil
}
