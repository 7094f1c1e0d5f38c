package images_test

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/coil-net/coil/internal/gobuild"
	"github.com/coil-net/coil/internal/images"
)

var epoch = time.Unix(1700000000, 0).UTC()

// fakeBins writes small stand-ins for every binary of the images.
func fakeBins(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for b := range images.Packages {
		if err := os.WriteFile(filepath.Join(dir, b), []byte("binary "+b), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

type entry struct {
	mode fs.FileMode
	link string
	data string
	h    *tar.Header
}

// layerFiles lists the image's layer: path -> entry.
func layerFiles(t *testing.T, img v1.Image) map[string]entry {
	t.Helper()
	ls, err := img.Layers()
	if err != nil || len(ls) != 1 {
		t.Fatalf("layers %d %v, want 1", len(ls), err)
	}
	if mt, _ := ls[0].MediaType(); mt != types.OCILayer {
		t.Errorf("layer media type %s", mt)
	}
	rc, err := ls[0].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = rc.Close() }()
	out := map[string]entry{}
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(tr)
		out["/"+strings.TrimSuffix(h.Name, "/")] = entry{mode: h.FileInfo().Mode(), link: h.Linkname, data: string(b), h: h}
	}
}

func buildArchive(t *testing.T, spec images.Spec, dir string) (*images.Built, []byte) {
	t.Helper()
	img, err := images.Build(spec)
	if err != nil {
		t.Fatal(err)
	}
	b, err := images.WriteArchive(filepath.Join(dir, images.ArchiveName(spec.Name)), spec.Name, img, spec.Created)
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(b.Path)
	if err != nil {
		t.Fatal(err)
	}
	return b, data
}

// What each image holds, and how it runs.
func TestImageContents(t *testing.T) {
	bins := fakeBins(t)
	out := t.TempDir()
	for _, spec := range images.Specs("1.2.3", bins, epoch) {
		t.Run(images.ArchiveName(spec.Name), func(t *testing.T) {
			b, _ := buildArchive(t, spec, out)
			img, ann, err := images.ReadArchive(b.Path, t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			if ann[images.AnnotationImageName] != spec.Name || ann[images.AnnotationRefName] != "1.2.3" {
				t.Errorf("index annotations %v", ann)
			}
			if d, _ := img.Digest(); d != b.Digest {
				t.Errorf("digest read back %s, written %s", d, b.Digest)
			}
			if mt, _ := img.MediaType(); mt != types.OCIManifestSchema1 {
				t.Errorf("manifest media type %s", mt)
			}
			cfg, err := img.ConfigFile()
			if err != nil {
				t.Fatal(err)
			}
			if cfg.OS != "linux" || cfg.Architecture == "" || !cfg.Created.Equal(epoch) || cfg.Config.Labels["org.opencontainers.image.version"] != "1.2.3" {
				t.Errorf("config %+v", cfg)
			}
			files := layerFiles(t, img)
			for p, e := range files {
				if !e.h.ModTime.Equal(epoch) || e.h.Uid != 0 || e.h.Gid != 0 || e.h.Uname != "" || e.h.Gname != "" {
					t.Errorf("%s: header %+v: want the fixed time, root, no names", p, e.h)
				}
			}
			switch images.ArchiveName(spec.Name) {
			case "coil.tar":
				for _, c := range images.CoilCommands {
					if e := files["/usr/local/bin/"+c]; e.mode != 0o755 || e.data != "binary "+c {
						t.Errorf("/usr/local/bin/%s: %+v", c, e)
					}
				}
				for _, p := range []string{"coil", "portmap", "bandwidth"} {
					if e := files["/usr/local/lib/coil/cni/"+p]; e.mode != 0o755 || e.data != "binary "+p {
						t.Errorf("/usr/local/lib/coil/cni/%s: %+v", p, e)
					}
				}
				if e := files["/tmp"]; e.mode != fs.ModeDir|fs.ModeSticky|0o777 {
					t.Errorf("/tmp mode %v", e.mode)
				}
				if _, ok := files["/bin/sh"]; ok {
					t.Error("the coil image has a shell")
				}
				if fmt.Sprint(cfg.Config.Env) != "[PATH=/usr/local/bin]" {
					t.Errorf("env %v", cfg.Config.Env)
				}
			case "coil-pause.tar":
				if e := files["/pause"]; e.mode != 0o755 || e.data != "binary coil-pause" {
					t.Errorf("/pause %+v", e)
				}
				if len(files) != 1 || fmt.Sprint(cfg.Config.Entrypoint) != "[/pause]" || cfg.Config.User != "65535:65535" {
					t.Errorf("pause image: %d files, config %+v", len(files), cfg.Config)
				}
			case "coil-testapp.tar":
				if e := files["/bin/coil-testapp"]; e.mode != 0o755 {
					t.Errorf("/bin/coil-testapp %+v", e)
				}
				for _, a := range images.TestAppApplets {
					if e := files["/bin/"+a]; e.mode&fs.ModeSymlink == 0 || e.link != "coil-testapp" {
						t.Errorf("/bin/%s: %+v, want a link to coil-testapp", a, e)
					}
				}
				if fmt.Sprint(cfg.Config.Entrypoint, cfg.Config.Cmd) != "[/bin/coil-testapp] [serve]" {
					t.Errorf("entrypoint %v cmd %v", cfg.Config.Entrypoint, cfg.Config.Cmd)
				}
			default:
				t.Errorf("unexpected image %s", spec.Name)
			}
			var paths []string
			for p := range files {
				paths = append(paths, p)
			}
			sort.Strings(paths)
			t.Logf("%s %s: %s", spec.Name, b.Digest, strings.Join(paths, " "))
		})
	}
}

// Same inputs, same digest and the same archive bytes; a changed input, another digest.
// The binaries are real: the pause and test images' programs built twice from the same
// sources are the same bytes (Go's reproducible builds with the flags we use).
func TestReproducible(t *testing.T) {
	ctx := context.Background()
	a, b := t.TempDir(), t.TempDir()
	pkgs := []string{images.Packages[images.Pause], images.Packages[images.TestApp]}
	for _, dir := range []string{a, b} {
		if err := gobuild.Static(ctx, dir, "-X main.buildVersion=1.2.3", pkgs...); err != nil {
			t.Fatal(err)
		}
	}
	for _, bin := range []string{images.Pause, images.TestApp} {
		x, _ := os.ReadFile(filepath.Join(a, bin))
		y, _ := os.ReadFile(filepath.Join(b, bin))
		if len(x) == 0 || !bytes.Equal(x, y) {
			t.Errorf("%s built twice differs (%d and %d bytes)", bin, len(x), len(y))
		}
	}
	for _, mk := range []func(string, string, time.Time) images.Spec{images.PauseSpec, images.TestAppSpec} {
		b1, d1 := buildArchive(t, mk("1.2.3", a, epoch), t.TempDir())
		b2, d2 := buildArchive(t, mk("1.2.3", a, epoch), t.TempDir())
		b3, d3 := buildArchive(t, mk("1.2.3", b, epoch), t.TempDir())
		if b1.Digest != b2.Digest || b1.Digest != b3.Digest || !bytes.Equal(d1, d2) || !bytes.Equal(d1, d3) {
			t.Errorf("%s: digests %s %s %s, archives equal: %v %v", b1.Name, b1.Digest, b2.Digest, b3.Digest, bytes.Equal(d1, d2), bytes.Equal(d1, d3))
		}
		t.Logf("%s %s (%d bytes), built 3 times", b1.Name, b1.Digest, b1.Size)
		if b4, _ := buildArchive(t, mk("1.2.3", a, epoch.Add(time.Second)), t.TempDir()); b4.Digest == b1.Digest {
			t.Errorf("%s: another time stamp, same digest", b1.Name)
		}
		if b5, _ := buildArchive(t, mk("1.2.4", a, epoch), t.TempDir()); b5.Digest == b1.Digest {
			t.Errorf("%s: another tag (a label), same digest", b1.Name)
		}
	}
}

func TestBadSpecs(t *testing.T) {
	bins := fakeBins(t)
	for _, tc := range []struct {
		name string
		spec images.Spec
		msg  string
	}{
		{"bad name", images.Spec{Name: "Not A Name"}, `image name "Not A Name"`},
		{"relative path", images.Spec{Name: "localhost/y:1", Files: []images.File{{Path: "usr/bin/x", Data: []byte("x")}}}, `path "usr/bin/x" must be absolute`},
		{"unclean path", images.Spec{Name: "localhost/y:1", Files: []images.File{{Path: "/usr//x", Data: []byte("x")}}}, "must be absolute, clean"},
		{"twice", images.Spec{Name: "localhost/y:1", Files: []images.File{{Path: "/x", Data: []byte("x")}, {Path: "/x", Data: []byte("y")}}}, "/x listed twice"},
		{"no content", images.Spec{Name: "localhost/y:1", Files: []images.File{{Path: "/x"}}}, "neither a source file nor data"},
		{"file as dir", images.Spec{Name: "localhost/y:1", Files: []images.File{{Path: "/x", Data: []byte("x")}, {Path: "/x/y", Data: []byte("y")}}}, "/x is not a directory but holds"},
		{"link without target", images.Spec{Name: "localhost/y:1", Files: []images.File{{Path: "/x", Mode: fs.ModeSymlink}}}, "symlink /x has no target"},
	} {
		_, err := images.Build(tc.spec)
		if !errors.Is(err, images.ErrInvalidSpec) || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("%s: %v, want ErrInvalidSpec saying %q", tc.name, err, tc.msg)
		}
	}
	spec := images.CoilSpec("1", bins, epoch)
	_ = os.Remove(filepath.Join(bins, "coild"))
	if _, err := images.Build(spec); err == nil || !strings.Contains(err.Error(), "coild") {
		t.Errorf("missing binary: %v", err)
	}
}

func TestArchiveName(t *testing.T) {
	for in, want := range map[string]string{
		"ghcr.io/coil-net/coil:0.1.0": "coil.tar", "localhost/coil-pause:1": "coil-pause.tar",
		"localhost:5000/coil-testapp:x": "coil-testapp.tar", "localhost:5000/coil": "coil.tar",
	} {
		if got := images.ArchiveName(in); got != want {
			t.Errorf("ArchiveName(%s) = %s, want %s", in, got, want)
		}
	}
}
