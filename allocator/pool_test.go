package allocator_test

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cockroachdb/errors"

	"github.com/coil-net/coil/allocator"
	"github.com/coil-net/coil/events"
	"github.com/coil-net/coil/projection"
)

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *fakeClock { return &fakeClock{t: time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(time.Millisecond)
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func pool(t *testing.T, name string, bits uint8, subnets ...string) *events.PoolCreated {
	t.Helper()
	p := &events.PoolCreated{Name: name, BlockSizeBits: bits}
	for _, s := range subnets {
		sn, err := allocator.ParseSubnet(s)
		if err != nil {
			t.Fatalf("ParseSubnet(%q): %v", s, err)
		}
		p.Subnets = append(p.Subnets, sn)
	}
	return p
}

func TestParseSubnetErrors(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"10.0.0.0", "is not a CIDR"},
		{"banana/8", "is not a CIDR"},
		{"10.0.0.1/24", "did you mean 10.0.0.0/24"},
		{"10.0.0.0/24,10.1.0.0/24", "two IPv4 networks"},
		{"::ffff:10.0.0.0/120", "IPv4-mapped"},
		{"a,b,c", "want NET or IPV4NET,IPV6NET"},
	} {
		_, err := allocator.ParseSubnet(tc.in)
		if !errors.Is(err, allocator.ErrInvalidPool) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParseSubnet(%q) = %v, want ErrInvalidPool with %q", tc.in, err, tc.want)
		}
	}
	sn, err := allocator.ParseSubnet("10.0.0.0/24,fd00::/112")
	if err != nil || !sn.IPv4.IsValid() || !sn.IPv6.IsValid() {
		t.Fatalf("dual stack: %v %v", sn, err)
	}
}

func TestValidatePool(t *testing.T) {
	ctx := context.Background()
	log := events.NewMemLog()
	admin := &allocator.Admin{Log: log, Clock: newClock(), Actor: "test"}
	if err := admin.CreatePool(ctx, pool(t, "default", 5, "10.0.0.0/16")); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name     string
		p        *events.PoolCreated
		sentinel error
		want     string
	}{
		{"duplicate name", pool(t, "default", 5, "10.9.0.0/16"), allocator.ErrPoolExists, `"default"`},
		{"invalid name", pool(t, "Bad_Name", 5, "10.9.0.0/16"), allocator.ErrInvalidPool, "lower-case"},
		{"empty name", pool(t, "", 5, "10.9.0.0/16"), allocator.ErrInvalidPool, "empty"},
		{"no subnet", pool(t, "x", 5), allocator.ErrInvalidPool, "at least one subnet"},
		{"overlap other pool", pool(t, "x", 5, "10.0.128.0/24"), allocator.ErrOverlap, `overlaps subnet 10.0.0.0/16 of pool "default"`},
		{"overlap itself", pool(t, "x", 5, "10.9.0.0/16", "10.9.1.0/24"), allocator.ErrOverlap, "overlaps its own"},
		{"v4 block too big", pool(t, "x", 9, "10.9.0.0/24"), allocator.ErrInvalidPool, "block size 9 bits is out of range for IPv4 subnet 10.9.0.0/24: must be between 0 and 8"},
		{"v4 block over max", pool(t, "x", 17, "10.0.0.0/8"), allocator.ErrInvalidPool, "must be between 0 and 16"},
		{"v6 block too big", pool(t, "x", 9, "fd00::/120"), allocator.ErrInvalidPool, "out of range for IPv6 subnet fd00::/120: must be between 0 and 8"},
		{"pool past 2^63 blocks", pool(t, "x", 8, wideSubnets(129)...), allocator.ErrInvalidPool, "subnet fd00:0:0:80::/64 would take the pool past 9223372036854775808 blocks (2^63; Coil numbers up to 2^58 blocks of each subnet)"},
		{"mixed kinds", pool(t, "x", 5, "10.9.0.0/24", "fd00::/112"), allocator.ErrInvalidPool, "all of one kind"},
		{"dual v6 too small", pool(t, "x", 2, "10.9.0.0/24,fd00::/124"), allocator.ErrInvalidPool, "fewer than the IPv4"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := admin.CreatePool(ctx, tc.p)
			if !errors.Is(err, tc.sentinel) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v\nwant %v containing %q", err, tc.sentinel, tc.want)
			}
		})
	}
	c, err := admin.Cluster(ctx)
	if err != nil || len(c.Pools) != 1 {
		t.Fatalf("pools after refusals: %v %v", c, err)
	}
	if err := admin.AddSubnet(ctx, "default", events.Subnet{IPv4: pfx("10.0.5.0/24")}); !errors.Is(err, allocator.ErrOverlap) {
		t.Fatalf("AddSubnet overlapping: %v", err)
	}
	if err := admin.AddSubnet(ctx, "nope", events.Subnet{IPv4: pfx("10.7.0.0/24")}); !errors.Is(err, allocator.ErrPoolNotFound) {
		t.Fatalf("AddSubnet unknown pool: %v", err)
	}
	if err := admin.AddSubnet(ctx, "default", events.Subnet{IPv4: pfx("10.7.0.0/24")}); err != nil {
		t.Fatal(err)
	}
	if err := admin.DeletePool(ctx, "nope"); !errors.Is(err, allocator.ErrPoolNotFound) {
		t.Fatalf("DeletePool unknown: %v", err)
	}
}

