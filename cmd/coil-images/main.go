// Command coil-images builds Coil's container images offline, from scratch and
// reproducibly, and writes each as an OCI image archive (`make images`):
//
//	bin/images/coil.tar          ghcr.io/coil-net/coil:TAG
//	bin/images/coil-pause.tar    localhost/coil-pause:TAG
//	bin/images/coil-testapp.tar  localhost/coil-testapp:TAG
//
// plus bin/images/images.json (name, digest and archive of each) and
// bin/images/critest-images.yaml (critest's --test-images-file pointing at the test
// image). It builds the static binaries first (go build, cgo off, -trimpath), unless
// --bin-dir names a directory that has them. The same sources, toolchain, tag and
// --source-date-epoch give the same digests. docs/kubernetes.md says how to import the
// archives into containerd and push them to a registry.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/cockroachdb/errors"
	"github.com/spf13/cobra"

	"github.com/coil-net/coil/internal/gobuild"
	"github.com/coil-net/coil/internal/images"
)

func main() {
	os.Exit(run(os.Args[1:]))
}

type options struct {
	out, tag, binDir, output         string
	only                             []string
	epoch                            int64
	coilRepo, pauseRepo, testappRepo string
}

// Entry is one line of images.json and of `-o json`.
type Entry struct {
	Name    string `json:"name"`
	Digest  string `json:"digest"`
	Archive string `json:"archive"`
	Size    int64  `json:"size"`
}

func run(args []string) int {
	var o options
	epoch := int64(0)
	if v := os.Getenv("SOURCE_DATE_EPOCH"); v != "" {
		if n, err := strconv.ParseInt(v, 10, 64); err == nil {
			epoch = n
		}
	}
	cmd := &cobra.Command{
		Use:   "coil-images",
		Short: "Build Coil's images (coil, coil-pause, coil-testapp) as OCI archives, offline and reproducibly",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			entries, err := build(ctx, o)
			if err != nil {
				return err
			}
			return printEntries(cmd, o.output, entries)
		},
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	f := cmd.Flags()
	f.StringVar(&o.out, "out", "bin/images", "directory for the archives")
	f.StringVar(&o.tag, "tag", defaultTag(), "tag of every image (default: the VERSION file)")
	f.StringVar(&o.binDir, "bin-dir", "", "take the static binaries from this directory instead of building them")
	f.StringSliceVar(&o.only, "only", nil, "build only these images: coil, coil-pause, coil-testapp")
	f.Int64Var(&o.epoch, "source-date-epoch", epoch, "time stamped in the images, in seconds since the epoch ($SOURCE_DATE_EPOCH)")
	f.StringVar(&o.coilRepo, "coil-repo", images.CoilRepo, "repository of the coil image")
	f.StringVar(&o.pauseRepo, "pause-repo", images.PauseRepo, "repository of the pause image")
	f.StringVar(&o.testappRepo, "testapp-repo", images.TestAppRepo, "repository of the test workload image")
	f.StringVarP(&o.output, "output", "o", "table", "table or json")
	cmd.SetArgs(args)
	if err := cmd.Execute(); err != nil {
		fmt.Fprintf(os.Stderr, "coil-images: %v\n", err)
		return 1
	}
	return 0
}

// defaultTag reads the VERSION file of the working directory.
func defaultTag() string {
	b, err := os.ReadFile("VERSION")
	if err != nil {
		return "dev"
	}
	return strings.TrimSpace(string(b))
}

func build(ctx context.Context, o options) ([]Entry, error) {
	if o.output != "table" && o.output != "json" {
		return nil, errors.Newf("-o %q: want table or json", o.output)
	}
	created := time.Unix(o.epoch, 0).UTC()
	binDir := o.binDir
	if binDir == "" {
		tmp, err := os.MkdirTemp("", "coil-images-bin-")
		if err != nil {
			return nil, errors.Wrap(err, "temporary directory for the binaries")
		}
		defer func() { _ = os.RemoveAll(tmp) }()
		binDir = tmp
	}
	specs := images.Specs(o.tag, binDir, created)
	repos := map[string]string{images.CoilRepo: o.coilRepo, images.PauseRepo: o.pauseRepo, images.TestAppRepo: o.testappRepo}
	var selected []images.Spec
	want, unknown := map[string]bool{}, map[string]bool{}
	for _, n := range o.only {
		want[n], unknown[n] = true, true
	}
	for _, s := range specs {
		base := strings.TrimSuffix(images.ArchiveName(s.Name), ".tar")
		if len(want) > 0 && !want[base] {
			continue
		}
		delete(unknown, base)
		for def, repo := range repos {
			if strings.HasPrefix(s.Name, def+":") {
				s.Name = repo + ":" + o.tag
			}
		}
		selected = append(selected, s)
	}
	for n := range unknown {
		return nil, errors.Newf("--only %q: no such image (coil, coil-pause, coil-testapp)", n)
	}
	if o.binDir == "" {
		var pkgs []string
		for _, b := range images.Binaries(selected, binDir) {
			pkgs = append(pkgs, images.Packages[b])
		}
		start := time.Now()
		if err := gobuild.Static(ctx, binDir, "-X main.buildVersion="+o.tag, pkgs...); err != nil {
			return nil, err
		}
		fmt.Fprintf(os.Stderr, "coil-images: built %d static binaries in %.1fs\n", len(pkgs), time.Since(start).Seconds())
	}
	if err := os.MkdirAll(o.out, 0o755); err != nil {
		return nil, errors.Wrap(err, "output directory")
	}
	var entries []Entry
	for _, s := range selected {
		img, err := images.Build(s)
		if err != nil {
			return nil, errors.Wrapf(err, "image %s", s.Name)
		}
		b, err := images.WriteArchive(filepath.Join(o.out, images.ArchiveName(s.Name)), s.Name, img, created)
		if err != nil {
			return nil, errors.Wrapf(err, "image %s", s.Name)
		}
		entries = append(entries, Entry{Name: b.Name, Digest: b.Digest.String(), Archive: b.Path, Size: b.Size})
	}
	if err := writeIndex(o.out, entries); err != nil {
		return nil, err
	}
	return entries, nil
}

// writeIndex writes images.json and, when the test image is among them,
// critest-images.yaml.
func writeIndex(dir string, entries []Entry) error {
	b, _ := json.MarshalIndent(entries, "", "  ")
	if err := os.WriteFile(filepath.Join(dir, "images.json"), append(b, '\n'), 0o644); err != nil {
		return errors.Wrap(err, "images.json")
	}
	for _, e := range entries {
		if images.ArchiveName(e.Name) == images.ArchiveName(images.TestAppRepo) {
			y := fmt.Sprintf("# critest --test-images-file: the Coil test image stands in for busybox and nginx\n"+
				"defaultTestContainerImage: %s\nwebServerTestImage: %s\n", e.Name, e.Name)
			if err := os.WriteFile(filepath.Join(dir, "critest-images.yaml"), []byte(y), 0o644); err != nil {
				return errors.Wrap(err, "critest-images.yaml")
			}
		}
	}
	return nil
}

func printEntries(cmd *cobra.Command, output string, entries []Entry) error {
	w := cmd.OutOrStdout()
	if output == "json" {
		b, _ := json.MarshalIndent(entries, "", "  ")
		_, err := fmt.Fprintln(w, string(b))
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "IMAGE\tDIGEST\tARCHIVE\tSIZE")
	for _, e := range entries {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%.1f MB\n", e.Name, e.Digest, e.Archive, float64(e.Size)/1e6)
	}
	return tw.Flush()
}
