package allocator_test

import (
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/coil-net/coil/allocator"
	"github.com/coil-net/coil/events"
	"github.com/coil-net/coil/internal/etcdtest"
)

// coilLog is an event log under /coil/ on cli, closed when the test ends.
func coilLog(t testing.TB, cli *clientv3.Client) *events.EtcdLog {
	t.Helper()
	log := events.NewEtcdLog(cli, events.EtcdConfig{Prefix: "/coil/"})
	t.Cleanup(func() { _ = log.Close() })
	return log
}

// startEtcdAdmin starts etcd and returns a client of it, an event log under /coil/ on
// that client and an Admin acting as "test" on the log.
func startEtcdAdmin(t *testing.T) (*clientv3.Client, *events.EtcdLog, *allocator.Admin) {
	t.Helper()
	cli := etcdtest.Start(t).Client(t)
	log := coilLog(t, cli)
	return cli, log, &allocator.Admin{Log: log, Clock: events.SystemClock{}, Actor: "test"}
}
