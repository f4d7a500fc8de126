package cluster

import (
	"bytes"
	"errors"
	"testing"

	"github.com/greyhold/greyhold/wal"
)

func TestResumeIndex(t *testing.T) {
	eras := []wal.Era{{Gen: 7, First: 10}, {Gen: 8, First: 30}, {Gen: 9, First: 41}}
	for _, c := range []struct {
		name  string
		p     shipped
		ok    bool
		first uint64
		next  uint64
		gap   bool
	}{
		{"nothing shipped", shipped{}, false, 10, 10, false},
		{"mid-generation", shipped{gen: 8, last: 35}, true, 10, 36, false},
		{"end of a generation", shipped{gen: 7, last: 29}, true, 10, 30, false},
		// 30-33 had shipped in generation 7 when a torn tail was cut at
		// 30: generation 8 wrote them again, and they ship again.
		{"shipped past a generation's end", shipped{gen: 7, last: 33}, true, 10, 30, false},
		{"truncated past unshipped frames", shipped{gen: 7, last: 12}, true, 20, 20, true},
		{"generation gone, frames after it kept", shipped{gen: 3, last: 9}, true, 10, 10, false},
		{"generation gone, frames after it lost", shipped{gen: 3, last: 5}, true, 10, 10, true},
		{"a new data directory under an old name", shipped{gen: 3, last: 500}, true, 1, 1, false},
	} {
		next, gap := resumeIndex(c.p, c.ok, eras, c.first)
		if next != c.next || gap != c.gap {
			t.Errorf("%s: resume %d, gap %v; want %d, %v", c.name, next, gap, c.next, c.gap)
		}
	}
}

func TestFramesRoundTrip(t *testing.T) {
	rec := []byte{1, 16, 1, 2, 3, 4, 5, 6, 7, 8, 0, 0, 0, 1, 0, 0, 0, 0}
	frames := []wal.Frame{
		{Index: 5, Gen: 2, KeyID: 9, UnixMilli: 1, Records: 1, Payload: rec},
		{Index: 6, Gen: 2, KeyID: 9, UnixMilli: 2, Records: 2, Payload: append(append([]byte(nil), rec...), rec...)},
	}
	body, err := appendFrames(nil, frames)
	if err != nil {
		t.Fatal(err)
	}
	got, err := decodeFrames(body, 9, nil)
	if err != nil || len(got) != 2 || got[1].Index != 6 || !bytes.Equal(got[1].Payload, frames[1].Payload) {
		t.Fatalf("decoded %+v, %v", got, err)
	}
	for name, bad := range map[string][]byte{
		"other key": func() []byte {
			b, _ := appendFrames(nil, []wal.Frame{{Index: 1, KeyID: 8, Records: 1, Payload: rec}})
			return b
		}(),
		"records short": func() []byte {
			b, _ := appendFrames(nil, []wal.Frame{{Index: 1, KeyID: 9, Records: 2, Payload: rec}})
			return b
		}(),
		"bad record": func() []byte {
			b, _ := appendFrames(nil, []wal.Frame{{Index: 1, KeyID: 9, Records: 1, Payload: rec[:5]}})
			return b
		}(),
		"out of order":    func() []byte { b, _ := appendFrames(nil, []wal.Frame{frames[1], frames[0]}); return b }(),
		"cut":             body[:len(body)-1],
		"empty":           nil,
		"flipped payload": func() []byte { b := bytes.Clone(body); b[len(b)-8] ^= 1; return b }(),
	} {
		if _, err := decodeFrames(bad, 9, nil); !errors.Is(err, errMalformed) {
			t.Errorf("%s: decodeFrames = %v, want errMalformed", name, err)
		}
	}
}

func TestFleetKeys(t *testing.T) {
	a := "keys=1 ipv4=/24 ipv6=/64 sender=normalised recipient-ext=kept identity=name psl=2026-02-06.d6c92f1bbb74"
	b := "keys=1 ipv4=/24 ipv6=/64 sender=normalised recipient-ext=kept identity=name psl=2026-11-01.0123456789ab"
	if fleetKeys(a) != fleetKeys(b) {
		t.Fatal("two lists of the same options differ for the fleet")
	}
	if fleetKeys(a) == fleetKeys("keys=1 ipv4=/24 ipv6=/64 sender=normalised recipient-ext=kept identity=network") {
		t.Fatal("two identity modes are the same for the fleet")
	}
}

// FuzzDecodeFrames: a message body from the stream, whatever it holds,
// decodes whole or is refused with errMalformed, never panics, and what
// decodes re-encodes to the same bytes.
func FuzzDecodeFrames(f *testing.F) {
	rec := []byte{1, 16, 1, 2, 3, 4, 5, 6, 7, 8, 0, 0, 0, 1, 0, 0, 0, 0}
	body, _ := appendFrames(nil, []wal.Frame{{Index: 5, Gen: 2, KeyID: 9, UnixMilli: 1, Records: 1, Payload: rec}})
	f.Add(body)
	f.Add(body[:len(body)/2])
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Fuzz(func(t *testing.T, data []byte) {
		frames, err := decodeFrames(data, 9, nil)
		if err != nil {
			if !errors.Is(err, errMalformed) {
				t.Fatalf("error %v does not wrap errMalformed", err)
			}
			return
		}
		again, err := appendFrames(nil, frames)
		if err != nil || !bytes.Equal(again, data) {
			t.Fatalf("body %x re-encodes to %x (%v)", data, again, err)
		}
	})
}
