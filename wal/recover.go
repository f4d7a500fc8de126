package wal

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/greyhold/greyhold/internal/durable"
)

// RepairReport says what Open found wrong with the log and what it did.
// The zero value means the log was whole.
type RepairReport struct {
	// Torn is the torn tail that was cut: the last bytes of the last
	// segment, which held no whole frame, as a crash during a write leaves
	// them. Nil if there was none.
	Torn *TornTail
	// Damage lists, in log order, the spans of bad bytes skipped and the
	// segments found missing. Replay goes on after each: only the frames a
	// span overlapped are lost.
	Damage []Damage
	// LostFrames counts the frames at or after Options.StartIndex that are
	// gone: their records are lost. CoveredFrames counts those before it,
	// which the caller's snapshot holds: losing them costs nothing.
	LostFrames, CoveredFrames uint64
	// SkippedBytes is the bytes of damage skipped (the torn tail apart).
	SkippedBytes int64
	// Sealed names the last segment when damage inside it (with valid
	// frames after the damage) made Open leave it as it is and start the
	// next segment: nothing is ever written after damage.
	Sealed string
	// Broken lists the hard links kept to damaged segments, for inspection
	// (file names in the log directory). Nothing reads them again; remove
	// them once inspected.
	Broken []string
	// MovedAside is where a log that ended before StartIndex was moved.
	MovedAside string
	// Missing is true when Options.MustExist was set and the directory held
	// no log.
	Missing bool
	// Leftover names an empty segment file, made for a frame whose write
	// never happened, that was removed.
	Leftover string
}

// Changed reports whether Open found anything to repair or report.
func (r RepairReport) Changed() bool {
	return r.Torn != nil || len(r.Damage) > 0 || r.Sealed != "" || r.MovedAside != "" || r.Missing
}

// TornTail is a cut-off end of the last segment.
type TornTail struct {
	Segment string
	Offset  int64 // where the segment was cut
	Bytes   int64 // how many bytes were cut
	// Kept is the file holding the cut bytes, "" if they could not be kept
	// (a full disk: cutting needs no space, keeping does).
	Kept string
}

// Damage is a span of a segment that held no valid frame, or a run of
// missing frames between two segments.
type Damage struct {
	Segment string // the damaged segment, or the one after the gap
	Offset  int64  // where the bad bytes start; 0 for a gap
	Bytes   int64  // how many bad bytes were skipped; 0 for a gap
	// FirstLost and LastLost are the frames lost with the span, by index;
	// both 0 if it cost none (it sat between frames).
	FirstLost, LastLost uint64
	// Covered is true when every lost frame comes before the start index.
	Covered bool
}

// Frames is how many frames the damage cost.
func (d Damage) Frames() uint64 {
	if d.LastLost == 0 {
		return 0
	}
	return d.LastLost - d.FirstLost + 1
}

// Loss reports frames this process wrote and lost while it ran (see
// Options.OnLoss).
type Loss struct {
	First, Last uint64 // the frames gone, by index
	Segment     string // the segment they were in
	Cause       string
}

// fileScan is what one pass over a segment file found.
type fileScan struct {
	size            int64
	frames, records uint64
	first, last     uint64 // indexes of the first and last valid frames; 0 if none
	goodEnd         int64  // offset just past the last valid frame
	spans           []span
	tornEnd         bool // the file ends in bad bytes
	midDamage       bool // bad bytes, or missing indexes, before a valid frame
	foreign         uint64
	foreignKey      uint32
	foreignAt       uint64
	eras            []Era
}

// dirScan is a whole log directory read through.
type dirScan struct {
	files    []segmentFile
	scans    []fileScan
	finished bool // an interrupted tidwall truncation was completed
}

// scanDir finishes any interrupted tidwall truncation, then reads every
// segment through, verifying every frame. It changes nothing else.
func (l *Log) scanDir() (dirScan, error) {
	files, err := listSegments(l.dir)
	if err != nil {
		return dirScan{}, err
	}
	var ds dirScan
	if files, ds.finished, err = finishTruncation(l.dir, files); err != nil {
		return dirScan{}, err
	}
	err = ds.scan(l.dir, files, l.opts.KeyID, nil)
	return ds, err
}

