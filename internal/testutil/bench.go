package testutil

import (
	"slices"
	"sync"
	"time"
)

// MedianMs is the median of d in milliseconds (0 when d is empty): the p50 the
// benchmarks report with b.ReportMetric. d is left as it is.
func MedianMs(d []time.Duration) float64 {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	return float64(s[len(s)/2].Microseconds()) / 1000
}

// Burst calls f(0) … f(n-1) each in a goroutine of its own, all started first and then
// released at one instant, and waits for every call to return. It returns the time from
// the release to the last return: the wall time of the burst.
func Burst(n int, f func(i int)) time.Duration {
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			f(i)
		}()
	}
	t0 := time.Now()
	close(start)
	wg.Wait()
	return time.Since(t0)
}
