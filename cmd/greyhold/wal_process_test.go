package main

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/greyhold/greyhold/wal"
)

// The write-ahead log's defects from issue 9, tried on the real binary:
// the history is acknowledged over the policy protocol (--test-clock
// dates it), the files are damaged as an unlucky operator or disk would,
// and what a restart knows is asked over the protocol again.

// diskFrame is where one frame of the log sits on disk.
type diskFrame struct {
	seg        string
	off, end   int64 // the entry: length prefix, then the frame
	index      uint64
	segFirst   uint64 // the first frame of its segment
	segIsFinal bool   // its segment is the log's last
}

// logFrames reads every segment of the log in walDir, in order; the log
// must be undamaged.
func logFrames(t *testing.T, walDir string) []diskFrame {
	t.Helper()
	names, err := filepath.Glob(filepath.Join(walDir, "0*"))
	if err != nil {
		t.Fatal(err)
	}
	var segs []string
	for _, n := range names {
		if !strings.Contains(filepath.Base(n), ".") {
			segs = append(segs, n)
		}
	}
	var out []diskFrame
	for si, path := range segs {
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		first := len(out)
		for off := 0; off < len(data); {
			size, w := binary.Uvarint(data[off:])
			end := off + w + int(size)
			if w <= 0 || end > len(data) {
				t.Fatalf("%s: bad entry at %d", path, off)
			}
			f, err := wal.DecodeFrame(data[off+w : end])
			if err != nil {
				t.Fatalf("%s at %d: %v", path, off, err)
			}
			index := f.Index
			if f.Version == 1 { // carries no index: its place gives it
				index = uint64(len(out) + 1)
			}
			out = append(out, diskFrame{seg: filepath.Base(path), off: int64(off), end: int64(end),
				index: index, segIsFinal: si == len(segs)-1})
			off = end
		}
		for i := first; i < len(out); i++ {
			out[i].segFirst = out[first].index
		}
	}
	return out
}

// segmentAfter names the segment that follows seg.
func segmentAfter(frames []diskFrame, seg string) string {
	for _, f := range frames {
		if f.seg > seg {
			return f.seg
		}
	}
	return ""
}

// postJSON posts to the daemon's HTTP API and decodes a 200 answer.
func (d *daemon) postJSON(t *testing.T, path string, out any) {
	t.Helper()
	resp, err := http.Post("http://"+d.httpAd+path, "application/json", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("POST %s: %d %s", path, resp.StatusCode, body)
	}
	if err := json.Unmarshal(body, out); err != nil {
		t.Fatalf("POST %s: %v in %s", path, err, body)
	}
}

// snapshotNow makes the daemon write a snapshot and returns its log index.
func (d *daemon) snapshotNow(t *testing.T) uint64 {
	t.Helper()
	var info struct {
		WALIndex uint64 `json:"wal_index"`
	}
	d.postJSON(t, "/v1/snapshot", &info)
	return info.WALIndex
}

// metric reads one series of /metrics, 0 when it is absent.
func (d *daemon) metric(t *testing.T, series string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + d.httpAd + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` (\S+)$`).FindSubmatch(body)
	if m == nil {
		return 0
	}
	v, err := strconv.ParseFloat(string(m[1]), 64)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

const (
	deferAnswer = "action=DEFER_IF_PERMIT 4.7.1 Greylisted"
	passAnswer  = "action=PREPEND X-Greylist:"
	knownAnswer = "action=DUNNO"
)

// deferAll asks triplets 0..n-1 for the first time, at testT0.
func deferAll(t *testing.T, pc *policyConn, n int) {
	t.Helper()
	for i := range n {
		got, err := pc.ask(tripletRequest(i, testT0))
		if err != nil || !strings.HasPrefix(got, deferAnswer) {
			t.Fatalf("first request of triplet %d: %q, %v", i, got, err)
		}
	}
}

// knownAfterRestart asks each triplet once more after the delay: a pass
// the state kept is answered as known, one it lost passes again.
func knownAfterRestart(t *testing.T, d *daemon, n int) (known []bool) {
	t.Helper()
	pc := dialPolicy(t, d.policy)
	for i := range n {
		got, err := pc.ask(tripletRequest(i, testT0+1000))
		switch {
		case err != nil:
			t.Fatalf("triplet %d after the restart: %v", i, err)
		case got == knownAnswer:
			known = append(known, true)
		case strings.HasPrefix(got, passAnswer):
			known = append(known, false)
		default:
			t.Fatalf("triplet %d after the restart: %q", i, got)
		}
	}
	return known
}

