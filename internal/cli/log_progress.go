package cli

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/term"

	"github.com/coil-net/coil/logio"
)

// progress returns a progress reporter drawing a bar on stderr when stderr is a terminal
// (nil otherwise: quiet), and a function that ends the bar's line.
func (a *app) progress(label string) (logio.Progress, func()) {
	f, ok := a.env.Stderr.(*os.File)
	if !ok || !term.IsTerminal(int(f.Fd())) {
		return nil, func() {}
	}
	b := &bar{w: f, label: label}
	return b.update, b.end
}

// bar is a hand-drawn progress line: "\rlabel [#####     ]  45% 450000/1000000".
type bar struct {
	w     io.Writer
	label string
	mu    sync.Mutex
	last  time.Time
	drawn bool
}

func (b *bar) update(done, total int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := time.Now()
	if now.Sub(b.last) < 100*time.Millisecond && done != total {
		return
	}
	b.last = now
	b.drawn = true
	if total <= 0 {
		fmt.Fprintf(b.w, "\r%s %d", b.label, done)
		return
	}
	const width = 30
	frac := min(float64(done)/float64(total), 1)
	n := int(frac * width)
	fmt.Fprintf(b.w, "\r%s [%s%s] %3.0f%% %d/%d", b.label, strings.Repeat("#", n), strings.Repeat(" ", width-n), frac*100, done, total)
}

func (b *bar) end() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.drawn {
		fmt.Fprintln(b.w)
	}
}
