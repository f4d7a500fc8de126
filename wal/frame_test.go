package wal

import (
	"bytes"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

func TestDecodeFrame(t *testing.T) {
	valid, err := AppendFrame(nil, []byte("records"), 3)
	if err != nil {
		t.Fatal(err)
	}
	edit := func(f func(b []byte) []byte) []byte { return f(bytes.Clone(valid)) }
	reseal := func(b []byte) []byte { return sealFrame(b[:len(b)-crcSize], 0) }

	f := func(name string, frame []byte, wantErr bool) {
		t.Helper()
		payload, n, err := DecodeFrame(frame)
		if wantErr {
			if !errors.Is(err, ErrCorrupt) {
				t.Errorf("%s: DecodeFrame = %q × %d, %v; want ErrCorrupt", name, payload, n, err)
			}
			return
		}
		if err != nil || string(payload) != "records" || n != 3 {
			t.Errorf("%s: DecodeFrame = %q × %d, %v", name, payload, n, err)
		}
	}

	f("valid", valid, false)
	f("nil", nil, true)
	// What tidwall makes of a zero-filled tail: empty entries.
	f("empty", []byte{}, true)
	f("all zeros", make([]byte, 64), true)
	// One byte short of the smallest frame: no payload.
	f("header and crc only", reseal(append([]byte{frameVersion, 0, 1, 0, 0, 0}, 0, 0, 0, 0)), true)
	// Version 0 never existed and version 2 does not yet: both corrupt,
	// even with a correct CRC (see doc.go).
	f("version 0", reseal(edit(func(b []byte) []byte { b[0] = 0; return b })), true)
	f("version 2", reseal(edit(func(b []byte) []byte { b[0] = 2; return b })), true)
	f("flags set", reseal(edit(func(b []byte) []byte { b[1] = 1; return b })), true)
	f("zero records", reseal(edit(func(b []byte) []byte { b[2] = 0; return b })), true)
	f("crc flipped", edit(func(b []byte) []byte { b[len(b)-1] ^= 1; return b }), true)
	f("truncated", valid[:len(valid)-1], true)
}

func TestAppendFrameRejects(t *testing.T) {
	if _, err := AppendFrame(nil, nil, 1); err == nil {
		t.Error("empty payload accepted")
	}
	if _, err := AppendFrame(nil, []byte("x"), 0); err == nil {
		t.Error("zero records accepted")
	}
	if _, err := AppendFrame(nil, []byte("x"), -1); err == nil {
		t.Error("negative records accepted")
	}
}

// TestGolden pins the on-disk format: a fresh log with one known frame,
// compared byte for byte. A change here breaks every existing log; run with
// -update only when that is the intent, and bump the frame version.
func TestGolden(t *testing.T) {
	dir := t.TempDir()
	l := openLog(t, dir, Options{Sync: SyncAlways})
	if err := l.Append([]byte("greyhold\x00\x01\x02"), 2); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	files, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != 1 || files[0].Name() != "00000000000000000001" {
		t.Fatalf("a fresh log with one frame holds %v, want one segment named 00000000000000000001", files)
	}
	got, err := os.ReadFile(filepath.Join(dir, files[0].Name()))
	if err != nil {
		t.Fatal(err)
	}
	golden := filepath.Join("testdata", "one_frame.segment")
	if *update {
		if err := os.WriteFile(golden, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("segment bytes changed:\n got %x\nwant %x", got, want)
	}
}

func TestSyncModeParse(t *testing.T) {
	f := func(in string, want SyncMode, wantString string) {
		t.Helper()
		got, err := ParseSyncMode(in)
		if err != nil {
			t.Errorf("ParseSyncMode(%q): %v", in, err)
			return
		}
		if got != want {
			t.Errorf("ParseSyncMode(%q) = %v, want %v", in, got, want)
		}
		if s := got.String(); s != wantString {
			t.Errorf("ParseSyncMode(%q).String() = %q, want %q", in, s, wantString)
		}
		// String must read back to the same mode.
		if again, err := ParseSyncMode(got.String()); err != nil || again != got {
			t.Errorf("ParseSyncMode(%q) = %v, %v; want %v", got.String(), again, err, got)
		}
	}
	f("always", SyncAlways, "always")
	f("never", SyncNever, "never")
	f(" Always ", SyncAlways, "always")
	f("1s", SyncMode{}, "1s")
	f("250ms", SyncEvery(250*time.Millisecond), "250ms")
	f("1m", SyncEvery(time.Minute), "1m0s")
	// A bare number is seconds, as in postgrey-style configs.
	f("2", SyncEvery(2*time.Second), "2s")
	f("0.5", SyncEvery(500*time.Millisecond), "500ms")
	f("1", SyncMode{}, "1s")

	// The zero value is the default, and the same value as SyncEvery(1s).
	if SyncEvery(time.Second) != (SyncMode{}) || (SyncMode{}).Interval() != time.Second {
		t.Error("zero SyncMode is not SyncEvery(time.Second)")
	}
	if SyncAlways.Interval() != 0 || SyncNever.Interval() != 0 {
		t.Error("always and never have an interval")
	}
	if SyncEvery(-time.Second) != (SyncMode{}) {
		t.Error("a negative interval is not the default")
	}

	for _, bad := range []string{"", "sometimes", "0", "0s", "-1s", "-3", "1x", "NaN", "inf", "1e300", "0.0000000001"} {
		if m, err := ParseSyncMode(bad); err == nil {
			t.Errorf("ParseSyncMode(%q) = %v, want an error", bad, m)
		} else if !bytes.Contains([]byte(err.Error()), []byte(`"always", "never"`)) {
			t.Errorf("ParseSyncMode(%q) error %q does not name the accepted forms", bad, err)
		}
	}
}
