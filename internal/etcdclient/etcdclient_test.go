package etcdclient_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/errors"
	"go.uber.org/goleak"

	"github.com/coil-net/coil/internal/etcdclient"
	"github.com/coil-net/coil/internal/etcdtest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestParseEndpoints(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []string
		err  string
	}{
		{"", nil, "no etcd endpoint given"},
		{" ", nil, "no etcd endpoint given"},
		{" , ", nil, "entry 1 is empty"},
		{"http://a:1,", nil, "entry 2 is empty"},
		{"http://a:1,,http://b:1", nil, "entry 2 is empty"},
		{"http://10.0.0.1:2379", []string{"http://10.0.0.1:2379"}, ""},
		{"https://a:2379, https://b:2379", []string{"https://a:2379", "https://b:2379"}, ""},
		{"unix:///run/etcd.sock,http://[::1]:2379", []string{"unix:///run/etcd.sock", "http://[::1]:2379"}, ""},
		{"10.0.0.1:2379", nil, `"10.0.0.1:2379": want a URL like http://127.0.0.1:2379`},
		{"localhost", nil, `"localhost": want a URL`},
		{"ftp://x:1", nil, `unsupported scheme "ftp"`},
		{"http://", nil, "has no host"},
		{"http://a:1/v3", nil, "without path"},
		{"unix://relative.sock", nil, "needs an absolute path"},
		{"unix:///a.sock,https://b:1", nil, "TLS and plain endpoints cannot be mixed"},
	} {
		got, err := etcdclient.ParseEndpoints(tc.in)
		if tc.err != "" {
			if !errors.Is(err, etcdclient.ErrInvalidEndpoint) || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("ParseEndpoints(%q) error = %v, want ErrInvalidEndpoint containing %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || strings.Join(got, " ") != strings.Join(tc.want, " ") {
			t.Errorf("ParseEndpoints(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}

func TestNewUnixAndTCP(t *testing.T) {
	for _, tr := range etcdtest.Transports() {
		t.Run(tr.Name, func(t *testing.T) {
			c := etcdtest.Start(t, tr.Opts...)
			cli, err := etcdclient.New(etcdclient.Config{Endpoints: c.Endpoints(), DialTimeout: 10 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = cli.Close() }()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if _, err := cli.Put(ctx, "k", "v"); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestNewUnreachable(t *testing.T) {
	sock := "unix://" + filepath.Join(t.TempDir(), "missing.sock")
	start := time.Now()
	_, err := etcdclient.New(etcdclient.Config{Endpoints: []string{sock}, DialTimeout: time.Second})
	took := time.Since(start)
	if !errors.Is(err, etcdclient.ErrUnreachable) {
		t.Fatalf("New(%s) = %v, want ErrUnreachable", sock, err)
	}
	want := "etcd at " + sock + " is unreachable after 1s: is etcd running? check --etcd-endpoints"
	if err.Error() != want {
		t.Fatalf("message = %q\nwant      %q", err.Error(), want)
	}
	// The wait is bounded by the dial timeout (generous margin: this is not a speed test).
	if took > 30*time.Second {
		t.Fatalf("New took %v with a 1s dial timeout", took)
	}
}

func TestNewStoppedEtcdIsUnreachable(t *testing.T) {
	c := etcdtest.Start(t)
	c.Stop()
	_, err := etcdclient.New(etcdclient.Config{Endpoints: c.Endpoints(), DialTimeout: time.Second})
	if !errors.Is(err, etcdclient.ErrUnreachable) {
		t.Fatalf("New against a stopped etcd = %v, want ErrUnreachable", err)
	}
}

func TestNewTLSSettings(t *testing.T) {
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(notPEM, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		cfg  etcdclient.Config
		want string
	}{
		{"missing CA", etcdclient.Config{CACert: filepath.Join(dir, "nope.pem")}, "--etcd-cacert"},
		{"CA not PEM", etcdclient.Config{CACert: notPEM}, "holds no PEM certificate"},
		{"cert without key", etcdclient.Config{Cert: notPEM}, "give both or neither"},
		{"bad pair", etcdclient.Config{Cert: notPEM, Key: notPEM}, "--etcd-cert"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.cfg.Endpoints = []string{"https://127.0.0.1:1"}
			_, err := etcdclient.New(tc.cfg)
			if !errors.Is(err, etcdclient.ErrTLS) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("New = %v, want ErrTLS containing %q", err, tc.want)
			}
		})
	}
}

func TestNewRejectsBadEndpoint(t *testing.T) {
	for _, eps := range [][]string{{"127.0.0.1:2379"}, nil, {""}, {"http://a:1", ""}} {
		_, err := etcdclient.New(etcdclient.Config{Endpoints: eps})
		if !errors.Is(err, etcdclient.ErrInvalidEndpoint) {
			t.Errorf("New(%q) = %v, want ErrInvalidEndpoint", eps, err)
		}
	}
}

// The client detects a silent member with keep-alive pings, sooner than the allocator's
// append deadline (allocator.DefaultAppendTimeout, 10 s), and no more often than etcd's
// server accepts (5 s).
func TestClientKeepAlive(t *testing.T) {
	cc, err := etcdclient.ClientConfig(etcdclient.Config{}, []string{"unix:///run/etcd.sock"}, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if cc.DialKeepAliveTime < 5*time.Second || cc.DialKeepAliveTimeout <= 0 || cc.DialKeepAliveTime+cc.DialKeepAliveTimeout >= 10*time.Second {
		t.Fatalf("keep-alive %s + %s: want pings every >= 5 s, a dead member found within 10 s", cc.DialKeepAliveTime, cc.DialKeepAliveTimeout)
	}
	if cc.PermitWithoutStream {
		t.Fatal("pings without a stream are rejected by etcd's server (GOAWAY too_many_pings)")
	}
}
