package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"sort"
	"strings"

	"github.com/cockroachdb/errors"
)

// printTable prints the figures of one run for a human.
func printTable(r *result) {
	rows := [][2]string{
		{"nodes", fmt.Sprint(r.Nodes)},
		{"scenario / layout / design", r.Scenario + " / " + r.Layout + " / " + r.Design},
		{"set-up (nodes started, replayed, registered, watching)", fmt.Sprintf("%.1f s", r.SetupS)},
		{"time until every node holds a block (boot), scenario time otherwise", fmt.Sprintf("%.2f s", r.AllBlockedS)},
		{"allocation latency p50 / p99 / max", fmt.Sprintf("%.1f / %.1f / %.1f ms", r.P50ms, r.P99ms, r.Maxms)},
		{"allocations done / failed", fmt.Sprintf("%d / %d %v", r.Allocs, r.FailedAllocs, r.FailedReasons)},
		{"block-taking transactions / blocks taken", fmt.Sprintf("%d / %d = %.2f per block", r.BlockAttempts, r.BlocksTaken, r.TxnsPerBlock)},
		{"appends / conflicts / stream reads", fmt.Sprintf("%d / %d / %d", r.Appends, r.Conflicts, r.Reads)},
		{"events delivered per node by watches", fmt.Sprintf("%.1f", r.WatchPerNode)},
		{"etcd DB size (in use)", fmt.Sprintf("%.1f MiB (%.1f MiB)", float64(r.DBBytes)/(1<<20), float64(r.DBInUseBytes)/(1<<20))},
		{"etcd CPU during the scenario / RSS", fmt.Sprintf("%.1f s / %.0f MiB", r.EtcdCPUs, r.EtcdRSSMiB)},
		{"harness CPU during the scenario", fmt.Sprintf("%.1f s", r.HarnessCPUs)},
		{"client memory per node: heap / RSS / goroutines", fmt.Sprintf("%.0f KiB / %.0f KiB / %.1f", r.HeapKiBNode, r.RSSKiBNode, r.GoroutinesNode)},
		{"duplicates (blocks or addresses held twice, from the log)", fmt.Sprint(r.Duplicates)},
		{"log: events / streams / blocks owned / addresses held", fmt.Sprintf("%d / %d / %d / %d", r.LogEvents, r.LogStreams, r.LogBlocks, r.LogAddrs)},
	}
	switch r.Scenario {
	case "churn":
		rows = append(rows,
			[2]string{"churn rate (pod starts/s)", fmt.Sprint(r.ChurnRate)},
			[2]string{"release latency p50 / p99", fmt.Sprintf("%.1f / %.1f ms", r.ReleaseP50ms, r.ReleaseP99ms)},
			[2]string{"append (etcd round trip) latency p50 / p99", fmt.Sprintf("%.1f / %.1f ms", r.AppendP50ms, r.AppendP99ms)},
			[2]string{"etcd's own transaction at the same rate p50 / p99 / max", fmt.Sprintf("%.1f / %.1f / %.1f ms (%d failed)", r.ChurnRawP50ms, r.ChurnRawP99ms, r.ChurnRawMaxms, r.ChurnRawFailed)},
			[2]string{"... with each writer watching its keys p50 / p99 / max", fmt.Sprintf("%.1f / %.1f / %.1f ms (%d failed)", r.ChurnRawWatchP50ms, r.ChurnRawWatchP99ms, r.ChurnRawWatchMaxms, r.ChurnRawWatchFailed)},
			[2]string{"empty blocks released", fmt.Sprint(r.BlocksReleased)},
			[2]string{"full replay of the log", fmt.Sprintf("%d events in %.2f s (%.0f events/s)", r.ReplayEvents, r.ReplayS, float64(r.ReplayEvents)/math.Max(r.ReplayS, 1e-9))},
			[2]string{"a new node's start (client, lease, replay, register)", fmt.Sprintf("%.0f ms", r.NewNodeLoadMs)})
	case "exhaustion":
		rows = append(rows,
			[2]string{"nodes that saw \"pool exhausted\"", fmt.Sprintf("%d of %d", r.ExhaustedNodes, r.Nodes)},
			[2]string{"pool addresses", fmt.Sprint(r.PoolAddresses)})
	case "limit":
		rows = append(rows,
			[2]string{"Coil allocations/s", fmt.Sprintf("%.0f (mean batch %.1f, value %.0f B)", r.CoilAllocsPerS, r.MeanBatch, r.MeanValueBytes)},
			[2]string{"etcd's own puts/s, same shape", fmt.Sprintf("%.0f", r.EtcdPutsPerS)},
			[2]string{"fraction", fmt.Sprintf("%.2f", r.LimitFraction)},
			[2]string{"etcd's own puts/s, each writer watching its keys", fmt.Sprintf("%.0f", r.EtcdPutsWatchedPerS)},
			[2]string{"CPU cores used, Coil's side", fmt.Sprintf("etcd %.2f, nodes %.2f", r.LimitCoilEtcdCPU, r.LimitCoilClientCPU)},
			[2]string{"CPU cores used, etcd's own side", fmt.Sprintf("etcd %.2f, writers %.2f", r.LimitRawEtcdCPU, r.LimitRawClientCPU)})
	}
	if r.Error != "" {
		rows = append(rows, [2]string{"ERROR", r.Error})
	}
	w := 0
	for _, row := range rows {
		w = max(w, len(row[0]))
	}
	for _, row := range rows {
		fmt.Printf("%-*s  %s\n", w, row[0], row[1])
	}
}

