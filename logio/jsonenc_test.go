package logio

import (
	"bytes"
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
