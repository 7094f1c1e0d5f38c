package cli_test

import (
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/coil-net/coil/allocator"
)

// TestClaimsInAuditCommands: a fixed-address claim by a node that does not own the
// address's block, and a reservation that came and went, show in history ADDRESS (the
// claiming node's stream is read; the claim marked fixed, the reservation a row of its
// own), in state --at (FIXED-ADDRESS CLAIMS), in diff (+ claim) and in events --pod
// (AddressClaimed in the pool stream next to AddressAssigned in the node's).
func TestClaimsInAuditCommands(t *testing.T) {
	e := newEnv(t)
	e.ok("pool", "create", "p", "10.0.0.0/24", "--block-size-bits", "3")
	n1, _ := e.startNode("n1")
	n2, _ := e.startNode("n2")
	e.alloc(n1, "c1aaaaaaaaaaaaaa", "p", "web-0") // n1 takes a block
	e.ok("pool", "reserve", "p", "10.0.0.200", "--reason", "printers")
	e.ok("pool", "unreserve", "p", "10.0.0.200", "--reason", "printers gone")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := n2.Allocate(ctx, allocator.Request{ContainerID: "c2bbbbbbbbbbbbbb", IfName: "eth0", Pool: "p", PodNamespace: "ns", PodName: "db-0",
		Fixed: []netip.Addr{netip.MustParseAddr("10.0.0.200")}}); err != nil {
		t.Fatal(err)
	}

	out := e.ok("history", "10.0.0.200")
	if !strings.Contains(out, "(reserved by coilctl:tester: printers)") || !strings.Contains(out, "printers gone") ||
		!strings.Contains(out, "ns/db-0 (fixed)") || !strings.Contains(row(t, out, "10.0.0.200")[0], "10.0.0.200") {
		t.Fatalf("history 10.0.0.200:\n%s", out)
	}
	if js := e.ok("history", "10.0.0.200", "-o", "json"); !strings.Contains(js, `"kind": "reservation"`) || !strings.Contains(js, `"fixed": true`) {
		t.Fatalf("history -o json:\n%s", js)
	}
	out = e.ok("state", "--at", "2030-01-02T03:04:05Z")
	claims := out[strings.Index(out, "FIXED-ADDRESS CLAIMS"):]
	if f := row(t, claims, "10.0.0.200"); f[3] != "n2" || f[6] != "ns/db-0" {
		t.Fatalf("state --at, claims:\n%s", out)
	}
	if out = e.ok("diff", "1", "2030-01-02T03:04:05Z"); !strings.Contains(out, "+ claim") || !strings.Contains(out, "node n2 c2bbbbbbbbbb../eth0 pod ns/db-0") {
		t.Fatalf("diff:\n%s", out)
	}
	out = e.ok("events", "--pod", "ns/db-0")
	if !strings.Contains(out, "AddressClaimed") || !strings.Contains(out, "AddressAssigned") {
		t.Fatalf("events --pod ns/db-0:\n%s", out)
	}
}
