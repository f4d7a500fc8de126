package main

import (
	"errors"
	"fmt"
	"io"
	"sync"
	"time"
)

// asyncWriter buffers log output and writes it from a goroutine every
// flushEvery or when flushBytes have gathered: a decision line per check at
// 100k checks/s would otherwise cost a write(2) each, more than the check.
// Close flushes what is left. What a kill -9 catches in the buffer (at most
// flushEvery of lines) is lost; the state is not.
//
// The output may stop taking lines (stderr a pipe nobody reads, a stuck
// journald): the server never waits for it. Lines past maxBuffered are
// dropped and counted, and the count is written once the output takes
// lines again; Close waits at most closeWait for the last flush.
type asyncWriter struct {
	mu      sync.Mutex
	buf     []byte
	dropped uint64 // bytes dropped since the last note of it
	out     io.Writer
	kick    chan struct{}
	done    chan struct{}
	stopped chan struct{}
	once    sync.Once
	// dropNote renders the line that says how many bytes were dropped,
	// in the log's format.
	dropNote func(dropped uint64) []byte
	// closeWait is the const closeWait, shortened by tests.
	closeWait time.Duration
}

const (
	flushEvery = 100 * time.Millisecond
	flushBytes = 256 << 10
	// maxBuffered drops lines rather than grow without bound when the
	// output (a full pipe, a stuck journald) stops taking them.
	maxBuffered = 64 << 20
	// closeWait bounds the last flush at exit: an output that has taken
	// nothing for this long is not going to.
	closeWait = 5 * time.Second
)

func newAsyncWriter(out io.Writer) *asyncWriter {
	w := &asyncWriter{out: out, kick: make(chan struct{}, 1), done: make(chan struct{}), stopped: make(chan struct{}), closeWait: closeWait}
	w.dropNote = func(n uint64) []byte {
		return fmt.Appendf(nil, "time=%s level=WARN msg=\"log output stalled; lines dropped\" dropped_bytes=%d\n",
			time.Now().Format(time.RFC3339Nano), n)
	}
	go w.loop()
	return w
}

func (w *asyncWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	if len(w.buf)+len(p) <= maxBuffered {
		w.buf = append(w.buf, p...)
	} else {
		w.dropped += uint64(len(p))
	}
	full := len(w.buf) >= flushBytes
	w.mu.Unlock()
	if full {
		select {
		case w.kick <- struct{}{}:
		default:
		}
	}
	return len(p), nil
}

func (w *asyncWriter) flush(spare []byte) []byte {
	w.mu.Lock()
	b := w.buf
	w.buf = spare[:0]
	dropped := w.dropped
	w.dropped = 0
	w.mu.Unlock()
	if dropped > 0 {
		b = append(b, w.dropNote(dropped)...)
	}
	if len(b) > 0 {
		w.out.Write(b)
	}
	return b
}

func (w *asyncWriter) loop() {
	defer close(w.stopped)
	t := time.NewTicker(flushEvery)
	defer t.Stop()
	var spare []byte
	for {
		select {
		case <-t.C:
		case <-w.kick:
		case <-w.done:
			w.flush(nil)
			return
		}
		spare = w.flush(spare)
	}
}

// errLogStuck is what Close returns when the output took nothing in time.
var errLogStuck = errors.New("log output takes nothing; the last lines are lost")

// Close flushes and stops the writer goroutine, waiting at most closeWait
// for an output that has stopped taking lines.
func (w *asyncWriter) Close() error {
	w.once.Do(func() { close(w.done) })
	t := time.NewTimer(w.closeWait)
	defer t.Stop()
	select {
	case <-w.stopped:
		return nil
	case <-t.C:
		return errLogStuck
	}
}
