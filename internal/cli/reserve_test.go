package cli_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// TestPoolReserve: pool create --reserve and the network/broadcast default, pool reserve
// (with every refusal, none of which writes anything), --after-release shown as pending
// until the pod releases, pool unreserve, pool set, and the events as coilctl shows them.
func TestPoolReserve(t *testing.T) {
	e := newEnv(t)
	e.fails(2, []string{"pool", "create", "bad", "10.0.0.0/24", "--reserve", "10.9.0.1"}, `range 10.9.0.1 is not inside a subnet of pool "bad" (10.0.0.0/24)`)
	e.fails(2, []string{"pool", "create", "bad", "10.0.0.0/24", "--reserve", "10.0.0.0/25", "--reserve", "10.0.0.7"}, "ranges 10.0.0.0-10.0.0.127 and 10.0.0.7 overlap")
	e.fails(2, []string{"pool", "create", "bad", "10.0.0.0/24", "--reserve", "10.0.0.300"}, `range "10.0.0.300": "10.0.0.300" is not an IP address`)
	e.fails(3, []string{"pool", "show", "bad"}, `pool "bad" not found`)

	e.ok("pool", "create", "p", "10.0.0.0/24", "--block-size-bits", "3", "--reserve", "10.0.0.1", "--reserve", "10.0.0.240/28", "--reserve-reason", "router and VIPs")
	show := e.ok("pool", "show", "p")
	for _, want := range []string{"Network/broadcast: skipped", "RANGE", "10.0.0.1 ", "10.0.0.240-10.0.0.255", "router and VIPs", "coilctl:tester"} {
		if !strings.Contains(show, want) {
			t.Fatalf("pool show lacks %q:\n%s", want, show)
		}
	}
	n1, _ := e.startNode("n1")
	if a := e.alloc(n1, "c1", "p", "web-1"); a.Addrs[0].String() != "10.0.0.2" {
		t.Fatalf("first address %v, want 10.0.0.2 (10.0.0.0 is the network address, 10.0.0.1 reserved)", a.Addrs)
	}

	before := e.rev()
	for _, c := range []struct {
		code int
		args []string
		want []string
	}{
		{2, []string{"pool", "reserve", "p", "10.0.0.9"}, []string{"--reason is required"}},
		{2, []string{"pool", "reserve", "p", "--reason", "x"}, []string{"takes a POOL and at least one RANGE"}},
		{2, []string{"pool", "reserve", "p", "banana", "--reason", "x"}, []string{`range "banana": "banana" is not an IP address (want ADDRESS, PREFIX/LEN or FIRST-LAST)`}},
		{2, []string{"pool", "reserve", "p", "10.0.0.9-10.0.0.3", "--reason", "x"}, []string{"ends before it starts"}},
		{2, []string{"pool", "reserve", "p", "10.0.0.9/24", "--reason", "x"}, []string{"host bits set: did you mean 10.0.0.0/24?"}},
		{2, []string{"pool", "reserve", "p", "10.1.0.9", "--reason", "x"}, []string{`range 10.1.0.9 is not inside a subnet of pool "p"`}},
		{2, []string{"pool", "reserve", "p", "10.0.0.8/30", "10.0.0.10", "--reason", "x"}, []string{"ranges 10.0.0.8-10.0.0.11 and 10.0.0.10 overlap"}},
		{4, []string{"pool", "reserve", "p", "10.0.0.230-10.0.0.241", "--reason", "x"}, []string{"range 10.0.0.230-10.0.0.241 overlaps 10.0.0.240-10.0.0.255, reserved by coilctl:tester", "unreserve it first"}},
		{4, []string{"pool", "reserve", "p", "10.0.0.2", "--reason", "x"}, []string{"10.0.0.2 (pod ns/web-1 on node n1)", "--after-release"}},
		{3, []string{"pool", "reserve", "nope", "10.0.0.2", "--reason", "x"}, []string{`pool "nope" not found`}},
		{2, []string{"pool", "unreserve", "p", "10.0.0.1"}, []string{"--reason is required"}},
		{4, []string{"pool", "unreserve", "p", "10.0.0.1-10.0.0.3", "--reason", "x"}, []string{"address 10.0.0.2 of range 10.0.0.1-10.0.0.3 is not reserved"}},
		{2, []string{"pool", "unreserve", "p", "fd00::1", "--reason", "x"}, []string{"not inside a subnet"}},
		{2, []string{"pool", "set", "p"}, []string{"nothing to set"}},
		{3, []string{"pool", "set", "nope", "--skip-network-broadcast=false"}, []string{`pool "nope" not found`}},
	} {
		e.fails(c.code, c.args, c.want...)
	}
	if after := e.rev(); after != before {
		t.Fatalf("refused commands moved etcd from revision %s to %s", before, after)
	}

	out := e.ok("pool", "reserve", "p", "10.0.0.2-10.0.0.3", "--reason", "LB", "--after-release")
	if !strings.Contains(out, "pending until released: 10.0.0.2 (pod ns/web-1 on node n1)") {
		t.Fatalf("reserve --after-release said %q", out)
	}
	var v struct {
		SkipNetworkBroadcast bool `json:"skipNetworkBroadcast"`
		Reservations         []struct {
			Range, Reason, By string
			AfterRelease      bool
			Pending           []string
		} `json:"reservations"`
	}
	if err := json.Unmarshal([]byte(e.ok("pool", "show", "p", "-o", "json")), &v); err != nil {
		t.Fatal(err)
	}
	if !v.SkipNetworkBroadcast || len(v.Reservations) != 3 || v.Reservations[1].Range != "10.0.0.2-10.0.0.3" || !v.Reservations[1].AfterRelease ||
		len(v.Reservations[1].Pending) != 1 || v.Reservations[1].By != "coilctl:tester" {
		t.Fatalf("pool show -o json: %+v", v)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := n1.Release(ctx, "c1", "eth0", "pod deleted"); err != nil {
		t.Fatal(err)
	}
	if show := e.ok("pool", "show", "p"); strings.Contains(show, "web-1") {
		t.Fatalf("pool show still lists the released holder:\n%s", show)
	}
	if a := e.alloc(n1, "c2", "p", "web-2"); a.Addrs[0].String() != "10.0.0.4" {
		t.Fatalf("after the release: %v, want 10.0.0.4", a.Addrs)
	}

	if out := e.ok("pool", "unreserve", "p", "10.0.0.240/29", "--reason", "VIPs moved"); out != "pool \"p\": unreserved 10.0.0.240-10.0.0.247\n" {
		t.Fatalf("unreserve said %q", out)
	}
	if out := e.ok("pool", "set", "p", "--skip-network-broadcast=false"); !strings.Contains(out, `pool "p" changed: skip network and broadcast addresses: no`) {
		t.Fatalf("pool set said %q", out)
	}
	if out := e.ok("pool", "set", "p", "--skip-network-broadcast=false"); !strings.Contains(out, "unchanged") {
		t.Fatalf("pool set again said %q", out)
	}
	evs := e.ok("events", "--stream", "cluster")
	for _, want := range []string{
		"pool p skips its IPv4 network and broadcast addresses",
		"pool p reserves 10.0.0.1 10.0.0.240-10.0.0.255: router and VIPs",
		"pool p reserves 10.0.0.2-10.0.0.3 (held addresses: once released): LB",
		"pool p unreserves 10.0.0.240-10.0.0.247: VIPs moved",
		"pool p hands out its IPv4 network and broadcast addresses",
	} {
		if !strings.Contains(evs, want) {
			t.Errorf("events lack %q:\n%s", want, evs)
		}
	}
	// IPv6 pools have no option to set and write none.
	e.ok("pool", "create", "v6", "fd00:6::/120")
	if evs := e.ok("events", "--stream", "cluster", "--pool", "v6"); strings.Contains(evs, "network and broadcast") {
		t.Fatalf("an IPv6 pool got the option:\n%s", evs)
	}
}
