package engine

import (
	"bytes"
	"testing"
)

// LogKey is keyed by the secret: the same address makes another hash under
// another secret, so a log of hashes cannot be matched against a
// dictionary without it; and it is no stored key.
func TestLogKey(t *testing.T) {
	a, _ := New(DefaultOptions(), bytes.Repeat([]byte{1}, 32))
	b, _ := New(DefaultOptions(), bytes.Repeat([]byte{2}, 32))
	a2, _ := New(DefaultOptions(), bytes.Repeat([]byte{1}, 32))
	if a.LogKey('s', "alice@example.org") != a2.LogKey('s', "alice@example.org") {
		t.Error("one secret makes two LogKeys")
	}
	if a.LogKey('s', "alice@example.org") == b.LogKey('s', "alice@example.org") {
		t.Error("two secrets make the same LogKey")
	}
	if a.LogKey('s', "x") == a.LogKey('r', "x") {
		t.Error("fields share a LogKey")
	}
}
