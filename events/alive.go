package events

import (
	"context"
	"strings"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// LiveNode is a node whose liveness key (Keys.Alive) exists: its coild holds an etcd
// lease, or held one that has not expired yet.
type LiveNode struct {
	Node  string `json:"node"`
	Key   string `json:"key"`
	Lease int64  `json:"lease"`
	// Created is the etcd revision that created the key (a coild creates it at start, and
	// again on a new lease).
	Created int64 `json:"created"`
	// TTL is the lease's remaining time to live in seconds when asked for (LiveNodes with
	// ttl), -1 when etcd says the lease is gone, 0 when not asked.
	TTL int64 `json:"ttl,omitempty"`
	// Level is the highest feature level the coild's release reads, Build its build (from
	// the key's value, see AliveInfo); Legacy marks a release before feature levels
	// (level 0).
	Level  Level  `json:"level"`
	Build  string `json:"build,omitempty"`
	Legacy bool   `json:"legacy,omitempty"`
}

// LiveNodes lists the nodes whose liveness key exists, sorted by name, at the latest
// revision, and returns the revision read at. With ttl it also asks etcd for each lease's
// remaining time to live (one request per live node), which tells an operator how long a
// stopped coild's key will linger.
func (l *EtcdLog) LiveNodes(ctx context.Context, ttl bool) ([]LiveNode, int64, error) {
	prefix := l.keys.Alive("")
	// Not keys-only: etcd leaves the lease out then, and the values hold the levels.
	resp, err := l.cli.Get(ctx, prefix, clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend))
	if err != nil {
		return nil, 0, l.storeErr(ctx, err, "read liveness keys %s", prefix)
	}
	out := make([]LiveNode, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		info := ParseAlive(kv.Value)
		n := LiveNode{Node: strings.TrimPrefix(string(kv.Key), prefix), Key: string(kv.Key), Lease: kv.Lease, Created: kv.CreateRevision,
			Level: info.Level, Build: info.Build, Legacy: info.Legacy}
		if ttl && n.Lease != 0 {
			r, err := l.cli.TimeToLive(ctx, clientv3.LeaseID(n.Lease))
			if err != nil {
				return nil, 0, l.storeErr(ctx, err, "time to live of lease %x (%s)", n.Lease, n.Key)
			}
			n.TTL = r.TTL
		}
		out = append(out, n)
	}
	return out, resp.Header.Revision, nil
}
