package main

import (
	"io"
	"sync"
	"time"
)

// asyncWriter buffers log output and writes it from a goroutine every
// flushEvery or when flushBytes have gathered: a decision line per check at
// 100k checks/s would otherwise cost a write(2) each, more than the check.
// Close flushes what is left. What a kill -9 catches in the buffer (at most
// flushEvery of lines) is lost; the state is not.
type asyncWriter struct {
	mu      sync.Mutex
	buf     []byte
	out     io.Writer
	kick    chan struct{}
	done    chan struct{}
	stopped chan struct{}
	once    sync.Once
}

const (
	flushEvery = 100 * time.Millisecond
	flushBytes = 256 << 10
	// maxBuffered drops lines rather than grow without bound when the
	// output (a full pipe, a stuck journald) stops taking them.
	maxBuffered = 64 << 20
)

func newAsyncWriter(out io.Writer) *asyncWriter {
	w := &asyncWriter{out: out, kick: make(chan struct{}, 1), done: make(chan struct{}), stopped: make(chan struct{})}
	go w.loop()
	return w
}

func (w *asyncWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	if len(w.buf)+len(p) <= maxBuffered {
		w.buf = append(w.buf, p...)
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
	w.mu.Unlock()
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

// Close flushes and stops the writer goroutine.
func (w *asyncWriter) Close() error {
	w.once.Do(func() { close(w.done) })
	<-w.stopped
	return nil
}
