// Command coil-soak is `make soak`: Coil's chaos soak (package lab/soak, docs/faults.md).
// It builds coil, coild, coilctl and etcd, runs a 3-node lab with BIRD and a 3-member etcd
// for SOAK_SECONDS (default 600) while runtimes churn pods through cnitool and a random
// fault strikes every few seconds, prints the convergence table and ends with a one-line
// summary. It exits 0 only if no invariant was ever broken.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"time"

	"github.com/coil-net/coil/lab"
	"github.com/coil-net/coil/lab/demo"
	"github.com/coil-net/coil/lab/soak"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, out, errOut io.Writer) int {
	seconds := 600
	if v := os.Getenv("SOAK_SECONDS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			fmt.Fprintf(errOut, "coil-soak: SOAK_SECONDS=%q: want a positive number of seconds\n", v)
			return 2
		}
		seconds = n
	}
	fs := flag.NewFlagSet("coil-soak", flag.ContinueOnError)
	fs.SetOutput(errOut)
	fs.IntVar(&seconds, "seconds", seconds, "how long faults are injected (default: $SOAK_SECONDS, else 600)")
	seed := fs.Uint64("seed", 0, "seed of the random choices (0: from the clock; the summary names it)")
	verbose := fs.Bool("v", false, "log every fault, failed ADD and violation to stderr")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if seconds <= 0 || fs.NArg() > 0 {
		fmt.Fprintln(errOut, "coil-soak: -seconds must be positive and there are no arguments")
		return 2
	}
	ctx, stop := lab.Signals(context.Background())
	defer stop()
	level := slog.LevelWarn
	if *verbose {
		level = slog.LevelInfo
	}
	logger := slog.New(slog.NewTextHandler(errOut, &slog.HandlerOptions{Level: level}))
	dir, err := os.MkdirTemp("", "coil-soak-bin-")
	if err != nil {
		fmt.Fprintf(errOut, "coil-soak: %v\n", err)
		return 1
	}
	defer os.RemoveAll(dir)
	fmt.Fprintf(out, "building coil, coild, coilctl and etcd\n")
	if err = demo.BuildBinaries(ctx, dir); err != nil {
		fmt.Fprintf(errOut, "coil-soak: %+v\n", err)
		return 1
	}
	if _, err = demo.BuildEtcd(ctx, dir); err != nil {
		fmt.Fprintf(errOut, "coil-soak: %+v\n", err)
		return 1
	}
	fmt.Fprintf(out, "soaking for %ds\n", seconds)
	rep, err := soak.Run(ctx, soak.Config{Duration: time.Duration(seconds) * time.Second, BinDir: dir, Seed: *seed, Logger: logger})
	if err != nil {
		fmt.Fprintf(errOut, "coil-soak: %+v\n", err)
		return 1
	}
	fmt.Fprint(out, rep.Table())
	for _, v := range rep.Violations {
		fmt.Fprintf(out, "violation at %s: %s\n", v.At.Round(time.Millisecond), v.What)
	}
	fmt.Fprintln(out, rep.Summary())
	if ctx.Err() != nil {
		return 130
	}
	if len(rep.Violations) > 0 {
		return 1
	}
	return 0
}
