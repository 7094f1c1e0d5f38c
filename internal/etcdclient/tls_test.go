package etcdclient_test

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/errors"

	"github.com/coil-net/coil/internal/etcdclient"
	"github.com/coil-net/coil/internal/etcdtest"
)

var loopback = []net.IP{net.ParseIP("127.0.0.1")}

// TestNewTLSVerification: a real etcd serving TLS, and clients that fail each TLS check.
// Each failure is reported as a TLS verification failure that says which check failed,
// never as "unreachable: is etcd running?".
func TestNewTLSVerification(t *testing.T) {
	etcdCA := etcdtest.NewCA(t, "etcd-ca")
	clientCA := etcdtest.NewCA(t, "client-ca")
	otherCA := etcdtest.NewCA(t, "other-ca")
	good, goodKey := etcdCA.Issue(t, "etcd", etcdtest.CertOptions{IPs: loopback})
	wrongName, wrongNameKey := etcdCA.Issue(t, "etcd-elsewhere", etcdtest.CertOptions{DNSNames: []string{"etcd.example"}})
	expired, expiredKey := etcdCA.Issue(t, "etcd-expired", etcdtest.CertOptions{IPs: loopback,
		NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-time.Hour)})
	cli, cliKey := clientCA.Issue(t, "coild", etcdtest.CertOptions{Client: true})
	stranger, strangerKey := otherCA.Issue(t, "stranger", etcdtest.CertOptions{Client: true})

	// Main server: trusted certificate for 127.0.0.1, client certificates of clientCA required.
	main := etcdtest.Start(t, etcdtest.WithTLS(etcdtest.TLSFiles{CertFile: good, KeyFile: goodKey, ClientCAFile: clientCA.CertFile}))
	mainURL := main.Endpoints()[0]
	misnamed := etcdtest.Start(t, etcdtest.WithTLS(etcdtest.TLSFiles{CertFile: wrongName, KeyFile: wrongNameKey}))
	old := etcdtest.Start(t, etcdtest.WithTLS(etcdtest.TLSFiles{CertFile: expired, KeyFile: expiredKey}))
	plain := etcdtest.Start(t, etcdtest.WithTCP())

	t.Run("trusted", func(t *testing.T) {
		c, err := etcdclient.New(etcdclient.Config{Endpoints: []string{mainURL}, CACert: etcdCA.CertFile, Cert: cli, Key: cliKey, DialTimeout: 10 * time.Second})
		if err != nil {
			t.Fatalf("New with the right CA and client certificate: %v", err)
		}
		defer func() { _ = c.Close() }()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if _, err := c.Put(ctx, "k", "v"); err != nil {
			t.Fatal(err)
		}
	})
	for _, tc := range []struct {
		name string
		cfg  etcdclient.Config
		want []string
	}{
		{"unknown authority", etcdclient.Config{Endpoints: []string{mainURL}, CACert: otherCA.CertFile, Cert: cli, Key: cliKey},
			[]string{"signed by an unknown authority", `issuer "CN=etcd-ca"`, "--etcd-cacert " + otherCA.CertFile}},
		{"system CAs", etcdclient.Config{Endpoints: []string{mainURL}, Cert: cli, Key: cliKey},
			[]string{"signed by an unknown authority", "the system's CAs"}},
		{"hostname mismatch", etcdclient.Config{Endpoints: misnamed.Endpoints(), CACert: etcdCA.CertFile},
			[]string{`not valid for "127.0.0.1"`, "hostname mismatch", "etcd.example"}},
		{"expired", etcdclient.Config{Endpoints: old.Endpoints(), CACert: etcdCA.CertFile},
			[]string{"certificate expired at"}},
		{"client certificate rejected", etcdclient.Config{Endpoints: []string{mainURL}, CACert: etcdCA.CertFile, Cert: stranger, Key: strangerKey},
			[]string{"rejected this client's certificate --etcd-cert " + stranger}},
		{"client certificate missing", etcdclient.Config{Endpoints: []string{mainURL}, CACert: etcdCA.CertFile},
			[]string{"requires a client certificate", "--etcd-cert and --etcd-key"}},
		{"plain endpoint, TLS server", etcdclient.Config{Endpoints: []string{"http://" + strings.TrimPrefix(mainURL, "https://")}},
			[]string{"it speaks TLS: use an https:// endpoint"}},
		{"TLS endpoint, plain server", etcdclient.Config{Endpoints: []string{"https://" + strings.TrimPrefix(plain.Endpoints()[0], "http://")}, CACert: etcdCA.CertFile},
			[]string{"does not speak TLS", "use an http:// endpoint"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel() // each waits for its dial timeout
			tc.cfg.DialTimeout = 2 * time.Second
			c, err := etcdclient.New(tc.cfg)
			if err == nil {
				_ = c.Close()
				t.Fatal("New succeeded")
			}
			msg := err.Error()
			if !errors.Is(err, etcdclient.ErrTLSVerify) || !errors.Is(err, etcdclient.ErrUnreachable) {
				t.Fatalf("New = %v, want ErrTLSVerify (and ErrUnreachable)", err)
			}
			want := append([]string{"TLS verification failed for etcd at " + tc.cfg.Endpoints[0] + ": "}, tc.want...)
			for _, w := range want {
				if !strings.Contains(msg, w) {
					t.Errorf("message %q does not contain %q", msg, w)
				}
			}
			if strings.Contains(msg, "is etcd running") {
				t.Errorf("message %q blames a missing etcd", msg)
			}
		})
	}
}
