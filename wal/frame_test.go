package wal

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

func TestDecodeFrame(t *testing.T) {
	in := Frame{Index: 7, Gen: 0xabcdef01, KeyID: 0x12345678, UnixMilli: 1_764_000_000_123, Records: 3, Payload: []byte("records")}
	valid, err := AppendFrame(nil, in)
	if err != nil {
		t.Fatal(err)
	}
	if len(valid) != headerSize+len(in.Payload)+crcSize {
		t.Fatalf("frame of %d bytes, want %d", len(valid), headerSize+len(in.Payload)+crcSize)
	}
	edit := func(f func(b []byte) []byte) []byte { return f(bytes.Clone(valid)) }
	reseal := func(b []byte) []byte { return sealFrame(b[:len(b)-crcSize], 0) }

	f := func(name string, frame []byte, wantErr bool) {
		t.Helper()
		got, err := DecodeFrame(frame)
		if wantErr {
			if !errors.Is(err, ErrCorrupt) {
				t.Errorf("%s: DecodeFrame = %+v, %v; want ErrCorrupt", name, got, err)
			}
			return
		}
		want := in
		want.Version = frameVersion
		if err != nil || string(got.Payload) != string(want.Payload) {
			t.Errorf("%s: DecodeFrame = %+v, %v", name, got, err)
			return
		}
		got.Payload, want.Payload = nil, nil
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("%s: DecodeFrame = %+v, want %+v", name, got, want)
		}
	}

	f("valid", valid, false)
	f("nil", nil, true)
	// What tidwall makes of a zero-filled tail: empty entries.
	f("empty", []byte{}, true)
	f("all zeros", make([]byte, 64), true)
	// One byte short of the smallest frame: no payload.
	f("header and crc only", reseal(append(bytes.Clone(valid[:headerSize]), 0, 0, 0, 0)), true)
	// Version 0 never existed and version 3 does not yet: both corrupt,
	// even with a correct CRC (see doc.go).
	f("version 0", reseal(edit(func(b []byte) []byte { b[0] = 0; return b })), true)
	f("version 3", reseal(edit(func(b []byte) []byte { b[0] = 3; return b })), true)
	f("flags set", reseal(edit(func(b []byte) []byte { b[1] = 1; return b })), true)
	f("zero records", reseal(edit(func(b []byte) []byte { b[2] = 0; return b })), true)
	f("index 0", reseal(edit(func(b []byte) []byte { b[offIndex] = 0; return b })), true)
	f("crc flipped", edit(func(b []byte) []byte { b[len(b)-1] ^= 1; return b }), true)
	f("truncated", valid[:len(valid)-1], true)
	for i := range valid {
		f(fmt.Sprintf("bit flipped in byte %d", i), edit(func(b []byte) []byte { b[i] ^= 0x10; return b }), true)
	}
}

// A version 1 frame, as greyhold wrote before frames carried their index,
// still decodes: no index, generation, key or time.
func TestDecodeFrameV1(t *testing.T) {
	v1 := sealFrame([]byte{frameVersionV1, 0, 2, 0, 0, 0, 'a', 'b'}, 0)
	f, err := DecodeFrame(v1)
	if err != nil || f.Version != 1 || f.Records != 2 || string(f.Payload) != "ab" || f.Index != 0 || f.Gen != 0 {
		t.Fatalf("DecodeFrame(v1) = %+v, %v", f, err)
	}
	v1[3] ^= 1
	if _, err := DecodeFrame(v1); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("a damaged v1 frame decoded: %v", err)
	}
}

func TestAppendFrameRejects(t *testing.T) {
	for _, f := range []Frame{{Records: 1}, {Payload: []byte("x")}, {Payload: []byte("x"), Records: -1}} {
		if _, err := AppendFrame(nil, f); err == nil {
			t.Errorf("AppendFrame(%+v) accepted", f)
		}
	}
}

// goldenHooks fix what a frame carries that is not its payload.
func goldenHooks() *testHooks {
	return &testHooks{gen: func() uint32 { return 0x0badcafe }, now: func() int64 { return 1_764_000_000_000 }}
}

// TestGolden pins the on-disk format: a fresh log with one known frame,
// compared byte for byte. A change here breaks every existing log; run with
// -update only when that is the intent, and bump the frame version.
func TestGolden(t *testing.T) {
	dir := t.TempDir()
	l := openLog(t, dir, Options{Sync: SyncAlways, KeyID: 0x5ec12e7, hooks: goldenHooks()})
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

// A log written by a greyhold whose frames were version 1 opens, replays,
// and takes version 2 frames after its own.
func TestReadsVersion1Log(t *testing.T) {
	old, err := os.ReadFile(filepath.Join("testdata", "one_frame_v1.segment"))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, segmentName(1)), old, 0o640); err != nil {
		t.Fatal(err)
	}
	l := openLog(t, dir, Options{Sync: SyncNever, KeyID: 9})
	if l.Repaired().Changed() {
		t.Fatalf("a clean v1 log was repaired: %+v", l.Repaired())
	}
	if err := l.Append([]byte("new"), 1); err != nil {
		t.Fatal(err)
	}
	var got []string
	if err := l.Replay(1, func(f Frame) error {
		got = append(got, fmt.Sprintf("%d:v%d:%q", f.Index, f.Version, f.Payload))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if want := []string{`1:v1:"greyhold\x00\x01\x02"`, `2:v2:"new"`}; !slices.Equal(got, want) {
		t.Fatalf("replayed %v, want %v", got, want)
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
