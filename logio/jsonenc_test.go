package logio

import (
	"bytes"
	"net/netip"
	"testing"

	"github.com/coil-net/coil/events"
	"github.com/coil-net/coil/events/eventstest"
)

func TestAppendEventJSON(t *testing.T) {
	for i, s := range eventstest.Samples() {
		e := eventstest.SampleEvent(i, s.Payload)
		e.Stream, e.Seq, e.Schema = s.Stream, uint64(i+1), events.SchemaVersion
		for _, variant := range []func(*events.Event){
			func(*events.Event) {},
			func(e *events.Event) { e.Hash = events.Hash{1, 2}; e.Revision = 42 },
			func(e *events.Event) { e.Actor = "coilctl:<x>&\"y\"\u2028é\n" },
			func(e *events.Event) {
				switch p := e.Payload.(type) {
				case *events.AddressAssigned:
					p.Addrs, p.PodName, p.Pool = nil, "<&>", "é"
				case *events.AddressReleased:
					p.Addrs, p.Reason = []netip.Addr{{}, netip.MustParseAddr("fe80::1%eth0")}, "a\"b"
				}
			},
		} {
			variant(e)
			want, err := e.MarshalJSON()
			if err != nil {
				t.Fatal(err)
			}
			got, err := appendEventJSON(nil, e)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("%s:\n got %s\nwant %s", s.Name, got, want)
			}
		}
	}
}

// The fast decoder accepts what the full decoder accepts, with the same content, and
// leaves everything else to it.
func TestFastDecode(t *testing.T) {
	fast := 0
	for i, s := range eventstest.Samples() {
		e := eventstest.SampleEvent(i, s.Payload)
		e.Stream, e.Seq, e.Schema, e.Revision = s.Stream, uint64(i+1), events.SchemaVersion, int64(100+i)
		v, err := events.Encode(e)
		if err != nil {
			t.Fatal(err)
		}
		e.Hash = events.HashOf(e.Stream, e.Seq, v)
		line, err := appendEventJSON(nil, e)
		if err != nil {
			t.Fatal(err)
		}
		var want events.Event
		if err := want.UnmarshalJSON(line); err != nil {
			t.Fatal(err)
		}
		got, _, ok := fastDecode(line)
		if ok {
			fast++
			gj, _ := appendEventJSON(nil, got)
			if !bytes.Equal(gj, line) || got.Hash != want.Hash || got.Revision != want.Revision {
				t.Fatalf("%s: fast decode differs:\n got %s\nwant %s", s.Name, gj, line)
			}
		}
		// One changed byte in the payload: never accepted by the fast path.
		j := bytes.Index(line, []byte(`"payload":`)) + len(`"payload":`) + 3
		bad := bytes.Clone(line)
		bad[j] ^= 1
		if _, _, ok := fastDecode(bad); ok {
			t.Fatalf("%s: fast decode accepted a changed line %s", s.Name, bad)
		}
		if _, _, err := decodeLine(bad); err == nil {
			t.Fatalf("%s: decodeLine accepted a changed line %s", s.Name, bad)
		}
	}
	if fast < 3 {
		t.Fatalf("only %d samples took the fast path", fast)
	}
}