// scan reads files through in order, calling frame (if not nil) for each
// valid frame.
func (ds *dirScan) scan(dir string, files []segmentFile, keyID uint32, frame func(Frame) error) error {
	ds.files = files
	var buf []byte
	var err error
	expect := uint64(0)
	for _, file := range files {
		buf, err = readWhole(filepath.Join(dir, file.name), buf)
		if err != nil {
			return err
		}
		sc, err := scanFile(buf, file.index, expect, keyID, frame)
		if err != nil {
			return err
		}
		ds.scans = append(ds.scans, sc)
		if sc.last > 0 {
			expect = sc.last + 1
		}
	}
	return nil
}

// Inspect reads the log in dir without changing anything, calling frame
// (if not nil) for each valid frame, in order, and returns what Open would
// find: damage, lost frames (against start, as Options.StartIndex), a torn
// tail. Report.Sealed, Broken and the like stay empty: Inspect repairs
// nothing. It is for tools that look at a data directory a server may be
// using.
func Inspect(dir string, start uint64, frame func(Frame) error) (RepairReport, error) {
	files, err := listSegments(dir)
	if err != nil {
		return RepairReport{}, err
	}
	var ds dirScan
	if err := ds.scan(dir, files, 0, frame); err != nil {
		return RepairReport{}, err
	}
	var r RepairReport
	if len(files) == 0 {
		return r, nil
	}
	ds.assess(&r, start)
	last := ds.scans[len(ds.scans)-1]
	if last.tornEnd && !last.midDamage {
		r.Torn = &TornTail{Segment: files[len(files)-1].name, Offset: last.goodEnd, Bytes: last.size - last.goodEnd}
	}
	return r, nil
}

// readWhole reads a file into buf, reusing its space.
func readWhole(path string, buf []byte) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return buf, fmt.Errorf("open segment %s: %w", filepath.Base(path), err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return buf, fmt.Errorf("stat segment %s: %w", filepath.Base(path), err)
	}
	if int64(cap(buf)) < fi.Size() {
		buf = make([]byte, fi.Size())
	}
	buf = buf[:fi.Size()]
	if _, err := io.ReadFull(f, buf); err != nil {
		return buf, fmt.Errorf("read segment %s: %w", filepath.Base(path), err)
	}
	return buf, nil
}

// scanFile walks one segment's bytes. name is the index its file name says
// it starts at; expect the index the previous segment leaves off at (0 for
// the first segment). Frames below expect overlap the previous segment and
// count as damage. Frames keyed by another key than keyID (when not 0) are
// counted as foreign.
func scanFile(data []byte, name, expect uint64, keyID uint32, frame func(Frame) error) (fileScan, error) {
	sc := fileScan{size: int64(len(data))}
	w := walker{next: max(name, expect), v1: expect <= name}
	var err error
	w.walk(data, 0, func(off, end int64, f Frame) bool {
		if sc.frames == 0 {
			sc.first = f.Index
		}
		if len(sc.spans) > 0 {
			sc.midDamage = true
		}
		sc.frames++
		sc.records += uint64(f.Records)
		sc.last = f.Index
		sc.goodEnd = end
		if f.Version == frameVersion && keyID != 0 && f.KeyID != keyID {
			if sc.foreign == 0 {
				sc.foreignKey, sc.foreignAt = f.KeyID, f.Index
			}
			sc.foreign++
		}
		if n := len(sc.eras); n == 0 || sc.eras[n-1].Gen != f.Gen {
			sc.eras = append(sc.eras, Era{Gen: f.Gen, First: f.Index})
		}
		if frame != nil {
			err = frame(f)
		}
		return err == nil
	}, func(s span) {
		sc.spans = append(sc.spans, s)
	})
	if n := len(sc.spans); n > 0 && sc.spans[n-1].next == 0 {
		sc.tornEnd = true
	}
	return sc, err
}

// next is the index the frame after the log's last valid one gets.
func (ds *dirScan) next() uint64 {
	next := uint64(0)
	for i, sc := range ds.scans {
		next = max(next, ds.files[i].index)
		if sc.last > 0 {
			next = max(next, sc.last+1)
		}
	}
	return next
}

