package cli_test

import (
	"bufio"
	"encoding/json"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

type eventOut struct {
	Revision int64          `json:"revision"`
	Stream   string         `json:"stream"`
	Seq      uint64         `json:"seq"`
	Type     string         `json:"type"`
	Time     string         `json:"time"`
	Actor    string         `json:"actor"`
	Hash     string         `json:"hash"`
	Prev     string         `json:"prev"`
	Payload  map[string]any `json:"payload"`
}

func parseJSONLines(t *testing.T, out string) []eventOut {
	t.Helper()
	var evs []eventOut
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		var e eventOut
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			t.Fatalf("line %q is not one JSON object: %v", sc.Text(), err)
		}
		evs = append(evs, e)
	}
	return evs
}

// TestEvents reads a log whose pools keep their blocks in pool streams (as every log
// written before block streams); TestEventsBlockStreams reads the default layout.
func TestEvents(t *testing.T) {
	e := cluster2Layout(t, "pool-stream")
	e.ok("pool", "create", "spare", "10.9.0.0/24", "--layout", "pool-stream", noSkipNB)
	e.ok("pool", "delete", "spare", "--yes")

	all := parseJSONLines(t, e.ok("events", "-o", "json"))
	// 4 cluster events, 2 registrations, 3 block assignments (n1 default, n2 default, n2 dual),
	// 4 address assignments.
	if len(all) != 13 {
		t.Fatalf("%d events, want 13: %+v", len(all), all)
	}
	seqs := map[string]uint64{}
	for i, ev := range all {
		if i > 0 && ev.Revision < all[i-1].Revision {
			t.Fatalf("event %d (rev %d) after rev %d: not in revision order", i, ev.Revision, all[i-1].Revision)
		}
		if ev.Seq != seqs[ev.Stream]+1 {
			t.Fatalf("%s #%d after #%d", ev.Stream, ev.Seq, seqs[ev.Stream])
		}
		seqs[ev.Stream] = ev.Seq
		if len(ev.Hash) != 64 || ev.Time != "2030-01-02T03:04:05Z" || ev.Payload == nil {
			t.Fatalf("event %+v lacks hash, time or payload", ev)
		}
	}
	if all[0].Type != "PoolCreated" || all[0].Payload["name"] != "default" || all[0].Actor != "coilctl:tester" {
		t.Fatalf("first event = %+v", all[0])
	}

	// --stream exact, --stream prefix, --type repeatable and comma-separated.
	for _, tc := range []struct {
		args  []string
		n     int
		check func(eventOut) bool
	}{
		{[]string{"--stream", "cluster"}, 4, func(e eventOut) bool { return e.Stream == "cluster" }},
		{[]string{"--stream", "pool/"}, 3, func(e eventOut) bool { return strings.HasPrefix(e.Stream, "pool/") }},
		{[]string{"--stream", "node/n2"}, 3, func(e eventOut) bool { return e.Stream == "node/n2" }},
		{[]string{"--type", "AddressAssigned"}, 4, func(e eventOut) bool { return e.Type == "AddressAssigned" }},
		{[]string{"--type", "BlockAssigned,NodeRegistered"}, 5, func(e eventOut) bool { return e.Type == "BlockAssigned" || e.Type == "NodeRegistered" }},
		{[]string{"--type", "PoolCreated", "--type", "PoolDeleted"}, 4, func(e eventOut) bool { return strings.HasPrefix(e.Type, "Pool") }},
		{[]string{"--stream", "node/", "--type", "AddressAssigned"}, 4, func(e eventOut) bool { return e.Type == "AddressAssigned" }},
		{[]string{"--stream", "node/nobody"}, 0, nil},
	} {
		got := parseJSONLines(t, e.ok(append([]string{"events", "-o", "json"}, tc.args...)...))
		if len(got) != tc.n {
			t.Errorf("events %v: %d events, want %d", tc.args, len(got), tc.n)
		}
		for _, ev := range got {
			if !tc.check(ev) {
				t.Errorf("events %v: unexpected %s #%d %s", tc.args, ev.Stream, ev.Seq, ev.Type)
			}
		}
	}

	table := e.ok("events")
	t.Logf("events:\n%s", table)
	wantHeader(t, table, "REV TIME STREAM SEQ TYPE ACTOR SUMMARY")
	e.wantContains(t, "events table", table,
		"pool default: 10.0.0.0/24, blocks of 16 addresses",
		"pool dual: 10.1.0.0/24,fd00:1::/120, blocks of 8 addresses",
		"block {c1#} ({c1/}) -> n1",
		"block {c4#} ({c4/},{c46/}) -> n2",
		"{c1} -> ns/web-1 (c1aaaaaaaaaa../eth0)",
		"{c4},{c46} -> ns/dual-1 (c4/eth0)",
		"node n1 registered, lease ",
		"pool spare deleted",
	)
	if rows := len(lines(table)); rows != 14 {
		t.Errorf("events table has %d lines, want 14", rows)
	}

	var y []eventOut
	if err := yaml.Unmarshal([]byte(e.ok("events", "--stream", "pool/dual", "-o", "yaml")), &y); err != nil ||
		len(y) != 1 || y[0].Type != "BlockAssigned" || y[0].Payload["node"] != "n2" {
		t.Fatalf("events -o yaml = %+v, %v", y, err)
	}
	if out := e.ok("events", "--stream", "node/nobody", "-o", "yaml"); strings.TrimSpace(out) != "[]" {
		t.Fatalf("empty yaml = %q", out)
	}

	e.fails(2, []string{"events", "--type", "Bogus"}, `--type "Bogus" is not an event type (one of: PoolCreated,`)
	e.fails(2, []string{"events", "--stream", "pools/x"}, `--stream: "pools/x" (want cluster, pool/NAME, block/POOL/INDEX or node/NAME)`)
	e.fails(2, []string{"events", "extra"}, "takes no arguments")
}

