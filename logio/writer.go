package logio

import (
	"io"
	"runtime"
	"sync"

	"github.com/cockroachdb/errors"

	"github.com/coil-net/coil/events"
)

// encodeBatch is the number of events an encode worker takes at once.
const encodeBatch = 512

type encBatch struct {
	evs  []*events.Event
	out  []byte
	err  error
	done chan struct{}
}

// eventWriter writes events as JSON lines, in order, encoding them on several goroutines.
type eventWriter struct {
	w        io.Writer
	progress Progress
	total    int64
	done     int64

	cur     *encBatch
	jobs    chan *encBatch
	ordered chan *encBatch
	wg      sync.WaitGroup
	werr    chan error
}

func newEventWriter(w io.Writer, p Progress, total int64) *eventWriter {
	workers := max(1, runtime.GOMAXPROCS(0))
	ew := &eventWriter{w: w, progress: p, total: total,
		jobs: make(chan *encBatch, workers), ordered: make(chan *encBatch, 2*workers), werr: make(chan error, 1)}
	for range workers {
		ew.wg.Add(1)
		go func() {
			defer ew.wg.Done()
			for b := range ew.jobs {
				for _, e := range b.evs {
					out, err := appendEventJSON(b.out, e)
					if err != nil {
						b.err = err
						break
					}
					b.out = append(out, '\n')
				}
				close(b.done)
			}
		}()
	}
	go func() { // writer: in order
		var err error
		for b := range ew.ordered {
			<-b.done
			if err != nil {
				continue
			}
			if b.err != nil {
				err = b.err
				continue
			}
			if _, werr := ew.w.Write(b.out); werr != nil {
				err = errors.Wrap(werr, "logio: write")
			}
		}
		ew.werr <- err
	}()
	return ew
}

// write queues one event. Its Revision is dropped from the file when 0.
func (ew *eventWriter) write(e *events.Event) error {
	if ew.cur == nil {
		ew.cur = &encBatch{evs: make([]*events.Event, 0, encodeBatch), done: make(chan struct{})}
	}
	ew.cur.evs = append(ew.cur.evs, e)
	ew.done++
	if ew.done%progressEvery == 0 {
		ew.progress.report(ew.done, ew.total)
	}
	if len(ew.cur.evs) == encodeBatch {
		ew.flush()
	}
	return nil
}

func (ew *eventWriter) flush() {
	if ew.cur == nil {
		return
	}
	b := ew.cur
	ew.cur = nil
	ew.jobs <- b
	ew.ordered <- b
}

// close writes what is queued and returns the first error.
func (ew *eventWriter) close() error {
	ew.flush()
	close(ew.jobs)
	close(ew.ordered)
	ew.wg.Wait()
	err := <-ew.werr
	ew.progress.report(ew.done, ew.total)
	return err
}
