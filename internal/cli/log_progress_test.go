package cli

import (
	"bytes"
	"strings"
	"testing"
)

func TestProgressBar(t *testing.T) {
	var buf bytes.Buffer
	b := &bar{w: &buf, label: "export"}
	b.update(450000, 1000000)
	b.update(1000000, 1000000) // the last one always draws
	b.end()
	got := buf.String()
	want := "\rexport [#############                 ]  45% 450000/1000000" +
		"\rexport [##############################] 100% 1000000/1000000\n"
	if got != want {
		t.Fatalf("bar drew %q, want %q", got, want)
	}
	// Not a terminal (a buffer): no bar at all.
	a := &app{env: Env{Stderr: &buf}}
	if p, _ := a.progress("x"); p != nil {
		t.Fatal("progress on a non-terminal")
	}
	if strings.Count(got, "\n") != 1 {
		t.Fatal("bar not ended by one newline")
	}
}
