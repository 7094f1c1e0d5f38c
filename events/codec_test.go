package events_test

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/cockroachdb/errors"

	"github.com/coil-net/coil/events"
	"github.com/coil-net/coil/events/eventstest"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/events")

const goldenDir = "../testdata/events"

// sealed returns sample i as a sealed first event of its stream (seq 1, zero prev) or,
// for odd i, as event 42 following a fixed hash, with its stored bytes.
func sealed(tb testing.TB, i int, s eventstest.Sample) (*events.Event, []byte) {
	tb.Helper()
	e := eventstest.SampleEvent(i, s.Payload)
	e.Schema, e.Stream, e.Seq = events.SchemaVersion, s.Stream, 1
	if i%2 == 1 {
		e.Seq = 42
		e.Prev = events.HashOf(s.Stream, 41, []byte("previous"))
	}
	v, err := events.Encode(e)
	if err != nil {
		tb.Fatalf("encode %s: %v", s.Name, err)
	}
	e.Hash = events.HashOf(e.Stream, e.Seq, v)
	return e, v
}

func TestSamplesCoverEveryType(t *testing.T) {
	seen := map[events.Type]bool{}
	for _, s := range eventstest.Samples() {
		seen[s.Payload.EventType()] = true
	}
	for _, typ := range events.AllTypes() {
		if !seen[typ] {
			t.Errorf("no sample of %s", typ)
		}
		if p, ok := events.NewPayload(typ); !ok || p.EventType() != typ {
			t.Errorf("NewPayload(%s) = %T, %v", typ, p, ok)
		}
	}
	if _, ok := events.NewPayload("Nope"); ok {
		t.Error("NewPayload of an unknown type succeeded")
	}
}

func TestCodecRoundTrip(t *testing.T) {
	for i, s := range eventstest.Samples() {
		t.Run(s.Name, func(t *testing.T) {
			e, v := sealed(t, i, s)
			d, err := events.Decode(e.Stream, e.Seq, v)
			if err != nil {
				t.Fatalf("decode: %+v", err)
			}
			requireSame(t, d, e)
			v2, err := events.Encode(d)
			if err != nil || !bytes.Equal(v, v2) {
				t.Fatalf("re-encode differs (%v):\n%x\n%x", err, v, v2)
			}
			// Every strict prefix of the bytes is rejected as corrupt, never a panic.
			for n := 0; n < len(v); n++ {
				if _, err := events.Decode(e.Stream, e.Seq, v[:n]); !errors.Is(err, events.ErrCorrupt) {
					t.Fatalf("decode of %d of %d bytes: %v, want ErrCorrupt", n, len(v), err)
				}
			}
			if _, err := events.Decode(e.Stream, e.Seq, append(v, 0)); !errors.Is(err, events.ErrCorrupt) {
				t.Fatalf("trailing byte: %v, want ErrCorrupt", err)
			}
		})
	}
}

func requireSame(t *testing.T, got, want *events.Event) {
	t.Helper()
	if got.Schema != want.Schema || got.Stream != want.Stream || got.Seq != want.Seq || !got.Time.Equal(want.Time) ||
		got.Actor != want.Actor || got.Prev != want.Prev || got.Hash != want.Hash || got.Revision != want.Revision {
		t.Fatalf("envelope:\n got %+v\nwant %+v", got, want)
	}
	if !reflect.DeepEqual(got.Payload, want.Payload) {
		t.Fatalf("payload:\n got %#v\nwant %#v", got.Payload, want.Payload)
	}
}