// TestDamagedLogAtRestart (issue 9, defect 1): a server is killed with a
// snapshot holding the first requests of its triplets and a log holding
// the retries that passed, and its log is damaged three ways: a byte
// flipped in a frame the snapshot covers, a byte flipped in one after the
// snapshot's start, and a whole segment after it deleted. The restart
// loses exactly the acknowledged passes of the last two, knows every
// other, and logs each damage with its segment, offset and frames.
func TestDamagedLogAtRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("starts server processes")
	}
	// 53-byte frames in 64 KiB segments: the history fills seven, so one
	// lies wholly between the snapshot's start and the last.
	const n = 4000
	d := startDaemon(t, "--test-clock", "--wal-segment-size", "64KiB", "--auto-whitelist-clients", "0")
	// An empty snapshot first: two are kept and the log is cut only behind
	// the older, so every frame stays on disk.
	d.snapshotNow(t)
	pc := dialPolicy(t, d.policy)
	deferAll(t, pc, n)
	start := d.snapshotNow(t) + 1
	for i := range n {
		got, err := pc.ask(tripletRequest(i, testT0+400))
		if err != nil || !strings.HasPrefix(got, passAnswer) {
			t.Fatalf("retry of triplet %d: %q, %v", i, got, err)
		}
	}
	d.kill(t)

	walDir := filepath.Join(d.dir, "wal")
	frames := logFrames(t, walDir)
	// One request at a time: frame k+1 is request k, so pass i is frame
	// n+1+i.
	if len(frames) != 2*n {
		t.Fatalf("%d frames on disk, want %d", len(frames), 2*n)
	}
	for k, f := range frames {
		if f.index != uint64(k+1) {
			t.Fatalf("frame %d on disk has index %d", k+1, f.index)
		}
	}
	passOf := func(index uint64) int { return int(index) - n - 1 } // -1..: not a pass
	flip := func(f diskFrame) {
		t.Helper()
		path := filepath.Join(walDir, f.seg)
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		b[f.end-6] ^= 0x10 // in the payload, before the CRC
		if err := os.WriteFile(path, b, 0o640); err != nil {
			t.Fatal(err)
		}
	}

	covered := frames[n/2] // the first request of triplet n/2
	if covered.index >= start {
		t.Fatalf("frame %d is not covered by the snapshot from %d", covered.index, start)
	}
	hit := frames[n+n/10] // pass n/10
	var gone []diskFrame  // a segment after the start, not the last, not hit's
	for _, f := range frames {
		if f.segFirst >= start && !f.segIsFinal && f.seg != hit.seg && (len(gone) == 0 || gone[0].seg == f.seg) {
			gone = append(gone, f)
		}
	}
	if len(gone) == 0 || hit.index < start {
		t.Fatalf("the log's layout has no segment to delete after the snapshot's start %d", start)
	}
	flip(covered)
	flip(hit)
	if err := os.Remove(filepath.Join(walDir, gone[0].seg)); err != nil {
		t.Fatal(err)
	}
	lost := map[int]bool{passOf(hit.index): true}
	for _, f := range gone {
		if p := passOf(f.index); p >= 0 {
			lost[p] = true
		}
	}

	d.start(t)
	for _, want := range []string{
		fmt.Sprintf(`msg="wal damage skipped; the frames it hit are covered by the snapshot: nothing lost" component=wal dir=%s segment=%s offset=%d skipped_bytes=%d frames_skipped=1 first_lost=%[5]d last_lost=%[5]d`,
			walDir, covered.seg, covered.off, covered.end-covered.off, covered.index),
		fmt.Sprintf(`msg="wal damage skipped: the frames it hit are lost, replay goes on after it" component=wal dir=%s segment=%s offset=%d skipped_bytes=%d frames_skipped=1 first_lost=%[5]d last_lost=%[5]d`,
			walDir, hit.seg, hit.off, hit.end-hit.off, hit.index),
		fmt.Sprintf(`msg="wal frames missing: their changes are lost" component=wal dir=%s segment=%s offset=0 skipped_bytes=0 frames_skipped=%d first_lost=%d last_lost=%d`,
			walDir, segmentAfter(frames, gone[0].seg), len(gone), gone[0].index, gone[len(gone)-1].index),
	} {
		if !d.log.waitFor(want) {
			t.Errorf("the log does not say %q:\n%s", want, d.logText())
		}
	}
	if got, want := d.metric(t, "greyhold_wal_lost_frames_total"), float64(1+len(gone)); got != want {
		t.Errorf("greyhold_wal_lost_frames_total %v, want %v", got, want)
	}
	known := knownAfterRestart(t, d, n)
	kept, wrong := 0, 0
	for i, k := range known {
		if k == lost[i] {
			if wrong++; wrong <= 10 {
				t.Errorf("pass %d (frame %d): known %v, in damaged frames %v", i, n+1+i, k, lost[i])
			}
		}
		if k {
			kept++
		}
	}
	t.Logf("snapshot from frame %d; flipped frames %d (covered) and %d, deleted %s (frames %d-%d): %d of %d acknowledged passes known, %d lost",
		start, covered.index, hit.index, gone[0].seg, gone[0].index, gone[len(gone)-1].index, kept, n, len(lost))
	if kept != n-len(lost) {
		t.Errorf("%d of %d passes known, want %d", kept, n, n-len(lost))
	}
	d.stop(t, 30*time.Second)
}

