package logio

import (
	"bytes"
	"context"
	"testing"

	"github.com/cockroachdb/errors"

	"github.com/coil-net/coil/events"
	"github.com/coil-net/coil/events/eventstest"
)

// sampleLines are the JSON lines of every sample event, sealed, as export writes them.
func sampleLines(tb testing.TB) [][]byte {
	tb.Helper()
	var out [][]byte
	for i, s := range eventstest.Samples() {
		e := eventstest.SampleEvent(i, s.Payload)
		e.Stream, e.Seq, e.Schema, e.Revision = s.Stream, 1, events.SchemaVersion, int64(100+i)
		v, err := events.Encode(e)
		if err != nil {
			tb.Fatal(err)
		}
		e.Hash = events.HashOf(e.Stream, e.Seq, v)
		line, err := appendEventJSON(nil, e)
		if err != nil {
			tb.Fatal(err)
		}
		out = append(out, line)
	}
	return out
}

// FuzzDecodeLine: the fast decoder (written by hand for the common event types) accepts
// only lines the full decoder accepts, with the same event, bytes and hash; and neither
// panics on any line.
func FuzzDecodeLine(f *testing.F) {
	for _, l := range sampleLines(f) {
		f.Add(l)
	}
	f.Add([]byte(`{"schema":1,"stream":"node/n","seq":1}`))
	f.Fuzz(func(t *testing.T, line []byte) {
		ev, v, err := decodeLine(line)
		fev, fv, fok := fastDecode(line)
		var full events.Event
		ferr := full.UnmarshalJSON(line)
		if fok {
			if ferr != nil {
				t.Fatalf("the fast decoder accepted a line the full decoder refuses (%v): %s", ferr, line)
			}
			want, eerr := events.Encode(&full)
			if eerr != nil || !bytes.Equal(fv, want) || fev.Hash != full.Hash || fev.Revision != full.Revision || fev.Stream != full.Stream || fev.Seq != full.Seq {
				t.Fatalf("the fast decoder disagrees with the full one (%v):\n%x\n%x\n%s", eerr, fv, want, line)
			}
		}
		if err != nil {
			if !errors.Is(err, events.ErrCorrupt) && !errors.Is(err, events.ErrUnknownType) && !errors.Is(err, events.ErrFutureSchema) {
				t.Fatalf("decodeLine error without a sentinel: %v", err)
			}
			return
		}
		if ev.Hash.IsZero() || events.HashOf(ev.Stream, ev.Seq, v) != ev.Hash {
			t.Fatalf("decodeLine accepted an event whose hash is not its content's: %s", line)
		}
	})
}

// FuzzVerifyFile: whatever a file holds, Verifier.File ends (no panic, no hang) with
// success, ErrFormat or a broken log.
func FuzzVerifyFile(f *testing.F) {
	lines := sampleLines(f)
	header := `{"coilLogExport":1,"kind":"export","prefix":"/coil/","revision":10,"created":"2030-01-02T03:04:05Z","streams":{}}`
	f.Add([]byte(header + "\n"))
	f.Add([]byte(header + "\n" + string(lines[0]) + "\n"))
	f.Add([]byte(`{"coilLogExport":1,"kind":"archive","streams":{"cluster":{"first":1,"last":1,"lastHash":"00"}}}` + "\n" + string(lines[0]) + "\n"))
	f.Add([]byte("not json\n"))
	f.Add([]byte(""))
	f.Fuzz(func(t *testing.T, data []byte) {
		_, err := NewVerifier().File(context.Background(), bytes.NewReader(data))
		if err != nil && !errors.Is(err, ErrFormat) && !errors.Is(err, ErrBroken) {
			t.Fatalf("neither a format error nor a broken log: %v", err)
		}
	})
}
