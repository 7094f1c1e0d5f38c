package images

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"time"

	"github.com/cockroachdb/errors"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

var (
	// ErrInvalidSpec: a Spec or one of its files is not usable (bad path, no content,
	// two entries for one path, an unparsable image name).
	ErrInvalidSpec = errors.New("images: invalid image spec")
)

// Annotation keys of the archive's index.json. containerd names the imported image by
// AnnotationImageName (the full reference); OCI tools read AnnotationRefName (the tag).
const (
	AnnotationImageName = "io.containerd.image.name"
	AnnotationRefName   = "org.opencontainers.image.ref.name"
)

// File is one entry of the image's only layer. Exactly one of Source, Data (with
// IsData), Link is used, or none for a directory (Mode with fs.ModeDir).
type File struct {
	// Path is the absolute path in the image ("/usr/local/bin/coild").
	Path string
	// Mode holds the permission bits, plus fs.ModeDir for a directory or fs.ModeSymlink
	// for a symbolic link. Zero means 0755 for a directory, 0644 for a file, 0777 for a
	// link.
	Mode fs.FileMode
	// Source is a file on disk whose content is copied.
	Source string
	// Data is the content itself (when Source is empty and this is not a link or a
	// directory).
	Data []byte
	// Link is the target of a symbolic link (Mode has fs.ModeSymlink).
	Link string
}

// Spec describes one image.
type Spec struct {
	// Name is the full reference the archive gives the image
	// ("ghcr.io/coil-net/coil:0.1.0").
	Name string
	// Files make the image's single layer. Parent directories are added (0755) where
	// not listed.
	Files []File
	// The image configuration (OCI image-spec "config").
	Entrypoint, Cmd, Env []string
	User, WorkingDir     string
	Labels               map[string]string
	// Created is the time stamped on everything (config, history, tar entries).
	// Reproducible builds pass a fixed time (SOURCE_DATE_EPOCH, or the Unix epoch).
	Created time.Time
	// Architecture defaults to runtime.GOARCH; the OS is always linux.
	Architecture string
}

// Build makes the image (one layer) described by spec.
func Build(spec Spec) (v1.Image, error) {
	if _, err := name.ParseReference(spec.Name, name.StrictValidation); err != nil {
		return nil, errors.Wrapf(ErrInvalidSpec, "image name %q: %v", spec.Name, err)
	}
	created := spec.Created.UTC().Truncate(time.Second)
	layerTar, err := layerBytes(spec.Files, created)
	if err != nil {
		return nil, err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar)), nil
	}, tarball.WithMediaType(types.OCILayer), tarball.WithCompressionLevel(gzip.DefaultCompression), tarball.WithCompressedCaching)
	if err != nil {
		return nil, errors.Wrap(err, "images: layer")
	}
	arch := spec.Architecture
	if arch == "" {
		arch = runtime.GOARCH
	}
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	cfg, err := img.ConfigFile()
	if err != nil {
		return nil, errors.Wrap(err, "images: empty config")
	}
	cfg = cfg.DeepCopy()
	cfg.OS, cfg.Architecture = "linux", arch
	cfg.Config = v1.Config{
		Entrypoint: spec.Entrypoint, Cmd: spec.Cmd, Env: spec.Env,
		User: spec.User, WorkingDir: spec.WorkingDir, Labels: spec.Labels,
	}
	if img, err = mutate.ConfigFile(img, cfg); err != nil {
		return nil, errors.Wrap(err, "images: config")
	}
	if img, err = mutate.Append(img, mutate.Addendum{
		Layer:     layer,
		MediaType: types.OCILayer,
		History:   v1.History{Created: v1.Time{Time: created}, CreatedBy: "coil-images (github.com/coil-net/coil/internal/images)"},
	}); err != nil {
		return nil, errors.Wrap(err, "images: append layer")
	}
	if img, err = mutate.CreatedAt(img, v1.Time{Time: created}); err != nil {
		return nil, errors.Wrap(err, "images: created time")
	}
	return img, nil
}