// foreign returns an error naming the first frame with another key, if any.
func (ds *dirScan) foreign(keyID uint32) error {
	var n uint64
	var at uint64
	var key uint32
	for _, sc := range ds.scans {
		if sc.foreign > 0 && n == 0 {
			at, key = sc.foreignAt, sc.foreignKey
		}
		n += sc.foreign
	}
	if n == 0 {
		return nil
	}
	return fmt.Errorf("%w: %d frames, the first at index %d, carry key id %08x, and this server's is %08x",
		ErrForeignKey, n, at, key, keyID)
}

// assess fills in a report's damage, lost and covered counts from a scan,
// with start the first index the caller needs (0: unknown, so every missing
// frame counts as lost, but none before the first segment).
func (ds *dirScan) assess(r *RepairReport, start uint64) {
	addLost := func(d Damage, first, last uint64) {
		if first <= last && last > 0 {
			d.FirstLost, d.LastLost = first, last
			switch {
			case last < start:
				d.Covered = true
				r.CoveredFrames += last - first + 1
			case first >= start:
				r.LostFrames += last - first + 1
			default:
				r.CoveredFrames += start - first
				r.LostFrames += last - start + 1
			}
		}
		r.Damage = append(r.Damage, d)
		r.SkippedBytes += d.Bytes
	}
	expect := uint64(0)
	var trailing *span // the previous file's bad end, whose cost the next file's name tells
	var trailingSeg string
	for i, sc := range ds.scans {
		name := ds.files[i].index
		if i == 0 && start > 0 && name > start {
			// The log begins after the first frame needed.
			addLost(Damage{Segment: ds.files[i].name}, start, name-1)
		}
		if i > 0 {
			switch {
			case trailing != nil:
				addLost(Damage{Segment: trailingSeg, Offset: trailing.off, Bytes: trailing.end - trailing.off},
					trailing.after+1, name-1)
			case name > expect:
				addLost(Damage{Segment: ds.files[i].name}, expect, name-1)
			}
		}
		trailing = nil
		for j := range sc.spans {
			s := &sc.spans[j]
			if s.next == 0 {
				if i < len(ds.scans)-1 {
					trailing, trailingSeg = s, ds.files[i].name
				}
				// The last segment's bad end is the torn tail, handled
				// apart: its frames were never whole.
				continue
			}
			addLost(Damage{Segment: ds.files[i].name, Offset: s.off, Bytes: s.end - s.off}, s.after+1, s.next-1)
		}
		expect = max(expect, name)
		if sc.last > 0 {
			expect = sc.last + 1
		}
	}
}

// openDir brings dir into shape and opens tidwall on it.
func (l *Log) openDir() error {
	created, err := durable.MkdirAll(l.dir, dirPerm)
	if err != nil {
		return fmt.Errorf("open wal: %w", err)
	}
	ds, err := l.scanDir()
	if err != nil {
		return fmt.Errorf("open wal %s: %w", l.dir, err)
	}
	if ds.finished {
		l.log.Info("finished an interrupted wal truncation", "dir", l.dir)
	}
	if err := ds.foreign(l.opts.KeyID); err != nil {
		return fmt.Errorf("open wal %s: %w", l.dir, err)
	}
	r := &l.repaired
	start := max(l.opts.StartIndex, 1)
	if err := l.removeLeftover(&ds, r); err != nil {
		return err
	}

	switch next := ds.next(); {
	case len(ds.files) == 0:
		if l.opts.MustExist {
			r.Missing = true
			l.log.Error("the write-ahead log is missing: starting a new one",
				"dir", l.dir, "first_index", start, "created_dir", created,
				"hint", "the data directory had a log and it is gone: changes since the last snapshot are lost; look for who removed it")
		} else {
			l.log.Info("starting a new wal", "dir", l.dir, "first_index", start, "created_dir", created)
		}
		if err := l.newSegmentFile(start); err != nil {
			return err
		}
		ds = dirScan{files: []segmentFile{{name: segmentName(start), index: start}}, scans: []fileScan{{}}}
	case l.opts.StartIndex > 0 && next < l.opts.StartIndex:
		aside, err := moveAside(l.dir)
		if err != nil {
			return err
		}
		r.MovedAside = aside
		l.log.Warn("wal ends before the snapshot: moved it aside and started a new one",
			"dir", l.dir, "moved_to", aside, "wal_next_index", next, "start_index", l.opts.StartIndex,
			"hint", "the wal was lost or replaced since the snapshot was written; the old files are kept for inspection and nothing reads them")
		if err := l.newSegmentFile(start); err != nil {
			return err
		}
		ds = dirScan{files: []segmentFile{{name: segmentName(start), index: start}}, scans: []fileScan{{}}}
	default:
		ds.assess(r, l.opts.StartIndex)
		if err := l.fixTail(&ds, r); err != nil {
			return err
		}
		if err := l.keepBroken(&ds, r); err != nil {
			return err
		}
		l.noteRepair(r)
	}
	if r.Changed() {
		l.repairs.Add(1)
	}
	l.lostFrames.Add(r.LostFrames)
	l.m.repaired(r)
	for _, sc := range ds.scans {
		l.eras = append(l.eras, sc.eras...)
	}
	l.ownFrom = ds.next()
	return l.install(ds)
}