// writePlot draws, from the results file, boot figures against N: the time until every
// node holds a block, allocation p99, and etcd transactions per block taken, one line per
// label (e.g. baseline and new). Plain SVG, no dependencies.
func writePlot(out, results string) error {
	if results == "" {
		return errors.New("--plot needs --results FILE (the JSON lines of earlier runs)")
	}
	f, err := os.Open(results)
	if err != nil {
		return err
	}
	defer f.Close()
	series := map[string]map[int]result{} // label -> nodes -> last boot result
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var r result
		if json.Unmarshal(sc.Bytes(), &r) != nil || r.Scenario != "boot" || r.Error != "" {
			continue
		}
		lbl := r.Label
		if lbl == "" {
			lbl = r.Layout + "/" + r.Design
		}
		if series[lbl] == nil {
			series[lbl] = map[int]result{}
		}
		series[lbl][r.Nodes] = r
	}
	if len(series) == 0 {
		return errors.Newf("%s holds no boot results", results)
	}
	type panel struct {
		title string
		val   func(result) float64
	}
	panels := []panel{
		{"time until every node holds a block (s)", func(r result) float64 { return r.AllBlockedS }},
		{"etcd transactions per block taken", func(r result) float64 { return r.TxnsPerBlock }},
		{"events delivered per node by watches", func(r result) float64 { return r.WatchPerNode }},
	}
	labels := make([]string, 0, len(series))
	for l := range series {
		labels = append(labels, l)
	}
	sort.Strings(labels)
	colors := []string{"#d62728", "#1f77b4", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b"}
	const pw, ph, ml, mt, mb = 300, 220, 60, 40, 50
	W := len(panels)*(pw+ml) + 20
	H := ph + mt + mb + 20*len(labels) + 20
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="11">`+"\n", W, H)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	for pi, p := range panels {
		x0 := pi*(pw+ml) + ml
		// log-log axes over the data
		var xs []int
		lo, hi := math.Inf(1), math.Inf(-1)
		seen := map[int]bool{}
		for _, s := range series {
			for n, r := range s {
				if !seen[n] {
					seen[n] = true
					xs = append(xs, n)
				}
				if v := p.val(r); v > 0 {
					lo, hi = math.Min(lo, v), math.Max(hi, v)
				}
			}
		}
		sort.Ints(xs)
		if len(xs) == 0 || math.IsInf(lo, 1) {
			continue
		}
		ylo, yhi := math.Floor(math.Log10(lo)), math.Ceil(math.Log10(hi))
		if yhi == ylo {
			yhi++
		}
		xlo, xhi := math.Log10(float64(xs[0])), math.Log10(float64(xs[len(xs)-1]))
		if xhi == xlo {
			xlo, xhi = xlo-0.5, xhi+0.5
		}
		px := func(n int) float64 { return float64(x0) + (math.Log10(float64(n))-xlo)/(xhi-xlo)*pw }
		py := func(v float64) float64 { return float64(mt) + (yhi-math.Log10(v))/(yhi-ylo)*ph }
		fmt.Fprintf(&b, `<text x="%d" y="%d" font-weight="bold">%s</text>`+"\n", x0, mt-15, p.title)
		fmt.Fprintf(&b, `<rect x="%d" y="%d" width="%d" height="%d" fill="none" stroke="#888"/>`+"\n", x0, mt, pw, ph)
		for e := ylo; e <= yhi; e++ {
			y := py(math.Pow(10, e))
			fmt.Fprintf(&b, `<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="#ddd"/>`+"\n", x0, x0+pw, y, y)
			fmt.Fprintf(&b, `<text x="%d" y="%.1f" text-anchor="end">%s</text>`+"\n", x0-4, y+4, fmtPow(e))
		}
		for _, n := range xs {
			x := px(n)
			fmt.Fprintf(&b, `<line x1="%.1f" x2="%.1f" y1="%d" y2="%d" stroke="#ddd"/>`+"\n", x, x, mt, mt+ph)
			fmt.Fprintf(&b, `<text x="%.1f" y="%d" text-anchor="middle">%d</text>`+"\n", x, mt+ph+14, n)
		}
		fmt.Fprintf(&b, `<text x="%d" y="%d" text-anchor="middle">nodes</text>`+"\n", x0+pw/2, mt+ph+30)
		for li, l := range labels {
			var pts []string
			ns := make([]int, 0, len(series[l]))
			for n := range series[l] {
				ns = append(ns, n)
			}
			sort.Ints(ns)
			for _, n := range ns {
				if v := p.val(series[l][n]); v > 0 {
					pts = append(pts, fmt.Sprintf("%.1f,%.1f", px(n), py(v)))
					fmt.Fprintf(&b, `<circle cx="%.1f" cy="%.1f" r="3" fill="%s"/>`+"\n", px(n), py(v), colors[li%len(colors)])
				}
			}
			if len(pts) > 1 {
				fmt.Fprintf(&b, `<polyline points="%s" fill="none" stroke="%s" stroke-width="2"/>`+"\n", strings.Join(pts, " "), colors[li%len(colors)])
			}
		}
	}
	for li, l := range labels {
		y := mt + ph + mb + 20*li
		fmt.Fprintf(&b, `<rect x="%d" y="%d" width="12" height="12" fill="%s"/>`+"\n", ml, y, colors[li%len(colors)])
		fmt.Fprintf(&b, `<text x="%d" y="%d">%s</text>`+"\n", ml+18, y+10, l)
	}
	b.WriteString("</svg>\n")
	return os.WriteFile(out, []byte(b.String()), 0o644)
}

func fmtPow(e float64) string {
	v := math.Pow(10, e)
	if v >= 1 {
		return fmt.Sprintf("%g", v)
	}
	return fmt.Sprintf("%.3g", v)
}
