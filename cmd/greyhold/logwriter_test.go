package main

import (
	"bytes"
	"encoding/json"
	"io"
	"strings"
	"sync"
	"testing"
	"time"
)

// blockedWriter takes nothing until released, as a pipe nobody reads.
type blockedWriter struct {
	release chan struct{}
	mu      sync.Mutex
	got     bytes.Buffer
}

func (b *blockedWriter) Write(p []byte) (int, error) {
	<-b.release
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.got.Write(p)
}

// An output that takes nothing makes Close give up after closeWait rather
// than hang the exit (issue 9, defect 10), and lines dropped meanwhile are
// counted and said once the output takes lines again.
func TestAsyncWriterStuckOutput(t *testing.T) {
	out := &blockedWriter{release: make(chan struct{})}
	w := newAsyncWriter(out)
	w.closeWait = 50 * time.Millisecond
	line := bytes.Repeat([]byte("x"), 1<<20)
	for range 100 { // 100 MiB, past maxBuffered
		w.Write(line)
	}
	start := time.Now()
	if err := w.Close(); err != errLogStuck {
		t.Errorf("Close with a stuck output: %v", err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("Close took %v", took)
	}
	close(out.release)
	<-w.stopped
	out.mu.Lock()
	defer out.mu.Unlock()
	s := out.got.String()
	if !strings.Contains(s, "log output stalled; lines dropped") || !strings.Contains(s, "dropped_bytes=") {
		t.Errorf("no note of the dropped lines in %d bytes written", len(s))
	}
}

// The note follows the log's format.
func TestDropNoteJSON(t *testing.T) {
	w := newAsyncWriter(io.Discard)
	defer w.Close()
	if _, err := newLogger("info", "json", w); err != nil {
		t.Fatal(err)
	}
	var v map[string]any
	if err := json.Unmarshal(w.dropNote(42), &v); err != nil || v["dropped_bytes"] != 42.0 {
		t.Errorf("json note %s: %v", w.dropNote(42), err)
	}
}