// removeLeftover drops an empty last segment named one past the frame after
// the log's last: the committer creates the segment a write will start
// before making that write (so that no link planted at its name is
// followed), and a crash between the two leaves the file with no frame
// before it.
func (l *Log) removeLeftover(ds *dirScan, r *RepairReport) error {
	n := len(ds.files)
	if n < 2 || ds.scans[n-1].size != 0 {
		return nil
	}
	prev := *ds
	prev.files, prev.scans = ds.files[:n-1], ds.scans[:n-1]
	if ds.files[n-1].index != prev.next()+1 {
		return nil
	}
	name := ds.files[n-1].name
	if err := os.Remove(filepath.Join(l.dir, name)); err != nil {
		return fmt.Errorf("remove empty leftover segment %s: %w", name, err)
	}
	if err := durable.SyncDir(l.dir); err != nil {
		return err
	}
	r.Leftover = name
	l.log.Info("removed an empty segment that never got a frame", "dir", l.dir, "segment", name)
	*ds = prev
	return nil
}

// fixTail makes the last segment one tidwall can append to: a torn end is
// cut (its bytes kept aside if there is room), and a segment with damage
// before valid frames is sealed: left as it is, with an empty segment
// started after its last frame.
func (l *Log) fixTail(ds *dirScan, r *RepairReport) error {
	k := len(ds.files) - 1
	sc := &ds.scans[k]
	name := ds.files[k].name
	if sc.midDamage {
		next := ds.next()
		if err := l.newSegmentFile(next); err != nil {
			return fmt.Errorf("seal damaged segment %s: %w (a new, empty segment is needed after it: free a little space in %s)", name, err, l.dir)
		}
		r.Sealed = name
		if sc.tornEnd {
			s := sc.spans[len(sc.spans)-1]
			r.Damage = append(r.Damage, Damage{Segment: name, Offset: s.off, Bytes: s.end - s.off})
			r.SkippedBytes += s.end - s.off
		}
		ds.files = append(ds.files, segmentFile{name: segmentName(next), index: next})
		ds.scans = append(ds.scans, fileScan{})
		return nil
	}
	if !sc.tornEnd {
		return nil
	}
	path := filepath.Join(l.dir, name)
	t := &TornTail{Segment: name, Offset: sc.goodEnd, Bytes: sc.size - sc.goodEnd}
	kept, err := keepTorn(path, sc.goodEnd)
	if err != nil {
		l.log.Warn("could not keep the torn tail's bytes before cutting them", "segment", name, "err", err,
			"hint", "cutting needs no free space, keeping a copy does; the log is repaired all the same")
	}
	t.Kept = kept
	if err := truncateFile(path, sc.goodEnd); err != nil {
		return fmt.Errorf("cut the torn tail of %s: %w (cutting needs no free space: check the file's permissions and the kernel log)", name, err)
	}
	r.Torn = t
	sc.size = sc.goodEnd
	sc.spans = sc.spans[:len(sc.spans)-1]
	sc.tornEnd = false
	return nil
}

