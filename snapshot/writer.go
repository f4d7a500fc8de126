package snapshot

import (
	"bufio"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/greyhold/greyhold/internal/durable"
)

// DefaultLevel is the zstd level used when WriterOptions.Level is zero.
//
// Byte planes of near-random data leave zstd little to match, only
// literals to entropy-code, so the match finder's effort buys nothing.
// On 10M triplet rows, compression alone on one goroutine:
//
//	SpeedFastest            10.10 bytes/row  0.30 s
//	SpeedDefault            10.11 bytes/row  0.40 s
//	SpeedBetterCompression  10.11 bytes/row  0.52 s
//
// Whatever the level, the writer turns on entropy coding of blocks where
// no match was found (zstd.WithAllLitEntropyCompression), which
// SpeedFastest and SpeedDefault leave off: without it uniform-ish planes
// are stored raw, 10.68 bytes/row at 10M rows and 11.65 (no compression
// at all) at 1M.
const DefaultLevel = zstd.SpeedFastest

// WriterOptions tunes a Writer. The zero value is ready to use.
type WriterOptions struct {
	// Level is the zstd encoder level; zero means DefaultLevel.
	Level zstd.EncoderLevel

	// Concurrency is how many chunks are compressed at once, each on its
	// own goroutine, while the caller prepares the next. Zero means
	// GOMAXPROCS; 1 compresses inside WriteRows and starts no goroutine.
	// Output bytes do not depend on it.
	Concurrency int
}

// Writer builds one snapshot in a temporary file. Use it from one
// goroutine. After any error it is unusable: call Abort.
type Writer struct {
	dir     string
	tmpPath string
	path    string
	h       Header
	f       *os.File
	bw      *bufio.Writer
	crc     uint32 // CRC32C of every byte written so far
	size    int64
	zenc    *zstd.Encoder
	conc    int

	entries []entry
	tables  map[uint8]int64
	blobs   map[uint8]int64
	chunks  int
	bodyLen uint64
	table   *entry // the open table, or nil

	pending []*chunkJob // in flight, in submission order
	free    []*chunkJob

	err      error // sticky
	finished bool  // committed or aborted
}

// chunkJob is one WriteRows call: copies of the caller's rows, sorted,
// split and compressed into out, possibly on another goroutine.
type chunkJob struct {
	keys  []uint64
	cols  [][]uint32
	pairs []keyIdx
	tmp   []keyIdx
	enc   chunkEncoder
	out   []byte
	parts []entry
	done  chan struct{}
}

// Create starts a snapshot for h in a temporary file in dir; nothing
// appears under FileName(h.WALIndex) until Commit. Every Writer must end
// with Commit or Abort. h.Created must be set; KeyOptions is copied.
func Create(dir string, h Header, opts WriterOptions) (*Writer, error) {
	if len(h.KeyOptions) > MaxKeyOptions {
		return nil, fmt.Errorf("create snapshot: key options of %d bytes exceed %d", len(h.KeyOptions), MaxKeyOptions)
	}
	if h.Created.IsZero() {
		return nil, errors.New("create snapshot: header has no creation time")
	}
	if opts.Concurrency < 0 {
		return nil, fmt.Errorf("create snapshot: concurrency %d", opts.Concurrency)
	}
	level := opts.Level
	if level == 0 {
		level = DefaultLevel
	}
	conc := opts.Concurrency
	if conc == 0 {
		conc = runtime.GOMAXPROCS(0)
	}
	h.Created = time.Unix(h.Created.Unix(), 0).UTC()
	h.KeyOptions = slices.Clone(h.KeyOptions)

	zenc, err := zstd.NewWriter(nil,
		zstd.WithEncoderLevel(level),
		zstd.WithEncoderCRC(true),
		zstd.WithAllLitEntropyCompression(true),
		zstd.WithEncoderConcurrency(conc))
	if err != nil {
		return nil, fmt.Errorf("create snapshot: zstd encoder: %w", err)
	}
	name := FileName(h.WALIndex)
	f, err := os.CreateTemp(dir, name+".*"+tmpSuffix)
	if err != nil {
		zenc.Close()
		return nil, fmt.Errorf("create snapshot: %w", err)
	}
	w := &Writer{
		dir:     dir,
		tmpPath: f.Name(),
		path:    filepath.Join(dir, name),
		h:       h,
		f:       f,
		// 1 MiB: a chunk of 40 Ki triplets compresses to ~400 KiB, so a
		// chunk costs a few write calls rather than hundreds.
		bw:     bufio.NewWriterSize(f, 1<<20),
		zenc:   zenc,
		conc:   conc,
		tables: make(map[uint8]int64),
		blobs:  make(map[uint8]int64),
	}
	w.write(appendHeader(nil, h))
	if w.err != nil {
		err := w.err
		_ = w.Abort()
		return nil, err
	}
	return w, nil
}

func (w *Writer) write(p []byte) {
	if w.err != nil {
		return
	}
	if _, err := w.bw.Write(p); err != nil {
		w.err = fmt.Errorf("write snapshot %s: %w", w.tmpPath, err)
		return
	}
	w.crc = crc32.Update(w.crc, castagnoli, p)
	w.size += int64(len(p))
}