// TestGolden pins the stored bytes and the JSON form of every sample: a change to either
// breaks every existing log. Run with -update only for a deliberate, versioned change.
func TestGolden(t *testing.T) {
	if *update {
		if err := os.MkdirAll(goldenDir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for i, s := range eventstest.Samples() {
		t.Run(s.Name, func(t *testing.T) {
			e, v := sealed(t, i, s)
			e.Revision = int64(1000 + i)
			j, err := json.MarshalIndent(e, "", "  ")
			if err != nil {
				t.Fatal(err)
			}
			j = append(j, '\n')
			bin, js := filepath.Join(goldenDir, s.Name+".bin"), filepath.Join(goldenDir, s.Name+".json")
			if *update {
				if werr := os.WriteFile(bin, v, 0o644); werr != nil {
					t.Fatal(werr)
				}
				if werr := os.WriteFile(js, j, 0o644); werr != nil {
					t.Fatal(werr)
				}
			}
			wantBin, err := os.ReadFile(bin)
			if err != nil {
				t.Fatalf("%v (run go test ./events -run TestGolden -update to create)", err)
			}
			wantJSON, err := os.ReadFile(js)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(v, wantBin) {
				t.Errorf("encoding of %s changed:\n got %x\nwant %x", s.Name, v, wantBin)
			}
			if !bytes.Equal(j, wantJSON) {
				t.Errorf("JSON of %s changed:\n got %s\nwant %s", s.Name, j, wantJSON)
			}
			// The golden bytes decode to the event, and the golden JSON to the same event.
			d, err := events.Decode(e.Stream, e.Seq, wantBin)
			if err != nil {
				t.Fatal(err)
			}
			d.Revision = e.Revision
			requireSame(t, d, e)
			var fromJSON events.Event
			if err := json.Unmarshal(wantJSON, &fromJSON); err != nil {
				t.Fatalf("golden JSON: %+v", err)
			}
			requireSame(t, &fromJSON, e)
		})
	}
}

func TestJSONRoundTrip(t *testing.T) {
	for i, s := range eventstest.Samples() {
		t.Run(s.Name, func(t *testing.T) {
			e, v := sealed(t, i, s)
			e.Revision = 7
			j, err := json.Marshal(e)
			if err != nil {
				t.Fatal(err)
			}
			var d events.Event
			if uerr := json.Unmarshal(j, &d); uerr != nil {
				t.Fatalf("%+v\n%s", uerr, j)
			}
			requireSame(t, &d, e)
			v2, err := events.Encode(&d)
			if err != nil || !bytes.Equal(v, v2) {
				t.Fatalf("Encode(JSON round trip) differs (%v):\n%x\n%x", err, v, v2)
			}
			// A value (not pointer) marshals the same.
			j2, err := json.Marshal(*e)
			if err != nil || !bytes.Equal(j, j2) {
				t.Fatalf("value marshal differs: %s vs %s", j, j2)
			}
		})
	}
}

func TestJSONErrors(t *testing.T) {
	e, _ := sealed(t, 0, eventstest.Samples()[4])
	good, err := json.Marshal(e)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name     string
		old, new string
		want     error
	}{
		{"unknown type", `"type":"BlockAssigned"`, `"type":"BlockStolen"`, events.ErrUnknownType},
		{"future schema", `"schema":1`, `"schema":2`, events.ErrFutureSchema},
		{"unknown payload field", `"node":"node-1"`, `"node":"node-1","extra":1`, events.ErrCorrupt},
		{"tampered payload", `"node":"node-1"`, `"node":"node-2"`, events.ErrCorrupt},
		{"bad time", `"time":"2026`, `"time":"x2026`, events.ErrCorrupt},
		{"unknown envelope field", `"actor"`, `"bogus":1,"actor"`, events.ErrCorrupt},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := strings.Replace(string(good), tc.old, tc.new, 1)
			if b == string(good) {
				t.Fatalf("%q not found in %s", tc.old, good)
			}
			var d events.Event
			err := json.Unmarshal([]byte(b), &d)
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
			if tc.name != "unknown envelope field" && !strings.Contains(err.Error(), "pool/default #1") {
				t.Fatalf("error %q does not name stream and sequence", err)
			}
		})
	}
}

func TestDecodeErrors(t *testing.T) {
	s := events.PoolStream("p")
	for _, tc := range []struct {
		name  string
		value []byte
		want  error
	}{
		{"empty", nil, events.ErrCorrupt},
		{"bad magic", []byte{0x00, 1}, events.ErrCorrupt},
		{"schema 0", []byte{0xC1, 0}, events.ErrCorrupt},
		{"future schema", []byte{0xC1, 9, 1, 'X'}, events.ErrFutureSchema},
		{"unknown type", []byte{0xC1, 1, 0, 3, 'F', 'o', 'o'}, events.ErrUnknownType},
		{"unknown type code", []byte{0xC1, 1, 99}, events.ErrUnknownType},
		{"known type by name", []byte{0xC1, 1, 0, 13, 'B', 'l', 'o', 'c', 'k', 'A', 's', 's', 'i', 'g', 'n', 'e', 'd'}, events.ErrCorrupt},
		{"bad varint", []byte{0xC1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, events.ErrCorrupt},
	} {
		_, err := events.Decode(s, 12, tc.value)
		if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), "pool/p #12") {
			t.Errorf("%s: got %v, want %v naming pool/p #12", tc.name, err, tc.want)
		}
	}
}

func FuzzDecode(f *testing.F) {
	for i, s := range eventstest.Samples() {
		_, v := sealed(f, i, s)
		f.Add(v)
	}
	f.Add([]byte{0xC1, 1, 13, 'P', 'o', 'o', 'l', 'C', 'r', 'e', 'a', 't', 'e', 'd'})
	f.Fuzz(func(t *testing.T, v []byte) {
		e, err := events.Decode(events.ClusterStream, 1, v)
		if err != nil {
			if !errors.Is(err, events.ErrCorrupt) && !errors.Is(err, events.ErrUnknownType) && !errors.Is(err, events.ErrFutureSchema) {
				t.Fatalf("decode error without a sentinel: %v", err)
			}
			return
		}
		// Whatever decodes is canonical: it re-encodes to the same bytes, and its JSON
		// form comes back to the same bytes too.
		v2, err := events.Encode(e)
		if err != nil {
			return // e.g. a time past 2262 that decodes but cannot be stored again
		}
		if !bytes.Equal(v, v2) {
			t.Fatalf("decoded event re-encodes differently:\n%x\n%x", v, v2)
		}
		j, err := json.Marshal(e)
		if err != nil {
			t.Fatalf("JSON of a decoded event: %v", err)
		}
		var d events.Event
		if err := json.Unmarshal(j, &d); err != nil {
			t.Fatalf("JSON round trip of a decoded event: %v\n%s", err, j)
		}
	})
}

