package exporter_test

import (
	"context"
	"net/netip"
	"sync"
	"testing"

	"github.com/coil-net/coil/exporter"
)

// BenchmarkEnsureExported measures an ADD's export step when its block is already in the
// table (every ADD but the first of a block): "ensure" is Exporter.Ensure; "daemon-before"
// is the check daemon.go made itself before the exporter owned the table (isExported: a
// mutex and a map look-up), the baseline.
func BenchmarkEnsureExported(b *testing.B) {
	blocks := []netip.Prefix{netip.MustParsePrefix("10.64.0.32/27")}
	ctx := context.Background()
	b.Run("ensure", func(b *testing.B) {
		e := exporter.New(newFake(), exporter.Config{})
		if _, err := e.Ensure(ctx, blocks); err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		b.ResetTimer()
		for range b.N {
			rep, err := e.Ensure(ctx, blocks)
			if err != nil || !rep.Skipped {
				b.Fatalf("Ensure = %+v, %v", rep, err)
			}
		}
	})
	b.Run("daemon-before", func(b *testing.B) {
		var mu sync.Mutex
		exported := map[netip.Prefix]bool{blocks[0]: true}
		isExported := func(prefixes []netip.Prefix) bool {
			mu.Lock()
			defer mu.Unlock()
			for _, p := range prefixes {
				if !exported[p] {
					return false
				}
			}
			return true
		}
		b.ReportAllocs()
		b.ResetTimer()
		for range b.N {
			if !isExported(blocks) {
				b.Fatal("not exported")
			}
		}
	})
}