// fail records err as the writer's sticky error and returns it.
func (w *Writer) fail(err error) error {
	if w.err == nil {
		w.err = err
	}
	return w.err
}

func (w *Writer) usable() error {
	if w.finished {
		return errors.New("snapshot writer already committed or aborted")
	}
	return w.err
}

// BeginTable starts table id, whose rows have ncols columns (0 to 16).
// Each table id may appear once per snapshot; tables do not nest.
func (w *Writer) BeginTable(id uint8, ncols int) error {
	if err := w.usable(); err != nil {
		return err
	}
	switch {
	case w.table != nil:
		return w.fail(fmt.Errorf("begin table %d: table %d is still open", id, w.table.id))
	case ncols < 0 || ncols > maxCols:
		return w.fail(fmt.Errorf("begin table %d: %d columns, want 0 to %d", id, ncols, maxCols))
	}
	if _, dup := w.tables[id]; dup {
		return w.fail(fmt.Errorf("begin table %d: table already written", id))
	}
	w.entries = append(w.entries, entry{kind: kindTable, id: id, ncols: uint8(ncols)})
	w.table = &entry{kind: kindTable, id: id, ncols: uint8(ncols)}
	w.tables[id] = 0
	return nil
}

// WriteRows adds one chunk to the open table: row i is keys[i] and
// cols[c][i]. Rows may come in any key order; the writer sorts them. It
// neither modifies nor retains the slices: they may be reused as soon as it
// returns. len(cols) must be the table's column count and all lengths
// equal. An empty chunk is allowed and stores nothing; a chunk over 64 Ki
// rows is stored as several, so a reader may see more, smaller chunks.
func (w *Writer) WriteRows(keys []uint64, cols ...[]uint32) error {
	if err := w.usable(); err != nil {
		return err
	}
	if w.table == nil {
		return w.fail(errors.New("write rows: no open table"))
	}
	if len(cols) != int(w.table.ncols) {
		return w.fail(fmt.Errorf("write rows: table %d has %d columns, got %d", w.table.id, w.table.ncols, len(cols)))
	}
	for c, col := range cols {
		if len(col) != len(keys) {
			return w.fail(fmt.Errorf("write rows: table %d column %d has %d values for %d keys", w.table.id, c, len(col), len(keys)))
		}
	}
	if len(keys) == 0 {
		return nil
	}
	// Sorting indexes by uint32 caps a single call, not a table.
	if uint64(len(keys)) > 1<<32-1 {
		return w.fail(fmt.Errorf("write rows: %d rows in one call", len(keys)))
	}

	j := w.job()
	j.keys = append(j.keys[:0], keys...)
	if cap(j.cols) < len(cols) {
		j.cols = make([][]uint32, len(cols))
	}
	j.cols = j.cols[:len(cols)]
	for c, col := range cols {
		j.cols[c] = append(j.cols[c][:0], col...)
	}
	if w.conc == 1 {
		j.run(w.table.id, int(w.table.ncols))
		w.flush(j)
		return w.err
	}
	j.done = make(chan struct{})
	id, ncols := w.table.id, int(w.table.ncols)
	go func() {
		defer close(j.done)
		j.run(id, ncols)
	}()
	w.pending = append(w.pending, j)
	// Keep conc compressions running while the caller gathers the next
	// chunk; write out whatever has finished at the head.
	for len(w.pending) > w.conc {
		w.flushHead()
	}
	for len(w.pending) > 0 && isDone(w.pending[0].done) {
		w.flushHead()
	}
	return w.err
}

