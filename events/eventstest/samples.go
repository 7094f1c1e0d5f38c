package eventstest

import (
	"net/netip"
	"time"

	"github.com/coil-net/coil/events"
)

// Base is the time the samples are stamped from.
var Base = time.Date(2026, 3, 14, 15, 9, 26, 535897932, time.UTC)

// Sample is one event payload and the stream it belongs in.
type Sample struct {
	Name    string
	Stream  events.Stream
	Payload events.Payload
}

// Samples returns one or more payloads of every event type, with the edge cases the codec
// must keep: IPv6, dual stack, non-hex container IDs, empty optional fields.
func Samples() []Sample {
	v4 := netip.MustParsePrefix("10.1.0.0/16")
	v6 := netip.MustParsePrefix("fd00:10:1::/112")
	return []Sample{
		{"PoolCreated", events.ClusterStream, &events.PoolCreated{Name: "default", BlockSizeBits: 5,
			Subnets: []events.Subnet{{IPv4: v4}, {IPv4: netip.MustParsePrefix("10.2.0.0/16"), IPv6: v6}}}},
		{"PoolCreated-v6", events.ClusterStream, &events.PoolCreated{Name: "v6only", BlockSizeBits: 6,
			Subnets: []events.Subnet{{IPv6: netip.MustParsePrefix("2001:db8::/64")}}}},
		{"PoolSubnetAdded", events.ClusterStream, &events.PoolSubnetAdded{Name: "default",
			Subnet: events.Subnet{IPv4: netip.MustParsePrefix("10.3.0.0/16")}}},
		{"PoolDeleted", events.ClusterStream, &events.PoolDeleted{Name: "v6only"}},
		{"BlockAssigned", events.PoolStream("default"), &events.BlockAssigned{Index: 0, Node: "node-1"}},
		{"BlockAssigned-big", events.PoolStream("default"), &events.BlockAssigned{Index: 4294967295, Node: "node-2.example"}},
		{"BlockReleased", events.PoolStream("default"), &events.BlockReleased{Index: 0, Node: "node-1", Reason: "empty for 10m0s"}},
		{"BlockReclaimed", events.PoolStream("default"), &events.BlockReclaimed{Index: 7, Node: "node-3", Reason: "lease gone"}},
		{"AddressAssigned", events.NodeStream("node-1"), &events.AddressAssigned{
			ContainerID:  "4f8c2b9e1d7a6035b2c9e8f1a4d7b0c3e6f9a2d5b8c1e4f7a0d3b6c9e2f5a8d1",
			IfName:       "eth0",
			PodNamespace: "default", PodName: "web-0", PodUID: "8d7f2c1e9b3a4f6e8d7c6b5a49382716",
			Pool: "default", Block: 3,
			Addrs: []netip.Addr{netip.MustParseAddr("10.1.0.97"), netip.MustParseAddr("fd00:10:1::61")}}},
		{"AddressAssigned-nonhex", events.NodeStream("node-1"), &events.AddressAssigned{
			ContainerID: "cnitool-77d0c8b5e9d1f1d0e9a1", IfName: "net1", Pool: "v6",
			PodUID: "ABCDEF", // upper case: stored as a string, kept as is
			Addrs:  []netip.Addr{netip.MustParseAddr("2001:db8::1")}}},
		{"AddressReleased", events.NodeStream("node-1"), &events.AddressReleased{
			ContainerID: "4f8c2b9e1d7a6035b2c9e8f1a4d7b0c3e6f9a2d5b8c1e4f7a0d3b6c9e2f5a8d1", IfName: "eth0",
			Pool: "default", Block: 3, Addrs: []netip.Addr{netip.MustParseAddr("10.1.0.97")}, Reason: "CNI DEL"}},
		{"NodeRegistered", events.NodeStream("node-1"), &events.NodeRegistered{Node: "node-1", Lease: 7587884765853329921}},
		{"NodeRetired", events.NodeStream("node-1"), &events.NodeRetired{Node: "node-1", Reason: "node deleted"}},
		{"Snapshot", events.NodeStream("node-1"), &events.Snapshot{
			StateHash: events.Hash{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32},
			State:     []byte("\x00\x01state bytes\xff")}},
		// Added with block streams (after the others: samples are stamped by position).
		{"PoolSplit", events.ClusterStream, &events.PoolSplit{Name: "default"}},
		{"BlockAssigned-blockstream", events.BlockStream("default", 17), &events.BlockAssigned{Index: 17, Node: "node-1"}},
		{"BlockReleased-blockstream", events.BlockStream("default", 17), &events.BlockReleased{Index: 17, Node: "node-1", Reason: "empty for 5m0s"}},
		{"NodeBlockAdded", events.NodeStream("node-1"), &events.NodeBlockAdded{Pool: "default", Index: 17}},
		{"NodeBlockRemoved", events.NodeStream("node-1"), &events.NodeBlockRemoved{Pool: "default", Index: 4294967295, Reason: "node reclaimed: lease gone"}},
		{"ClusterLevelRaised", events.ClusterStream, &events.ClusterLevelRaised{Level: events.Level1}},
		// Reservations and the network/broadcast option (issue 14, codes 16-18).
		{"AddressesReserved", events.ClusterStream, &events.AddressesReserved{Pool: "default",
			Ranges: []events.AddrRange{
				{First: netip.MustParseAddr("10.1.0.5"), Last: netip.MustParseAddr("10.1.0.5")},
				{First: netip.MustParseAddr("10.1.2.0"), Last: netip.MustParseAddr("10.1.2.255")},
			}, Reason: "VIPs of the load balancer"}},
		{"AddressesReserved-after-release", events.ClusterStream, &events.AddressesReserved{Pool: "dual",
			Ranges:       []events.AddrRange{{First: netip.MustParseAddr("fd00:10:1::10"), Last: netip.MustParseAddr("fd00:10:1::1f")}},
			AfterRelease: true}},
		{"AddressesUnreserved", events.ClusterStream, &events.AddressesUnreserved{Pool: "default",
			Ranges: []events.AddrRange{{First: netip.MustParseAddr("10.1.2.0"), Last: netip.MustParseAddr("10.1.2.127")}},
			Reason: "half of the VIPs are back"}},
		{"PoolNetworkBroadcastSet", events.ClusterStream, &events.PoolNetworkBroadcastSet{Pool: "default", Skip: true}},
		{"PoolNetworkBroadcastSet-off", events.ClusterStream, &events.PoolNetworkBroadcastSet{Pool: "default"}},
		// Fixed addresses (issue 14, item 3).
		{"AddressClaimed", events.PoolStream("default"), &events.AddressClaimed{
			Addrs: []netip.Addr{netip.MustParseAddr("10.2.0.7"), netip.MustParseAddr("fd00:10:1::7")}, Block: 0, Node: "node-2",
			ContainerID:  "4f8c2b9e1d7a6035b2c9e8f1a4d7b0c3e6f9a2d5b8c1e4f7a0d3b6c9e2f5a8d1",
			IfName:       "eth0",
			PodNamespace: "default", PodName: "db-0", PodUID: "8d7f2c1e9b3a4f6e8d7c6b5a49382716"}},
		{"AddressClaimed-nopod", events.PoolStream("v6"), &events.AddressClaimed{
			Addrs: []netip.Addr{netip.MustParseAddr("2001:db8::1:7")}, Block: 4294967295, Node: "node-1",
			ContainerID: "cnitool-77d0c8b5e9d1f1d0e9a1", IfName: "net1"}},
		{"AddressClaimReleased", events.PoolStream("default"), &events.AddressClaimReleased{
			Addrs: []netip.Addr{netip.MustParseAddr("10.2.0.7"), netip.MustParseAddr("fd00:10:1::7")}, Block: 0, Node: "node-2",
			ContainerID: "4f8c2b9e1d7a6035b2c9e8f1a4d7b0c3e6f9a2d5b8c1e4f7a0d3b6c9e2f5a8d1", IfName: "eth0", Reason: "CNI DEL"}},
		// Node selectors, node labels, pool lifecycle (issue 14).
		{"PoolNodeSelectorSet", events.ClusterStream, &events.PoolNodeSelectorSet{Name: "default", Selector: "rack in (r1,r2),zone=a"}},
		{"PoolNodeSelectorSet-all", events.ClusterStream, &events.PoolNodeSelectorSet{Name: "default", Selector: ""}},
		{"PoolDisabled", events.ClusterStream, &events.PoolDisabled{Name: "default", Reason: "migrating to pool blue"}},
		{"PoolEnabled", events.ClusterStream, &events.PoolEnabled{Name: "default"}},
		{"NodeLabelsSet", events.NodeStream("node-1"), &events.NodeLabelsSet{Node: "node-1",
			Labels: map[string]string{"kubernetes.io/hostname": "node-1", "topology.kubernetes.io/zone": "a", "empty": ""}}},
		{"NodeLabelsSet-none", events.NodeStream("node-1"), &events.NodeLabelsSet{Node: "node-1", Labels: map[string]string{}}},
	}
}

// SampleEvent wraps a sample payload in an envelope stamped Base+i seconds.
func SampleEvent(i int, p events.Payload) *events.Event {
	return &events.Event{Time: Base.Add(time.Duration(i) * time.Second), Actor: "coild/node-1", Payload: p}
}
