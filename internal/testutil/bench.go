package testutil

import (
	"slices"
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
