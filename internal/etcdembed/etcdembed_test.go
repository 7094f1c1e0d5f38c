package etcdembed_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/goleak"
	"go.uber.org/zap"

	"github.com/coil-net/coil/internal/etcdembed"
)

// coild restarts on the same data directory; the peer port is picked anew each time.
func TestRestartOnSameDir(t *testing.T) {
	dir := t.TempDir()
	sock, err := os.MkdirTemp("", "etcd")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(sock)
	url := "unix://" + filepath.Join(sock, "etcd.sock")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for i, want := range []string{"", "v"} {
		e, err := etcdembed.StartEmbedded(dir, url, i == 0)
		if err != nil {
			t.Fatalf("start %d: %v", i, err)
		}
		cli, err := clientv3.New(clientv3.Config{Endpoints: []string{url}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
		if err != nil {
			e.Close()
			t.Fatal(err)
		}
		r, err := cli.Get(ctx, "k")
		if err == nil && (len(r.Kvs) > 0) != (want != "") {
			err = context.Canceled
		}
		if err == nil {
			_, err = cli.Put(ctx, "k", "v")
		}
		cli.Close()
		e.Close()
		if err != nil {
			t.Fatalf("start %d: get/put: %v (got %v)", i, err, r)
		}
	}
}

func TestStartErrors(t *testing.T) {
	if _, err := etcdembed.Start(etcdembed.Config{}); err == nil {
		t.Fatal("start without a directory succeeded")
	}
	if _, err := etcdembed.StartEmbedded(t.TempDir(), "http://not-an-ip:1", false); err == nil {
		t.Fatal("start with a client URL that is a name succeeded")
	}
}

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
