package events_test

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cockroachdb/errors"

	"github.com/coil-net/coil/events"
)

// FuzzEventJSON: the JSON form (export files, `coilctl log import`) never panics the
// decoder, refuses with one of the log's sentinels, and what it accepts is canonical: it
// encodes, decodes back to the same event, and its JSON comes back to the same bytes.
func FuzzEventJSON(f *testing.F) {
	files, err := filepath.Glob(filepath.Join(goldenDir, "*.json"))
	if err != nil || len(files) == 0 {
		f.Fatalf("golden events: %v %v", files, err)
	}
	for _, p := range files {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		var c bytes.Buffer
		if err := json.Compact(&c, b); err != nil {
			f.Fatalf("%s: %v", p, err)
		}
		f.Add(c.Bytes())
	}
	f.Add([]byte(`{"schema":1,"stream":"cluster","seq":1,"type":"PoolDeleted","time":"2030-01-01T00:00:00Z","actor":"x","prev":"` + strings.Repeat("0", 64) + `","payload":{"name":"p"}}`))
	f.Fuzz(func(t *testing.T, line []byte) {
		var e events.Event
		if err := e.UnmarshalJSON(line); err != nil {
			if !errors.Is(err, events.ErrCorrupt) && !errors.Is(err, events.ErrUnknownType) && !errors.Is(err, events.ErrFutureSchema) {
				t.Fatalf("decode error without a sentinel: %v", err)
			}
			return
		}
		v, err := events.Encode(&e)
		if err != nil {
			return // JSON the binary form cannot hold (e.g. a name that is not UTF-8-clean); import refuses it
		}
		seq := e.Seq
		if seq == 0 {
			seq = 1
		}
		d, err := events.Decode(e.Stream, seq, v)
		if err != nil {
			t.Fatalf("an event that encodes does not decode: %v\n%x", err, v)
		}
		v2, err := events.Encode(d)
		if err != nil || !bytes.Equal(v, v2) {
			t.Fatalf("decode/encode is not the identity (%v):\n%x\n%x", err, v, v2)
		}
		j, err := json.Marshal(d)
		if err != nil {
			t.Fatalf("JSON of a decoded event: %v", err)
		}
		var back events.Event
		if err := back.UnmarshalJSON(j); err != nil {
			t.Fatalf("JSON round trip: %v\n%s", err, j)
		}
		if v3, err := events.Encode(&back); err != nil || !bytes.Equal(v, v3) {
			t.Fatalf("JSON round trip changed the event (%v):\n%s", err, j)
		}
	})
}

// FuzzKeys: the key parsers accept exactly the keys the layout writes, so a parsed key
// formats back to itself; head and snapshot values decode only from their own encoding.
func FuzzKeys(f *testing.F) {
	k := events.NewKeys("")
	for _, s := range []string{
		k.Event(events.ClusterStream, 1), k.Event(events.NodeStream("n-1.x"), events.MaxSeq), k.Head(events.PoolStream("p")),
		k.Index(events.NodeStream("n"), 1025), "/coil/log/pool/a/b/000000000001", "/coil/log/cluster/000000000000", "/coil/head/",
	} {
		f.Add(s, []byte{0x01, 0x02})
	}
	f.Add("/coil/head/cluster", events.EncodeHead(events.Version{Seq: 7, Hash: events.HashOf(events.ClusterStream, 7, nil)}))
	f.Fuzz(func(t *testing.T, key string, value []byte) {
		if s, seq, err := k.ParseEvent(key); err == nil {
			if s.Validate() != nil || seq == 0 || seq > events.MaxSeq || k.Event(s, seq) != key {
				t.Fatalf("ParseEvent(%q) = %s, %d", key, s, seq)
			}
		} else if !errors.Is(err, events.ErrBadKey) {
			t.Fatalf("ParseEvent(%q): %v", key, err)
		}
		if s, seq, err := k.ParseIndex(key); err == nil {
			if s.Validate() != nil || seq == 0 || k.Index(s, seq) != key {
				t.Fatalf("ParseIndex(%q) = %s, %d", key, s, seq)
			}
		}
		if s, err := k.ParseHead(key); err == nil {
			if s.Validate() != nil || k.Head(s) != key {
				t.Fatalf("ParseHead(%q) = %s", key, s)
			}
		}
		if v, err := events.DecodeHead(value); err == nil {
			if v.Seq == 0 || v.Seq > events.MaxSeq || !bytes.Equal(events.EncodeHead(v), value) {
				t.Fatalf("DecodeHead(%x) = %+v", value, v)
			}
		}
		if seq, err := events.DecodeSnapSeq(value); err == nil {
			if seq == 0 || seq > events.MaxSeq || !bytes.Equal(events.EncodeSnapSeq(seq), value) {
				t.Fatalf("DecodeSnapSeq(%x) = %d", value, seq)
			}
		}
	})
}
