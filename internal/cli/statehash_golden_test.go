package cli_test

import (
	"path/filepath"
	"testing"

	"github.com/coil-net/coil/projection"
)

// weekStateHash is the state hash of the golden week (testdata/logs/week.jsonl) as the
// release before 64-bit block indexes computed it (projection.State.Hash after folding
// every event). Widening block indexes changed no byte of any event nor of any state's
// canonical JSON: the hash must stay.
const weekStateHash = "afbff9b4cae11795e5f51bcd0e54a3bbf3c07b0c3b183e3845ed26b14f37a85e"

// TestGoldenWeekStateHash: the golden week, written by an earlier release, folds to the
// state hash that release computed.
func TestGoldenWeekStateHash(t *testing.T) {
	evs := readGoldenLog(t, filepath.Join(logsDir(t), goldenLog))
	st := projection.NewState()
	for _, e := range evs {
		if err := st.Apply(e); err != nil {
			t.Fatalf("apply %s #%d: %v", e.Stream, e.Seq, err)
		}
	}
	h, err := st.Hash()
	if err != nil {
		t.Fatal(err)
	}
	if h.String() != weekStateHash {
		t.Fatalf("golden week state hash %s, want %s (the previous release's)", h, weekStateHash)
	}
}