// TestEventsBlockStreams: pools with a stream per block (the default): the take's two
// events (the block's stream and the node's record), --stream block/POOL/INDEX and
// block/POOL/, --pool and --node over block streams, the summaries.
func TestEventsBlockStreams(t *testing.T) {
	e := cluster2(t)
	all := parseJSONLines(t, e.ok("events", "-o", "json"))
	// 5 cluster events (ClusterLevelRaised: block streams need feature level 1; then
	// PoolCreated and PoolSplit per pool), 2 registrations, 3 takes (BlockAssigned in the
	// block's stream + NodeBlockAdded: 6 events), 4 address assignments (c1, c2 on n1;
	// c3, c4 on n2).
	if len(all) != 17 {
		t.Fatalf("%d events, want 17: %+v", len(all), all)
	}
	byRev := map[int64][]string{}
	for _, ev := range all {
		byRev[ev.Revision] = append(byRev[ev.Revision], ev.Stream+" "+ev.Type)
	}
	c1block := e.subst("block/default/{c1#}")
	for _, tc := range []struct {
		args  []string
		n     int
		check func(eventOut) bool
	}{
		{[]string{"--stream", c1block}, 1, func(ev eventOut) bool { return ev.Stream == c1block && ev.Payload["node"] == "n1" }},
		{[]string{"--stream", "block/default/"}, 2, func(ev eventOut) bool { return strings.HasPrefix(ev.Stream, "block/default/") }},
		{[]string{"--stream", "block/"}, 3, func(ev eventOut) bool { return ev.Type == "BlockAssigned" }},
		{[]string{"--type", "NodeBlockAdded"}, 3, func(ev eventOut) bool { return strings.HasPrefix(ev.Stream, "node/") }},
		{[]string{"--pool", "dual"}, 5, func(ev eventOut) bool {
			return ev.Stream == "cluster" || strings.HasPrefix(ev.Stream, "block/dual/") || ev.Payload["pool"] == "dual"
		}},
		{[]string{"--node", "n1", "--type", "BlockAssigned,NodeBlockAdded"}, 2, func(ev eventOut) bool {
			return ev.Stream == "node/n1" || ev.Payload["node"] == "n1"
		}},
	} {
		got := parseJSONLines(t, e.ok(append([]string{"events", "-o", "json"}, tc.args...)...))
		if len(got) != tc.n {
			t.Errorf("events %v: %d events, want %d: %+v", tc.args, len(got), tc.n, got)
		}
		for _, ev := range got {
			if !tc.check(ev) {
				t.Errorf("events %v: unexpected %s #%d %s", tc.args, ev.Stream, ev.Seq, ev.Type)
			}
		}
	}
	// A take is one transaction: the block's BlockAssigned, the node's NodeBlockAdded and
	// the first address in it share a revision.
	for _, ev := range all {
		if ev.Type == "BlockAssigned" && len(byRev[ev.Revision]) != 3 {
			t.Errorf("revision %d holds %v, want the block's event, NodeBlockAdded and an address", ev.Revision, byRev[ev.Revision])
		}
	}
	table := e.ok("events")
	t.Logf("events:\n%s", table)
	e.wantContains(t, "events table", table,
		"pool default: a stream per block from here on",
		"block {c1#} ({c1/}) -> n1",
		"block {c1#} of default ({c1/}) taken",
		"block {c4#} of dual ({c4/},{c46/}) taken",
	)
}
