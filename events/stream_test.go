package events_test

import (
	"testing"

	"github.com/coil-net/coil/events"
)

func TestBlockStreamNames(t *testing.T) {
	for _, tc := range []struct {
		pool  string
		index uint64
		name  string
	}{{"p", 0, "block/p/0"}, {"default", 17, "block/default/17"}, {"a.b-c", 4294967295, "block/a.b-c/4294967295"},
		{"v6", 4294967296, "block/v6/4294967296"}, {"v6", 1<<56 - 1, "block/v6/72057594037927935"}, {"v6", 1<<64 - 1, "block/v6/18446744073709551615"}} {
		s := events.BlockStream(tc.pool, tc.index)
		if string(s) != tc.name {
			t.Errorf("BlockStream(%q, %d) = %q, want %q", tc.pool, tc.index, s, tc.name)
		}
		if err := s.Validate(); err != nil {
			t.Errorf("%s: %v", s, err)
		}
		pool, idx, ok := s.Block()
		if !ok || pool != tc.pool || idx != tc.index {
			t.Errorf("%s.Block() = %q, %d, %v", s, pool, idx, ok)
		}
		if kind, _ := s.Kind(); kind != "block" {
			t.Errorf("%s.Kind() = %q", s, kind)
		}
	}
	for _, bad := range []string{"block/p/007", "block/p/", "block/p", "block//1", "block/P/1", "block/p/18446744073709551616",
		"block/p/1/2", "block/p/-1", "block/p/1x", "block/p/99999999999999999999", "block/p/100000000000000000000", "pool/p/1", "node/p/1"} {
		s := events.Stream(bad)
		if err := s.Validate(); err == nil {
			t.Errorf("%q accepted as a stream name", bad)
		}
		if _, _, ok := s.Block(); ok {
			t.Errorf("%q parsed as a block stream", bad)
		}
	}
	// Key round trip: the stream's slashes do not confuse the sequence.
	k := events.NewKeys("")
	s := events.BlockStream("p", 12)
	got, seq, err := k.ParseEvent(k.Event(s, 3))
	if err != nil || got != s || seq != 3 {
		t.Fatalf("ParseEvent(Event(%s, 3)) = %s, %d, %v", s, got, seq, err)
	}
	if got, err := k.ParseHead(k.Head(s)); err != nil || got != s {
		t.Fatalf("ParseHead(Head(%s)) = %s, %v", s, got, err)
	}
}