// layerBytes writes the layer's uncompressed tar: entries sorted by path, parents
// first, every header with the same time and owner.
func layerBytes(files []File, created time.Time) ([]byte, error) {
	entries := map[string]File{}
	for _, f := range files {
		p, err := cleanPath(f.Path)
		if err != nil {
			return nil, err
		}
		if _, dup := entries[p]; dup {
			return nil, errors.Wrapf(ErrInvalidSpec, "%s listed twice", f.Path)
		}
		f.Path = p
		entries[p] = f
	}
	for p := range entries {
		for dir := path.Dir(p); dir != "."; dir = path.Dir(dir) {
			if _, ok := entries[dir]; !ok {
				entries[dir] = File{Path: dir, Mode: fs.ModeDir | 0o755}
			} else if !entries[dir].Mode.IsDir() {
				return nil, errors.Wrapf(ErrInvalidSpec, "/%s is not a directory but holds /%s", dir, p)
			}
		}
	}
	paths := make([]string, 0, len(entries))
	for p := range entries {
		paths = append(paths, p)
	}
	sort.Strings(paths) // a parent sorts before its children
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, p := range paths {
		f := entries[p]
		h, data, err := header(f, created)
		if err != nil {
			return nil, err
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, errors.Wrapf(err, "images: tar header %s", p)
		}
		if _, err := tw.Write(data); err != nil {
			return nil, errors.Wrapf(err, "images: tar %s", p)
		}
	}
	if err := tw.Close(); err != nil {
		return nil, errors.Wrap(err, "images: tar")
	}
	return buf.Bytes(), nil
}

// cleanPath turns "/usr/bin/x" into the tar name "usr/bin/x".
func cleanPath(p string) (string, error) {
	if !strings.HasPrefix(p, "/") || path.Clean(p) != p || p == "/" {
		return "", errors.Wrapf(ErrInvalidSpec, "path %q must be absolute, clean and not /", p)
	}
	return strings.TrimPrefix(p, "/"), nil
}

func header(f File, created time.Time) (*tar.Header, []byte, error) {
	h := &tar.Header{Name: f.Path, ModTime: created, Uid: 0, Gid: 0, Format: tar.FormatPAX}
	perm := int64(f.Mode.Perm())
	if f.Mode&fs.ModeSticky != 0 {
		perm |= 0o1000
	}
	switch {
	case f.Mode.IsDir():
		h.Typeflag, h.Name, h.Mode = tar.TypeDir, f.Path+"/", orDefault(perm, 0o755)
		return h, nil, nil
	case f.Mode&fs.ModeSymlink != 0:
		if f.Link == "" {
			return nil, nil, errors.Wrapf(ErrInvalidSpec, "symlink /%s has no target", f.Path)
		}
		h.Typeflag, h.Linkname, h.Mode = tar.TypeSymlink, f.Link, orDefault(perm, 0o777)
		return h, nil, nil
	case !f.Mode.IsRegular():
		return nil, nil, errors.Wrapf(ErrInvalidSpec, "/%s: unsupported file mode %s", f.Path, f.Mode)
	}
	data := f.Data
	if f.Source != "" {
		b, err := os.ReadFile(f.Source)
		if err != nil {
			return nil, nil, errors.Wrapf(err, "images: read %s for /%s", f.Source, f.Path)
		}
		data = b
	} else if data == nil {
		return nil, nil, errors.Wrapf(ErrInvalidSpec, "/%s has neither a source file nor data", f.Path)
	}
	h.Typeflag, h.Mode, h.Size = tar.TypeReg, orDefault(perm, 0o644), int64(len(data))
	return h, data, nil
}

func orDefault(perm, def int64) int64 {
	if perm == 0 {
		return def
	}
	return perm
}

// Built is an image written to an archive.
type Built struct {
	Name   string  // full reference
	Digest v1.Hash // the manifest's digest (what `ctr images ls` and registries show)
	Path   string  // the archive
	Size   int64   // bytes of the archive
}

