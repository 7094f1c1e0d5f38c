package eventstest

import (
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"net/netip"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/coil-net/coil/events"
)

// RealisticAssigned is an AddressAssigned as coild writes it, for benchmarks: a random
// 64-hex container ID, a Kubernetes UID with dashes, pod namespace and name, pool, block
// and IPv4 address derived from i.
func RealisticAssigned(rng *rand.Rand, i int) *events.AddressAssigned {
	var id [32]byte
	for j := range id {
		id[j] = byte(rng.Uint32())
	}
	var uid [16]byte
	for j := range uid {
		uid[j] = byte(rng.Uint32())
	}
	u := hex.EncodeToString(uid[:])
	return &events.AddressAssigned{
		ContainerID:  hex.EncodeToString(id[:]),
		IfName:       "eth0",
		PodNamespace: "team-payments",
		PodName:      fmt.Sprintf("checkout-api-7d9f8c6b5-%05d", i%100000),
		PodUID:       u[0:8] + "-" + u[8:12] + "-" + u[12:16] + "-" + u[16:20] + "-" + u[20:],
		Pool:         "default",
		Block:        uint64(i/32) % 4096,
		Addrs:        []netip.Addr{netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})},
	}
}

// SealedPuts seals req (see events.Seal) and returns the puts of its events, for
// benchmark set-up that fills etcd with raw transactions (no compares), and the new head.
// Callers put the head (events.Keys.Head, events.EncodeHead) when their batches are in.
func SealedPuts(keys events.Keys, req events.AppendRequest) ([]clientv3.Op, events.Version, error) {
	sealed, head, err := events.Seal(&req)
	if err != nil {
		return nil, events.Version{}, err
	}
	ops := make([]clientv3.Op, 0, len(sealed)+1)
	for _, s := range sealed {
		ops = append(ops, clientv3.OpPut(keys.Event(req.Stream, s.Seq), string(s.Value)))
	}
	return ops, head, nil
}

// PutHead is the put of a stream's head.
func PutHead(keys events.Keys, s events.Stream, head events.Version) clientv3.Op {
	return clientv3.OpPut(keys.Head(s), string(events.EncodeHead(head)))
}
