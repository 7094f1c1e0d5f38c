package cli_test

import (
	"net"
	"testing"

	"github.com/coil-net/coil/internal/etcdtest"
)

// coilctl shares coild's etcd client checks (internal/etcdclient): an empty endpoint
// list or entry is a usage error, never the default endpoint; an etcd whose certificate
// is not trusted is a TLS verification failure that says so, not "is etcd running?".
func TestEtcdEndpointsAndTLS(t *testing.T) {
	checkFail(t, runArgs(t, "--etcd-endpoints", "", "pool", "list"), 2, nil, "no etcd endpoint given (the list is empty)")
	checkFail(t, runArgs(t, "--etcd-endpoints", "http://127.0.0.1:2379,", "pool", "list"), 2, nil, "entry 2 is empty")

	ca := etcdtest.NewCA(t, "etcd-ca")
	other := etcdtest.NewCA(t, "other-ca")
	cert, key := ca.Issue(t, "etcd", etcdtest.CertOptions{IPs: []net.IP{net.ParseIP("127.0.0.1")}})
	c := etcdtest.Start(t, etcdtest.WithTLS(etcdtest.TLSFiles{CertFile: cert, KeyFile: key}))
	url := c.Endpoints()[0]
	checkFail(t, runArgs(t, "--etcd-endpoints", url, "--etcd-cacert", other.CertFile, "--timeout", "2s", "pool", "list"), 5, nil,
		"TLS verification failed for etcd at "+url+": its certificate", "signed by an unknown authority")
	if r := runArgs(t, "--etcd-endpoints", url, "--etcd-cacert", ca.CertFile, "--timeout", "20s", "pool", "list"); r.code != 0 {
		t.Fatalf("coilctl with the right CA: exit %d: %s", r.code, r.stderr)
	}
}