// WriteArchive writes img, named ref, as an OCI image archive (a tar of an OCI image
// layout with one manifest) at path, atomically (a temporary file renamed). The archive's
// entries carry the time created.
func WriteArchive(path, ref string, img v1.Image, created time.Time) (*Built, error) {
	r, err := name.ParseReference(ref, name.StrictValidation)
	if err != nil {
		return nil, errors.Wrapf(ErrInvalidSpec, "image name %q: %v", ref, err)
	}
	tag := r.Identifier()
	cfg, err := img.ConfigFile()
	if err != nil {
		return nil, errors.Wrap(err, "images: config")
	}
	dir, err := os.MkdirTemp(filepath.Dir(path), ".layout-")
	if err != nil {
		return nil, errors.Wrap(err, "images: temporary layout directory")
	}
	defer func() { _ = os.RemoveAll(dir) }()
	lp, err := layout.Write(dir, empty.Index)
	if err != nil {
		return nil, errors.Wrap(err, "images: OCI layout")
	}
	if err = lp.AppendImage(img,
		layout.WithAnnotations(map[string]string{AnnotationImageName: r.Name(), AnnotationRefName: tag}),
		layout.WithPlatform(v1.Platform{OS: cfg.OS, Architecture: cfg.Architecture})); err != nil {
		return nil, errors.Wrap(err, "images: write image to the layout")
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-")
	if err != nil {
		return nil, errors.Wrap(err, "images: temporary archive")
	}
	defer func() { _ = os.Remove(tmp.Name()) }()
	if err = tarDir(tmp, dir, created.UTC().Truncate(time.Second)); err != nil {
		_ = tmp.Close()
		return nil, err
	}
	if err = tmp.Sync(); err != nil {
		_ = tmp.Close()
		return nil, errors.Wrap(err, "images: sync archive")
	}
	st, err := tmp.Stat()
	if err != nil {
		_ = tmp.Close()
		return nil, errors.Wrap(err, "images: archive")
	}
	if err = tmp.Close(); err != nil {
		return nil, errors.Wrap(err, "images: close archive")
	}
	if err = os.Chmod(tmp.Name(), 0o644); err != nil {
		return nil, errors.Wrap(err, "images: archive mode")
	}
	if err = os.Rename(tmp.Name(), path); err != nil {
		return nil, errors.Wrap(err, "images: rename archive")
	}
	d, err := img.Digest()
	if err != nil {
		return nil, errors.Wrap(err, "images: digest")
	}
	return &Built{Name: r.Name(), Digest: d, Path: path, Size: st.Size()}, nil
}

// tarDir writes the files under root to w, sorted, with fixed times and owners.
func tarDir(w io.Writer, root string, created time.Time) error {
	var paths []string
	if err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p != root {
			paths = append(paths, p)
		}
		return nil
	}); err != nil {
		return errors.Wrap(err, "images: walk layout")
	}
	sort.Strings(paths)
	tw := tar.NewWriter(w)
	for _, p := range paths {
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return errors.Wrap(err, "images: layout path")
		}
		st, err := os.Lstat(p)
		if err != nil {
			return errors.Wrap(err, "images: layout file")
		}
		h := &tar.Header{Name: filepath.ToSlash(rel), ModTime: created, Format: tar.FormatPAX}
		var data []byte
		if st.IsDir() {
			h.Typeflag, h.Name, h.Mode = tar.TypeDir, h.Name+"/", 0o755
		} else {
			if data, err = os.ReadFile(p); err != nil {
				return errors.Wrap(err, "images: layout file")
			}
			h.Typeflag, h.Mode, h.Size = tar.TypeReg, 0o644, int64(len(data))
		}
		if err := tw.WriteHeader(h); err != nil {
			return errors.Wrap(err, "images: archive header")
		}
		if _, err := tw.Write(data); err != nil {
			return errors.Wrap(err, "images: archive")
		}
	}
	return errors.Wrap(tw.Close(), "images: archive")
}

// ReadArchive reads back the single image of an archive WriteArchive wrote, with its
// index annotations, for tests and checks. It unpacks the archive into dir (empty, owned
// by the caller), from which the image is read lazily.
func ReadArchive(path, dir string) (v1.Image, map[string]string, error) {
	if err := untar(path, dir); err != nil {
		return nil, nil, err
	}
	idx, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		return nil, nil, errors.Wrapf(err, "images: %s is not an OCI image layout", path)
	}
	m, err := idx.IndexManifest()
	if err != nil {
		return nil, nil, errors.Wrap(err, "images: index")
	}
	if len(m.Manifests) != 1 {
		return nil, nil, errors.Newf("images: %s holds %d manifests, want 1", path, len(m.Manifests))
	}
	img, err := idx.Image(m.Manifests[0].Digest)
	if err != nil {
		return nil, nil, errors.Wrap(err, "images: image")
	}
	return img, m.Manifests[0].Annotations, nil
}

func untar(path, dir string) error {
	f, err := os.Open(path)
	if err != nil {
		return errors.Wrap(err, "images: open archive")
	}
	defer func() { _ = f.Close() }()
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return errors.Wrapf(err, "images: read %s", path)
		}
		p := filepath.Join(dir, filepath.FromSlash(h.Name))
		if !strings.HasPrefix(p, dir+string(filepath.Separator)) {
			return errors.Newf("images: %s: entry %q escapes the archive", path, h.Name)
		}
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(p, 0o755); err != nil {
				return errors.Wrap(err, "images: untar")
			}
		case tar.TypeReg:
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				return errors.Wrap(err, "images: untar")
			}
			b, err := io.ReadAll(tr)
			if err != nil {
				return errors.Wrap(err, "images: untar")
			}
			if err := os.WriteFile(p, b, 0o644); err != nil {
				return errors.Wrap(err, "images: untar")
			}
		default:
			return errors.Newf("images: %s: unexpected entry %q (type %c)", path, h.Name, h.Typeflag)
		}
	}
}