func isDone(c chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

func (w *Writer) job() *chunkJob {
	if n := len(w.free); n > 0 {
		j := w.free[n-1]
		w.free = w.free[:n-1]
		return j
	}
	return &chunkJob{enc: chunkEncoder{zenc: w.zenc}}
}

// run sorts the job's rows and compresses them as chunks of at most
// maxChunkRows, split evenly.
func (j *chunkJob) run(id uint8, ncols int) {
	sorted, scratch := sortRows(j.pairs, j.tmp, j.keys)
	j.pairs, j.tmp = sorted, scratch
	n := len(sorted)
	parts := (n + maxChunkRows - 1) / maxChunkRows
	j.out = j.out[:0]
	j.parts = j.parts[:0]
	for p := range parts {
		lo, hi := n*p/parts, n*(p+1)/parts
		start := len(j.out)
		var raw int
		j.out, raw = j.enc.encode(j.out, sorted[lo:hi], j.cols)
		e := entry{kind: kindChunk, id: id, ncols: uint8(ncols), rows: uint32(hi - lo), raw: uint32(raw), frame: uint32(len(j.out) - start)}
		e.pad = padFor(uint64(e.raw), e.logicalLen(), uint64(e.frame))
		j.parts = append(j.parts, e)
	}
}

func (w *Writer) flushHead() {
	j := w.pending[0]
	<-j.done
	w.pending = w.pending[1:]
	w.flush(j)
}

// flush writes a finished job's chunks and recycles the job.
func (w *Writer) flush(j *chunkJob) {
	off := 0
	for _, e := range j.parts {
		w.write(j.out[off : off+int(e.frame)])
		off += int(e.frame)
		w.writePad(e.pad)
		w.addEntry(e)
		w.tables[e.id] += int64(e.rows)
		w.chunks++
	}
	w.free = append(w.free, j)
}

func (w *Writer) writePad(n uint32) {
	var zeros [4096]byte
	for n > 0 {
		k := min(n, uint32(len(zeros)))
		w.write(zeros[:k])
		n -= k
	}
}

func (w *Writer) addEntry(e entry) {
	w.entries = append(w.entries, e)
	w.bodyLen += uint64(e.frame) + uint64(e.pad)
}

// drain waits for every job in flight and writes it out.
func (w *Writer) drain() {
	for len(w.pending) > 0 {
		w.flushHead()
	}
}

// EndTable closes the open table. It waits for the table's chunks to be
// compressed.
func (w *Writer) EndTable() error {
	if err := w.usable(); err != nil {
		return err
	}
	if w.table == nil {
		return w.fail(errors.New("end table: no open table"))
	}
	w.drain()
	w.table = nil
	return w.err
}

// WriteBlob stores data as blob id, outside any table. Each blob id may
// appear once per snapshot; data is at most 64 MiB and is not retained.
func (w *Writer) WriteBlob(id uint8, data []byte) error {
	if err := w.usable(); err != nil {
		return err
	}
	switch {
	case w.table != nil:
		return w.fail(fmt.Errorf("write blob %d: table %d is still open", id, w.table.id))
	case len(data) > maxBlobLen:
		return w.fail(fmt.Errorf("write blob %d: %d bytes exceed %d", id, len(data), maxBlobLen))
	}
	if _, dup := w.blobs[id]; dup {
		return w.fail(fmt.Errorf("write blob %d: blob already written", id))
	}
	e := entry{kind: kindBlob, id: id, raw: uint32(len(data))}
	var frame []byte
	if len(data) > 0 {
		frame = w.zenc.EncodeAll(data, nil)
	}
	e.frame = uint32(len(frame))
	e.pad = padFor(uint64(e.raw), e.logicalLen(), uint64(e.frame))
	w.write(frame)
	w.writePad(e.pad)
	w.addEntry(e)
	w.blobs[id] = int64(len(data))
	return w.err
}

// Commit writes the directory and trailer, syncs the file, renames it to
// FileName(WALIndex) in the directory, replacing any snapshot of the same
// WAL index, and syncs the directory. On failure the temporary file is
// removed. Abort after Commit is a no-op.
func (w *Writer) Commit() (Info, error) {
	if err := w.usable(); err != nil {
		return Info{}, err
	}
	if w.table != nil {
		return Info{}, w.fail(fmt.Errorf("commit snapshot: table %d is still open", w.table.id))
	}
	dir := make([]byte, 0, len(w.entries)*entryLen)
	for _, e := range w.entries {
		dir = appendEntry(dir, e)
	}
	w.write(dir)
	w.write(appendTrailer(nil, w.bodyLen, len(w.entries), dir, w.crc))
	if w.err == nil {
		if err := w.bw.Flush(); err != nil {
			w.err = fmt.Errorf("commit snapshot %s: %w", w.tmpPath, err)
		}
	}
	if w.err == nil {
		if err := w.f.Sync(); err != nil {
			w.err = fmt.Errorf("commit snapshot: sync %s: %w", w.tmpPath, err)
		}
	}
	if w.err == nil {
		err := w.f.Close()
		w.f = nil
		if err != nil {
			w.err = fmt.Errorf("commit snapshot: close %s: %w", w.tmpPath, err)
		}
	}
	if w.err == nil {
		if err := os.Rename(w.tmpPath, w.path); err != nil {
			w.err = fmt.Errorf("commit snapshot: %w", err)
		}
	}
	if w.err != nil {
		err := w.err
		_ = w.Abort()
		return Info{}, err
	}
	w.finished = true
	w.zenc.Close()
	info := Info{
		Path:   w.path,
		Header: w.h,
		Size:   w.size,
		Tables: w.tables,
		Blobs:  w.blobs,
		Chunks: w.chunks,
	}
	// The rename is durable only once the directory entry is.
	if err := durable.SyncDir(w.dir); err != nil {
		return info, fmt.Errorf("commit snapshot %s: %w", w.path, err)
	}
	return info, nil
}

// Abort discards the snapshot: it waits for compression in flight, closes
// and removes the temporary file. It is safe to call more than once and
// after Commit, where it does nothing.
func (w *Writer) Abort() error {
	if w.finished {
		return nil
	}
	w.finished = true
	for _, j := range w.pending {
		<-j.done
	}
	w.pending = nil
	w.zenc.Close()
	var errs []error
	if w.f != nil {
		if err := w.f.Close(); err != nil {
			errs = append(errs, err)
		}
		w.f = nil
	}
	if err := os.Remove(w.tmpPath); err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("abort snapshot: %w", err)
	}
	return nil
}
