package wal

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sync"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// payloadOf and recordsOf define frame i of the logs written by writeFrames,
// so any survivor can be checked by its index alone.
func payloadOf(i uint64) []byte { return fmt.Appendf(nil, "frame-%04d", i) }
func recordsOf(i uint64) int    { return int(i%3) + 1 }

// openLog opens a log and closes it at the end of the test if still open.
func openLog(t testing.TB, dir string, opts Options) *Log {
	t.Helper()
	l, err := Open(dir, opts)
	if err != nil {
		t.Fatalf("Open(%s): %v", dir, err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// writeFrames appends count frames one at a time, so each Append is one
// frame and frame i holds payloadOf(i).
func writeFrames(t testing.TB, l *Log, count int) {
	t.Helper()
	for range count {
		i := l.LastIndex() + 1
		if err := l.Append(payloadOf(i), recordsOf(i)); err != nil {
			t.Fatalf("Append frame %d: %v", i, err)
		}
		if got := l.LastIndex(); got != i {
			t.Fatalf("after appending frame %d, LastIndex() = %d", i, got)
		}
	}
}

// checkFrames asserts the log holds exactly frames first..first+count-1, each
// with the payload writeFrames gave it.
func checkFrames(t testing.TB, l *Log, first uint64, count int) {
	t.Helper()
	if got := l.FirstIndex(); got != first {
		t.Errorf("FirstIndex() = %d, want %d", got, first)
	}
	if got, want := l.LastIndex(), first+uint64(count)-1; got != want {
		t.Errorf("LastIndex() = %d, want %d (%d frames)", got, want, count)
	}
	next := first
	err := l.Replay(first, func(fr Frame) error {
		index, payload, n := fr.Index, fr.Payload, fr.Records
		if index != next {
			return fmt.Errorf("got frame %d, want %d", index, next)
		}
		next++
		if !bytes.Equal(payload, payloadOf(index)) || n != recordsOf(index) {
			return fmt.Errorf("frame %d = %q × %d, want %q × %d", index, payload, n, payloadOf(index), recordsOf(index))
		}
		return nil
	})
	if err != nil {
		t.Fatalf("Replay: %v", err)
	}
	if got := int(next - first); got != count {
		t.Errorf("replayed %d frames, want %d", got, count)
	}
}

// entryLoc is where one tidwall entry (length prefix + frame) sits on disk.
type entryLoc struct {
	seg    string // segment file name
	off    int64  // offset of the length prefix
	prefix int64  // length of the prefix
	size   int64  // length of the frame
	index  uint64 // the frame's index
}

// frameAt returns the offset of the frame's first byte.
func (e entryLoc) frameAt() int64 { return e.off + e.prefix }

// layout lists every valid frame of every segment in dir, in log order.
func layout(t testing.TB, dir string) []entryLoc {
	t.Helper()
	files, err := listSegments(dir)
	if err != nil {
		t.Fatal(err)
	}
	var locs []entryLoc
	for _, file := range files {
		data, err := os.ReadFile(filepath.Join(dir, file.name))
		if err != nil {
			t.Fatal(err)
		}
		w := walker{next: file.index, v1: true}
		w.walk(data, 0, func(off, end int64, f Frame) bool {
			prefix := int64(uvarintAt(data[off:]))
			locs = append(locs, entryLoc{seg: file.name, off: off, prefix: prefix, size: end - off - prefix, index: f.Index})
			return true
		}, func(span) {})
	}
	return locs
}

// segmentsOnDisk returns the first indexes of the segment files in dir.
func segmentsOnDisk(t testing.TB, dir string) []uint64 {
	t.Helper()
	files, err := listSegments(dir)
	if err != nil {
		t.Fatal(err)
	}
	var firsts []uint64
	for _, f := range files {
		firsts = append(firsts, f.index)
	}
	return firsts
}

// segmentsKnown returns the first indexes in the log's segment table.
func segmentsKnown(l *Log) []uint64 {
	l.segMu.Lock()
	defer l.segMu.Unlock()
	var firsts []uint64
	for _, s := range l.segs {
		firsts = append(firsts, s.first)
	}
	return firsts
}

func checkSegmentTable(t testing.TB, l *Log) {
	t.Helper()
	if disk, known := segmentsOnDisk(t, l.dir), segmentsKnown(l); !slices.Equal(disk, known) {
		t.Fatalf("segments on disk %v, log's table %v", disk, known)
	}
	var size int64
	for _, first := range segmentsOnDisk(t, l.dir) {
		fi, err := os.Stat(filepath.Join(l.dir, segmentName(first)))
		if err != nil {
			t.Fatal(err)
		}
		size += fi.Size()
	}
	if got := l.Stats().DiskBytes; got != size {
		t.Fatalf("Stats().DiskBytes = %d, segment files hold %d", got, size)
	}
}

// logLines collects what a log writes, for asserting on levels and messages.
type logLines struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (c *logLines) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.buf.Write(p)
}

func (c *logLines) logger() *slog.Logger {
	return slog.New(slog.NewJSONHandler(c, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// lines returns the records at level or above.
func (c *logLines) lines(t testing.TB, level slog.Level) []map[string]any {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []map[string]any
	for line := range bytes.Lines(c.buf.Bytes()) {
		var rec map[string]any
		if err := json.Unmarshal(line, &rec); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		var lv slog.Level
		if err := lv.UnmarshalText([]byte(rec["level"].(string))); err != nil {
			t.Fatal(err)
		}
		if lv >= level {
			out = append(out, rec)
		}
	}
	return out
}

// waitFor spins until cond holds. It is for states another goroutine reaches
// in a bounded number of steps with nothing to wait on but the scheduler.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	for i := 0; !cond(); i++ {
		if i == 10_000_000 {
			t.Fatalf("gave up waiting for %s", what)
		}
		runtime.Gosched()
	}
}
