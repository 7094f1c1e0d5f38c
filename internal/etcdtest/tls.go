package etcdtest

import (
	"context"
	"net"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/coil-net/coil/internal/etcdclient"
)

// WithClientCertAuth serves clients over TLS on a loopback TCP port with a throwaway CA
// of the cluster's own, requiring a client certificate signed by it (etcd
// --client-cert-auth). Clients come from ClientAs or ClientConfig, with a certificate for
// any Common Name, which is the etcd user once EnableAuth has run.
func WithClientCertAuth() Option { return func(o *options) { o.certCA = true } }

func (c *Cluster) clientCertAuth(tb testing.TB, o *options) {
	tb.Helper()
	c.ca = NewCA(tb, "coil-test")
	cert, key := c.ca.Issue(tb, "etcd-server", CertOptions{IPs: []net.IP{net.IPv4(127, 0, 0, 1)}, DNSNames: []string{"localhost"}})
	o.tls = &TLSFiles{CertFile: cert, KeyFile: key, ClientCAFile: c.ca.CertFile}
	o.tcp = true
}

// ClientConfig is the etcdclient configuration of a client authenticated as cn (its
// certificate's Common Name), as coild and coilctl build theirs from --etcd-cacert,
// --etcd-cert and --etcd-key. It needs WithClientCertAuth.
func (c *Cluster) ClientConfig(tb testing.TB, cn string) etcdclient.Config {
	tb.Helper()
	if c.ca == nil {
		tb.Fatal("etcdtest: ClientConfig needs WithClientCertAuth")
	}
	cert, key := c.ca.Issue(tb, cn, CertOptions{Client: true})
	return etcdclient.Config{Endpoints: c.Endpoints(), CACert: c.ca.CertFile, Cert: cert, Key: key, DialTimeout: 5 * time.Second}
}

// ClientAs returns a client authenticated by a certificate with Common Name cn, closed
// when tb ends or the cluster is cleaned up.
func (c *Cluster) ClientAs(tb testing.TB, cn string) *clientv3.Client {
	tb.Helper()
	cli, err := etcdclient.New(c.ClientConfig(tb, cn))
	if err != nil {
		tb.Fatalf("etcd client as %q: %v", cn, err)
	}
	c.mu.Lock()
	c.clients = append(c.clients, cli)
	c.mu.Unlock()
	tb.Cleanup(func() { _ = cli.Close() })
	return cli
}

// EnableAuth turns etcd's authentication on, with a root user (certificate CN "root",
// no password) holding the root role, and returns root's client.
func (c *Cluster) EnableAuth(tb testing.TB) *clientv3.Client {
	tb.Helper()
	root := c.ClientAs(tb, "root")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := root.UserAddWithOptions(ctx, "root", "", &clientv3.UserAddOptions{NoPassword: true}); err != nil {
		tb.Fatal(err)
	}
	if _, err := root.UserGrantRole(ctx, "root", "root"); err != nil {
		tb.Fatal(err)
	}
	if _, err := root.AuthEnable(ctx); err != nil {
		tb.Fatal(err)
	}
	return root
}