func TestKeys(t *testing.T) {
	k := events.NewKeys("")
	if k.Prefix() != "/coil/" || events.NewKeys("/x").Prefix() != "/x/" {
		t.Fatalf("prefixes %q %q", k.Prefix(), events.NewKeys("/x").Prefix())
	}
	s := events.NodeStream("node-1.example")
	key := k.Event(s, 42)
	if key != "/coil/log/node/node-1.example/000000000042" {
		t.Fatalf("event key %q", key)
	}
	gs, seq, err := k.ParseEvent(key)
	if err != nil || gs != s || seq != 42 {
		t.Fatalf("ParseEvent(%q) = %s, %d, %v", key, gs, seq, err)
	}
	if got := k.Event(s, events.MaxSeq); !strings.HasSuffix(got, "/999999999999") {
		t.Fatalf("MaxSeq key %q", got)
	}
	if k.Head(events.ClusterStream) != "/coil/head/cluster" || k.Snap(s) != "/coil/snap/node/node-1.example" ||
		events.AliveKey("", "n1") != "/coil/alive/n1" {
		t.Fatal("head/snap/alive keys")
	}
	hs, err := k.ParseHead("/coil/head/pool/default")
	if err != nil || hs != events.PoolStream("default") {
		t.Fatalf("ParseHead: %s, %v", hs, err)
	}
	for _, bad := range []string{
		"/other/log/cluster/000000000001", "/coil/log/cluster", "/coil/log/cluster/1",
		"/coil/log/cluster/0000000000001", "/coil/log/cluster/000000000000", "/coil/log/cluster/00000000000x",
		"/coil/log/pool/000000000001", "/coil/log/pool/a/b/000000000001", "/coil/log/node/UP/000000000001",
		"/coil/log/cluster/-00000000001",
	} {
		if _, _, err := k.ParseEvent(bad); !errors.Is(err, events.ErrBadKey) {
			t.Errorf("ParseEvent(%q): %v, want ErrBadKey", bad, err)
		}
	}
	for _, bad := range []string{"/coil/head/", "/coil/head/pool/", "/coil/log/cluster"} {
		if _, err := k.ParseHead(bad); !errors.Is(err, events.ErrBadKey) {
			t.Errorf("ParseHead(%q): %v, want ErrBadKey", bad, err)
		}
	}
	if got, err := events.DecodeSnapSeq(events.EncodeSnapSeq(77)); err != nil || got != 77 {
		t.Fatalf("snapshot pointer round trip: %d, %v", got, err)
	}
	if _, err := events.DecodeSnapSeq([]byte{0}); !errors.Is(err, events.ErrBadKey) {
		t.Fatalf("snapshot pointer 0: %v", err)
	}
	v := events.Version{Seq: events.MaxSeq, Hash: events.HashOf(s, 1, []byte("x"))}
	if got, err := events.DecodeHead(events.EncodeHead(v)); err != nil || got != v {
		t.Fatalf("head round trip: %v, %v", got, err)
	}
	for _, bad := range [][]byte{nil, {1}, append([]byte{0}, v.Hash[:]...), events.EncodeHead(events.Version{Seq: events.MaxSeq + 1})} {
		if _, err := events.DecodeHead(bad); !errors.Is(err, events.ErrBadKey) {
			t.Errorf("DecodeHead(%x): %v", bad, err)
		}
	}
}

// Decoding is canonical: bytes the writer would never produce are rejected, so one event
// has exactly one stored form and one hash.
func TestDecodeRejectsNonCanonical(t *testing.T) {
	good, err := events.Encode(eventstest.SampleEvent(0, &events.BlockAssigned{Index: 5, Node: "n"}))
	if err != nil {
		t.Fatal(err)
	}
	// The index (5) is the byte after the 32-byte previous hash; spell it as an overlong varint.
	i := len(good) - 3
	if good[i] != 5 {
		t.Fatalf("layout changed: %x", good)
	}
	overlong := append(append(append([]byte{}, good[:i]...), 0x85, 0x00), good[i+1:]...)
	if _, err := events.Decode(events.PoolStream("p"), 1, overlong); !errors.Is(err, events.ErrCorrupt) {
		t.Errorf("overlong varint: %v, want ErrCorrupt", err)
	}
	bad := eventstest.SampleEvent(0, &events.BlockAssigned{Index: 5, Node: "n\xff"})
	if _, err := events.Encode(bad); err == nil {
		t.Error("Encode accepted a string that is not UTF-8 (it would not survive JSON export)")
	}
}
