package logio

import (
	"context"
	"encoding/json"
	"io"
	"runtime"
	"sync"

	"github.com/cockroachdb/errors"

	"github.com/coil-net/coil/events"
)

// decodeBatch is the number of lines a decode worker takes at once.
const decodeBatch = 256

type lineBatch struct {
	buf   []byte
	ends  []int
	first int64 // line number of the first line
	evs   []*events.Event
	vals  [][]byte
	errs  []error
	done  chan struct{}
}

// decodeEvents reads the event lines of a file (after its header) and calls fn with each
// decoded event and its canonical encoding (its stored bytes) in file order, or with the first line that does not decode (err set, ev
// holding what could be read of its stream and sequence). Lines are decoded (JSON parse,
// re-encode, hash check) by several goroutines; fn runs on the caller's goroutine.
func decodeEvents(ctx context.Context, lr *lineReader, fn func(line int64, ev *events.Event, value []byte, err error) error) error {
	ctx, cancel := context.WithCancel(ctx)
	workers := max(1, runtime.GOMAXPROCS(0))
	jobs := make(chan *lineBatch, workers)
	ordered := make(chan *lineBatch, 2*workers)
	var readErr error
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	wg.Add(1)
	go func() { // reader
		defer wg.Done()
		defer close(jobs)
		defer close(ordered)
		for {
			b := &lineBatch{first: lr.line + 1, done: make(chan struct{})}
			for len(b.ends) < decodeBatch {
				line, err := lr.next()
				if errors.Is(err, io.EOF) {
					break
				}
				if err != nil {
					readErr = err
					break
				}
				b.buf = append(b.buf, line...)
				b.ends = append(b.ends, len(b.buf))
			}
			if len(b.ends) == 0 {
				return
			}
			select {
			case jobs <- b:
			case <-ctx.Done():
				return
			}
			select {
			case ordered <- b:
			case <-ctx.Done():
				return
			}
			if readErr != nil || len(b.ends) < decodeBatch {
				return
			}
		}
	}()
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for b := range jobs {
				b.evs = make([]*events.Event, len(b.ends))
				b.vals = make([][]byte, len(b.ends))
				b.errs = make([]error, len(b.ends))
				start := 0
				for i, end := range b.ends {
					b.evs[i], b.vals[i], b.errs[i] = decodeLine(b.buf[start:end])
					start = end
				}
				close(b.done)
			}
		}()
	}
	for b := range ordered {
		select {
		case <-b.done:
		case <-ctx.Done():
			return ctx.Err()
		}
		for i, ev := range b.evs {
			if err := fn(b.first+int64(i), ev, b.vals[i], b.errs[i]); err != nil {
				return err
			}
		}
	}
	if readErr != nil {
		return readErr
	}
	return ctx.Err()
}

// decodeLine decodes one event line and returns the event's canonical encoding. An event
// must carry its hash (the decoder checks it against the content). On error the returned
// event holds the line's stream and sequence if they could be read.
func decodeLine(line []byte) (*events.Event, []byte, error) {
	if ev, v, ok := fastDecode(line); ok {
		return ev, v, nil
	}
	ev := &events.Event{}
	err := ev.UnmarshalJSON(line)
	if err == nil && ev.Hash.IsZero() {
		err = errors.Wrapf(events.ErrCorrupt, "%s #%d: no \"hash\"", ev.Stream, ev.Seq)
	}
	var v []byte
	if err == nil {
		v, err = events.Encode(ev)
	}
	if err != nil {
		var where struct {
			Stream events.Stream `json:"stream"`
			Seq    uint64        `json:"seq"`
		}
		_ = json.Unmarshal(line, &where)
		return &events.Event{Stream: where.Stream, Seq: where.Seq}, nil, err
	}
	return ev, v, nil
}