// tailSegment is the path of the log's last segment.
func tailSegment(t *testing.T, walDir string) string {
	t.Helper()
	frames := logFrames(t, walDir)
	if len(frames) == 0 {
		t.Fatal("no frames in the log")
	}
	return filepath.Join(walDir, frames[len(frames)-1].seg)
}

// TestLogTailLostUnderLoad (issue 9, defect 2): the log's tail segment
// removed, or cut to half its length, by something else while the server
// takes passes on four connections. The server logs the loss, writes a
// snapshot at once and goes on answering; after a kill -9 and a restart
// every pass it acknowledged, before the damage, between the damage and
// the snapshot, and after it, is known.
func TestLogTailLostUnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("starts server processes")
	}
	for _, tc := range []struct {
		name, fsync string
		damage      func(t *testing.T, path string)
	}{
		{"removed", "1s", func(t *testing.T, path string) {
			if err := os.Remove(path); err != nil {
				t.Fatal(err)
			}
		}},
		{"truncated", "1s", func(t *testing.T, path string) {
			fi, err := os.Stat(path)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.Truncate(path, fi.Size()/2); err != nil {
				t.Fatal(err)
			}
		}},
		{"removed, fsync always", "always", func(t *testing.T, path string) {
			if err := os.Remove(path); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const n, conns = 3000, 4
			d := startDaemon(t, "--test-clock", "--auto-whitelist-clients", "0", "--fsync", tc.fsync)
			deferAll(t, dialPolicy(t, d.policy), n)

			// The passes: [0, n/2) before the damage, [n/2, 3n/4) while
			// the server finds it, the rest once the snapshot is written.
			var (
				next    atomic.Int64
				acked   [n]atomic.Bool
				done    sync.WaitGroup
				gate    = make(chan struct{})
				half    = make(chan struct{})
				halfOne sync.Once
				errs    = make(chan error, conns)
			)
			var answered atomic.Int64
			for range conns {
				pc := dialPolicy(t, d.policy)
				done.Add(1)
				go func() {
					defer done.Done()
					for {
						i := int(next.Add(1) - 1)
						if i >= n {
							return
						}
						if i == 3*n/4 {
							<-gate
						}
						got, err := pc.ask(tripletRequest(i, testT0+400))
						switch {
						case err != nil:
							errs <- fmt.Errorf("pass %d: %v", i, err)
							return
						case strings.HasPrefix(got, passAnswer):
							acked[i].Store(true)
						case got != knownAnswer: // not logged: answered as greylisting off
							errs <- fmt.Errorf("pass %d answered %q", i, got)
							return
						}
						if answered.Add(1) == n/2 {
							halfOne.Do(func() { close(half) })
						}
					}
				}()
			}
			select {
			case <-half:
			case err := <-errs:
				t.Fatal(err)
			}
			tail := tailSegment(t, filepath.Join(d.dir, "wal"))
			tc.damage(t, tail)
			for _, want := range []string{
				`msg="wal frames written by this process are gone from the disk: continuing from the next index"`,
				`msg="writing a snapshot at once: the log lost frames, which memory still holds"`,
			} {
				if !d.log.waitFor(want) {
					close(gate)
					t.Fatalf("the log does not say %s:\n%s", want, d.logText())
				}
			}
			logs := d.logText()
			at := strings.Index(logs, "writing a snapshot at once")
			if !d.log.waitFor(`msg="snapshot written"`) || !strings.Contains(d.logText()[at:], `msg="snapshot written"`) {
				close(gate)
				t.Fatalf("no snapshot written after the loss:\n%s", d.logText())
			}
			close(gate)
			done.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}
			var ackedN int
			for i := range acked {
				if acked[i].Load() {
					ackedN++
				}
			}
			if ackedN < n*3/4 {
				t.Errorf("only %d of %d passes acknowledged", ackedN, n)
			}
			d.kill(t)

			d.start(t)
			known := knownAfterRestart(t, d, n)
			lost := 0
			for i := range acked {
				if acked[i].Load() && !known[i] {
					if lost++; lost <= 10 {
						t.Errorf("acknowledged pass %d unknown after the restart", i)
					}
				}
			}
			t.Logf("%s: %d of %d passes acknowledged, %d of them lost after kill -9 and a restart", tc.name, ackedN, n, lost)
			d.stop(t, 30*time.Second)
		})
	}
}