// keepTorn copies path's bytes from off on into a new file beside it, named
// <segment>.torn-<offset>, never overwriting one already there.
func keepTorn(path string, off int64) (string, error) {
	in, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer in.Close()
	out, name, err := createUnique(filepath.Dir(path), filepath.Base(path)+".torn-"+strconv.FormatInt(off, 10))
	if err != nil {
		return "", err
	}
	_, err = io.Copy(out, io.NewSectionReader(in, off, 1<<62))
	if err == nil {
		err = out.Sync()
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(filepath.Join(filepath.Dir(path), name))
		return "", err
	}
	return name, nil
}

// createUnique creates base, or base-2, base-3, ... in dir, whichever does
// not exist yet, never following a link.
func createUnique(dir, base string) (*os.File, string, error) {
	name := base
	for i := 2; ; i++ {
		f, err := durable.CreateNew(filepath.Join(dir, name), filePerm)
		if err == nil {
			return f, name, nil
		}
		if !errors.Is(err, fs.ErrExist) || i > 1000 {
			return nil, "", err
		}
		name = base + "-" + strconv.Itoa(i)
	}
}

// keepBroken hard-links every damaged segment to <name>.broken (or a name
// beside it, never replacing an earlier one): the bytes stay for
// inspection after the segment leaves the log, at no cost in space. A
// segment already linked under such a name is not linked again.
func (l *Log) keepBroken(ds *dirScan, r *RepairReport) error {
	for i, sc := range ds.scans {
		name := ds.files[i].name
		if len(sc.spans) == 0 && name != r.Sealed {
			continue
		}
		path := filepath.Join(l.dir, name)
		if linked, err := alreadyLinked(l.dir, name); err != nil {
			return err
		} else if linked != "" {
			r.Broken = append(r.Broken, linked)
			continue
		}
		base := brokenName(name)
		link := base
		for j := 2; ; j++ {
			err := os.Link(path, filepath.Join(l.dir, link))
			if err == nil {
				r.Broken = append(r.Broken, link)
				break
			}
			if !errors.Is(err, fs.ErrExist) || j > 1000 {
				// Keeping a copy is for inspection only: a full disk
				// must not stop the start.
				l.log.Warn("could not keep a link to a damaged segment", "segment", name, "err", err)
				break
			}
			link = base + "-" + strconv.Itoa(j)
		}
	}
	if len(r.Broken) > 0 {
		return durable.SyncDir(l.dir)
	}
	return nil
}

// alreadyLinked returns the name of a <segment>.broken* file that is the
// segment itself, if one exists.
func alreadyLinked(dir, name string) (string, error) {
	seg, err := os.Stat(filepath.Join(dir, name))
	if err != nil {
		return "", err
	}
	matches, err := filepath.Glob(filepath.Join(dir, brokenName(name)+"*"))
	if err != nil {
		return "", err
	}
	for _, m := range matches {
		if fi, err := os.Lstat(m); err == nil && os.SameFile(seg, fi) {
			return filepath.Base(m), nil
		}
	}
	return "", nil
}

// maxDamageLines bounds the lines one Open logs about damage; the summary
// line that follows has the totals.
const maxDamageLines = 20

// noteRepair logs and counts what Open repaired: warn for a torn tail (what
// a crash leaves) and for damage the snapshot covers, error for lost
// frames.
func (l *Log) noteRepair(r *RepairReport) {
	if !r.Changed() {
		return
	}
	if t := r.Torn; t != nil {
		l.log.Warn("wal tail torn: cut off", "dir", l.dir, "segment", t.Segment, "offset", t.Offset,
			"dropped_bytes", t.Bytes, "kept", t.Kept,
			"hint", "expected after a crash: the last write did not finish; a power cut in fsync=1s mode can also take the last second of frames")
	}
	for i, d := range r.Damage {
		if i == maxDamageLines {
			l.log.Warn("more wal damage not listed", "dir", l.dir, "spans", len(r.Damage)-i)
			break
		}
		args := []any{"dir", l.dir, "segment", d.Segment, "offset", d.Offset, "skipped_bytes", d.Bytes,
			"frames_skipped", d.Frames(), "first_lost", d.FirstLost, "last_lost", d.LastLost}
		switch {
		case d.Bytes == 0 && d.Frames() > 0 && d.Covered:
			l.log.Warn("wal frames missing, all of them covered by the snapshot: nothing lost", args...)
		case d.Bytes == 0:
			l.log.Error("wal frames missing: their changes are lost", append(args,
				"hint", "a segment file was removed or lost; check who touched the wal directory")...)
		case d.Covered || d.Frames() == 0:
			l.log.Warn("wal damage skipped; the frames it hit are covered by the snapshot: nothing lost", args...)
		default:
			l.log.Error("wal damage skipped: the frames it hit are lost, replay goes on after it", append(args,
				"hint", "a crash does not explain this: check the disk and the kernel log; the damaged segment is kept as .broken")...)
		}
	}
	if len(r.Damage) > 0 || r.Sealed != "" {
		l.log.Warn("wal repaired", "dir", l.dir, "lost_frames", r.LostFrames, "covered_frames", r.CoveredFrames,
			"skipped_bytes", r.SkippedBytes, "sealed", r.Sealed, "kept", r.Broken)
	}
}