// Overlapping pools created concurrently: exactly one wins, through the cluster stream.
func TestCreatePoolRace(t *testing.T) {
	ctx := context.Background()
	log := events.NewMemLog()
	var wg sync.WaitGroup
	errs := make([]error, 8)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			admin := &allocator.Admin{Log: log, Clock: newClock(), Actor: "test"}
			errs[i] = admin.CreatePool(ctx, pool(t, "p"+string(rune('a'+i)), 5, "10.0.0.0/24"))
		}()
	}
	wg.Wait()
	ok := 0
	for _, err := range errs {
		switch {
		case err == nil:
			ok++
		case !errors.Is(err, allocator.ErrOverlap):
			t.Errorf("unexpected error: %v", err)
		}
	}
	if ok != 1 {
		t.Fatalf("%d overlapping pools created, want 1", ok)
	}
}

// Issue 10: pools over ranges that break a node are refused when they are defined, by
// create and add-subnet alike, with the reason; nothing reaches the log.
func TestReservedRangesRefused(t *testing.T) {
	ctx := context.Background()
	log := events.NewMemLog()
	admin := &allocator.Admin{Log: log, Clock: newClock(), Actor: "test"}
	if err := admin.CreatePool(ctx, pool(t, "default", 5, "10.0.0.0/16")); err != nil {
		t.Fatal(err)
	}
	if err := admin.CreatePool(ctx, pool(t, "v6", 5, "fd00::/112")); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ subnet, want string }{
		{"169.254.0.0/16", `pool "x": 169.254.0.0/16 is link-local: pods' default gateway 169.254.1.1 lives there`},
		{"127.0.0.0/16", "127.0.0.0/16 is loopback (127.0.0.0/8)"},
		{"224.0.0.0/16", "224.0.0.0/16 is multicast (224.0.0.0/4)"},
		{"0.0.0.0/16", `0.0.0.0/16 is reserved for "this network" (0.0.0.0/8)`},
		{"255.255.255.0/24", "255.255.255.0/24 contains 255.255.255.255, the limited broadcast address"},
		{"fe80::/112", "fe80::/112 is link-local (fe80::/10): pods' default gateway fe80::1 lives there"},
		{"ff05::/112", "ff05::/112 is multicast (ff00::/8)"},
		{"::/112", "::/112 is reserved for the unspecified, loopback and IPv4-compatible addresses (::/96)"},
		{"10.9.0.0/24,fe80::/120", "fe80::/120 is link-local (fe80::/10)"},
		{"169.254.1.0/24,fd01::/120", "169.254.1.0/24 is link-local (169.254.0.0/16)"},
	} {
		t.Run(tc.subnet, func(t *testing.T) {
			err := admin.CreatePool(ctx, pool(t, "x", 3, tc.subnet))
			if !errors.Is(err, allocator.ErrInvalidPool) || !errors.Is(err, projection.ErrReservedRange) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("create: err = %v\nwant ErrInvalidPool and ErrReservedRange containing %q", err, tc.want)
			}
			sn, perr := allocator.ParseSubnet(tc.subnet)
			if perr != nil {
				t.Fatal(perr)
			}
			to := "default"
			if !sn.IPv4.IsValid() {
				to = "v6"
			}
			if sn.IPv4.IsValid() && sn.IPv6.IsValid() {
				return // no dual-stack pool to extend
			}
			err = admin.AddSubnet(ctx, to, sn)
			if !errors.Is(err, allocator.ErrInvalidPool) || !errors.Is(err, projection.ErrReservedRange) {
				t.Fatalf("add-subnet to %s: err = %v, want ErrInvalidPool and ErrReservedRange", to, err)
			}
		})
	}
	c, err := admin.Cluster(ctx)
	if err != nil || len(c.Pools) != 2 || len(c.Pools["default"].Subnets) != 1 || len(c.Pools["v6"].Subnets) != 1 {
		t.Fatalf("pools after refusals: %+v %v", c.Pools, err)
	}
	// 240.0.0.0/4 short of its broadcast address is usable: the kernel routes it and BIRD
	// announces it (docs/coilctl.md).
	if err := admin.CreatePool(ctx, pool(t, "class-e", 5, "240.0.0.0/16")); err != nil {
		t.Fatalf("240.0.0.0/16: %v", err)
	}
}

// A log that already holds such a pool (written before the rule) still replays, and its
// node allocators still serve it: the rule is for new definitions only.
func TestReservedPoolInOldLog(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	if _, err := e.log.Append(ctx, events.AppendRequest{Stream: events.ClusterStream, Events: []*events.Event{{
		Time: e.clock.Now(), Actor: "old", Payload: &events.PoolCreated{Name: "old", BlockSizeBits: 4,
			Subnets: []events.Subnet{{IPv4: pfx("127.1.0.0/24")}}},
	}}}); err != nil {
		t.Fatal(err)
	}
	c, err := e.admin.Cluster(ctx)
	if err != nil || c.Pools["old"] == nil {
		t.Fatalf("replay: %+v %v", c, err)
	}
	n := e.node("n1", nil)
	a, err := n.Allocate(ctx, allocator.Request{ContainerID: "c1", IfName: "eth0", Pool: "old"})
	if err != nil || a.Addrs[0] != netip.MustParseAddr("127.1.0.0") {
		t.Fatalf("allocate from the old pool: %+v %v", a, err)
	}
	if err := e.admin.AddSubnet(ctx, "old", events.Subnet{IPv4: pfx("10.5.0.0/24")}); err != nil {
		t.Fatalf("a usable subnet added to an old pool: %v", err)
	}
	if err := e.admin.AddSubnet(ctx, "old", events.Subnet{IPv4: pfx("127.2.0.0/24")}); !errors.Is(err, projection.ErrReservedRange) {
		t.Fatalf("a reserved subnet added to an old pool: %v", err)
	}
}

// wideSubnets returns n IPv6 /64 subnets: with blocks of 8 bits, 2^56 blocks each.
func wideSubnets(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("fd00:0:0:%x::/64", i)
	}
	return out
}
