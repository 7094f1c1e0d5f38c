package events_test

import (
	"testing"

	"github.com/cockroachdb/errors"

	"github.com/coil-net/coil/events"
)

func TestIndexKeys(t *testing.T) {
	k := events.NewKeys("")
	s := events.NodeStream("n1")
	if got := k.Index(s, 1025); got != "/coil/index/node/n1/000000001025" {
		t.Fatalf("Index = %q", got)
	}
	if k.IndexPrefix() != "/coil/index/" || k.IndexStreamPrefix(s) != "/coil/index/node/n1/" {
		t.Fatalf("prefixes %q %q", k.IndexPrefix(), k.IndexStreamPrefix(s))
	}
	gs, first, err := k.ParseIndex("/coil/index/node/n1/000000001025")
	if err != nil || gs != s || first != 1025 {
		t.Fatalf("ParseIndex = %q %d %v", gs, first, err)
	}
	for _, bad := range []string{"/coil/log/node/n1/000000001025", "/coil/index/node/n1/1025", "/coil/index/node/n1/000000000000", "/coil/index/bogus/000000000001"} {
		if _, _, err := k.ParseIndex(bad); !errors.Is(err, events.ErrBadKey) {
			t.Errorf("ParseIndex(%q) = %v, want ErrBadKey", bad, err)
		}
	}
}
