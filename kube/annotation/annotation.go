// Package annotation parses the annotations Coil reads from Kubernetes objects. It
// imports no Kubernetes client (so it can be fuzzed cheaply) and bounds what it quotes:
// an annotation is whatever a user with rights on the object wrote, up to 256 KiB.
package annotation

import (
	"strings"

	"github.com/cockroachdb/errors"

	"github.com/coil-net/coil/events"
	"github.com/coil-net/coil/internal/safetext"
)

// Pool is the pod and namespace annotation that names the pool a pod's addresses come
// from.
const Pool = "coil.cybozu.com/pool"

// ErrInvalid: an annotation is present but its value is not valid.
var ErrInvalid = errors.New("annotation: invalid value")

// ParsePool returns the pool a Pool annotation's value names: the value without
// surrounding white space, which must be a pool name (events.ValidName). Otherwise it
// returns an error wrapping ErrInvalid that quotes the value (escaped, at most 64 bytes).
func ParsePool(value string) (string, error) {
	v := strings.TrimSpace(value)
	if err := events.ValidName(v); err != nil {
		return "", errors.Wrapf(ErrInvalid, "%s=%s: %v", Pool, safetext.Quote(value), err)
	}
	return v, nil
}
