package cniserver

import (
	"testing"
	"time"
)

func TestLogLimiter(t *testing.T) {
	var l logLimiter
	t0 := time.Unix(1000, 0)
	for i := range logBurst {
		if ok, n := l.allow(t0); !ok || n != 0 {
			t.Fatalf("line %d of the burst: %v %d", i, ok, n)
		}
	}
	for range 5 {
		if ok, _ := l.allow(t0.Add(100 * time.Millisecond)); ok {
			t.Fatal("a line past the burst went through")
		}
	}
	if ok, n := l.allow(t0.Add(2 * time.Second)); !ok || n != 5 {
		t.Fatalf("after a second: %v, %d suppressed (want 5)", ok, n)
	}
}

func TestAllowed(t *testing.T) {
	a := newAllowed([]uint32{1000, 0, 1000})
	if !a.has(0) || !a.has(1000) || a.has(1001) {
		t.Fatalf("%v", a)
	}
}
