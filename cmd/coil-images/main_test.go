package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/coil-net/coil/internal/images"
)

// With prebuilt binaries (--bin-dir), the command writes the archives, images.json and
// critest-images.yaml; a second run gives the same digests; a repository override and
// --only are honoured; an unknown image is an error.
func TestCoilImages(t *testing.T) {
	bins := t.TempDir()
	for b := range images.Packages {
		if err := os.WriteFile(filepath.Join(bins, b), []byte("binary "+b), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	read := func(out string) []Entry {
		t.Helper()
		b, err := os.ReadFile(filepath.Join(out, "images.json"))
		if err != nil {
			t.Fatal(err)
		}
		var es []Entry
		if err := json.Unmarshal(b, &es); err != nil {
			t.Fatal(err)
		}
		return es
	}
	out1, out2 := t.TempDir(), t.TempDir()
	for _, out := range []string{out1, out2} {
		if code := run([]string{"--bin-dir", bins, "--out", out, "--tag", "9.9", "--source-date-epoch", "42", "-o", "json"}); code != 0 {
			t.Fatalf("exit %d", code)
		}
	}
	e1, e2 := read(out1), read(out2)
	if len(e1) != 3 || e1[0].Name != "ghcr.io/coil-net/coil:9.9" || e1[1].Name != "localhost/coil-pause:9.9" || e1[2].Name != "localhost/coil-testapp:9.9" {
		t.Fatalf("images.json %+v", e1)
	}
	for i := range e1 {
		if e1[i].Digest != e2[i].Digest || !strings.HasPrefix(e1[i].Digest, "sha256:") {
			t.Errorf("%s: digests %s and %s", e1[i].Name, e1[i].Digest, e2[i].Digest)
		}
		if _, err := os.Stat(e1[i].Archive); err != nil || filepath.Dir(e1[i].Archive) != out1 {
			t.Errorf("archive %s: %v", e1[i].Archive, err)
		}
	}
	y, err := os.ReadFile(filepath.Join(out1, "critest-images.yaml"))
	if err != nil || !strings.Contains(string(y), "defaultTestContainerImage: localhost/coil-testapp:9.9\nwebServerTestImage: localhost/coil-testapp:9.9\n") {
		t.Errorf("critest-images.yaml: %q %v", y, err)
	}

	out3 := t.TempDir()
	if code := run([]string{"--bin-dir", bins, "--out", out3, "--tag", "1", "--only", "coil", "--coil-repo", "registry.example.com/coil"}); code != 0 {
		t.Fatalf("exit %d", code)
	}
	if e := read(out3); len(e) != 1 || e[0].Name != "registry.example.com/coil:1" || filepath.Base(e[0].Archive) != "coil.tar" {
		t.Errorf("--only coil --coil-repo: %+v", e)
	}
	if code := run([]string{"--bin-dir", bins, "--out", t.TempDir(), "--only", "busybox"}); code != 1 {
		t.Errorf("--only busybox: exit %d, want 1", code)
	}
}