// mountTmpfs mounts a tmpfs of the given size at a new directory for the
// test, or skips the test where that takes root and it has not.
func mountTmpfs(t *testing.T, size string) string {
	t.Helper()
	mnt := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size, "tmpfs", mnt).CombinedOutput(); err != nil {
		if os.Geteuid() != 0 {
			t.Skipf("mounting a %s tmpfs to fill needs root (CI runs as root): %v %s", size, err, out)
		}
		t.Fatalf("mount a tmpfs: %v %s", err, out)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(mnt, 0); err != nil {
			t.Errorf("unmount %s: %v", mnt, err)
		}
	})
	return mnt
}

// fillDisk writes a file in dir until the disk is full.
func fillDisk(t *testing.T, dir string) string {
	t.Helper()
	path := filepath.Join(dir, "filler")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	block := make([]byte, 4096)
	for {
		if _, err := f.Write(block); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatal(err)
			}
			break
		}
	}
	// Smaller writes for the last partial block.
	for _, err := f.Write([]byte{0}); err == nil; _, err = f.Write([]byte{0}) {
	}
	return path
}

// TestCrashOnFullDisk (issue 9, defect 3): a server killed on a disk that
// then has no byte free, its log's tail torn (half a frame written when
// it died), starts, cuts the tail, and answers: what it knew, at once, and
// a new triplet as greylisting off (the log cannot take it) until space
// is freed, when the log resumes and greylists again.
func TestCrashOnFullDisk(t *testing.T) {
	if testing.Short() {
		t.Skip("starts server processes")
	}
	mnt := mountTmpfs(t, "2m")
	const n = 200
	d := &daemon{dir: filepath.Join(mnt, "data"),
		args: []string{"--test-clock", "--auto-whitelist-clients", "0", "--wal-segment-size", "64KiB"}}
	d.start(t)
	pc := dialPolicy(t, d.policy)
	deferAll(t, pc, n)
	for i := range n {
		if got, err := pc.ask(tripletRequest(i, testT0+400)); err != nil || !strings.HasPrefix(got, passAnswer) {
			t.Fatalf("retry of triplet %d: %q, %v", i, got, err)
		}
	}
	d.kill(t)
	tail := tailSegment(t, filepath.Join(d.dir, "wal"))
	f, err := os.OpenFile(tail, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write([]byte{0x7f, 2, 0, 1, 0}); err != nil { // a 127-byte entry, 4 bytes of it written
		t.Fatal(err)
	}
	f.Close()
	filler := fillDisk(t, mnt)

	restartAt := len(d.logText())
	d.start(t)
	want := fmt.Sprintf(`msg="wal tail torn: cut off" component=wal dir=%s segment=%s`, filepath.Join(d.dir, "wal"), filepath.Base(tail))
	if !d.log.waitFor(want) || !d.log.waitFor("dropped_bytes=5 kept=\"\"") {
		t.Errorf("the log does not say %s with 5 bytes dropped and none kept:\n%s", want, d.logText())
	}
	pc = dialPolicy(t, d.policy)
	for _, i := range []int{0, n / 2, n - 1} {
		if got, err := pc.ask(tripletRequest(i, testT0+1000)); err != nil || got != knownAnswer {
			t.Errorf("known triplet %d on the full disk: %q, %v", i, got, err)
		}
	}
	// The tail's last block has room for a few frames; then the log
	// cannot take more, and new triplets are let through.
	next, notLogged := n, 0
	for ; next < n+1000 && notLogged < 50; next++ {
		got, err := pc.ask(tripletRequest(next, testT0+1000))
		switch {
		case err != nil:
			t.Fatalf("new triplet %d on the full disk: %v", next, err)
		case got == knownAnswer:
			notLogged++
		case !strings.HasPrefix(got, deferAnswer):
			t.Fatalf("new triplet %d on the full disk: %q", next, got)
		}
	}
	if notLogged == 0 {
		t.Fatalf("%d new triplets on the full disk were all greylisted", next-n)
	}
	t.Logf("%d new triplets on the full disk: %d greylisted, %d let through", next-n, next-n-notLogged, notLogged)
	if !d.log.waitFor(`msg="wal cannot write: the disk is full; checks are answered as if greylisting were off until it has room"`) {
		t.Errorf("the log does not say the disk is full:\n%s", d.logText())
	}
	if got := d.metric(t, "greyhold_wal_failed"); got != 1 {
		t.Errorf("greyhold_wal_failed = %v on the full disk, want 1", got)
	}
	if got := d.metric(t, "greyhold_not_logged_total"); got < float64(notLogged) {
		t.Errorf("greyhold_not_logged_total = %v after %d checks let through, want at least as many", got, notLogged)
	}
	// One line says so, not one a request.
	if n := strings.Count(d.logText()[restartAt:], "level=ERROR msg=\"wal "); n != 1 {
		t.Errorf("%d error lines of the log's after %d checks it could not log, want 1:\n%s", n, notLogged, d.logText()[restartAt:])
	}
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	if !d.log.waitFor(`msg="wal reopened: appends resume"`) {
		t.Fatalf("the log did not resume once space was freed:\n%s", d.logText())
	}
	if got, err := pc.ask(tripletRequest(next, testT0+1000)); err != nil || !strings.HasPrefix(got, deferAnswer) {
		t.Errorf("a new triplet once space was freed: %q, %v", got, err)
	}
	if got := d.metric(t, "greyhold_wal_failed"); got != 0 {
		t.Errorf("greyhold_wal_failed = %v once space was freed, want 0", got)
	}
	d.stop(t, 30*time.Second)
}

// TestLostSecretRefusedAtStart (issue 9, defect 8): a data directory whose
// secret is gone, stopped cleanly (a snapshot and a log) or killed (a log
// only, and greyhold.json gone too), does not start: the error says to
// restore the secret, and no new secret is made beside the state.
func TestLostSecretRefusedAtStart(t *testing.T) {
	if testing.Short() {
		t.Skip("starts server processes")
	}
	for _, tc := range []struct {
		name string
		stop func(t *testing.T, d *daemon)
		lost []string
	}{
		{"secret lost after a clean stop", func(t *testing.T, d *daemon) { d.stop(t, 30*time.Second) }, []string{"secret"}},
		{"secret and greyhold.json lost after a crash", func(t *testing.T, d *daemon) { d.kill(t) }, []string{"secret", "greyhold.json"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := startDaemon(t, "--test-clock")
			deferAll(t, dialPolicy(t, d.policy), 20)
			tc.stop(t, d)
			for _, name := range tc.lost {
				if err := os.Remove(filepath.Join(d.dir, name)); err != nil {
					t.Fatal(err)
				}
			}
			before := len(d.logText())
			d.launch(t)
			err, ok := d.exited(20 * time.Second)
			if !ok {
				t.Fatal("greyhold started without its secret")
			}
			out := d.logText()[before:]
			if err == nil || !strings.Contains(out, "restore the secret file") || !strings.Contains(out, filepath.Join(d.dir, "secret")) {
				t.Errorf("start without the secret: %v, want a refusal naming the secret and saying to restore it:\n%s", err, out)
			}
			for _, name := range tc.lost {
				if _, err := os.Lstat(filepath.Join(d.dir, name)); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("%s is there after the refused start (%v)", name, err)
				}
			}
		})
	}
}
