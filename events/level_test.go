package events_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/errors"

	"github.com/coil-net/coil/events"
)

// Every type has a level this build supports, and the table is pinned: a type's level
// never changes once released (an old coild would meet it at a level it was promised it
// could read).
func TestEveryTypeHasALevel(t *testing.T) {
	var b strings.Builder
	for _, typ := range events.AllTypes() {
		l := events.MinLevel(typ)
		if l > events.CurrentLevel {
			t.Errorf("%s has no level (MinLevel %d)", typ, l)
		}
		fmt.Fprintf(&b, "%s %d\n", typ, l)
	}
	path := filepath.Join(goldenDir, "levels.txt")
	if *update {
		if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if string(want) != b.String() {
		t.Fatalf("levels changed: a released type keeps its level; a new one gets a new level.\n got:\n%s\nwant:\n%s", b.String(), want)
	}
	if got := events.MinLevel("NoSuchType"); got <= events.CurrentLevel {
		t.Fatalf("unknown type: level %d, want above %d", got, events.CurrentLevel)
	}
	evs := []*events.Event{{Payload: &events.PoolDeleted{Name: "a"}}, {Payload: &events.ClusterLevelRaised{Level: 1}}}
	if l, typ := events.NeededLevel(evs); l != events.Level1 || typ != events.TypeClusterLevelRaised {
		t.Fatalf("NeededLevel = %d %s", l, typ)
	}
	if l, _ := events.NeededLevel(evs[:1]); l != events.LevelBase {
		t.Fatalf("NeededLevel of base types = %d", l)
	}
}

func TestParseAlive(t *testing.T) {
	for _, c := range []struct {
		value string
		want  events.AliveInfo
	}{
		{"node-1", events.AliveInfo{Node: "node-1", Legacy: true}}, // a release before feature levels
		{events.AliveValue(events.AliveInfo{Node: "n2", Level: 1, Build: "abc"}), events.AliveInfo{Node: "n2", Level: 1, Build: "abc"}},
		{`{"node":"n3","level":7,"future":true}`, events.AliveInfo{Node: "n3", Level: 7}}, // fields a later release adds
		{`{"node":`, events.AliveInfo{Build: "unreadable liveness value"}},                // counts as level 0
	} {
		if got := events.ParseAlive([]byte(c.value)); got != c.want {
			t.Errorf("ParseAlive(%q) = %+v, want %+v", c.value, got, c.want)
		}
	}
}

// A code this build does not know (a later release's type, or one of a parallel branch's
// before it merges) names the codes it knows.
func TestUnknownTypeCode(t *testing.T) {
	for _, code := range []byte{99, 127} {
		_, err := events.Decode(events.ClusterStream, 1, []byte{0xC1, 1, code})
		if !errors.Is(err, events.ErrUnknownType) || !strings.Contains(err.Error(), "it knows 1-") ||
			!strings.Contains(err.Error(), "type code "+strconv.Itoa(int(code))) {
			t.Fatalf("code %d: %v", code, err)
		}
	}
}

// LiveNodes reads each coild's level from its liveness key; an append conditioned on
// NoNodeStartedSince fails, naming the node, once a coild started after the read.
func TestAppendNoNodeStartedSince(t *testing.T) {
	_, cli, lg := startEtcdLog(t, events.EtcdConfig{Prefix: "/p/"})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	holdAlive(ctx, t, cli, "old", "old")
	holdAlive(ctx, t, cli, "new", events.AliveValue(events.AliveInfo{Node: "new", Level: 1, Build: "b1"}))
	live, rev, err := lg.LiveNodes(ctx, false)
	if err != nil || len(live) != 2 {
		t.Fatalf("live = %+v, %v", live, err)
	}
	if n := live[1]; n.Node != "old" || n.Level != 0 || !n.Legacy {
		t.Fatalf("old = %+v", n)
	}
	if n := live[0]; n.Node != "new" || n.Level != 1 || n.Legacy || n.Build != "b1" {
		t.Fatalf("new = %+v", n)
	}
	ev := func() []*events.Event {
		return []*events.Event{{Time: time.Unix(1, 0), Actor: "t", Payload: &events.ClusterLevelRaised{Level: 1}}}
	}
	holdAlive(ctx, t, cli, "late", "late")
	_, err = lg.Append(ctx, events.AppendRequest{Stream: events.ClusterStream, Events: ev(), NoNodeStartedSince: rev})
	if !errors.Is(err, events.ErrConflict) || !strings.Contains(err.Error(), "node late") {
		t.Fatalf("append after a coild started: %v", err)
	}
	if v, _, herr := lg.Head(ctx, events.ClusterStream); herr != nil || v.Seq != 0 {
		t.Fatalf("head %+v %v: the failed append wrote", v, herr)
	}
	_, rev, err = lg.LiveNodes(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	if _, err = lg.Append(ctx, events.AppendRequest{Stream: events.ClusterStream, Events: ev(), NoNodeStartedSince: rev}); err != nil {
		t.Fatalf("append with no coild started since: %v", err)
	}
}
