package cli

import (
	"context"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/coil-net/coil/events"
	"github.com/coil-net/coil/readside"
)

// HistoryChunks runs the history of --pod NS/NAME (pod) or --container ID (container)
// against c with the attachment index and returns how many holdings it found and how
// many indexed chunks it read and skipped.
func HistoryChunks(ctx context.Context, c *clientv3.Client, pod, container string) (holdings int, read, skipped int64, err error) {
	return historyChunks(ctx, c, pod, container, nil)
}

// HistoryChunksArchived is HistoryChunks with archive files read first (history --archive).
func HistoryChunksArchived(ctx context.Context, c *clientv3.Client, pod string, archives []string) (holdings int, read, skipped int64, err error) {
	return historyChunks(ctx, c, pod, "", archives)
}

func historyChunks(ctx context.Context, c *clientv3.Client, pod, container string, archives []string) (holdings int, read, skipped int64, err error) {
	lg := events.NewEtcdLog(c, events.EtcdConfig{})
	defer lg.Close()
	q := readside.Query{Container: container}
	q.PodNamespace, q.PodName, _ = strings.Cut(pod, "/")
	ix := &readside.Index{Store: lg, Timeout: time.Minute}
	hs, _, err := readside.History(ctx, lg, &q, ix, archives)
	read, skipped = ix.Chunks()
	return len(hs), read, skipped, err
}

// EventsChunks runs the initial read of coilctl events with --pod NS/NAME (pod) and/or
// --container PREFIX (container) against c with the attachment index and returns how many
// events it shows and how many indexed chunks it read and skipped.
func EventsChunks(ctx context.Context, c *clientv3.Client, pod, container string) (shown int, read, skipped int64, err error) {
	lg := events.NewEtcdLog(c, events.EtcdConfig{})
	defer lg.Close()
	f := eventFlags{pod: pod, container: container}
	flt, err := f.filter(time.Now())
	if err != nil {
		return 0, 0, 0, err
	}
	heads, rev, err := lg.Streams(ctx, "", 0)
	if err != nil {
		return 0, 0, 0, err
	}
	ix := &readside.Index{Store: lg, Timeout: time.Minute}
	evs, err := readside.ReadEvents(ctx, lg, ix, flt, heads, rev)
	for _, e := range evs {
		if flt.Show(e) {
			shown++
		}
	}
	read, skipped = ix.Chunks()
	return shown, read, skipped, err
}
