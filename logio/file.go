package logio

import (
	"io"
	"os"
	"path/filepath"

	"github.com/cockroachdb/errors"
)

// WriteFileAtomic writes path through path+".tmp": fn writes the file, which is then
// synced, closed and renamed over path (and the directory synced), so that path holds
// either its old content or all of the new. When fn fails, path is left as it was, the
// temporary file removed, and fn's error returned as is.
func WriteFileAtomic(path string, fn func(io.Writer) error) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return errors.Wrap(err, "logio: create")
	}
	defer func() { _ = os.Remove(tmp) }()
	err = fn(f)
	if err == nil {
		err = errors.Wrap(f.Sync(), "logio: sync")
	}
	if cerr := f.Close(); err == nil && cerr != nil {
		err = errors.Wrap(cerr, "logio: close")
	}
	if err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return errors.Wrap(err, "logio: rename")
	}
	if d, err := os.Open(filepath.Dir(path)); err == nil {
		_ = d.Sync()
		_ = d.Close()
	}
	return nil
}
