package logio

import (
	"net/netip"
	"testing"
	"time"

	"github.com/coil-net/coil/events"
)

func sampleLine(b *testing.B) []byte {
	b.Helper()
	e := &events.Event{Schema: 1, Stream: "node/worker-001", Seq: 12345, Time: time.Unix(1_800_000_000, 123456789).UTC(), Actor: "worker-001",
		Payload: &events.AddressAssigned{ContainerID: "4f8c2b9e1d7a6035b2c9e8f1a4d7b0c3e6f9a2d5b8c1e4f7a0d3b6c9e2f5a8d1", IfName: "eth0",
			PodNamespace: "team-payments", PodName: "checkout-api-7d9f8c6b5-00042", PodUID: "8d7f2c1e-9b3a-4f6e-8d7c-6b5a49382716",
			Pool: "default", Block: 3, Addrs: []netip.Addr{netip.MustParseAddr("10.1.0.97")}}}
	v, err := events.Encode(e)
	if err != nil {
		b.Fatal(err)
	}
	e.Hash = events.HashOf(e.Stream, e.Seq, v)
	e.Revision = 999
	line, err := appendEventJSON(nil, e)
	if err != nil {
		b.Fatal(err)
	}
	return line
}

func BenchmarkDecodeLine(b *testing.B) {
	line := sampleLine(b)
	for b.Loop() {
		if _, _, err := decodeLine(line); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkEncodeLine(b *testing.B) {
	line := sampleLine(b)
	e, _, err := decodeLine(line)
	if err != nil {
		b.Fatal(err)
	}
	var buf []byte
	for b.Loop() {
		buf, _ = appendEventJSON(buf[:0], e)
	}
}
