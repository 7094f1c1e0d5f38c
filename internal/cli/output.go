package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/cockroachdb/errors"
	"sigs.k8s.io/yaml"

	"github.com/coil-net/coil/events"
	"github.com/coil-net/coil/internal/safetext"
)

// printValue writes v as indented JSON or YAML (for -o json|yaml).
func (a *app) printValue(v any) error {
	switch a.opts.output {
	case "yaml":
		b, err := yaml.Marshal(v)
		if err != nil {
			return errors.Wrap(err, "render yaml")
		}
		_, err = a.env.Stdout.Write(b)
		return errors.Wrap(err, "write output")
	default:
		b, err := json.MarshalIndent(v, "", "  ")
		if err != nil {
			return errors.Wrap(err, "render json")
		}
		_, err = fmt.Fprintf(a.env.Stdout, "%s\n", b)
		return errors.Wrap(err, "write output")
	}
}

// table writes rows under a header, columns aligned.
type table struct {
	w *tabwriter.Writer
}

func newTable(w io.Writer, header ...string) *table {
	t := &table{w: tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)}
	t.row(header...)
	return t
}

// row writes one row. Every cell goes through safetext.Clean: cells hold what the log
// holds (pod names, container IDs, reasons), and a tab, a newline or a terminal
// control there would break the columns or the operator's terminal.
func (t *table) row(cols ...string) {
	for i, c := range cols {
		if c == "" {
			cols[i] = "-"
		} else {
			cols[i] = safetext.Clean(c)
		}
	}
	fmt.Fprintln(t.w, strings.Join(cols, "\t"))
}

func (t *table) flush() error { return errors.Wrap(t.w.Flush(), "write output") }

// fmtTime is the table form of a time: UTC, seconds.
func fmtTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

// shortID shortens a container ID for tables (the JSON and YAML forms keep it whole).
func shortID(id string) string {
	if len(id) <= 12 {
		return id
	}
	return id[:12] + ".."
}

func joinPrefixes(ps []netip.Prefix) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.String()
	}
	return strings.Join(s, ",")
}

func joinAddrs(as []netip.Addr) string {
	s := make([]string, len(as))
	for i, p := range as {
		s[i] = p.String()
	}
	return strings.Join(s, ",")
}

func subnetStrings(ss []events.Subnet) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = s.String()
	}
	return out
}

func podName(ns, name string) string {
	if ns == "" && name == "" {
		return ""
	}
	return ns + "/" + name
}
