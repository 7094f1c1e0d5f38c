package etcdclient_test

import (
	"slices"
	"testing"
	"time"

	"github.com/cockroachdb/errors"
	"github.com/spf13/pflag"

	"github.com/coil-net/coil/events"
	"github.com/coil-net/coil/internal/etcdclient"
)

// TestFlagsDefaults: the shared flags keep the names and defaults the three commands
// declared before (coild, coil-controller, coilctl).
func TestFlagsDefaults(t *testing.T) {
	var f etcdclient.Flags
	fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
	f.Register(fs)
	want := map[string]string{
		"etcd-endpoints": "http://127.0.0.1:2379",
		"etcd-cacert":    "",
		"etcd-cert":      "",
		"etcd-key":       "",
		"etcd-prefix":    "/coil/",
	}
	var names []string
	fs.VisitAll(func(fl *pflag.Flag) { names = append(names, fl.Name) })
	if len(names) != len(want) {
		t.Errorf("flags %v, want exactly %d", names, len(want))
	}
	for name, def := range want {
		fl := fs.Lookup(name)
		if fl == nil {
			t.Errorf("--%s not declared", name)
			continue
		}
		if fl.DefValue != def {
			t.Errorf("--%s default %q, want %q", name, fl.DefValue, def)
		}
		if fl.Usage == "" {
			t.Errorf("--%s has no help", name)
		}
	}
	if events.DefaultPrefix != "/coil/" || etcdclient.DefaultEndpoint != "http://127.0.0.1:2379" {
		t.Error("a default changed: the flags' defaults are user-facing")
	}
}

// TestFlagsConfig: Config parses the endpoint list and carries the TLS files; a bad list
// is ErrInvalidEndpoint, returned for the caller to name the flag.
func TestFlagsConfig(t *testing.T) {
	var f etcdclient.Flags
	fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
	f.Register(fs)
	err := fs.Parse([]string{"--etcd-endpoints", "https://a:1, https://b:2", "--etcd-cacert", "ca.pem",
		"--etcd-cert", "c.pem", "--etcd-key", "k.pem", "--etcd-prefix", "/x/"})
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := f.Config(3 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(cfg.Endpoints, []string{"https://a:1", "https://b:2"}) || cfg.CACert != "ca.pem" || cfg.Cert != "c.pem" ||
		cfg.Key != "k.pem" || cfg.DialTimeout != 3*time.Second || f.Prefix != "/x/" {
		t.Errorf("Config = %+v, prefix %q", cfg, f.Prefix)
	}
	for _, bad := range []string{"", "http://a:1,", "a:1"} {
		f.Endpoints = bad
		if _, err := f.Config(time.Second); !errors.Is(err, etcdclient.ErrInvalidEndpoint) {
			t.Errorf("endpoints %q: err %v, want ErrInvalidEndpoint", bad, err)
		}
	}
}