// newSegmentFile makes an empty segment whose first frame will be first,
// and fsyncs the directory. tidwall/wal's load() takes its first index from
// the first file name and its last from the tail's entry count, so an empty
// log is FirstIndex first and LastIndex first-1.
func (l *Log) newSegmentFile(first uint64) error {
	name := segmentName(first)
	f, err := durable.CreateNew(filepath.Join(l.dir, name), filePerm)
	if errors.Is(err, fs.ErrExist) {
		// The committer makes a segment before the write that starts it;
		// a failed write leaves it empty, and it is the one wanted now.
		if fi, lerr := os.Lstat(filepath.Join(l.dir, name)); lerr == nil && fi.Mode().IsRegular() && fi.Size() == 0 {
			return durable.SyncDir(l.dir)
		}
	}
	if err != nil {
		return fmt.Errorf("create segment: %w", err)
	}
	err = f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("create segment %s: %w", name, err)
	}
	return durable.SyncDir(l.dir)
}

// install opens tidwall/wal on a repaired directory, takes a new generation
// and publishes the segment table. The committer calls it (Open, before the
// committer starts).
func (l *Log) install(ds dirScan) error {
	var segs []segInfo
	var disk int64
	for i, f := range ds.files {
		segs = append(segs, segInfo{first: f.index, size: ds.scans[i].size})
		disk += ds.scans[i].size
	}
	next := ds.next()
	tl, err := openTidwall(l.dir, l.opts.SegmentSize)
	if err != nil {
		return err
	}
	tlast, _ := tl.LastIndex()
	if tlast != next-1 {
		tl.Close()
		return fmt.Errorf("open wal %s: tidwall/wal ends at frame %d where the scan found %d", l.dir, tlast, next-1)
	}
	l.tl = tl
	l.segMu.Lock()
	l.segs = segs
	l.dirGen++
	l.segMu.Unlock()
	l.tailSize = segs[len(segs)-1].size
	l.diskBytes.Store(disk)
	l.first.Store(segs[0].first)
	l.last.Store(next - 1)
	l.sy.reset()
	if l.syncedIndex.Load() > next-1 {
		l.syncedIndex.Store(next - 1)
	}
	l.startEra(l.newGen(), next)
	return nil
}

// moveAside renames dir to <dir>.old-<unix time> and creates it anew.
func moveAside(dir string) (string, error) {
	clean := filepath.Clean(dir)
	base := clean + ".old-" + strconv.FormatInt(time.Now().Unix(), 10)
	aside := base
	for i := 2; ; i++ {
		if _, err := os.Lstat(aside); errors.Is(err, fs.ErrNotExist) {
			break
		}
		aside = base + "-" + strconv.Itoa(i)
	}
	if err := os.Rename(clean, aside); err != nil {
		return "", fmt.Errorf("move wal directory aside: %w", err)
	}
	if err := os.Mkdir(clean, dirPerm); err != nil {
		return "", fmt.Errorf("create wal directory: %w", err)
	}
	return aside, durable.SyncDir(filepath.Dir(clean))
}

// truncateFile cuts a segment at size and fsyncs it.
func truncateFile(path string, size int64) error {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("open segment %s to cut it: %w", filepath.Base(path), err)
	}
	err = f.Truncate(size)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("cut segment %s at offset %d: %w", filepath.Base(path), size, err)
	}
	return nil
}
