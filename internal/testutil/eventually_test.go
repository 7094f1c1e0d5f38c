package testutil

import (
	"fmt"
	"runtime"
	"testing"
	"time"
)

// fatalRecorder is a testing.TB whose Fatalf records the message and ends the goroutine,
// as the real one does.
type fatalRecorder struct {
	testing.TB
	msg string
}

func (f *fatalRecorder) Helper() {}

func (f *fatalRecorder) Fatalf(format string, args ...any) {
	f.msg = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

// Eventually's message shows the values that pointers among its args point to when it
// fails (the last value the condition saw), not addresses.
func TestEventuallyMessageReadsPointers(t *testing.T) {
	var last error
	var lastS string
	var lastSlice []int
	rec := &fatalRecorder{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		n := 0
		Eventually(rec, 10*time.Millisecond, func() bool {
			n++
			last, lastS, lastSlice = fmt.Errorf("try %d", n), fmt.Sprint("s", n), []int{n}
			return false
		}, "error %v, string %s, slice %v, plain %d", &last, &lastS, &lastSlice, 7)
	}()
	<-done
	if rec.msg == "" {
		t.Fatal("Eventually did not fail")
	}
	want := fmt.Sprintf("condition not met within 10ms: error %v, string %s, slice %v, plain 7", last, lastS, lastSlice)
	if rec.msg != want {
		t.Errorf("message %q\nwant    %q", rec.msg, want)
	}
	// A pointer that formats itself (an error here) is passed as it is.
	p := &errP{}
	if got, ok := deref([]any{p})[0].(*errP); !ok || got != p {
		t.Errorf("an error-typed pointer was replaced: %v", deref([]any{p})[0])
	}
}

type errP struct{}

func (*errP) Error() string { return "errP" }
