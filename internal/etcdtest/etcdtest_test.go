package etcdtest_test

import (
	"context"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/coil-net/coil/internal/etcdtest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestStartPutGetRestart(t *testing.T) {
	for _, tr := range etcdtest.Transports() {
		t.Run(tr.Name, func(t *testing.T) {
			c := etcdtest.Start(t, tr.Opts...)
			cli := c.Client(t)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if _, err := cli.Put(ctx, "k", "v"); err != nil {
				t.Fatal(err)
			}
			c.Restart()
			resp, err := cli.Get(ctx, "k")
			if err != nil {
				t.Fatal(err)
			}
			if len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "v" {
				t.Fatalf("after restart got %v, want k=v", resp.Kvs)
			}
		})
	}
}

func TestStoppedIsUnreachable(t *testing.T) {
	c := etcdtest.Start(t)
	cli := c.Client(t)
	c.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if _, err := cli.Get(ctx, "k"); err == nil {
		t.Fatal("Get on a stopped etcd succeeded")
	}
}
